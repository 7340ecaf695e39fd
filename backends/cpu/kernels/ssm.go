package kernels

import "fmt"

// SSMStepRows advances rows of a state-space recurrence by one token: for each row p of the
// [len(x)×n] matrices s and o (row-major), o[p,:] = decay·s[p,:] + (dt·x[p])·b and
// y[p] = o[p,:]·c + d·x[p]. o may be s (in place). It reports false, and does nothing, where
// it has no kernel for the CPU and n (AVX-512, n a multiple of 16): the caller then runs its
// own loops. The AVX-512 kernel rounds as the simd build's loops of package cpu do (b·f, then
// one FMA per value; two accumulators of 16 lanes for the dot product), in assembly, so that
// every amd64 build gets it: the archsimd loops, one call per row, ran ~5× slower.
func SSMStepRows(o, s, x, y, b, c []float32, n int, decay, dt, d float32) bool {
	if gemmLevel != AVX512 || n < 16 || n%16 != 0 {
		return false
	}
	const fn = "SSMStepRows"
	rows := len(x)
	need(fn, "y", len(y), rows)
	need(fn, "b", len(b), n)
	need(fn, "c", len(c), n)
	if len(s) < rows*n || len(o) < rows*n {
		panic(fmt.Sprintf("kernels: %s: s has %d values and o %d, %d rows of %d need %d", fn, len(s), len(o), rows, n, rows*n))
	}
	if rows == 0 {
		return true
	}
	ssmStepRowsAVX512(n, rows, &o[0], &s[0], &x[0], &y[0], &b[0], &c[0], decay, dt, d)
	return true
}
