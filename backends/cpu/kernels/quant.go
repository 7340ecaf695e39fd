package kernels

import (
	"fmt"
	"sync"

	"github.com/mamba2go/mamba2/quant"
)

// Quantised weights for decode. Decode is a stream of matrix–vector products bound by memory
// bandwidth, so storing W in 16 or 8 bits makes it up to 2× or 4× faster. The products always
// accumulate in float32, against a float32 x. The encodings themselves are package quant's.

// BF16Matrix is a row-major [N×K] matrix of bfloat16 values (the top 16 bits of a float32).
type BF16Matrix struct {
	N, K int
	Data []uint16
}

// NewBF16Matrix rounds a row-major float32 [n×k] matrix to bfloat16 (quant.ToBF16: round to
// nearest, ties to even; NaN stays NaN).
func NewBF16Matrix(w []float32, n, k int) BF16Matrix {
	checkDims("NewBF16Matrix", n, k)
	need("NewBF16Matrix", "w", len(w), n*k)
	d := make([]uint16, n*k)
	must("NewBF16Matrix", quant.BF16FromFloat32(d, w[:n*k]))
	return BF16Matrix{N: n, K: k, Data: d}
}

// Dequantize writes the float32 value of every element into dst ([N×K]).
func (m BF16Matrix) Dequantize(dst []float32) {
	need("BF16Matrix.Dequantize", "dst", len(dst), m.N*m.K)
	must("BF16Matrix.Dequantize", quant.DequantizeBF16(dst[:m.N*m.K], m.Data[:m.N*m.K]))
}

// must turns an error of package quant (sizes that the checks above already ruled out, or a
// non-finite value for int8) into the panic this package reports misuse with.
func must(fn string, err error) {
	if err != nil {
		panic(fmt.Sprintf("kernels: %s: %v", fn, err))
	}
}

func (m BF16Matrix) check(fn string, y, x []float32, lo, hi int) {
	checkDims(fn, m.N, m.K)
	need(fn, "Data", len(m.Data), m.N*m.K)
	checkRange(fn, lo, hi, m.N)
	need(fn, "y", len(y), hi)
	need(fn, "x", len(x), m.K)
}

// MatVecTBF16 sets y[j] = Σ_p W[j,p]·x[p] for rows j in [lo,hi), accumulating in float32.
// Rows of at least 16 elements take the four-row assembly kernels on AVX-512 CPUs and rows of at
// least 32 an assembly dot product on AVX2 ones, in every amd64 build; others the archsimd or
// generic loops.
func MatVecTBF16(y []float32, w BF16Matrix, x []float32, lo, hi int) {
	w.check("MatVecTBF16", y, x, lo, hi)
	if lo == hi {
		return
	}
	if w.K == 0 {
		clear(y[lo:hi])
		return
	}
	if useMV4(w.K) {
		matVecT4(y, w.Data, x, w.K, lo, hi, mv4BF16, quant.BF16ToFloat32)
		return
	}
	if gemmLevel == AVX2 && w.K >= 32 {
		matVecTAsm(y, w.Data, nil, x, w.K, lo, hi, dotBF16AVX2, 32, quant.BF16ToFloat32)
		return
	}
	switch vecLevel {
	case AVX512, AVX2: // on AVX-512 CPUs only rows shorter than 16 elements
		matVecTBF16AVX2(y, w.Data, x, w.K, lo, hi)
	default:
		matVecTBF16Generic(y, w.Data, x, w.K, lo, hi)
	}
}

func matVecTBF16Generic(y []float32, w []uint16, x []float32, k, lo, hi int) {
	x = x[:k]
	for j := lo; j < hi; j++ {
		row := w[j*k : j*k+k]
		var s0, s1, s2, s3 float32
		p := 0
		for ; p+4 <= k; p += 4 {
			s0 += quant.BF16ToFloat32(row[p]) * x[p]
			s1 += quant.BF16ToFloat32(row[p+1]) * x[p+1]
			s2 += quant.BF16ToFloat32(row[p+2]) * x[p+2]
			s3 += quant.BF16ToFloat32(row[p+3]) * x[p+3]
		}
		for ; p < k; p++ {
			s0 += quant.BF16ToFloat32(row[p]) * x[p]
		}
		y[j] = (s0 + s1) + (s2 + s3)
	}
}

