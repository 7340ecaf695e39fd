// Package quant holds the weight encodings for inference: bfloat16 and float16 (16-bit floats,
// widened to float32 when used) and int8 with one symmetric scale per row. Decoding a token is a
// chain of matrix–vector products whose speed is the memory bandwidth divided by the bytes of the
// weights, so storing them in 16 or 8 bits makes decode up to 2× or 4× faster. Products with
// 16-bit weights accumulate in float32 against float32 activations; products with int8 weights
// round the activations to int16 per block of ActBlock values (Int16Blocks, an error far below
// the weights' own), so that CPUs can multiply integers.
//
// This package is the one definition of each encoding: models convert their float32 weights on
// the host with it, and the CPU kernels (backends/cpu/kernels) widen with it. It depends on
// nothing but package shapes and the standard library.
//
// Conversions never panic: a length mismatch or a value the encoding cannot hold (an Inf or NaN
// in an int8 row) is an error naming what is wrong.
package quant

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/mamba2go/mamba2/shapes"
)

// Format is how a model stores its weights. The zero value is F32 (no quantization).
type Format uint8

// The weight formats.
const (
	// F32 keeps weights in float32: exact, and the only format that can be trained.
	F32 Format = iota
	// BF16 keeps the top 16 bits of each float32 (8-bit exponent, 7-bit mantissa): float32's
	// range with a relative rounding error of at most 2⁻⁸.
	BF16
	// F16 is IEEE half precision (5-bit exponent, 10-bit mantissa): a relative error of at most
	// 2⁻¹¹ in the normal range, but magnitudes beyond 65504 become ±Inf.
	F16
	// Int8 stores round(w/scale) in [-127, 127] with scale = max|row|/127 per row: an absolute
	// error of at most scale/2 per element. The activations a product multiplies with it are
	// rounded to int16 per block of ActBlock values (Int16Blocks).
	Int8
)

// formatNames maps the accepted spellings to formats; the first name of each is canonical.
var formatNames = []struct {
	f     Format
	names []string
}{
	{F32, []string{"f32", "float32"}},
	{BF16, []string{"bf16", "bfloat16"}},
	{F16, []string{"f16", "float16"}},
	{Int8, []string{"int8", "q8"}},
}

// String is the canonical short name: "f32", "bf16", "f16" or "int8".
func (f Format) String() string {
	for _, e := range formatNames {
		if e.f == f {
			return e.names[0]
		}
	}
	return fmt.Sprintf("format(%d)", uint8(f))
}

// ParseFormat reads a format name as a user types it on a command line (case-insensitive):
// f32|float32, bf16|bfloat16, f16|float16, int8|q8. An unknown name is an error listing these.
func ParseFormat(s string) (Format, error) {
	low := strings.ToLower(strings.TrimSpace(s))
	var valid []string
	for _, e := range formatNames {
		for _, n := range e.names {
			if n == low {
				return e.f, nil
			}
		}
		valid = append(valid, strings.Join(e.names, "|"))
	}
	return F32, fmt.Errorf("quant: unknown weight format %q (valid: %s)", s, strings.Join(valid, ", "))
}

// DType is the tensor dtype weights of this format are stored in (shapes.Float32,
// shapes.BFloat16, shapes.Float16 or shapes.Int8); InvalidDType for an unknown format.
func (f Format) DType() shapes.DType {
	switch f {
	case F32:
		return shapes.Float32
	case BF16:
		return shapes.BFloat16
	case F16:
		return shapes.Float16
	case Int8:
		return shapes.Int8
	}
	return shapes.InvalidDType
}

// Quantize encodes a row-major float32 matrix with rows of k elements in format f and returns
// the host slice to upload as a tensor of dtype f.DType() ([]float32, []uint16 or []int8) and,
// for Int8 only, the per-row scales (the second tensor QuantMatMul and QuantGather take). F32
// returns src itself, not a copy. The results are new slices; an Encoder reuses its own.
func (f Format) Quantize(src []float32, k int) (data any, scale []float32, err error) {
	var e Encoder
	return e.Encode(f, src, k)
}

