//go:build goexperiment.simd && amd64

package cpu

import (
	"simd/archsimd"
	"unsafe"
)

// float32 vector loops of the Mamba kernels with simd/archsimd: AVX-512 when the CPU has it,
// AVX2+FMA otherwise, the portable loops without either. As in package kernels, the loops
// index through unsafe.Pointer after one bounds check per call; tails run scalar.

var (
	mambaAVX512 = archsimd.X86.AVX512()
	mambaAVX2   = archsimd.X86.AVX2() && archsimd.X86.FMA()
)

func mp(s []float32) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(s)) }

func mld16(p unsafe.Pointer, i int) archsimd.Float32x16 {
	return archsimd.LoadFloat32x16((*[16]float32)(unsafe.Add(p, i*4)))
}

func mst16(v archsimd.Float32x16, p unsafe.Pointer, i int) {
	v.Store((*[16]float32)(unsafe.Add(p, i*4)))
}

func mld8(p unsafe.Pointer, i int) archsimd.Float32x8 {
	return archsimd.LoadFloat32x8((*[8]float32)(unsafe.Add(p, i*4)))
}

func mst8(v archsimd.Float32x8, p unsafe.Pointer, i int) {
	v.Store((*[8]float32)(unsafe.Add(p, i*4)))
}

func mhsum8(v archsimd.Float32x8) float32 {
	q := v.GetLo().Add(v.GetHi())
	q = q.AddPairs(q)
	q = q.AddPairs(q)
	return q.GetElem(0)
}

// scale32 sets x[i] *= s.
func scale32(x []float32, s float32) {
	n := len(x)
	px := mp(x)
	i := 0
	switch {
	case mambaAVX512:
		vs := archsimd.BroadcastFloat32x16(s)
		for ; i+16 <= n; i += 16 {
			mst16(mld16(px, i).Mul(vs), px, i)
		}
	case mambaAVX2:
		vs := archsimd.BroadcastFloat32x8(s)
		for ; i+8 <= n; i += 8 {
			mst8(mld8(px, i).Mul(vs), px, i)
		}
	}
	for ; i < n; i++ {
		x[i] *= s
	}
}

// mulAdd32 sets dst[j] += a[j]·b[j] for j < len(dst).
func mulAdd32(dst, a, b []float32) {
	n := len(dst)
	a, b = a[:n], b[:n]
	pd, pa, pb := mp(dst), mp(a), mp(b)
	i := 0
	switch {
	case mambaAVX512:
		for ; i+16 <= n; i += 16 {
			mst16(mld16(pa, i).MulAdd(mld16(pb, i), mld16(pd, i)), pd, i)
		}
	case mambaAVX2:
		for ; i+8 <= n; i += 8 {
			mst8(mld8(pa, i).MulAdd(mld8(pb, i), mld8(pd, i)), pd, i)
		}
	}
	mulAddGeneric(dst[i:], a[i:], b[i:])
}

// mulScaled32 sets dst[j] = s·a[j]·b[j] for j < len(dst).
func mulScaled32(dst, a, b []float32, s float32) {
	n := len(dst)
	a, b = a[:n], b[:n]
	pd, pa, pb := mp(dst), mp(a), mp(b)
	i := 0
	switch {
	case mambaAVX512:
		vs := archsimd.BroadcastFloat32x16(s)
		for ; i+16 <= n; i += 16 {
			mst16(mld16(pa, i).Mul(vs).Mul(mld16(pb, i)), pd, i)
		}
	case mambaAVX2:
		vs := archsimd.BroadcastFloat32x8(s)
		for ; i+8 <= n; i += 8 {
			mst8(mld8(pa, i).Mul(vs).Mul(mld8(pb, i)), pd, i)
		}
	}
	for ; i < n; i++ {
		dst[i] = s * a[i] * b[i]
	}
}