// Int8Matrix is a row-major [N×K] matrix of int8 values with one float32 scale per row:
// W[j,p] ≈ Scale[j]·Data[j·K+p] (symmetric, per-row absmax).
type Int8Matrix struct {
	N, K  int
	Data  []int8
	Scale []float32
}

// NewInt8Matrix quantises a row-major float32 [n×k] matrix with quant.Int8Rows: each row is
// scaled so its largest magnitude maps to 127 and rounded to nearest (an all-zero row gets
// scale 0). It panics if a row holds an Inf or NaN, which no scale can represent.
func NewInt8Matrix(w []float32, n, k int) Int8Matrix {
	checkDims("NewInt8Matrix", n, k)
	need("NewInt8Matrix", "w", len(w), n*k)
	q := Int8Matrix{N: n, K: k, Data: make([]int8, n*k), Scale: make([]float32, n)}
	if n > 0 && k > 0 {
		must("NewInt8Matrix", quant.Int8Rows(q.Data, q.Scale, w[:n*k], k))
	}
	return q
}

// Dequantize writes Scale[j]·Data[j,p] into dst ([N×K]).
func (m Int8Matrix) Dequantize(dst []float32) {
	need("Int8Matrix.Dequantize", "dst", len(dst), m.N*m.K)
	if m.N > 0 && m.K > 0 {
		must("Int8Matrix.Dequantize", quant.DequantizeInt8Rows(dst[:m.N*m.K], m.Data[:m.N*m.K], m.Scale[:m.N], m.K))
	}
}

func (m Int8Matrix) check(fn string, y, x []float32, lo, hi int) {
	checkDims(fn, m.N, m.K)
	need(fn, "Data", len(m.Data), m.N*m.K)
	need(fn, "Scale", len(m.Scale), m.N)
	checkRange(fn, lo, hi, m.N)
	need(fn, "y", len(y), hi)
	need(fn, "x", len(x), m.K)
}

// MatVecTInt8 sets y[j] = Scale[j]·Σ_p Data[j,p]·x[p] for rows j in [lo,hi) (dequantising in
// registers, accumulating in float32), with the same choice of kernels as MatVecTBF16.
func MatVecTInt8(y []float32, w Int8Matrix, x []float32, lo, hi int) {
	w.check("MatVecTInt8", y, x, lo, hi)
	if lo == hi {
		return
	}
	if w.K == 0 {
		clear(y[lo:hi])
		return
	}
	if dot, step := asmDot(dotI8AVX512, dotI8AVX2); dot != nil && w.K >= step {
		matVecTAsm(y, w.Data, w.Scale, x, w.K, lo, hi, dot, step, func(v int8) float32 { return float32(v) })
		return
	}
	switch vecLevel {
	case AVX512:
		matVecTInt8AVX512(y, w.Data, w.Scale, x, w.K, lo, hi)
	case AVX2:
		matVecTInt8AVX2(y, w.Data, w.Scale, x, w.K, lo, hi)
	default:
		matVecTInt8Generic(y, w.Data, w.Scale, x, w.K, lo, hi)
	}
}

func matVecTInt8Generic(y []float32, w []int8, scale, x []float32, k, lo, hi int) {
	x = x[:k]
	for j := lo; j < hi; j++ {
		row := w[j*k : j*k+k]
		var s0, s1, s2, s3 float32
		p := 0
		for ; p+4 <= k; p += 4 {
			s0 += float32(row[p]) * x[p]
			s1 += float32(row[p+1]) * x[p+1]
			s2 += float32(row[p+2]) * x[p+2]
			s3 += float32(row[p+3]) * x[p+3]
		}
		for ; p < k; p++ {
			s0 += float32(row[p]) * x[p]
		}
		y[j] = scale[j] * ((s0 + s1) + (s2 + s3))
	}
}

// F16Matrix is a row-major [N×K] matrix of IEEE 754 half-precision values.
type F16Matrix struct {
	N, K int
	Data []uint16
}