// Encoder is Quantize for a caller that encodes many chunks in turn, such as a loader streaming
// a checkpoint: its results live in slices it keeps and reuses, valid until the next Encode.
// The zero value is ready to use.
type Encoder struct {
	u16   []uint16
	i8    []int8
	scale []float32
}

// Encode is Format.Quantize into e's slices.
func (e *Encoder) Encode(f Format, src []float32, k int) (data any, scale []float32, err error) {
	switch f {
	case F32:
		return src, nil, nil
	case BF16:
		e.u16 = slices.Grow(e.u16[:0], len(src))[:len(src)]
		return e.u16, nil, BF16FromFloat32(e.u16, src)
	case F16:
		e.u16 = slices.Grow(e.u16[:0], len(src))[:len(src)]
		return e.u16, nil, F16FromFloat32(e.u16, src)
	case Int8:
		if k <= 0 || len(src)%k != 0 {
			return nil, nil, fmt.Errorf("quant: Quantize int8: %d values are not whole rows of %d", len(src), k)
		}
		e.i8 = slices.Grow(e.i8[:0], len(src))[:len(src)]
		e.scale = slices.Grow(e.scale[:0], len(src)/k)[:len(src)/k]
		return e.i8, e.scale, Int8Rows(e.i8, e.scale, src, k)
	}
	return nil, nil, fmt.Errorf("quant: Quantize: unknown format %v", f)
}

func sameLen(fn string, dst, src int) error {
	if dst != src {
		return fmt.Errorf("quant: %s: dst has %d elements, src %d", fn, dst, src)
	}
	return nil
}

// ---------------------------------------------------------------- bfloat16

// ToBF16 rounds f to bfloat16 bits: to nearest, ties to even, as PyTorch's
// tensor.to(torch.bfloat16) does. Values beyond the largest bfloat16 round to ±Inf; every NaN
// becomes the quiet NaN 0x7FC0.
func ToBF16(f float32) uint16 {
	if f != f {
		return 0x7fc0
	}
	b := math.Float32bits(f)
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// BF16ToFloat32 widens bfloat16 bits to float32. It is exact: a bfloat16 is the upper half of a
// float32.
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// BF16FromFloat32 rounds every src[i] to bfloat16 bits in dst[i] (see ToBF16). dst and src must
// have the same length.
func BF16FromFloat32(dst []uint16, src []float32) error {
	if err := sameLen("BF16FromFloat32", len(dst), len(src)); err != nil {
		return err
	}
	for i, v := range src {
		dst[i] = ToBF16(v)
	}
	return nil
}

// DequantizeBF16 widens every bfloat16 src[i] to dst[i] (exact). dst and src must have the same
// length.
func DequantizeBF16(dst []float32, src []uint16) error {
	if err := sameLen("DequantizeBF16", len(dst), len(src)); err != nil {
		return err
	}
	dst = dst[:len(src)]
	for i, h := range src {
		dst[i] = math.Float32frombits(uint32(h) << 16)
	}
	return nil
}

// ---------------------------------------------------------------- float16

// ToF16 rounds f to IEEE 754 half-precision bits: to nearest, ties to even, as PyTorch's
// tensor.to(torch.float16) does. Magnitudes beyond the half range become ±Inf, tiny values
// become subnormals or ±0, and a NaN becomes the quiet NaN 0x7E00 with f's sign.
func ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15 // the half's biased exponent
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 { // subnormal half (or zero): the result counts units of 2⁻²⁴
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

// F16ToFloat32 widens half-precision bits to float32. It is exact: every half value, subnormals
// included, is a float32; infinities stay infinite and NaN payloads are kept.
func F16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	em := uint32(h & 0x7fff)
	switch {
	case em >= 0x7c00: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | (em&0x3ff)<<13)
	case em < 0x400: // zero or subnormal: em · 2⁻²⁴, a normal float32 (or zero)
		return math.Float32frombits(sign | math.Float32bits(float32(em)*(1.0/(1<<24))))
	}
	return math.Float32frombits(sign | (em<<13 + (127-15)<<23))
}

// F16FromFloat32 rounds every src[i] to half-precision bits in dst[i] (see ToF16). dst and src
// must have the same length.
func F16FromFloat32(dst []uint16, src []float32) error {
	if err := sameLen("F16FromFloat32", len(dst), len(src)); err != nil {
		return err
	}
	for i, v := range src {
		dst[i] = ToF16(v)
	}
	return nil
}