// stepRow32 sets o = decay·s + f·b and returns o·c (o may be s).
func stepRow32(o, s, b, c []float32, decay, f float32) float32 {
	n := len(o)
	s, b, c = s[:n], b[:n], c[:n]
	po, ps, pb, pc := mp(o), mp(s), mp(b), mp(c)
	var sum float32
	i := 0
	switch {
	case mambaAVX512:
		vd, vf := archsimd.BroadcastFloat32x16(decay), archsimd.BroadcastFloat32x16(f)
		var a0, a1 archsimd.Float32x16
		for ; i+32 <= n; i += 32 {
			v0 := mld16(ps, i).MulAdd(vd, mld16(pb, i).Mul(vf))
			v1 := mld16(ps, i+16).MulAdd(vd, mld16(pb, i+16).Mul(vf))
			mst16(v0, po, i)
			mst16(v1, po, i+16)
			a0 = v0.MulAdd(mld16(pc, i), a0)
			a1 = v1.MulAdd(mld16(pc, i+16), a1)
		}
		for ; i+16 <= n; i += 16 {
			v0 := mld16(ps, i).MulAdd(vd, mld16(pb, i).Mul(vf))
			mst16(v0, po, i)
			a0 = v0.MulAdd(mld16(pc, i), a0)
		}
		a := a0.Add(a1)
		sum = mhsum8(a.GetLo().Add(a.GetHi()))
	case mambaAVX2:
		vd, vf := archsimd.BroadcastFloat32x8(decay), archsimd.BroadcastFloat32x8(f)
		var a0, a1 archsimd.Float32x8
		for ; i+16 <= n; i += 16 {
			v0 := mld8(ps, i).MulAdd(vd, mld8(pb, i).Mul(vf))
			v1 := mld8(ps, i+8).MulAdd(vd, mld8(pb, i+8).Mul(vf))
			mst8(v0, po, i)
			mst8(v1, po, i+8)
			a0 = v0.MulAdd(mld8(pc, i), a0)
			a1 = v1.MulAdd(mld8(pc, i+8), a1)
		}
		for ; i+8 <= n; i += 8 {
			v0 := mld8(ps, i).MulAdd(vd, mld8(pb, i).Mul(vf))
			mst8(v0, po, i)
			a0 = v0.MulAdd(mld8(pc, i), a0)
		}
		sum = mhsum8(a0.Add(a1))
	}
	for ; i < n; i++ {
		v := decay*s[i] + f*b[i]
		o[i] = v
		sum += v * c[i]
	}
	return sum
}

// exp16 and exp8 are e^x in float32 (Cephes' expf: x = n·ln2 + r, a degree-7 polynomial in r,
// about one ulp), flushed to zero for x < mambaCut32 like mambaDecay. Arguments are clamped
// to [−87, 88] first, so 2^n is a normal number built from its exponent bits.
const (
	mambaCut32                   = -41.5 // ln 2^−60, see mambaDecay
	expLog2e                     = 1.44269504088896341
	expLn2Hi, expLn2Lo           = 0.693359375, -2.12194440e-4
	expP0, expP1, expP2          = 1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3
	expP3, expP4, expP5          = 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1
	expArgLo, expArgHi           = -87, 88
	expBias, expMantissa         = 127, 23
	expOne               float32 = 1
)

func exp16(x archsimd.Float32x16) archsimd.Float32x16 {
	keep := x.GreaterEqual(archsimd.BroadcastFloat32x16(mambaCut32))
	x = x.Max(archsimd.BroadcastFloat32x16(expArgLo)).Min(archsimd.BroadcastFloat32x16(expArgHi))
	t := x.Mul(archsimd.BroadcastFloat32x16(expLog2e)).RoundToEvenScaled(0)
	r := t.MulAdd(archsimd.BroadcastFloat32x16(-expLn2Hi), x)
	r = t.MulAdd(archsimd.BroadcastFloat32x16(-expLn2Lo), r)
	p := archsimd.BroadcastFloat32x16(expP0)
	p = p.MulAdd(r, archsimd.BroadcastFloat32x16(expP1))
	p = p.MulAdd(r, archsimd.BroadcastFloat32x16(expP2))
	p = p.MulAdd(r, archsimd.BroadcastFloat32x16(expP3))
	p = p.MulAdd(r, archsimd.BroadcastFloat32x16(expP4))
	p = p.MulAdd(r, archsimd.BroadcastFloat32x16(expP5))
	y := p.MulAdd(r.Mul(r), r).Add(archsimd.BroadcastFloat32x16(expOne))
	pow := t.ConvertToInt32().Add(archsimd.BroadcastInt32x16(expBias)).ShiftAllLeft(expMantissa).AsFloat32x16()
	return y.Mul(pow).Masked(keep)
}

