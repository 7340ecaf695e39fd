//go:build goexperiment.simd && amd64

package kernels

import (
	"simd/archsimd"
	"unsafe"
)

// SIMD kernels written with simd/archsimd (GOEXPERIMENT=simd). The loops index through
// unsafe.Pointer after one up-front bounds check per call: slicing inside the loop costs more
// general-purpose registers than amd64 has and the compiler then spills in the hot loop.
// Tails (k not a multiple of the vector width) load from a zero-padded copy.
//
// Note for future work: the compiler uses 15 vector registers and only the 213 FMA form, so
// register-tile GEMM micro-kernels written with archsimd spill; the GEMM micro-kernel is
// assembly (gemm_amd64.s) instead.

const simdBuild = true

// simdLevel is what archsimd itself reports usable (AVX512 bundles F, CD, BW, DQ and VL).
func simdLevel() Level {
	switch {
	case archsimd.X86.AVX512():
		return AVX512
	case archsimd.X86.AVX2() && archsimd.X86.FMA():
		return AVX2
	}
	return Generic
}

func f32p(s []float32) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(s)) }

func ld16(p unsafe.Pointer, i int) archsimd.Float32x16 {
	return archsimd.LoadFloat32x16((*[16]float32)(unsafe.Add(p, i*4)))
}

func ld8(p unsafe.Pointer, i int) archsimd.Float32x8 {
	return archsimd.LoadFloat32x8((*[8]float32)(unsafe.Add(p, i*4)))
}

// Tails go through a zero-padded copy: archsimd's own …SlicePart loads convert a short slice to
// a full-width array pointer, which the race detector's checkptr rejects.

func part16(s []float32) archsimd.Float32x16 {
	var b [16]float32
	copy(b[:], s)
	return archsimd.LoadFloat32x16(&b)
}

func part8(s []float32) archsimd.Float32x8 {
	var b [8]float32
	copy(b[:], s)
	return archsimd.LoadFloat32x8(&b)
}

func padU16x8(s []uint16) *[8]uint16 {
	var b [8]uint16
	copy(b[:], s)
	return &b
}

func padI8x16(s []int8) *[16]int8 {
	var b [16]int8
	copy(b[:], s)
	return &b
}

func hsum16(v archsimd.Float32x16) float32 { return hsum8(v.GetLo().Add(v.GetHi())) }

func hsum8(v archsimd.Float32x8) float32 {
	q := v.GetLo().Add(v.GetHi())
	q = q.AddPairs(q)
	q = q.AddPairs(q)
	return q.GetElem(0)
}

// ---- AVX-512 ----

func dotAVX512(x, y []float32) float32 {
	n := len(x)
	y = y[:n]
	px, py := f32p(x), f32p(y)
	var a0, a1, a2, a3 archsimd.Float32x16
	i := 0
	for ; i+64 <= n; i += 64 {
		a0 = ld16(px, i).MulAdd(ld16(py, i), a0)
		a1 = ld16(px, i+16).MulAdd(ld16(py, i+16), a1)
		a2 = ld16(px, i+32).MulAdd(ld16(py, i+32), a2)
		a3 = ld16(px, i+48).MulAdd(ld16(py, i+48), a3)
	}
	for ; i+16 <= n; i += 16 {
		a0 = ld16(px, i).MulAdd(ld16(py, i), a0)
	}
	if i < n {
		a1 = part16(x[i:]).MulAdd(part16(y[i:]), a1)
	}
	return hsum16(a0.Add(a1).Add(a2.Add(a3)))
}

func axpyAVX512(a float32, x, y []float32) {
	n := len(x)
	y = y[:n]
	px, py := f32p(x), f32p(y)
	va := archsimd.BroadcastFloat32x16(a)
	i := 0
	for ; i+32 <= n; i += 32 {
		r0 := ld16(px, i).MulAdd(va, ld16(py, i))
		r1 := ld16(px, i+16).MulAdd(va, ld16(py, i+16))
		r0.Store((*[16]float32)(unsafe.Add(py, i*4)))
		r1.Store((*[16]float32)(unsafe.Add(py, (i+16)*4)))
	}
	for ; i+16 <= n; i += 16 {
		ld16(px, i).MulAdd(va, ld16(py, i)).Store((*[16]float32)(unsafe.Add(py, i*4)))
	}
	if i < n {
		v := part16(x[i:]).MulAdd(va, part16(y[i:]))
		var b [16]float32
		v.Store(&b)
		copy(y[i:], b[:])
	}
}