// NewF16Matrix rounds a row-major float32 [n×k] matrix to float16 (quant.ToF16: nearest, ties
// to even; magnitudes beyond 65504 become ±Inf).
func NewF16Matrix(w []float32, n, k int) F16Matrix {
	checkDims("NewF16Matrix", n, k)
	need("NewF16Matrix", "w", len(w), n*k)
	d := make([]uint16, n*k)
	must("NewF16Matrix", quant.F16FromFloat32(d, w[:n*k]))
	return F16Matrix{N: n, K: k, Data: d}
}

// f16Table caches quant.F16ToFloat32 for every half value (256 KiB), for the portable mat-vec
// loop where a load beats the branches of the conversion.
var f16Table = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = quant.F16ToFloat32(uint16(i))
	}
	return &t
})

// Dequantize writes the float32 value of every element into dst ([N×K]).
func (m F16Matrix) Dequantize(dst []float32) {
	need("F16Matrix.Dequantize", "dst", len(dst), m.N*m.K)
	must("F16Matrix.Dequantize", quant.DequantizeF16(dst[:m.N*m.K], m.Data[:m.N*m.K]))
}

// MatVecTF16 sets y[j] = Σ_p W[j,p]·x[p] for rows j in [lo,hi), accumulating in float32.
// The conversion is VCVTPH2PS (assembly, F16C) in every build: the four-row kernels on AVX-512
// CPUs for rows of at least 16 elements, a one-row dot product on AVX2 ones for rows of at least
// 32; a 256 KiB table elsewhere.
func MatVecTF16(y []float32, w F16Matrix, x []float32, lo, hi int) {
	fn := "MatVecTF16"
	checkDims(fn, w.N, w.K)
	need(fn, "Data", len(w.Data), w.N*w.K)
	checkRange(fn, lo, hi, w.N)
	need(fn, "y", len(y), hi)
	need(fn, "x", len(x), w.K)
	if useMV4(w.K) {
		matVecT4(y, w.Data, x, w.K, lo, hi, mv4F16, quant.F16ToFloat32)
		return
	}
	if gemmLevel == AVX2 && w.K >= 32 {
		matVecTAsm(y, w.Data, nil, x, w.K, lo, hi, dotF16AVX2, 32, quant.F16ToFloat32)
		return
	}
	matVecTF16Generic(y, w.Data, x[:w.K], w.K, lo, hi)
}

// asmDot returns the assembly dot product of the GEMM level in use and the multiple of
// elements it takes, or nil (another CPU, or off amd64).
func asmDot[T uint16 | int8 | float32](avx512, avx2 func(n int, w *T, x *float32) float32) (func(n int, w *T, x *float32) float32, int) {
	switch gemmLevel {
	case AVX512:
		return avx512, 64
	case AVX2:
		return avx2, 32
	}
	return nil, 0
}

// matVecTAsm sets y[j] = scale[j]·Σ_p widen(W[j,p])·x[p] for the rows j in [lo,hi) of a [·×k]
// W (scale nil: 1), with dot over the first k/step·step elements of each row and widen for the
// rest. One row at a time: a single sequential stream per row keeps the hardware prefetcher
// ahead, which measured faster for 8- and 16-bit weights than interleaving four rows without
// software prefetching (AVX-512 CPUs take the four-row kernels of mv4.go, which also read one
// row after another). The callers have checked the sizes; k ≥ step.
func matVecTAsm[T uint16 | int8 | float32](y []float32, w []T, scale, x []float32, k, lo, hi int,
	dot func(n int, w *T, x *float32) float32, step int, widen func(T) float32) {
	main := k / step * step
	x = x[:k]
	for j := lo; j < hi; j++ {
		row := w[j*k : j*k+k]
		s := dot(main, &row[0], &x[0])
		for p := main; p < k; p++ {
			s += widen(row[p]) * x[p]
		}
		if scale != nil {
			s *= scale[j]
		}
		y[j] = s
	}
}

func matVecTF16Generic(y []float32, w []uint16, x []float32, k, lo, hi int) {
	t := f16Table()
	for j := lo; j < hi; j++ {
		row := w[j*k : j*k+k]
		var s0, s1, s2, s3 float32
		p := 0
		for ; p+4 <= k; p += 4 {
			s0 += t[row[p]] * x[p]
			s1 += t[row[p+1]] * x[p+1]
			s2 += t[row[p+2]] * x[p+2]
			s3 += t[row[p+3]] * x[p+3]
		}
		for ; p < k; p++ {
			s0 += t[row[p]] * x[p]
		}
		y[j] = (s0 + s1) + (s2 + s3)
	}
}

