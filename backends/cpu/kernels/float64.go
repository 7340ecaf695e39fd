package kernels

// float64 kernels: plain Go with several accumulators (used for gradient checks and float64
// graphs, where exactness matters more than speed).

// Dot64 returns Σ x[i]·y[i] over len(x); y must be at least as long.
func Dot64(x, y []float64) float64 {
	need("Dot64", "y", len(y), len(x))
	return dotGeneric(x, y)
}

// Axpy64 sets y[i] += a·x[i] for i < len(x).
func Axpy64(a float64, x, y []float64) {
	need("Axpy64", "y", len(y), len(x))
	axpyGeneric(a, x, y)
}

// MatVecT64 sets y[j] = Σ_p w[j·k+p]·x[p] for j < n (W row-major [n×k]).
func MatVecT64(y, w, x []float64, n, k int) { MatVecTRange64(y, w, x, k, 0, n) }

// MatVecTRange64 computes rows [lo,hi) of MatVecT64.
func MatVecTRange64(y, w, x []float64, k, lo, hi int) {
	checkDims("MatVecTRange64", k)
	checkRange("MatVecTRange64", lo, hi, len(y))
	if lo == hi {
		return
	}
	need("MatVecTRange64", "x", len(x), k)
	need("MatVecTRange64", "w", len(w), hi*k)
	matVecTGeneric(y, w, x, k, lo, hi)
}

// GemmNT64 computes C[m×n] = A[m×k]·W[n×k]ᵀ (+ C when accumulate).
func GemmNT64(c, a, w []float64, m, n, k int, accumulate bool) {
	GemmNTRange64(c, a, w, m, n, k, 0, m, accumulate)
}

// GemmNTRange64 computes rows [lo,hi) of GemmNT64.
func GemmNTRange64(c, a, w []float64, m, n, k, lo, hi int, accumulate bool) {
	checkDims("GemmNT64", m, n, k)
	checkRange("GemmNT64 rows", lo, hi, m)
	if lo == hi || n == 0 {
		return
	}
	need("GemmNT64", "a", len(a), m*k)
	need("GemmNT64", "w", len(w), n*k)
	need("GemmNT64", "c", len(c), m*n)
	gemmNTGeneric(c, a, w, n, k, lo, hi, 0, n, accumulate)
}

// GemmNN64 computes C[m×n] = A[m×k]·B[k×n] (+ C when accumulate).
func GemmNN64(c, a, b []float64, m, n, k int, accumulate bool) {
	GemmNNRange64(c, a, b, m, n, k, 0, m, accumulate)
}

// GemmNNRange64 computes rows [lo,hi) of GemmNN64.
func GemmNNRange64(c, a, b []float64, m, n, k, lo, hi int, accumulate bool) {
	checkDims("GemmNN64", m, n, k)
	checkRange("GemmNN64 rows", lo, hi, m)
	if lo == hi || n == 0 {
		return
	}
	need("GemmNN64", "a", len(a), m*k)
	need("GemmNN64", "b", len(b), k*n)
	need("GemmNN64", "c", len(c), m*n)
	gemmNNGeneric(c, a, b, n, k, lo, hi, accumulate)
}

// GemmTN64 computes C[m×n] = Aᵀ·B (+ C when accumulate) for A [k×m], B [k×n].
func GemmTN64(c, a, b []float64, m, n, k int, accumulate bool) {
	GemmTNRange64(c, a, b, m, n, k, 0, m, accumulate)
}

// GemmTNRange64 computes rows [lo,hi) of GemmTN64.
func GemmTNRange64(c, a, b []float64, m, n, k, lo, hi int, accumulate bool) {
	checkDims("GemmTN64", m, n, k)
	checkRange("GemmTN64 rows", lo, hi, m)
	if lo == hi || n == 0 {
		return
	}
	need("GemmTN64", "a", len(a), k*m)
	need("GemmTN64", "b", len(b), k*n)
	need("GemmTN64", "c", len(c), m*n)
	gemmTNGeneric(c, a, b, m, n, k, lo, hi, accumulate)
}