// DequantizeF16 widens every half-precision src[i] to dst[i] (exact). dst and src must have the
// same length.
func DequantizeF16(dst []float32, src []uint16) error {
	if err := sameLen("DequantizeF16", len(dst), len(src)); err != nil {
		return err
	}
	dst = dst[:len(src)]
	for i, h := range src {
		dst[i] = F16ToFloat32(h)
	}
	return nil
}

// ---------------------------------------------------------------- int8

// Int8Rows quantizes a row-major float32 matrix with rows of k elements: for each row r,
// scale[r] = max|row|/127 and dst[r·k+p] = round(src[r·k+p]/scale[r]) (to nearest, ties to even)
// clamped to [-127, 127], so that scale[r]·dst[r·k+p] is within scale[r]/2 of the value. The
// scheme is symmetric (no zero point) because weights are centred on zero, and -128 is never used
// so that negating a row is exact.
//
// An all-zero row gets scale 0 and zeros, which dequantize to exactly 0 (as does a row so tiny
// that max|row|/127 underflows float32). dst must have len(src) elements and scale one per row;
// a row holding an Inf or NaN is an error naming it, since no scale can represent it.
func Int8Rows(dst []int8, scale []float32, src []float32, k int) error {
	if k <= 0 || len(src)%k != 0 {
		return fmt.Errorf("quant: Int8Rows: %d values are not whole rows of %d", len(src), k)
	}
	if err := sameLen("Int8Rows", len(dst), len(src)); err != nil {
		return err
	}
	rows := len(src) / k
	if len(scale) != rows {
		return fmt.Errorf("quant: Int8Rows: %d scales for %d rows", len(scale), rows)
	}
	for r := 0; r < rows; r++ {
		row, q := src[r*k:r*k+k], dst[r*k:r*k+k]
		var amax float32
		for p, v := range row {
			if v != v || math.IsInf(float64(v), 0) {
				return fmt.Errorf("quant: Int8Rows: row %d holds %v at column %d, which no scale can represent", r, v, p)
			}
			amax = max(amax, math.Float32frombits(math.Float32bits(v)&0x7fffffff))
		}
		s := amax / 127
		scale[r] = s
		if s == 0 {
			clear(q)
			continue
		}
		for p, v := range row {
			q[p] = int8(math.Max(-127, math.Min(127, math.RoundToEven(float64(v)/float64(s)))))
		}
	}
	return nil
}

// DequantizeInt8Rows writes scale[r]·src[r·k+p] into dst for a row-major int8 matrix with rows
// of k elements. dst must have len(src) elements and scale one per row.
func DequantizeInt8Rows(dst []float32, src []int8, scale []float32, k int) error {
	if k <= 0 || len(src)%k != 0 {
		return fmt.Errorf("quant: DequantizeInt8Rows: %d values are not whole rows of %d", len(src), k)
	}
	if err := sameLen("DequantizeInt8Rows", len(dst), len(src)); err != nil {
		return err
	}
	rows := len(src) / k
	if len(scale) != rows {
		return fmt.Errorf("quant: DequantizeInt8Rows: %d scales for %d rows", len(scale), rows)
	}
	for r, s := range scale {
		d := dst[r*k : r*k+k]
		for p, v := range src[r*k : r*k+k] {
			d[p] = s * float32(v)
		}
	}
	return nil
}

// ActBlock is how many consecutive activations along K share one scale when they are rounded to
// int16 for a product with int8 weights (Int16Blocks). 32 int16 values fill one AVX-512 register,
// which VPDPWSSD multiplies with 32 weights in one instruction.
const ActBlock = 32

// ActBlocks returns how many ActBlock scales a row of k activations has: ⌈k/ActBlock⌉ (the last
// block of a row may be shorter; blocks never span rows).
func ActBlocks(k int) int { return (k + ActBlock - 1) / ActBlock }

