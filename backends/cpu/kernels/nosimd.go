//go:build !(goexperiment.simd && amd64)

package kernels

// Without GOEXPERIMENT=simd (or off amd64) the vector kernels are the portable Go loops; the
// GEMM micro-kernels are still assembly on amd64 (see gemm_amd64.s).

const simdBuild = false

func simdLevel() Level { return Generic }

func dotAVX512(x, y []float32) float32             { return dotGeneric(x, y) }
func axpyAVX512(a float32, x, y []float32)         { axpyGeneric(a, x, y) }
func dotAVX2(x, y []float32) float32               { return dotGeneric(x, y) }
func axpyAVX2(a float32, x, y []float32)           { axpyGeneric(a, x, y) }
func matVecTAVX2(y, w, x []float32, k, lo, hi int) { matVecTGeneric(y, w, x, k, lo, hi) }

func matVecTBF16AVX2(y []float32, w []uint16, x []float32, k, lo, hi int) {
	matVecTBF16Generic(y, w, x, k, lo, hi)
}

func matVecTInt8AVX512(y []float32, w []int8, scale, x []float32, k, lo, hi int) {
	matVecTInt8Generic(y, w, scale, x, k, lo, hi)
}

func matVecTInt8AVX2(y []float32, w []int8, scale, x []float32, k, lo, hi int) {
	matVecTInt8Generic(y, w, scale, x, k, lo, hi)
}
