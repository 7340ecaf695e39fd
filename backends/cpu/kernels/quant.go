package kernels

import (
	"fmt"
	"math"
	"sync"
)

// Quantised weights for decode. Decode is a stream of matrix–vector products bound by memory
// bandwidth, so storing W in 16 or 8 bits makes it up to 2× or 4× faster. The products always
// accumulate in float32, against a float32 x.

// BF16Matrix is a row-major [N×K] matrix of bfloat16 values (the top 16 bits of a float32).
type BF16Matrix struct {
	N, K int
	Data []uint16
}

// NewBF16Matrix rounds a row-major float32 [n×k] matrix to bfloat16 (round to nearest, ties to
// even; NaN stays NaN).
func NewBF16Matrix(w []float32, n, k int) BF16Matrix {
	checkDims("NewBF16Matrix", n, k)
	need("NewBF16Matrix", "w", len(w), n*k)
	d := make([]uint16, n*k)
	for i, v := range w[:n*k] {
		d[i] = ToBF16(v)
	}
	return BF16Matrix{N: n, K: k, Data: d}
}

// ToBF16 rounds f to bfloat16 bits (nearest, ties to even).
func ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: keep it a (quiet) NaN
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// FromBF16 widens bfloat16 bits to float32 (exact).
func FromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// Dequantize writes the float32 value of every element into dst ([N×K]).
func (m BF16Matrix) Dequantize(dst []float32) {
	need("BF16Matrix.Dequantize", "dst", len(dst), m.N*m.K)
	for i, h := range m.Data[:m.N*m.K] {
		dst[i] = FromBF16(h)
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
func MatVecTBF16(y []float32, w BF16Matrix, x []float32, lo, hi int) {
	w.check("MatVecTBF16", y, x, lo, hi)
	if lo == hi {
		return
	}
	if w.K == 0 {
		clear(y[lo:hi])
		return
	}
	switch vecLevel {
	case AVX512:
		matVecTBF16AVX512(y, w.Data, x, w.K, lo, hi)
	case AVX2:
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
			s0 += FromBF16(row[p]) * x[p]
			s1 += FromBF16(row[p+1]) * x[p+1]
			s2 += FromBF16(row[p+2]) * x[p+2]
			s3 += FromBF16(row[p+3]) * x[p+3]
		}
		for ; p < k; p++ {
			s0 += FromBF16(row[p]) * x[p]
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

// NewInt8Matrix quantises a row-major float32 [n×k] matrix: each row is scaled so its largest
// magnitude maps to 127 and rounded to nearest (an all-zero row gets scale 0). It panics if a
// row holds an Inf or NaN, which no scale can represent.
func NewInt8Matrix(w []float32, n, k int) Int8Matrix {
	checkDims("NewInt8Matrix", n, k)
	need("NewInt8Matrix", "w", len(w), n*k)
	q := Int8Matrix{N: n, K: k, Data: make([]int8, n*k), Scale: make([]float32, n)}
	for j := 0; j < n; j++ {
		row := w[j*k : j*k+k]
		var amax float32
		for _, v := range row {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		if amax == 0 || math.IsInf(float64(amax), 0) || amax != amax {
			if amax != 0 {
				panic(fmt.Sprintf("kernels: NewInt8Matrix: row %d holds a non-finite value", j))
			}
			continue
		}
		s := amax / 127
		q.Scale[j] = s
		inv := 1 / float64(s)
		d := q.Data[j*k : j*k+k]
		for p, v := range row {
			r := math.RoundToEven(float64(v) * inv)
			d[p] = int8(max(-127, min(127, r)))
		}
	}
	return q
}

// Dequantize writes Scale[j]·Data[j,p] into dst ([N×K]).
func (m Int8Matrix) Dequantize(dst []float32) {
	need("Int8Matrix.Dequantize", "dst", len(dst), m.N*m.K)
	for j := 0; j < m.N; j++ {
		s := m.Scale[j]
		for p, v := range m.Data[j*m.K : j*m.K+m.K] {
			dst[j*m.K+p] = s * float32(v)
		}
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
// registers, accumulating in float32).
func MatVecTInt8(y []float32, w Int8Matrix, x []float32, lo, hi int) {
	w.check("MatVecTInt8", y, x, lo, hi)
	if lo == hi {
		return
	}
	if w.K == 0 {
		clear(y[lo:hi])
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

// NewF16Matrix rounds a row-major float32 [n×k] matrix to float16 (nearest, ties to even;
// magnitudes beyond 65504 become ±Inf).
func NewF16Matrix(w []float32, n, k int) F16Matrix {
	checkDims("NewF16Matrix", n, k)
	need("NewF16Matrix", "w", len(w), n*k)
	d := make([]uint16, n*k)
	for i, v := range w[:n*k] {
		d[i] = ToF16(v)
	}
	return F16Matrix{N: n, K: k, Data: d}
}

// ToF16 rounds f to IEEE half-precision bits (nearest, ties to even).
func ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	man := b & 0x7fffff
	switch {
	case exp == 0xff: // Inf or NaN
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp > 127+15: // overflow
		return sign | 0x7c00
	case exp >= 127-14: // normal half
		h := uint32(exp-127+15)<<10 | man>>13
		rest := man & 0x1fff
		if rest > 0x1000 || rest == 0x1000 && h&1 == 1 {
			h++ // may carry into the exponent, up to Inf: correct
		}
		return sign | uint16(h)
	case exp >= 127-25: // subnormal half
		// f = m·2^(exp-150) with m the 24-bit significand; a subnormal half is h·2^-24.
		m := man | 0x800000
		shift := uint(126 - exp) // 14…24
		h := m >> shift
		rest := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rest > half || rest == half && h&1 == 1 {
			h++
		}
		return sign | uint16(h)
	}
	return sign
}

var f16Table = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = fromF16Slow(uint16(i))
	}
	return &t
})

func fromF16Slow(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		v := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
}

// FromF16 widens half-precision bits to float32 (exact).
func FromF16(h uint16) float32 { return f16Table()[h] }

// Dequantize writes the float32 value of every element into dst ([N×K]).
func (m F16Matrix) Dequantize(dst []float32) {
	need("F16Matrix.Dequantize", "dst", len(dst), m.N*m.K)
	t := f16Table()
	for i, h := range m.Data[:m.N*m.K] {
		dst[i] = t[h]
	}
}

// MatVecTF16 sets y[j] = Σ_p W[j,p]·x[p] for rows j in [lo,hi), accumulating in float32.
// The conversion is VCVTPH2PS (assembly, F16C) on AVX2/AVX-512 CPUs in every build, a
// 256 KiB table elsewhere.
func MatVecTF16(y []float32, w F16Matrix, x []float32, lo, hi int) {
	fn := "MatVecTF16"
	checkDims(fn, w.N, w.K)
	need(fn, "Data", len(w.Data), w.N*w.K)
	checkRange(fn, lo, hi, w.N)
	need(fn, "y", len(y), hi)
	need(fn, "x", len(x), w.K)
	k := w.K
	x = x[:k]
	var dot func(n int, w *uint16, x *float32) float32
	step := 0
	switch gemmLevel {
	case AVX512:
		dot, step = dotF16AVX512, 64
	case AVX2:
		dot, step = dotF16AVX2, 32
	}
	if dot == nil || k < step {
		matVecTF16Generic(y, w.Data, x, k, lo, hi)
		return
	}
	main := k / step * step
	for j := lo; j < hi; j++ {
		row := w.Data[j*k : j*k+k]
		s := dot(main, &row[0], &x[0])
		for p := main; p < k; p++ {
			s += fromF16Slow(row[p]) * x[p]
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
