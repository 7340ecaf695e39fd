//go:build goexperiment.simd && amd64

package cpu

import (
	"math/rand/v2"
	"testing"

	"github.com/mamba2go/mamba2/backends/cpu/kernels"
)

// TestStepHeadAssemblyBits: the assembly step (kernels.SSMStepRows, taken by every amd64 build on
// AVX-512 CPUs) gives the same bits as this build's archsimd rows, so a build's choice of loops
// does not move a decode.
func TestStepHeadAssemblyBits(t *testing.T) {
	if !mambaAVX512 {
		t.Skip("no AVX-512")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{16, 48, 64, 128} {
		const rows = 64
		rnd := func(k int) []float32 {
			v := make([]float32, k)
			for i := range v {
				v[i] = float32(r.NormFloat64())
			}
			return v
		}
		s, x, b, c := rnd(rows*n), rnd(rows), rnd(n), rnd(n)
		o, y := make([]float32, rows*n), make([]float32, rows)
		if !kernels.SSMStepRows(o, s, x, y, b, c, n, 0.9, 0.3, 1.5) {
			t.Fatalf("n=%d: no assembly kernel on an AVX-512 CPU", n)
		}
		for p := 0; p < rows; p++ {
			row := make([]float32, n)
			want := stepRow32(row, s[p*n:(p+1)*n], b, c, 0.9, 0.3*x[p]) + 1.5*x[p]
			if y[p] != want {
				t.Fatalf("n=%d row %d: y %v, archsimd %v", n, p, y[p], want)
			}
			for i := range row {
				if o[p*n+i] != row[i] {
					t.Fatalf("n=%d row %d: o[%d] %v, archsimd %v", n, p, i, o[p*n+i], row[i])
				}
			}
		}
	}
}