func exp8(x archsimd.Float32x8) archsimd.Float32x8 {
	keep := x.GreaterEqual(archsimd.BroadcastFloat32x8(mambaCut32))
	x = x.Max(archsimd.BroadcastFloat32x8(expArgLo)).Min(archsimd.BroadcastFloat32x8(expArgHi))
	t := x.Mul(archsimd.BroadcastFloat32x8(expLog2e)).RoundToEven()
	r := t.MulAdd(archsimd.BroadcastFloat32x8(-expLn2Hi), x)
	r = t.MulAdd(archsimd.BroadcastFloat32x8(-expLn2Lo), r)
	p := archsimd.BroadcastFloat32x8(expP0)
	p = p.MulAdd(r, archsimd.BroadcastFloat32x8(expP1))
	p = p.MulAdd(r, archsimd.BroadcastFloat32x8(expP2))
	p = p.MulAdd(r, archsimd.BroadcastFloat32x8(expP3))
	p = p.MulAdd(r, archsimd.BroadcastFloat32x8(expP4))
	p = p.MulAdd(r, archsimd.BroadcastFloat32x8(expP5))
	y := p.MulAdd(r.Mul(r), r).Add(archsimd.BroadcastFloat32x8(expOne))
	pow := t.ConvertToInt32().Add(archsimd.BroadcastInt32x8(expBias)).ShiftAllLeft(expMantissa).AsFloat32x8()
	return y.Mul(pow).Masked(keep)
}

// expAffine32 sets dst[j] = mambaDecay(a + sgn·src[j]) (sgn ±1), vectorised.
func expAffine32(dst, src []float32, a, sgn float32) {
	n := len(dst)
	src = src[:n]
	pd, ps := mp(dst), mp(src)
	i := 0
	switch {
	case mambaAVX512:
		va, vs := archsimd.BroadcastFloat32x16(a), archsimd.BroadcastFloat32x16(sgn)
		for ; i+16 <= n; i += 16 {
			mst16(exp16(mld16(ps, i).MulAdd(vs, va)), pd, i)
		}
	case mambaAVX2:
		va, vs := archsimd.BroadcastFloat32x8(a), archsimd.BroadcastFloat32x8(sgn)
		for ; i+8 <= n; i += 8 {
			mst8(exp8(mld8(ps, i).MulAdd(vs, va)), pd, i)
		}
	}
	for ; i < n; i++ {
		dst[i] = mambaDecay(a + sgn*src[i])
	}
}

// mulExp32 sets dst[j] = c[j]·mambaDecay(a − cs[j]), vectorised.
func mulExp32(dst, c, cs []float32, a float32) {
	n := len(dst)
	c, cs = c[:n], cs[:n]
	pd, pc, ps := mp(dst), mp(c), mp(cs)
	i := 0
	switch {
	case mambaAVX512:
		va := archsimd.BroadcastFloat32x16(a)
		for ; i+16 <= n; i += 16 {
			mst16(mld16(pc, i).Mul(exp16(va.Sub(mld16(ps, i)))), pd, i)
		}
	case mambaAVX2:
		va := archsimd.BroadcastFloat32x8(a)
		for ; i+8 <= n; i += 8 {
			mst8(mld8(pc, i).Mul(exp8(va.Sub(mld8(ps, i)))), pd, i)
		}
	}
	for ; i < n; i++ {
		dst[i] = c[i] * mambaDecay(a-cs[i])
	}
}