// ---- AVX2 ----

func dotAVX2(x, y []float32) float32 {
	n := len(x)
	y = y[:n]
	px, py := f32p(x), f32p(y)
	var a0, a1, a2, a3 archsimd.Float32x8
	i := 0
	for ; i+32 <= n; i += 32 {
		a0 = ld8(px, i).MulAdd(ld8(py, i), a0)
		a1 = ld8(px, i+8).MulAdd(ld8(py, i+8), a1)
		a2 = ld8(px, i+16).MulAdd(ld8(py, i+16), a2)
		a3 = ld8(px, i+24).MulAdd(ld8(py, i+24), a3)
	}
	for ; i+8 <= n; i += 8 {
		a0 = ld8(px, i).MulAdd(ld8(py, i), a0)
	}
	if i < n {
		a1 = part8(x[i:]).MulAdd(part8(y[i:]), a1)
	}
	return hsum8(a0.Add(a1).Add(a2.Add(a3)))
}

func axpyAVX2(a float32, x, y []float32) {
	n := len(x)
	y = y[:n]
	px, py := f32p(x), f32p(y)
	va := archsimd.BroadcastFloat32x8(a)
	i := 0
	for ; i+16 <= n; i += 16 {
		r0 := ld8(px, i).MulAdd(va, ld8(py, i))
		r1 := ld8(px, i+8).MulAdd(va, ld8(py, i+8))
		r0.Store((*[8]float32)(unsafe.Add(py, i*4)))
		r1.Store((*[8]float32)(unsafe.Add(py, (i+8)*4)))
	}
	for ; i+8 <= n; i += 8 {
		ld8(px, i).MulAdd(va, ld8(py, i)).Store((*[8]float32)(unsafe.Add(py, i*4)))
	}
	if i < n {
		v := part8(x[i:]).MulAdd(va, part8(y[i:]))
		var b [8]float32
		v.Store(&b)
		copy(y[i:], b[:])
	}
}

// ---- matrix–vector kernels ----
//
// Each product is split into small kernels (4 rows sharing each load of x, or 1 row) that run
// the vector loop over the first n = k rounded down to the vector width, and a vector tail on
// zero-padded copies. The kernels are kept out of line: inlined into the row loop, the
// compiler runs out of general-purpose registers and spills the loop counter. One accumulator
// per row is enough, the loop being bound by memory rather than FMA latency. A row's result is
// the same whichever kernel computes it, so it does not depend on how rows are split.

//go:noinline
func mv4I8AVX512(p0, px unsafe.Pointer, ld, n int) (s0, s1, s2, s3 float32) {
	p1 := unsafe.Add(p0, ld*1)
	p2 := unsafe.Add(p1, ld*1)
	p3 := unsafe.Add(p2, ld*1)
	var a0, a1, a2, a3 archsimd.Float32x16
	for p := 0; p < n; p += 16 {
		xv := ld16(px, p)
		a0 = ldI8x16(p0, p).MulAdd(xv, a0)
		a1 = ldI8x16(p1, p).MulAdd(xv, a1)
		a2 = ldI8x16(p2, p).MulAdd(xv, a2)
		a3 = ldI8x16(p3, p).MulAdd(xv, a3)
	}
	return hsum16(a0), hsum16(a1), hsum16(a2), hsum16(a3)
}

//go:noinline
func mv1I8AVX512(p0, px unsafe.Pointer, n int) float32 {
	var a0 archsimd.Float32x16
	for p := 0; p < n; p += 16 {
		a0 = ldI8x16(p0, p).MulAdd(ld16(px, p), a0)
	}
	return hsum16(a0)
}

// tailI8AVX512 is Σ w[p]·x[p] over the last < 16 elements.
func tailI8AVX512(w []int8, x []float32) float32 {
	if len(w) == 0 {
		return 0
	}
	return hsum16(i8Part16(w).Mul(part16(x)))
}