// Int16Blocks rounds activations to int16 the way products with int8 weights see them: each row
// of k values of src is cut into blocks of ActBlock (the last one possibly shorter), and each
// block b gets scale[b] = max|block|/32767 and dst = round(src/scale) to nearest, ties to even,
// clamped to [-32767, 32767] — Int8Rows's rule with 32767 for 127, per block instead of per row,
// and with the quotient src/scale computed in float32 (one vector division on a CPU or GPU).
// The rounding error is at most scale/2, about 1.5e-5 of the block's largest magnitude: far below
// the weights' own (int8, 1/254 of a row's largest), so int8 products keep float32 accuracy in the
// activations while CPUs multiply integers (AVX-512 VNNI) and never widen a weight to float32.
// scale has ActBlocks(k) entries per row.
//
// Activations may overflow where weights may not, so a block holding an Inf or NaN is not an
// error: it gets scale NaN and zeros, which makes every product with it NaN, as it would be in
// float32 (an Inf times the weights' mix of signs). Only sizes are errors.
func Int16Blocks(dst []int16, scale []float32, src []float32, k int) error {
	if k <= 0 || len(src)%k != 0 {
		return fmt.Errorf("quant: Int16Blocks: %d values are not whole rows of %d", len(src), k)
	}
	if err := sameLen("Int16Blocks", len(dst), len(src)); err != nil {
		return err
	}
	rows, nb := len(src)/k, ActBlocks(k)
	if len(scale) != rows*nb {
		return fmt.Errorf("quant: Int16Blocks: %d scales for %d rows of %d blocks", len(scale), rows, nb)
	}
	for r := 0; r < rows; r++ {
		for b := 0; b < nb; b++ {
			lo, hi := r*k+b*ActBlock, r*k+min(k, (b+1)*ActBlock)
			scale[r*nb+b] = int16Block(dst[lo:hi], src[lo:hi])
		}
	}
	return nil
}

// roundMagic is 1.5·2²³, whose float32 neighbours are one apart (see int16Block). A variable, so
// that the compiler cannot fold (x + roundMagic) − roundMagic into x at compile time.
var roundMagic float32 = 12582912

// int16Block rounds one block and returns its scale (see Int16Blocks).
func int16Block(q []int16, x []float32) float32 {
	// The largest magnitude through the bits: without the sign, the order of float32 bit patterns
	// is that of the values, and Inf and NaN lie above every finite one. An integer max also
	// keeps the loop-carried chain short (the float max's NaN and ±0 rules made it 3× slower).
	var bits uint32
	for _, v := range x {
		bits = max(bits, math.Float32bits(v)&0x7fffffff)
	}
	if bits >= 0x7f800000 { // an Inf or NaN
		clear(q)
		return float32(math.NaN())
	}
	s := math.Float32frombits(bits) / 32767
	if s == 0 {
		clear(q)
		return 0
	}
	for p, v := range x {
		// A float32 division, as a vector unit does it; |v|/s ≤ 32767·(1+2⁻²⁴) for the float32 s
		// above, so the rounding never leaves the range and the clamp only guards it. Adding and
		// subtracting 1.5·2²³ rounds a float32 below 2²² in magnitude to an integer, to nearest
		// with ties to even (math.RoundToEven, without the float64 round trip).
		r := (v/s + roundMagic) - roundMagic
		if r > 32767 {
			r = 32767
		} else if r < -32767 {
			r = -32767
		}
		q[p] = int16(r)
	}
	return s
}

// RoundInt16Blocks writes into dst the float32 values that Int16Blocks makes of src (rows of k):
// scale[b]·q, the activations a product with int8 weights multiplies. dst may be src. It is the
// reference the backends are checked against.
func RoundInt16Blocks(dst, src []float32, k int) error {
	if err := sameLen("RoundInt16Blocks", len(dst), len(src)); err != nil {
		return err
	}
	if k <= 0 || len(src)%k != 0 {
		return fmt.Errorf("quant: RoundInt16Blocks: %d values are not whole rows of %d", len(src), k)
	}
	var q [ActBlock]int16
	for r := 0; r < len(src)/k; r++ {
		for lo := r * k; lo < (r+1)*k; lo += ActBlock {
			hi := min(lo+ActBlock, (r+1)*k)
			s := int16Block(q[:hi-lo], src[lo:hi])
			for p := lo; p < hi; p++ {
				dst[p] = s * float32(q[p-lo])
			}
		}
	}
	return nil
}
