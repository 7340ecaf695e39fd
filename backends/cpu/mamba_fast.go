package cpu

import (
	"math"
	"unsafe"

	"github.com/mamba2go/mamba2/backends/cpu/kernels"
)

// Helpers of the Mamba kernels: GEMMs on the buffer type (package kernels for float32, its plain
// Go float64 variants otherwise) and the small vector loops around them (SIMD for float32 when
// built with GOEXPERIMENT=simd, see mamba_fast_simd.go). None of them allocates.

// mambaDecay is e^v computed in float64 and rounded to the buffer type, flushed to zero below
// 2^−60 for float32 (2^−500 for float64). It is for decay factors at most 1 that multiply sums
// of order one: dropping such a term changes nothing at the buffer's precision, while keeping it
// lets products of two factors reach the subnormal range, which some CPUs compute a hundred
// times slower.
func mambaDecay[T Float](v T) T {
	cut := -346.5 // ln 2^−500
	if unsafe.Sizeof(v) == 4 {
		cut = -41.5 // ln 2^−60
	}
	if float64(v) < cut {
		return 0
	}
	return T(math.Exp(float64(v)))
}

// mmNT sets rows [0,m) of C[m×n] = A[m×k]·W[n×k]ᵀ (+ C when acc).
func mmNT[T Float](c, a, w []T, m, n, k int, acc bool) {
	switch cv := any(c).(type) {
	case []float32:
		kernels.GemmNTRange(cv, any(a).([]float32), any(w).([]float32), m, n, k, 0, m, acc)
	case []float64:
		kernels.GemmNTRange64(cv, any(a).([]float64), any(w).([]float64), m, n, k, 0, m, acc)
	}
}

// mmNTBlock sets the block rows [i0,i1) × columns [j0,j1) of C[m×n] = A[m×k]·W[n×k]ᵀ.
func mmNTBlock[T Float](c, a, w []T, m, n, k, i0, i1, j0, j1 int) {
	switch cv := any(c).(type) {
	case []float32:
		kernels.GemmNTBlock(cv, any(a).([]float32), any(w).([]float32), m, n, k, i0, i1, j0, j1, false)
	case []float64:
		av, wv := any(a).([]float64), any(w).([]float64)
		for i := i0; i < i1; i++ {
			ar := av[i*k : (i+1)*k]
			cr := cv[i*n : (i+1)*n]
			for j := j0; j < j1; j++ {
				cr[j] = kernels.Dot64(ar, wv[j*k:(j+1)*k])
			}
		}
	}
}

// mmNN sets C[m×n] = A[m×k]·B[k×n] (+ C when acc).
func mmNN[T Float](c, a, b []T, m, n, k int, acc bool) {
	switch cv := any(c).(type) {
	case []float32:
		kernels.GemmNNRange(cv, any(a).([]float32), any(b).([]float32), m, n, k, 0, m, acc)
	case []float64:
		kernels.GemmNNRange64(cv, any(a).([]float64), any(b).([]float64), m, n, k, 0, m, acc)
	}
}

// mmTN sets C[m×n] = Aᵀ·B (+ C when acc) for A [k×m], B [k×n].
func mmTN[T Float](c, a, b []T, m, n, k int, acc bool) {
	switch cv := any(c).(type) {
	case []float32:
		kernels.GemmTNRange(cv, any(a).([]float32), any(b).([]float32), m, n, k, 0, m, acc)
	case []float64:
		kernels.GemmTNRange64(cv, any(a).([]float64), any(b).([]float64), m, n, k, 0, m, acc)
	}
}

// mambaScale sets x[i] *= s.
func mambaScale[T Float](x []T, s T) {
	if x32, ok := any(x).([]float32); ok {
		scale32(x32, float32(s))
		return
	}
	for i := range x {
		x[i] *= s
	}
}

