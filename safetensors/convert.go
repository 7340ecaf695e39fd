package safetensors

import (
	"math"

	"github.com/mamba2go/mamba2/quant"
)

// F16ToFloat32 returns the IEEE 754 half-precision value with bits h as a float32. The conversion
// is exact: every half value, subnormals included, is a float32; NaN payloads are kept.
func F16ToFloat32(h uint16) float32 { return quant.F16ToFloat32(h) }

// BF16ToFloat32 returns the bfloat16 value with bits b as a float32 (exact: bfloat16 is the upper
// half of a float32).
func BF16ToFloat32(b uint16) float32 { return quant.BF16ToFloat32(b) }

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
func Float32ToF16(f float32) uint16 { return quant.ToF16(f) }

// Float32ToBF16 rounds f to the nearest bfloat16, ties to even, exactly as PyTorch's
// c10::BFloat16 does (NaN becomes the quiet NaN 0x7FC0).
func Float32ToBF16(f float32) uint16 { return quant.ToBF16(f) }
