//go:build !amd64

package kernels

func detectCPU() (avx2, avx512 bool) { return false, false }

func detectVNNI() bool { return false }

// Never called off amd64 (the levels stay Generic).
var (
	sgemmAVX512P, sgemmAVX512R, sgemmAVX2P, sgemmAVX2R           microKernel
	transpose16x16AVX512, transpose8x8AVX2                       transposer
	dotF16AVX2, dotBF16AVX2                                      func(n int, w *uint16, x *float32) float32
	dotI8AVX512, dotI8AVX2                                       func(n int, w *int8, x *float32) float32
	dotF32AVX512, dotF32AVX2                                     func(n int, w *float32, x *float32) float32
	widenF16AVX512, widenF16AVX2, widenBF16AVX512, widenBF16AVX2 func(n int, w *uint16, dst *float32, scale float32)
	widenI8AVX512, widenI8AVX2                                   func(n int, w *int8, dst *float32, scale float32)
	asm4F32                                                      func(n int, w *float32, ldw int, x *float32, out *[4]float32)
	asm4BF16, asm4F16                                            func(n int, w *uint16, ldw int, x *float32, out *[4]float32)
	q16RoundAVX512                                               func(nblocks int, x *float32, q *int16, scale *float32, deq *float32)
	dotQ16P4                                                     func(n int, w *int8, ldw int, xp *int16, sp *float32, out *[4]float32)
	ssmStepRowsAVX512                                            func(n, rows int, o, s, x, y, b, c *float32, decay, dt, d float32)
)
