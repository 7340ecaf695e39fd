//go:build goexperiment.simd && amd64

package cpu

import "testing"

// TestActivationsFloat32AVX2 runs the AVX2 loops too on a machine that would pick AVX-512.
func TestActivationsFloat32AVX2(t *testing.T) {
	if !mambaAVX2 {
		t.Skip("the CPU lacks AVX2 and FMA")
	}
	saved := mambaAVX512
	mambaAVX512 = false
	defer func() { mambaAVX512 = saved }()
	checkActivations(t, "avx2")
}