// scaleTo32 sets dst[j] = s·src[j].
func scaleTo32(dst, src []float32, s float32) {
	n := len(dst)
	src = src[:n]
	pd, ps := mp(dst), mp(src)
	i := 0
	switch {
	case mambaAVX512:
		vs := archsimd.BroadcastFloat32x16(s)
		for ; i+16 <= n; i += 16 {
			mst16(mld16(ps, i).Mul(vs), pd, i)
		}
	case mambaAVX2:
		vs := archsimd.BroadcastFloat32x8(s)
		for ; i+8 <= n; i += 8 {
			mst8(mld8(ps, i).Mul(vs), pd, i)
		}
	}
	for ; i < n; i++ {
		dst[i] = s * src[i]
	}
}

// addScaled32 sets dst[j] = a[j] + s·x[j].
func addScaled32(dst, a, x []float32, s float32) {
	n := len(dst)
	a, x = a[:n], x[:n]
	pd, pa, px := mp(dst), mp(a), mp(x)
	i := 0
	switch {
	case mambaAVX512:
		vs := archsimd.BroadcastFloat32x16(s)
		for ; i+16 <= n; i += 16 {
			mst16(mld16(px, i).MulAdd(vs, mld16(pa, i)), pd, i)
		}
	case mambaAVX2:
		vs := archsimd.BroadcastFloat32x8(s)
		for ; i+8 <= n; i += 8 {
			mst8(mld8(px, i).MulAdd(vs, mld8(pa, i)), pd, i)
		}
	}
	for ; i < n; i++ {
		dst[i] = a[i] + s*x[i]
	}
}

// advRow32 sets o = decay·s + f·b (o may be s).
func advRow32(o, s, b []float32, decay, f float32) {
	n := len(o)
	s, b = s[:n], b[:n]
	po, ps, pb := mp(o), mp(s), mp(b)
	i := 0
	switch {
	case mambaAVX512:
		vd, vf := archsimd.BroadcastFloat32x16(decay), archsimd.BroadcastFloat32x16(f)
		for ; i+16 <= n; i += 16 {
			mst16(mld16(ps, i).MulAdd(vd, mld16(pb, i).Mul(vf)), po, i)
		}
	case mambaAVX2:
		vd, vf := archsimd.BroadcastFloat32x8(decay), archsimd.BroadcastFloat32x8(f)
		for ; i+8 <= n; i += 8 {
			mst8(mld8(ps, i).MulAdd(vd, mld8(pb, i).Mul(vf)), po, i)
		}
	}
	for ; i < n; i++ {
		o[i] = decay*s[i] + f*b[i]
	}
}

// gradRow32 is mambaGradRow for float32.
func gradRow32(g, s, sp, c, b, dC, dB []float32, gp, f, decay float32) (v, gsum float32) {
	n := len(g)
	s, sp, c, b, dC, dB = s[:n], sp[:n], c[:n], b[:n], dC[:n], dB[:n]
	pg, ps, psp, pc, pb, pdc, pdb := mp(g), mp(s), mp(sp), mp(c), mp(b), mp(dC), mp(dB)
	i := 0
	switch {
	case mambaAVX512:
		vgp, vf, vd := archsimd.BroadcastFloat32x16(gp), archsimd.BroadcastFloat32x16(f), archsimd.BroadcastFloat32x16(decay)
		var av, as archsimd.Float32x16
		for ; i+16 <= n; i += 16 {
			mst16(mld16(ps, i).MulAdd(vgp, mld16(pdc, i)), pdc, i)
			gv := mld16(pc, i).MulAdd(vgp, mld16(pg, i))
			av = gv.MulAdd(mld16(pb, i), av)
			as = gv.MulAdd(mld16(psp, i), as)
			mst16(gv.MulAdd(vf, mld16(pdb, i)), pdb, i)
			mst16(gv.Mul(vd), pg, i)
		}
		v = mhsum8(av.GetLo().Add(av.GetHi()))
		gsum = mhsum8(as.GetLo().Add(as.GetHi()))
	case mambaAVX2:
		vgp, vf, vd := archsimd.BroadcastFloat32x8(gp), archsimd.BroadcastFloat32x8(f), archsimd.BroadcastFloat32x8(decay)
		var av, as archsimd.Float32x8
		for ; i+8 <= n; i += 8 {
			mst8(mld8(ps, i).MulAdd(vgp, mld8(pdc, i)), pdc, i)
			gv := mld8(pc, i).MulAdd(vgp, mld8(pg, i))
			av = gv.MulAdd(mld8(pb, i), av)
			as = gv.MulAdd(mld8(psp, i), as)
			mst8(gv.MulAdd(vf, mld8(pdb, i)), pdb, i)
			mst8(gv.Mul(vd), pg, i)
		}
		v, gsum = mhsum8(av), mhsum8(as)
	}
	for ; i < n; i++ {
		dC[i] += gp * s[i]
		gv := g[i] + gp*c[i]
		v += gv * b[i]
		gsum += gv * sp[i]
		dB[i] += f * gv
		g[i] = decay * gv
	}
	return v, gsum
}

