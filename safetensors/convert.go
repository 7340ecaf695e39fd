package safetensors

import "math"

// F16ToFloat32 returns the IEEE 754 half-precision value with bits h as a float32. The conversion
// is exact: every half value, subnormals included, is a float32; NaN payloads are kept.
func F16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: mant · 2⁻²⁴, normal in float32
		f := float32(math.Ldexp(float64(mant), -24))
		return math.Float32frombits(sign | math.Float32bits(f))
	case exp == 0x1f: // infinity or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// BF16ToFloat32 returns the bfloat16 value with bits b as a float32 (exact: bfloat16 is the upper
// half of a float32).
func BF16ToFloat32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F8E5M2ToFloat32 returns the float8 e5m2 value with bits b as a float32 (exact: e5m2 is the
// upper byte of a half).
func F8E5M2ToFloat32(b uint8) float32 { return F16ToFloat32(uint16(b) << 8) }

// F8E4M3ToFloat32 returns the float8 e4m3fn value with bits b as a float32, as PyTorch's
// float8_e4m3fn reads it: exponent bias 7, no infinities, S.1111.111 is NaN. The conversion is
// exact.
func F8E4M3ToFloat32(b uint8) float32 {
	neg := b&0x80 != 0
	exp := int(b>>3) & 0xf
	mant := float64(b & 0x7)
	var v float64
	switch {
	case exp == 0xf && mant == 7:
		v = math.NaN()
	case exp == 0:
		v = math.Ldexp(mant, -9) // mant/8 · 2⁻⁶
	default:
		v = math.Ldexp(8+mant, exp-10) // (1 + mant/8) · 2^(exp−7)
	}
	if neg {
		v = -v
	}
	return float32(v)
}

// Float32ToF16 rounds f to the nearest half-precision value, ties to even, as PyTorch's
// tensor.to(torch.float16) does: values beyond the half range become ±Inf, tiny values become
// subnormals or ±0, NaN stays NaN.
func Float32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 { // subnormal half (or zero): r = (1.mant) · 2^(e−1+24−10)
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint(14 - e)
		r := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // a carry into the exponent is correct, up to and including Inf
	}
	return sign | uint16(r)
}

// Float32ToBF16 rounds f to the nearest bfloat16, ties to even, exactly as PyTorch's
// c10::BFloat16 does (NaN becomes the quiet NaN 0x7FC0).
func Float32ToBF16(f float32) uint16 {
	if f != f {
		return 0x7fc0
	}
	b := math.Float32bits(f)
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}