// matVecTI8AVX512 sets y[j] = scale[j]·(W[j,:]·x) for j in [lo,hi) (scale nil: 1).
func matVecTI8AVX512(y []float32, w []int8, scale, x []float32, k, lo, hi int) {
	x = x[:k]
	_ = w[hi*k-1]
	px := f32p(x)
	n := k &^ 15
	j := lo
	for ; j+4 <= hi; j += 4 {
		s0, s1, s2, s3 := mv4I8AVX512(unsafe.Pointer(&w[j*k]), px, k, n)
		y[j] = s0 + tailI8AVX512(w[j*k+n:j*k+k], x[n:])
		y[j+1] = s1 + tailI8AVX512(w[(j+1)*k+n:(j+1)*k+k], x[n:])
		y[j+2] = s2 + tailI8AVX512(w[(j+2)*k+n:(j+2)*k+k], x[n:])
		y[j+3] = s3 + tailI8AVX512(w[(j+3)*k+n:(j+3)*k+k], x[n:])
	}
	for ; j < hi; j++ {
		y[j] = mv1I8AVX512(unsafe.Pointer(&w[j*k]), px, n) + tailI8AVX512(w[j*k+n:j*k+k], x[n:])
	}
	if scale != nil {
		for j := lo; j < hi; j++ {
			y[j] *= scale[j]
		}
	}
}

//go:noinline
func mv4F32AVX2(p0, px unsafe.Pointer, ld, n int) (s0, s1, s2, s3 float32) {
	p1 := unsafe.Add(p0, ld*4)
	p2 := unsafe.Add(p1, ld*4)
	p3 := unsafe.Add(p2, ld*4)
	var a0, a1, a2, a3 archsimd.Float32x8
	for p := 0; p < n; p += 8 {
		xv := ld8(px, p)
		a0 = ld8(p0, p).MulAdd(xv, a0)
		a1 = ld8(p1, p).MulAdd(xv, a1)
		a2 = ld8(p2, p).MulAdd(xv, a2)
		a3 = ld8(p3, p).MulAdd(xv, a3)
	}
	return hsum8(a0), hsum8(a1), hsum8(a2), hsum8(a3)
}

//go:noinline
func mv1F32AVX2(p0, px unsafe.Pointer, n int) float32 {
	var a0 archsimd.Float32x8
	for p := 0; p < n; p += 8 {
		a0 = ld8(p0, p).MulAdd(ld8(px, p), a0)
	}
	return hsum8(a0)
}

// tailF32AVX2 is Σ w[p]·x[p] over the last < 8 elements.
func tailF32AVX2(w []float32, x []float32) float32 {
	if len(w) == 0 {
		return 0
	}
	return hsum8(part8(w).Mul(part8(x)))
}

// matVecTF32AVX2 sets y[j] = scale[j]·(W[j,:]·x) for j in [lo,hi) (scale nil: 1).
func matVecTF32AVX2(y []float32, w []float32, scale, x []float32, k, lo, hi int) {
	x = x[:k]
	_ = w[hi*k-1]
	px := f32p(x)
	n := k &^ 7
	j := lo
	for ; j+4 <= hi; j += 4 {
		s0, s1, s2, s3 := mv4F32AVX2(unsafe.Pointer(&w[j*k]), px, k, n)
		y[j] = s0 + tailF32AVX2(w[j*k+n:j*k+k], x[n:])
		y[j+1] = s1 + tailF32AVX2(w[(j+1)*k+n:(j+1)*k+k], x[n:])
		y[j+2] = s2 + tailF32AVX2(w[(j+2)*k+n:(j+2)*k+k], x[n:])
		y[j+3] = s3 + tailF32AVX2(w[(j+3)*k+n:(j+3)*k+k], x[n:])
	}
	for ; j < hi; j++ {
		y[j] = mv1F32AVX2(unsafe.Pointer(&w[j*k]), px, n) + tailF32AVX2(w[j*k+n:j*k+k], x[n:])
	}
	if scale != nil {
		for j := lo; j < hi; j++ {
			y[j] *= scale[j]
		}
	}
}

