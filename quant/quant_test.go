package quant

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/mamba2go/mamba2/shapes"
)

func TestBF16Rounding(t *testing.T) {
	cases := []struct {
		in   uint32
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f808001, 0x3f81}, // above tie
		{0x3f807fff, 0x3f80}, // below tie
		{0xbf818000, 0xbf82}, // negative tie, odd: away from zero to even
		{0x7f7fffff, 0x7f80}, // max float rounds to +Inf
		{0x7f800000, 0x7f80}, // +Inf
		{0xff800000, 0xff80}, // -Inf
		{0x80000000, 0x8000}, // -0
		{0x00000001, 0x0000}, // tiny subnormal to 0
		{0x00018000, 0x0002}, // subnormal tie, odd: up
	}
	for _, c := range cases {
		if got := ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("ToBF16(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	for _, nan := range []uint32{0x7fc00000, 0xffc00000, 0x7f800001, 0x7fbfffff, 0xff800001} {
		h := ToBF16(math.Float32frombits(nan))
		if v := BF16ToFloat32(h); v == v {
			t.Errorf("NaN %#08x became %#04x = %v", nan, h, v)
		}
	}
	// Every bfloat16 value round-trips.
	for h := 0; h < 1<<16; h++ {
		f := BF16ToFloat32(uint16(h))
		if f != f {
			continue
		}
		if got := ToBF16(f); got != uint16(h) {
			t.Fatalf("round trip %#04x -> %v -> %#04x", h, f, got)
		}
	}
}

func TestF16Rounding(t *testing.T) {
	// Every half value round-trips, NaNs stay NaN (with their sign).
	for h := 0; h < 1<<16; h++ {
		f := F16ToFloat32(uint16(h))
		if f != f {
			g := ToF16(f)
			if g&0x7c00 != 0x7c00 || g&0x3ff == 0 || g&0x8000 != uint16(h)&0x8000 {
				t.Fatalf("NaN %#04x -> %#04x", h, g)
			}
			continue
		}
		if got := ToF16(f); got != uint16(h) {
			t.Fatalf("round trip %#04x -> %v -> %#04x", h, f, got)
		}
	}
	// Widening is exact: compare with the definition (-1)^s · 2^(e-15) · (1 + m/1024).
	for h := 0; h < 1<<16; h++ {
		e, m := h>>10&0x1f, float64(h&0x3ff)
		var want float64
		switch e {
		case 0x1f:
			continue
		case 0:
			want = math.Ldexp(m, -24)
		default:
			want = math.Ldexp(1+m/1024, e-15)
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if got := F16ToFloat32(uint16(h)); float64(got) != want || math.Signbit(float64(got)) != (h&0x8000 != 0) {
			t.Fatalf("F16ToFloat32(%#04x) = %v, want %v", h, got, want)
		}
	}
	// Rounding: nearest, checked against the neighbouring half values.
	r := rand.New(rand.NewPCG(9, 10))
	for i := 0; i < 200000; i++ {
		f := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-26)))
		h := ToF16(f)
		g := F16ToFloat32(h)
		if math.IsInf(float64(g), 0) {
			if math.Abs(float64(f)) < 65520 {
				t.Fatalf("%v overflowed to %v", f, g)
			}
			continue
		}
		up, down := F16ToFloat32(h+1), F16ToFloat32(h-1)
		d := math.Abs(float64(f - g))
		if h&0x7fff != 0 && math.Abs(float64(f-down)) < d || h&0x7fff != 0x7bff && math.Abs(float64(f-up)) < d {
			t.Fatalf("ToF16(%v) = %v (%#04x) is not the nearest half", f, g, h)
		}
	}
	ties := []struct {
		f    float32
		want uint16
	}{
		{1 + 1.0/2048, 0x3c00},          // halfway between 1 and 1+2^-10: even (1)
		{1 + 3.0/2048, 0x3c02},          // halfway, odd below: up
		{-(1 + 3.0/2048), 0xbc02},       // the same, negative
		{65504, 0x7bff},                 // the largest half
		{65519.99, 0x7bff},              // just below the halfway point to 2^16
		{65520, 0x7c00},                 // halfway between max half and 2^16: to Inf
		{1e10, 0x7c00},                  // overflow
		{float32(math.Inf(-1)), 0xfc00}, // -Inf
		{float32(math.Pow(2, -25)), 0},  // half the smallest subnormal: to even (0)
		{float32(3 * math.Pow(2, -25)), 2},
		{float32(math.Pow(2, -24)), 1},
		{float32(math.Pow(2, -14)), 0x0400}, // the smallest normal
		{float32(1023 * math.Pow(2, -24)), 0x03ff},
		{float32(math.Pow(2, -30)), 0},
		{float32(math.Copysign(0, -1)), 0x8000},
	}
	for _, c := range ties {
		if got := ToF16(c.f); got != c.want {
			t.Errorf("ToF16(%v) = %#04x, want %#04x", c.f, got, c.want)
		}
	}
}