// ---------------------------------------------------------------- dequantising panels

// DequantizeRows writes the float32 values of the rows [lo,hi) of W into dst[:(hi−lo)·K]: the
// panels of W that a prefill product hands to the float32 GEMM. On AVX2/AVX-512 CPUs it widens
// with assembly in every build (the portable conversions of package quant run at about one
// element per ns, too slow next to a GEMM of a few dozen rows); results are bitwise those of
// package quant.
func (m BF16Matrix) DequantizeRows(dst []float32, lo, hi int) {
	dequantRows16("BF16Matrix.DequantizeRows", m.N, m.K, m.Data, dst, lo, hi,
		asmWiden(widenBF16AVX512, widenBF16AVX2), quant.DequantizeBF16)
}

// DequantizeRows is BF16Matrix.DequantizeRows for float16.
func (m F16Matrix) DequantizeRows(dst []float32, lo, hi int) {
	dequantRows16("F16Matrix.DequantizeRows", m.N, m.K, m.Data, dst, lo, hi,
		asmWiden(widenF16AVX512, widenF16AVX2), quant.DequantizeF16)
}

// dequantRows16 is DequantizeRows of a 16-bit format: rows are contiguous and unscaled, so the
// whole range is widened at once.
func dequantRows16(fn string, n, k int, data []uint16, dst []float32, lo, hi int,
	fast widenFunc[uint16], slow func(dst []float32, src []uint16) error) {
	checkDims(fn, n, k)
	checkRange(fn, lo, hi, n)
	need(fn, "Data", len(data), n*k)
	need(fn, "dst", len(dst), (hi-lo)*k)
	widen(fn, dst, data[lo*k:hi*k], 1, fast, slow)
}

// DequantizeRows is BF16Matrix.DequantizeRows for int8: Scale[j]·Data[j,p].
func (m Int8Matrix) DequantizeRows(dst []float32, lo, hi int) {
	const fn = "Int8Matrix.DequantizeRows"
	checkDims(fn, m.N, m.K)
	checkRange(fn, lo, hi, m.N)
	need(fn, "Data", len(m.Data), m.N*m.K)
	need(fn, "Scale", len(m.Scale), m.N)
	need(fn, "dst", len(dst), (hi-lo)*m.K)
	fast := asmWiden(widenI8AVX512, widenI8AVX2)
	k := m.K
	for j := lo; j < hi; j++ {
		widen(fn, dst[(j-lo)*k:(j-lo+1)*k], m.Data[j*k:j*k+k], m.Scale[j], fast, func(d []float32, s []int8) error {
			return quant.DequantizeInt8Rows(d, s, m.Scale[j:j+1], len(s))
		})
	}
}

// widenFunc is an assembly widening loop (see cpu_amd64.go) and the multiple of elements it
// takes.
type widenFunc[T uint16 | int8] struct {
	fn   func(n int, w *T, dst *float32, scale float32)
	step int
}

// asmWiden returns the assembly widening loop of the GEMM level in use (fn nil: none).
func asmWiden[T uint16 | int8](avx512, avx2 func(n int, w *T, dst *float32, scale float32)) widenFunc[T] {
	switch gemmLevel {
	case AVX512:
		return widenFunc[T]{avx512, 64}
	case AVX2:
		return widenFunc[T]{avx2, 32}
	}
	return widenFunc[T]{}
}

// widen sets dst[p] to the value of src[p] (times scale for int8): the multiple of fast.step in
// assembly, the rest (or all, without assembly) with slow, whose error (sizes the callers have
// checked) panics naming fn.
func widen[T uint16 | int8](fn string, dst []float32, src []T, scale float32, fast widenFunc[T],
	slow func(dst []float32, src []T) error) {
	main := 0
	if fast.fn != nil {
		main = len(src) / fast.step * fast.step
	}
	if main > 0 {
		fast.fn(main, &src[0], &dst[0], scale)
	}
	if main < len(src) {
		must(fn, slow(dst[main:len(src)], src[main:]))
	}
}