//go:noinline
func mv4BF16AVX2(p0, px unsafe.Pointer, ld, n int) (s0, s1, s2, s3 float32) {
	p1 := unsafe.Add(p0, ld*2)
	p2 := unsafe.Add(p1, ld*2)
	p3 := unsafe.Add(p2, ld*2)
	var a0, a1, a2, a3 archsimd.Float32x8
	for p := 0; p < n; p += 8 {
		xv := ld8(px, p)
		a0 = ldBF16x8(p0, p).MulAdd(xv, a0)
		a1 = ldBF16x8(p1, p).MulAdd(xv, a1)
		a2 = ldBF16x8(p2, p).MulAdd(xv, a2)
		a3 = ldBF16x8(p3, p).MulAdd(xv, a3)
	}
	return hsum8(a0), hsum8(a1), hsum8(a2), hsum8(a3)
}

//go:noinline
func mv1BF16AVX2(p0, px unsafe.Pointer, n int) float32 {
	var a0 archsimd.Float32x8
	for p := 0; p < n; p += 8 {
		a0 = ldBF16x8(p0, p).MulAdd(ld8(px, p), a0)
	}
	return hsum8(a0)
}

// tailBF16AVX2 is Σ w[p]·x[p] over the last < 8 elements.
func tailBF16AVX2(w []uint16, x []float32) float32 {
	if len(w) == 0 {
		return 0
	}
	return hsum8(bf16Part8(w).Mul(part8(x)))
}

// matVecTBF16AVX2 sets y[j] = scale[j]·(W[j,:]·x) for j in [lo,hi) (scale nil: 1).
func matVecTBF16AVX2x(y []float32, w []uint16, scale, x []float32, k, lo, hi int) {
	x = x[:k]
	_ = w[hi*k-1]
	px := f32p(x)
	n := k &^ 7
	j := lo
	for ; j+4 <= hi; j += 4 {
		s0, s1, s2, s3 := mv4BF16AVX2(unsafe.Pointer(&w[j*k]), px, k, n)
		y[j] = s0 + tailBF16AVX2(w[j*k+n:j*k+k], x[n:])
		y[j+1] = s1 + tailBF16AVX2(w[(j+1)*k+n:(j+1)*k+k], x[n:])
		y[j+2] = s2 + tailBF16AVX2(w[(j+2)*k+n:(j+2)*k+k], x[n:])
		y[j+3] = s3 + tailBF16AVX2(w[(j+3)*k+n:(j+3)*k+k], x[n:])
	}
	for ; j < hi; j++ {
		y[j] = mv1BF16AVX2(unsafe.Pointer(&w[j*k]), px, n) + tailBF16AVX2(w[j*k+n:j*k+k], x[n:])
	}
	if scale != nil {
		for j := lo; j < hi; j++ {
			y[j] *= scale[j]
		}
	}
}

// The AVX2 int8 kernels take 16 bytes per step (VPMOVSXBW, then two 8-lane halves), so every
// load stays inside the row.

//go:noinline
func mv4I8AVX2(p0, px unsafe.Pointer, ld, n int) (s0, s1, s2, s3 float32) {
	p1 := unsafe.Add(p0, ld)
	p2 := unsafe.Add(p1, ld)
	p3 := unsafe.Add(p2, ld)
	var a0, a1, a2, a3 archsimd.Float32x8
	for p := 0; p < n; p += 16 {
		xl, xh := ld8(px, p), ld8(px, p+8)
		l, h := ldI8Pair(p0, p)
		a0 = h.MulAdd(xh, l.MulAdd(xl, a0))
		l, h = ldI8Pair(p1, p)
		a1 = h.MulAdd(xh, l.MulAdd(xl, a1))
		l, h = ldI8Pair(p2, p)
		a2 = h.MulAdd(xh, l.MulAdd(xl, a2))
		l, h = ldI8Pair(p3, p)
		a3 = h.MulAdd(xh, l.MulAdd(xl, a3))
	}
	return hsum8(a0), hsum8(a1), hsum8(a2), hsum8(a3)
}

//go:noinline
func mv1I8AVX2(p0, px unsafe.Pointer, n int) float32 {
	var a0 archsimd.Float32x8
	for p := 0; p < n; p += 16 {
		l, h := ldI8Pair(p0, p)
		a0 = h.MulAdd(ld8(px, p+8), l.MulAdd(ld8(px, p), a0))
	}
	return hsum8(a0)
}