// randWeights returns n values spread over many magnitudes, with some exact zeros.
func randWeights(r *rand.Rand, n int) []float32 {
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(12)-8)))
		if r.IntN(50) == 0 {
			w[i] = 0
		}
	}
	return w
}

func TestRoundTripBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	src := randWeights(r, 20000)
	h := make([]uint16, len(src))
	back := make([]float32, len(src))

	if err := BF16FromFloat32(h, src); err != nil {
		t.Fatal(err)
	}
	if err := DequantizeBF16(back, h); err != nil {
		t.Fatal(err)
	}
	for i, v := range src {
		if e := math.Abs(float64(back[i] - v)); e > math.Abs(float64(v))*math.Pow(2, -8) {
			t.Fatalf("bf16: %v came back as %v (relative error %.3g > 2^-8)", v, back[i], e/math.Abs(float64(v)))
		}
	}

	if err := F16FromFloat32(h, src); err != nil {
		t.Fatal(err)
	}
	if err := DequantizeF16(back, h); err != nil {
		t.Fatal(err)
	}
	for i, v := range src {
		a := math.Abs(float64(v))
		bound := a * math.Pow(2, -11)
		if a < math.Pow(2, -14) { // subnormal halves: half a step of 2^-24
			bound = math.Pow(2, -25)
		}
		if e := math.Abs(float64(back[i] - v)); e > bound {
			t.Fatalf("f16: %v came back as %v (error %.3g > %.3g)", v, back[i], e, bound)
		}
	}
}

func TestInt8Rows(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const rows, k = 9, 301
	src := randWeights(r, rows*k)
	for p := 0; p < k; p++ {
		src[3*k+p] = 0 // an all-zero row
	}
	src[5*k+7] = -1000 // a row dominated by one value
	src[6*k] = math.Float32frombits(1)
	for p := 1; p < k; p++ {
		src[6*k+p] = 0 // a row so tiny that max/127 underflows
	}
	q := make([]int8, len(src))
	scale := make([]float32, rows)
	if err := Int8Rows(q, scale, src, k); err != nil {
		t.Fatal(err)
	}
	back := make([]float32, len(src))
	if err := DequantizeInt8Rows(back, q, scale, k); err != nil {
		t.Fatal(err)
	}
	for j := 0; j < rows; j++ {
		var amax float32
		for _, v := range src[j*k : j*k+k] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		if scale[j] != amax/127 {
			t.Errorf("row %d: scale %v, want %v", j, scale[j], amax/127)
		}
		peak := false
		for p := 0; p < k; p++ {
			i := j*k + p
			if q[i] < -127 {
				t.Fatalf("row %d: %d is outside [-127, 127]", j, q[i])
			}
			peak = peak || q[i] == 127 || q[i] == -127
			e := math.Abs(float64(back[i] - src[i]))
			// Half a step, plus the float32 rounding of scale·q.
			bound := float64(scale[j])/2*(1+1e-6) + math.Abs(float64(back[i]))*math.Pow(2, -24)
			if scale[j] == 0 { // max/127 underflowed: the row is flushed to zero
				bound = float64(amax)
			}
			if e > bound {
				t.Fatalf("row %d col %d: %v came back as %v (error %.3g > scale/2 = %.3g)", j, p, src[i], back[i], e, scale[j]/2)
			}
		}
		if scale[j] != 0 && !peak {
			t.Errorf("row %d: no element reaches ±127", j)
		}
	}
	for _, j := range []int{3, 6} {
		if scale[j] != 0 {
			t.Errorf("row %d: scale %v, want 0", j, scale[j])
		}
		for p := 0; p < k; p++ {
			if q[j*k+p] != 0 || back[j*k+p] != 0 || math.Signbit(float64(back[j*k+p])) {
				t.Fatalf("zero row %d col %d: q %d, dequantized %v", j, p, q[j*k+p], back[j*k+p])
			}
		}
	}
	// Rounding is to nearest, ties to even.
	tq, ts := make([]int8, 4), make([]float32, 1)
	if err := Int8Rows(tq, ts, []float32{127, 2.5, -2.5, 3.5}, 4); err != nil {
		t.Fatal(err)
	}
	if ts[0] != 1 || tq[0] != 127 || tq[1] != 2 || tq[2] != -2 || tq[3] != 4 {
		t.Errorf("ties: scale %v, q %v; want 1 and [127 2 -2 4]", ts[0], tq)
	}
}

