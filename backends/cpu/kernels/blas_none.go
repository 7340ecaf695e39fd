//go:build !((linux || darwin) && (amd64 || arm64) && !android && !ios && !faketime)

package kernels

// No run-time loader for this platform: BLAS() reports false and everything runs in Go.

var blasLib struct{ name string }

func blasLoaded() bool { return false }

func sgemmRowMajor(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	panic("kernels: no BLAS on this platform")
}

func sgemvRowMajor(transA bool, m, n int, alpha float32, a []float32, lda int, x []float32, beta float32, y []float32) {
	panic("kernels: no BLAS on this platform")
}

func blasSetThreads(n int) {}

func blasThreads() int { return 0 }