// tailI8AVX2 is Σ w[p]·x[p] over the last < 16 elements.
func tailI8AVX2(w []int8, x []float32) float32 {
	if len(w) == 0 {
		return 0
	}
	l, h := i8Pair(archsimd.LoadInt8x16(padI8x16(w)))
	var xb [16]float32
	copy(xb[:], x)
	return hsum8(h.MulAdd(archsimd.LoadFloat32x8((*[8]float32)(xb[8:])), l.Mul(archsimd.LoadFloat32x8((*[8]float32)(xb[:8])))))
}

func ldI8Pair(p unsafe.Pointer, i int) (lo, hi archsimd.Float32x8) {
	return i8Pair(archsimd.LoadInt8x16((*[16]int8)(unsafe.Add(p, i))))
}

// i8Pair widens 16 int8 to two 8 × float32 (VPMOVSXBW, VPMOVSXWD, VCVTDQ2PS).
func i8Pair(v archsimd.Int8x16) (lo, hi archsimd.Float32x8) {
	w := v.ExtendToInt16()
	return w.GetLo().ExtendToInt32().ConvertToFloat32(), w.GetHi().ExtendToInt32().ConvertToFloat32()
}

// matVecTI8AVX2 sets y[j] = scale[j]·(W[j,:]·x) for j in [lo,hi) (scale nil: 1).
func matVecTI8AVX2(y []float32, w []int8, scale, x []float32, k, lo, hi int) {
	x = x[:k]
	_ = w[hi*k-1]
	px := f32p(x)
	n := k &^ 15
	j := lo
	for ; j+4 <= hi; j += 4 {
		s0, s1, s2, s3 := mv4I8AVX2(unsafe.Pointer(&w[j*k]), px, k, n)
		y[j] = s0 + tailI8AVX2(w[j*k+n:j*k+k], x[n:])
		y[j+1] = s1 + tailI8AVX2(w[(j+1)*k+n:(j+1)*k+k], x[n:])
		y[j+2] = s2 + tailI8AVX2(w[(j+2)*k+n:(j+2)*k+k], x[n:])
		y[j+3] = s3 + tailI8AVX2(w[(j+3)*k+n:(j+3)*k+k], x[n:])
	}
	for ; j < hi; j++ {
		y[j] = mv1I8AVX2(unsafe.Pointer(&w[j*k]), px, n) + tailI8AVX2(w[j*k+n:j*k+k], x[n:])
	}
	if scale != nil {
		for j := lo; j < hi; j++ {
			y[j] *= scale[j]
		}
	}
}

func ldBF16x8(p unsafe.Pointer, i int) archsimd.Float32x8 {
	return archsimd.LoadUint16x8((*[8]uint16)(unsafe.Add(p, i*2))).ExtendToUint32().ShiftAllLeft(16).AsFloat32x8()
}

func bf16Part8(s []uint16) archsimd.Float32x8 {
	return archsimd.LoadUint16x8(padU16x8(s)).ExtendToUint32().ShiftAllLeft(16).AsFloat32x8()
}

func ldI8x16(p unsafe.Pointer, i int) archsimd.Float32x16 {
	return archsimd.LoadInt8x16((*[16]int8)(unsafe.Add(p, i))).ExtendToInt32().ConvertToFloat32()
}

func i8Part16(s []int8) archsimd.Float32x16 {
	return archsimd.LoadInt8x16(padI8x16(s)).ExtendToInt32().ConvertToFloat32()
}

// Entry points used by the dispatch in kernels.go and quant.go.

func matVecTAVX2(y, w, x []float32, k, lo, hi int) { matVecTF32AVX2(y, w, nil, x, k, lo, hi) }

func matVecTBF16AVX2(y []float32, w []uint16, x []float32, k, lo, hi int) {
	matVecTBF16AVX2x(y, w, nil, x, k, lo, hi)
}

func matVecTInt8AVX512(y []float32, w []int8, scale, x []float32, k, lo, hi int) {
	matVecTI8AVX512(y, w, scale, x, k, lo, hi)
}

func matVecTInt8AVX2(y []float32, w []int8, scale, x []float32, k, lo, hi int) {
	matVecTI8AVX2(y, w, scale, x, k, lo, hi)
}