func TestErrors(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	for name, err := range map[string]error{
		"bf16 lengths":         BF16FromFloat32(make([]uint16, 3), make([]float32, 4)),
		"f16 lengths":          F16FromFloat32(make([]uint16, 5), make([]float32, 4)),
		"dequantize bf16":      DequantizeBF16(make([]float32, 3), make([]uint16, 4)),
		"dequantize f16":       DequantizeF16(make([]float32, 3), make([]uint16, 4)),
		"int8 partial row":     Int8Rows(make([]int8, 5), make([]float32, 2), make([]float32, 5), 2),
		"int8 k=0":             Int8Rows(nil, nil, nil, 0),
		"int8 dst":             Int8Rows(make([]int8, 3), make([]float32, 2), make([]float32, 4), 2),
		"int8 scales":          Int8Rows(make([]int8, 4), make([]float32, 1), make([]float32, 4), 2),
		"int8 Inf":             Int8Rows(make([]int8, 4), make([]float32, 2), []float32{1, 2, inf, 0}, 2),
		"int8 NaN":             Int8Rows(make([]int8, 4), make([]float32, 2), []float32{nan, 2, 1, 0}, 2),
		"dequantize int8 dims": DequantizeInt8Rows(make([]float32, 4), make([]int8, 4), make([]float32, 1), 2),
		"dequantize int8 dst":  DequantizeInt8Rows(make([]float32, 3), make([]int8, 4), make([]float32, 2), 2),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.HasPrefix(err.Error(), "quant: ") {
			t.Errorf("%s: error %q does not name the package", name, err)
		}
	}
	err := Int8Rows(make([]int8, 4), make([]float32, 2), []float32{1, 2, inf, 0}, 2)
	if err == nil || !strings.Contains(err.Error(), "row 1") {
		t.Errorf("the non-finite error does not name the row: %v", err)
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		names []string
		f     Format
		dt    shapes.DType
	}{
		{[]string{"f32", "float32", "F32", " Float32 "}, F32, shapes.Float32},
		{[]string{"bf16", "bfloat16", "BF16"}, BF16, shapes.BFloat16},
		{[]string{"f16", "float16"}, F16, shapes.Float16},
		{[]string{"int8", "q8", "Q8"}, Int8, shapes.Int8},
	} {
		for _, n := range c.names {
			f, err := ParseFormat(n)
			if err != nil || f != c.f {
				t.Errorf("ParseFormat(%q) = %v, %v; want %v", n, f, err, c.f)
			}
		}
		if c.f.DType() != c.dt {
			t.Errorf("%v.DType() = %v, want %v", c.f, c.f.DType(), c.dt)
		}
		if back, err := ParseFormat(c.f.String()); err != nil || back != c.f {
			t.Errorf("String %q does not parse back: %v, %v", c.f.String(), back, err)
		}
	}
	var zero Format
	if zero != F32 {
		t.Error("the zero Format is not F32")
	}
	_, err := ParseFormat("fp8")
	if err == nil {
		t.Fatal("ParseFormat(fp8): no error")
	}
	for _, n := range []string{"fp8", "f32|float32", "bf16|bfloat16", "f16|float16", "int8|q8"} {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not mention %q", err, n)
		}
	}
	if Format(9).DType() != shapes.InvalidDType || Format(9).String() != "format(9)" {
		t.Errorf("unknown format: %v %v", Format(9).DType(), Format(9))
	}
}

func TestQuantize(t *testing.T) {
	src := []float32{127, -1, 64, 0, 0, 0}
	for _, f := range []Format{F32, BF16, F16, Int8} {
		data, scale, err := f.Quantize(src, 3)
		if err != nil {
			t.Fatalf("%v: %v", f, err)
		}
		back := make([]float32, len(src))
		switch d := data.(type) {
		case []float32:
			copy(back, d)
		case []uint16:
			if f == BF16 {
				err = DequantizeBF16(back, d)
			} else {
				err = DequantizeF16(back, d)
			}
		case []int8:
			err = DequantizeInt8Rows(back, d, scale, 3)
		default:
			t.Fatalf("%v: data %T", f, data)
		}
		if err != nil {
			t.Fatal(err)
		}
		if (scale != nil) != (f == Int8) {
			t.Errorf("%v: scale %v", f, scale)
		}
		for i, v := range src { // these values are exact in every format
			if back[i] != v {
				t.Errorf("%v: element %d %v came back as %v", f, i, v, back[i])
			}
		}
	}
	if _, _, err := Int8.Quantize(src, 4); err == nil {
		t.Error("int8 Quantize of partial rows: no error")
	}
	if _, _, err := Format(7).Quantize(src, 3); err == nil {
		t.Error("Quantize in an unknown format: no error")
	}
}