// mambaMulScaled sets dst[j] = s·a[j]·b[j] for j < len(dst).
func mambaMulScaled[T Float](dst, a, b []T, s T) {
	if d32, ok := any(dst).([]float32); ok {
		mulScaled32(d32, any(a).([]float32), any(b).([]float32), float32(s))
		return
	}
	a, b = a[:len(dst)], b[:len(dst)]
	for j := range dst {
		dst[j] = s * a[j] * b[j]
	}
}

// mambaStepHead advances one head of the one-token recurrence: for every row p,
// O[p,:] = decay·S[p,:] + dt·x[p]·B and y[p] = O[p,:]·C + D·x[p]. O may be S.
func mambaStepHead[T Float](O, S, x, y, bv, cv []T, decay, dtv, dv T) {
	nN := len(bv)
	if o32, ok := any(O).([]float32); ok {
		s32, x32, y32 := any(S).([]float32), any(x).([]float32), any(y).([]float32)
		b32, c32 := any(bv).([]float32), any(cv).([]float32)
		if kernels.SSMStepRows(o32, s32, x32, y32, b32, c32, nN, float32(decay), float32(dtv), float32(dv)) {
			return
		}
		for p, xv := range x32 {
			y32[p] = stepRow32(o32[p*nN:(p+1)*nN], s32[p*nN:(p+1)*nN], b32, c32, float32(decay), float32(dtv)*xv) +
				float32(dv)*xv
		}
		return
	}
	for p, xv := range x {
		f := dtv * xv
		srow, orow := S[p*nN:(p+1)*nN], O[p*nN:(p+1)*nN]
		y[p] = stepRowGeneric(orow, srow, bv, cv, decay, f) + dv*xv
	}
}