// sigmoid16 and sigmoid8 are 1/(1+e^−x) on the vector exp: about two ulps, exactly 0 or 1 far
// out: below −87 (where e^−x would be clamped) σ is below 2e−38 and returned as 0; NaN stays NaN.
func sigmoid16(x archsimd.Float32x16) archsimd.Float32x16 {
	one := archsimd.BroadcastFloat32x16(expOne)
	s := one.Div(one.Add(exp16(archsimd.BroadcastFloat32x16(0).Sub(x))))
	s = s.Masked(x.GreaterEqual(archsimd.BroadcastFloat32x16(-expArgHi + 1))) // below, e^−x is clamped
	return x.Merge(s, x.IsNaN())                                              // exp's clamp would turn NaN into a number
}

func sigmoid8(x archsimd.Float32x8) archsimd.Float32x8 {
	one := archsimd.BroadcastFloat32x8(expOne)
	s := one.Div(one.Add(exp8(archsimd.BroadcastFloat32x8(0).Sub(x))))
	s = s.Masked(x.GreaterEqual(archsimd.BroadcastFloat32x8(-expArgHi + 1)))
	return x.Merge(s, x.IsNaN())
}

// sigmoid32 sets dst[j] = σ(src[j]); with silu it sets dst[j] = src[j]·σ(src[j]) instead.
// Elementwise activations are where prefill spent a fifth of its time in float64 math.Exp.
func sigmoid32(dst, src []float32, silu bool) {
	n := len(dst)
	src = src[:n]
	pd, ps := mp(dst), mp(src)
	i := 0
	switch {
	case mambaAVX512:
		for ; i+16 <= n; i += 16 {
			x := mld16(ps, i)
			s := sigmoid16(x)
			if silu {
				s = s.Mul(x)
			}
			mst16(s, pd, i)
		}
	case mambaAVX2:
		for ; i+8 <= n; i += 8 {
			x := mld8(ps, i)
			s := sigmoid8(x)
			if silu {
				s = s.Mul(x)
			}
			mst8(s, pd, i)
		}
	}
	sigmoidGeneric(dst[i:], src[i:], silu)
}

// gatedSiLU32 sets dst[j] = x[j]·z[j]·σ(z[j]), the gate of GatedRMSNorm.
func gatedSiLU32(dst, x, z []float32) {
	n := len(dst)
	x, z = x[:n], z[:n]
	pd, px, pz := mp(dst), mp(x), mp(z)
	i := 0
	switch {
	case mambaAVX512:
		for ; i+16 <= n; i += 16 {
			zv := mld16(pz, i)
			mst16(mld16(px, i).Mul(zv).Mul(sigmoid16(zv)), pd, i)
		}
	case mambaAVX2:
		for ; i+8 <= n; i += 8 {
			zv := mld8(pz, i)
			mst8(mld8(px, i).Mul(zv).Mul(sigmoid8(zv)), pd, i)
		}
	}
	gatedSiLUGeneric(dst[i:], x[i:], z[i:])
}
