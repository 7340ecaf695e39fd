package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestBF16Conversion(t *testing.T) {
	cases := []struct {
		in   uint32
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f808001, 0x3f81}, // above tie
		{0x3f807fff, 0x3f80}, // below tie
		{0x7f7fffff, 0x7f80}, // max float rounds to +Inf
		{0x7f800000, 0x7f80}, // +Inf
		{0xff800000, 0xff80}, // -Inf
		{0x80000000, 0x8000}, // -0
		{0x00000001, 0x0000}, // tiny subnormal to 0
	}
	for _, c := range cases {
		if got := ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("ToBF16(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if v := FromBF16(ToBF16(float32(math.NaN()))); v == v {
		t.Error("NaN did not stay NaN")
	}
	if v := FromBF16(ToBF16(math.Float32frombits(0x7f800001))); v == v {
		t.Error("signalling NaN with low payload became Inf")
	}
	// Every bf16 value round-trips.
	for h := 0; h < 1<<16; h++ {
		f := FromBF16(uint16(h))
		if f != f {
			continue
		}
		if got := ToBF16(f); got != uint16(h) {
			t.Fatalf("round trip %#04x -> %v -> %#04x", h, f, got)
		}
	}
}

func TestF16Conversion(t *testing.T) {
	// Every half value round-trips, and widening agrees with the slow path.
	for h := 0; h < 1<<16; h++ {
		f := FromF16(uint16(h))
		if f != f {
			if g := ToF16(f); g&0x7c00 != 0x7c00 || g&0x3ff == 0 {
				t.Fatalf("NaN %#04x -> %#04x", h, g)
			}
			continue
		}
		if got := ToF16(f); got != uint16(h) {
			t.Fatalf("round trip %#04x -> %v -> %#04x", h, f, got)
		}
	}
	// Rounding: nearest, ties to even, checked against neighbouring half values.
	r := rand.New(rand.NewPCG(9, 10))
	for i := 0; i < 200000; i++ {
		f := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-26)))
		h := ToF16(f)
		g := FromF16(h)
		if math.IsInf(float64(g), 0) {
			if math.Abs(float64(f)) < 65504+16 {
				t.Fatalf("%v overflowed to %v", f, g)
			}
			continue
		}
		// Neighbours in the direction away from and towards zero.
		up, down := FromF16(h+1), FromF16(h-1)
		d := math.Abs(float64(f - g))
		if h&0x7fff != 0 && math.Abs(float64(f-down)) < d || h&0x7fff != 0x7bff && math.Abs(float64(f-up)) < d {
			t.Fatalf("ToF16(%v) = %v (%#04x) is not the nearest half", f, g, h)
		}
	}
	ties := []struct {
		f    float32
		want uint16
	}{
		{1 + 1.0/2048, 0x3c00},         // halfway between 1 and 1+2^-10: even (1)
		{1 + 3.0/2048, 0x3c02},         // halfway, odd below: up
		{65520, 0x7c00},                // halfway between max half and 2^16: to Inf
		{float32(math.Pow(2, -25)), 0}, // half the smallest subnormal: to even (0)
		{float32(3 * math.Pow(2, -25)), 2},
		{float32(math.Pow(2, -24)), 1},
	}
	for _, c := range ties {
		if got := ToF16(c.f); got != c.want {
			t.Errorf("ToF16(%v) = %#04x, want %#04x", c.f, got, c.want)
		}
	}
}

func TestQuantisedMatVec(t *testing.T) {
	levels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(11, 12))
		for _, k := range sizes {
			for _, n := range []int{1, 3, 4, 5, 8, 11} {
				w, x := randF32(r, n*k), randF32(r, k)
				for _, q := range []struct {
					name string
					deq  func([]float32)
					mv   func(y []float32, lo, hi int)
				}{
					{"bf16", NewBF16Matrix(w, n, k).Dequantize, func(y []float32, lo, hi int) { MatVecTBF16(y, NewBF16Matrix(w, n, k), x, lo, hi) }},
					{"int8", NewInt8Matrix(w, n, k).Dequantize, func(y []float32, lo, hi int) { MatVecTInt8(y, NewInt8Matrix(w, n, k), x, lo, hi) }},
					{"f16", NewF16Matrix(w, n, k).Dequantize, func(y []float32, lo, hi int) { MatVecTF16(y, NewF16Matrix(w, n, k), x, lo, hi) }},
				} {
					dq := make([]float32, n*k)
					q.deq(dq)
					y := make([]float32, n)
					q.mv(y, 0, n)
					for j := 0; j < n; j++ {
						want, abs := refDot(k, func(p int) float32 { return dq[j*k+p] }, func(p int) float32 { return x[p] })
						if !close32(y[j], want, abs, k) {
							t.Fatalf("%s n=%d k=%d row %d: %v, want %v", q.name, n, k, j, y[j], want)
						}
					}
					if n >= 3 { // a range gives the same bits and leaves other rows alone
						z := make([]float32, n)
						q.mv(z, 1, n-1)
						for j := 0; j < n; j++ {
							if want := map[bool]float32{true: y[j], false: 0}[j > 0 && j < n-1]; z[j] != want {
								t.Fatalf("%s range n=%d k=%d row %d: %v, want %v", q.name, n, k, j, z[j], want)
							}
						}
					}
				}
			}
		}
	})
}

func TestQuantisationError(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	n, k := 7, 300
	w := randF32(r, n*k)
	w[5] = 0
	for j := 0; j < k; j++ {
		w[3*k+j] = 0 // an all-zero row
	}
	dq := make([]float32, n*k)
	NewInt8Matrix(w, n, k).Dequantize(dq)
	q := NewInt8Matrix(w, n, k)
	for j := 0; j < n; j++ {
		var amax float32
		for _, v := range w[j*k : j*k+k] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		if math.Abs(float64(q.Scale[j]-amax/127)) > 1e-7*float64(amax) {
			t.Fatalf("row %d scale %v, want %v", j, q.Scale[j], amax/127)
		}
		for p := 0; p < k; p++ {
			if e := math.Abs(float64(dq[j*k+p] - w[j*k+p])); e > float64(q.Scale[j])*0.5000001 {
				t.Fatalf("int8 error %v at %d,%d exceeds half a step %v", e, j, p, q.Scale[j]/2)
			}
		}
	}
	NewBF16Matrix(w, n, k).Dequantize(dq)
	for i, v := range w {
		if e := math.Abs(float64(dq[i] - v)); e > math.Abs(float64(v))/256 {
			t.Fatalf("bf16 error %v at %d (value %v)", e, i, v)
		}
	}
	NewF16Matrix(w, n, k).Dequantize(dq)
	for i, v := range w {
		if e := math.Abs(float64(dq[i] - v)); e > math.Abs(float64(v))/2048+math.Pow(2, -25) {
			t.Fatalf("f16 error %v at %d (value %v)", e, i, v)
		}
	}
}