// stepRowGeneric sets o = decay·s + f·b and returns o·c, with four accumulators.
func stepRowGeneric[T Float](o, s, b, c []T, decay, f T) T {
	n := len(o)
	s, b, c = s[:n], b[:n], c[:n]
	var s0, s1, s2, s3 T
	i := 0
	for ; i+4 <= n; i += 4 {
		v0 := decay*s[i] + f*b[i]
		v1 := decay*s[i+1] + f*b[i+1]
		v2 := decay*s[i+2] + f*b[i+2]
		v3 := decay*s[i+3] + f*b[i+3]
		o[i], o[i+1], o[i+2], o[i+3] = v0, v1, v2, v3
		s0 += v0 * c[i]
		s1 += v1 * c[i+1]
		s2 += v2 * c[i+2]
		s3 += v3 * c[i+3]
	}
	for ; i < n; i++ {
		v := decay*s[i] + f*b[i]
		o[i] = v
		s0 += v * c[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func scaleGeneric[T Float](x []T, s T) {
	for i := range x {
		x[i] *= s
	}
}

func mulAddGeneric[T Float](dst, a, b []T) {
	a, b = a[:len(dst)], b[:len(dst)]
	for j := range dst {
		dst[j] += a[j] * b[j]
	}
}

// mambaMulAdd sets dst[j] += a[j]·b[j], vectorised for float32.
func mambaMulAdd[T Float](dst, a, b []T) {
	if d32, ok := any(dst).([]float32); ok {
		mulAdd32(d32, any(a).([]float32), any(b).([]float32))
		return
	}
	mulAddGeneric(dst, a, b)
}

func mulScaledGeneric[T Float](dst, a, b []T, s T) {
	a, b = a[:len(dst)], b[:len(dst)]
	for j := range dst {
		dst[j] = s * a[j] * b[j]
	}
}

// mambaAllZero reports whether every element of x is zero.
func mambaAllZero[T Float](x []T) bool {
	for _, v := range x {
		if v != 0 {
			return false
		}
	}
	return true
}

// mambaExpAffine sets dst[j] = mambaDecay(a + sgn·src[j]) (sgn ±1). For float32 the
// exponentials may be vectorised (within an ulp or two of the float64 ones).
func mambaExpAffine[T Float](dst, src []T, a, sgn T) {
	if d32, ok := any(dst).([]float32); ok {
		expAffine32(d32, any(src).([]float32), float32(a), float32(sgn))
		return
	}
	expAffineGeneric(dst, src, a, sgn)
}

// mambaMulExp sets dst[j] = c[j]·mambaDecay(a − cs[j]).
func mambaMulExp[T Float](dst, c, cs []T, a T) {
	if d32, ok := any(dst).([]float32); ok {
		mulExp32(d32, any(c).([]float32), any(cs).([]float32), float32(a))
		return
	}
	mulExpGeneric(dst, c, cs, a)
}

// mambaScaleTo sets dst[j] = s·src[j].
func mambaScaleTo[T Float](dst, src []T, s T) {
	if d32, ok := any(dst).([]float32); ok {
		scaleTo32(d32, any(src).([]float32), float32(s))
		return
	}
	scaleToGeneric(dst, src, s)
}

// mambaAddScaled sets dst[j] = a[j] + s·x[j].
func mambaAddScaled[T Float](dst, a, x []T, s T) {
	if d32, ok := any(dst).([]float32); ok {
		addScaled32(d32, any(a).([]float32), any(x).([]float32), float32(s))
		return
	}
	addScaledGeneric(dst, a, x, s)
}

func expAffineGeneric[T Float](dst, src []T, a, sgn T) {
	src = src[:len(dst)]
	for j, v := range src {
		dst[j] = mambaDecay(a + sgn*v)
	}
}

func mulExpGeneric[T Float](dst, c, cs []T, a T) {
	c, cs = c[:len(dst)], cs[:len(dst)]
	for j := range dst {
		dst[j] = c[j] * mambaDecay(a-cs[j])
	}
}

func scaleToGeneric[T Float](dst, src []T, s T) {
	src = src[:len(dst)]
	for j, v := range src {
		dst[j] = s * v
	}
}

func addScaledGeneric[T Float](dst, a, x []T, s T) {
	a, x = a[:len(dst)], x[:len(dst)]
	for j := range dst {
		dst[j] = a[j] + s*x[j]
	}
}

// mambaAdvanceRow sets o = decay·s + f·b (o may be s).
func mambaAdvanceRow[T Float](o, s, b []T, decay, f T) {
	if o32, ok := any(o).([]float32); ok {
		advRow32(o32, any(s).([]float32), any(b).([]float32), float32(decay), float32(f))
		return
	}
	advRowGeneric(o, s, b, decay, f)
}

func advRowGeneric[T Float](o, s, b []T, decay, f T) {
	s, b = s[:len(o)], b[:len(o)]
	for m := range o {
		o[m] = decay*s[m] + f*b[m]
	}
}

// mambaGradRow is one row p of one token of SSDGrad (see ssdGradKernel.head): with g the state
// adjoint row, s and sp the state rows after and before the token,
//
//	dC += gp·s;  g' = g + gp·C;  v = g'·B;  gsum = g'·sp;  dB += f·g';  g ← decay·g'
func mambaGradRow[T Float](g, s, sp, c, b, dC, dB []T, gp, f, decay T) (v, gsum T) {
	if g32, ok := any(g).([]float32); ok {
		v32, s32 := gradRow32(g32, any(s).([]float32), any(sp).([]float32), any(c).([]float32),
			any(b).([]float32), any(dC).([]float32), any(dB).([]float32), float32(gp), float32(f), float32(decay))
		return T(v32), T(s32)
	}
	return gradRowGeneric(g, s, sp, c, b, dC, dB, gp, f, decay)
}

func gradRowGeneric[T Float](g, s, sp, c, b, dC, dB []T, gp, f, decay T) (v, gsum T) {
	n := len(g)
	s, sp, c, b, dC, dB = s[:n], sp[:n], c[:n], b[:n], dC[:n], dB[:n]
	for m := range g {
		dC[m] += gp * s[m]
		gv := g[m] + gp*c[m]
		v += gv * b[m]
		gsum += gv * sp[m]
		dB[m] += f * gv
		g[m] = decay * gv
	}
	return v, gsum
}