// TestInt16Blocks: activations are rounded per block of ActBlock along each row (the last block
// of a row shorter, no block spanning rows): the block's largest magnitude maps to ±32767, every
// value comes back within scale/2, an all-zero block gets scale 0, a block with an Inf or NaN
// gets scale NaN and zeros without touching its neighbours, and RoundInt16Blocks (in place too)
// gives exactly scale·q.
func TestInt16Blocks(t *testing.T) {
	const k = 70 // blocks of 32, 32 and 6 per row
	r := rand.New(rand.NewPCG(5, 6))
	src := make([]float32, 3*k)
	for i := range src {
		src[i] = float32(r.NormFloat64()) * 3
	}
	src[5] = 1000 // an outlier coarsens its own block only
	for p := k + 32; p < k+64; p++ {
		src[p] = 0 // row 1, block 1: all zero
	}
	src[2*k+33] = float32(math.Inf(-1)) // row 2, block 1
	src[2*k+66] = float32(math.NaN())   // row 2, block 2
	if ActBlocks(k) != 3 || ActBlocks(64) != 2 || ActBlocks(1) != 1 {
		t.Fatalf("ActBlocks: %d %d %d", ActBlocks(k), ActBlocks(64), ActBlocks(1))
	}
	q, scale := make([]int16, len(src)), make([]float32, 3*ActBlocks(k))
	if err := Int16Blocks(q, scale, src, k); err != nil {
		t.Fatal(err)
	}
	round := make([]float32, len(src))
	if err := RoundInt16Blocks(round, src, k); err != nil {
		t.Fatal(err)
	}
	for row := 0; row < 3; row++ {
		for b := 0; b < 3; b++ {
			lo, hi := row*k+b*ActBlock, row*k+min(k, (b+1)*ActBlock)
			s := scale[row*3+b]
			var amax float32
			bad := false
			for _, v := range src[lo:hi] {
				bad = bad || v != v || math.IsInf(float64(v), 0)
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			switch {
			case bad:
				if s == s {
					t.Fatalf("row %d block %d holds a non-finite value: scale %v, want NaN", row, b, s)
				}
			case amax == 0:
				if s != 0 {
					t.Fatalf("row %d block %d is zero: scale %v", row, b, s)
				}
			default:
				if s != amax/32767 {
					t.Fatalf("row %d block %d: scale %v, want %v", row, b, s, amax/32767)
				}
			}
			top := int16(0)
			for p := lo; p < hi; p++ {
				if bad || amax == 0 {
					if q[p] != 0 {
						t.Fatalf("q[%d] = %d, want 0", p, q[p])
					}
				} else if d := math.Abs(float64(s)*float64(q[p]) - float64(src[p])); d > float64(s)/2*(1+1e-6) {
					t.Fatalf("q[%d]: %v·%d is %g from %v", p, s, q[p], d, src[p])
				}
				top = max(top, q[p], -q[p])
				if want := s * float32(q[p]); math.Float32bits(round[p]) != math.Float32bits(want) {
					t.Fatalf("RoundInt16Blocks[%d] = %v, want %v", p, round[p], want)
				}
			}
			if !bad && amax != 0 && top != 32767 {
				t.Fatalf("row %d block %d: largest |q| %d, want 32767", row, b, top)
			}
		}
	}
	inPlace := append([]float32(nil), src...)
	if err := RoundInt16Blocks(inPlace, inPlace, k); err != nil {
		t.Fatal(err)
	}
	for p := range inPlace {
		if math.Float32bits(inPlace[p]) != math.Float32bits(round[p]) {
			t.Fatalf("in place [%d]: %v, want %v", p, inPlace[p], round[p])
		}
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{Int16Blocks(q, scale, src, 0), "not whole rows of 0"},
		{Int16Blocks(q, scale, src, 71), "not whole rows of 71"},
		{Int16Blocks(q[:5], scale, src, k), "Int16Blocks"},
		{Int16Blocks(q, scale[:8], src, k), "8 scales for 3 rows of 3 blocks"},
		{RoundInt16Blocks(round[:4], src, k), "RoundInt16Blocks"},
		{RoundInt16Blocks(round, src, 0), "not whole rows of 0"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("got %v, want an error containing %q", c.err, c.want)
		}
	}
}
