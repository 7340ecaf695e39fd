package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mamba2go/mamba2/quant"
)

// TestMatVecTInt8Q16: int8 weights times activations rounded per block (quant.Int16Blocks)
// match a float64 product of the dequantised weights with quant.RoundInt16Blocks's activations,
// at every level (AVX-512 runs the VNNI kernels where the CPU has them), for sizes around the
// 32-value blocks and row counts around the 4-row kernel, row ranges included.
func TestMatVecTInt8Q16(t *testing.T) {
	levelsL(t, func(t *testing.T, l Level) {
		if l == AVX512 && !cpuVNNI {
			t.Log("no AVX-512 VNNI here: the float32 fallback runs")
		}
		r := rand.New(rand.NewPCG(21, 22))
		for _, k := range sizes {
			for _, n := range []int{1, 3, 4, 7, 8} {
				w, x := randF32(r, n*k), randF32(r, k)
				if k > 40 {
					x[37] = 40 // an outlier: its block gets a coarse scale, the others do not
				}
				m := NewInt8Matrix(w, n, k)
				dw, dx := make([]float32, n*k), make([]float32, k)
				m.Dequantize(dw)
				if k > 0 {
					if err := quant.RoundInt16Blocks(dx, x, k); err != nil {
						t.Fatal(err)
					}
				}
				v := NewQ16Vector(k)
				v.Quantize(x)
				for p := range dx {
					if v.Dequantized()[p] != dx[p] {
						t.Fatalf("k=%d: Dequantized()[%d] = %v, RoundInt16Blocks %v", k, p, v.Dequantized()[p], dx[p])
					}
				}
				y := make([]float32, n)
				MatVecTInt8Q16(y, m, v, 0, n)
				for j := 0; j < n; j++ {
					want, abs := refDot(k, func(p int) float32 { return dw[j*k+p] }, func(p int) float32 { return dx[p] })
					if !close32(y[j], want, abs, k) {
						t.Fatalf("n=%d k=%d row %d: %v, want %v", n, k, j, y[j], want)
					}
				}
				if n >= 3 { // a range (rows through the other kernel) gives the same bits
					z := make([]float32, n)
					MatVecTInt8Q16(z, m, v, 1, n-1)
					for j := 0; j < n; j++ {
						if want := map[bool]float32{true: y[j], false: 0}[j > 0 && j < n-1]; z[j] != want {
							t.Fatalf("range n=%d k=%d row %d: %v, want %v", n, k, j, z[j], want)
						}
					}
				}
			}
		}
	})
}

// TestMatVecTInt8Q16NonFinite: an Inf or NaN activation makes every output NaN (its block's
// scale is NaN), as float32 arithmetic would; the other blocks do not matter.
func TestMatVecTInt8Q16NonFinite(t *testing.T) {
	levels(t, func(t *testing.T) {
		for _, bad := range []float32{float32(math.Inf(1)), float32(math.NaN())} {
			for _, k := range []int{32, 100, 256} {
				r := rand.New(rand.NewPCG(3, uint64(k)))
				w, x := randF32(r, 5*k), randF32(r, k)
				x[k/2] = bad
				v := NewQ16Vector(k)
				v.Quantize(x)
				y := make([]float32, 5)
				MatVecTInt8Q16(y, NewInt8Matrix(w, 5, k), v, 0, 5)
				for j, got := range y {
					if got == got {
						t.Fatalf("x[%d]=%v k=%d row %d: %v, want NaN", k/2, bad, k, j, got)
					}
				}
			}
		}
	})
}

// TestRoundInt16 checks the assembly rounding against package quant bit for bit, at every level:
// Q16Vector.Quantize (values, scales and Dequantized) and RoundInt16Rows (several rows, rows
// longer than its 64-block pieces, partial blocks, in place), with zero, tiny, huge, Inf and NaN
// blocks and values on rounding ties.
func TestRoundInt16(t *testing.T) {
	levels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(31, 32))
		for _, k := range []int{1, 31, 32, 33, 64, 100, 2048, 2100, 4096 + 40} {
			x := randF32(r, 3*k)
			for i := range x {
				switch r.IntN(40) {
				case 0:
					x[i] = 0
				case 1:
					x[i] *= 1e-30
				case 2:
					x[i] *= 1e30
				case 3:
					x[i] = float32(math.Inf(1))
				case 4:
					x[i] = float32(math.NaN())
				case 5:
					x[i] = float32(r.IntN(100)) + 0.5 // ties, where the block's scale makes them so
				}
			}
			if k >= 64 {
				clear(x[32:64]) // an all-zero block
			}
			want := make([]float32, len(x))
			if err := quant.RoundInt16Blocks(want, x, k); err != nil {
				t.Fatal(err)
			}
			got := make([]float32, len(x))
			RoundInt16Rows(got, x, k)
			inPlace := append([]float32(nil), x...)
			RoundInt16Rows(inPlace, inPlace, k)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) || math.Float32bits(inPlace[i]) != math.Float32bits(want[i]) {
					t.Fatalf("k=%d [%d] (x %v): RoundInt16Rows %v, in place %v, want %v", k, i, x[i], got[i], inPlace[i], want[i])
				}
			}
			row := x[:k]
			q, scale := make([]int16, k), make([]float32, quant.ActBlocks(k))
			if err := quant.Int16Blocks(q, scale, row, k); err != nil {
				t.Fatal(err)
			}
			v := NewQ16Vector(k)
			v.Quantize(row)
			for b := range scale {
				if math.Float32bits(v.Scale[b]) != math.Float32bits(scale[b]) {
					t.Fatalf("k=%d scale[%d]: %v, want %v", k, b, v.Scale[b], scale[b])
				}
			}
			for p := range q {
				if v.Q[p] != q[p] || math.Float32bits(v.Dequantized()[p]) != math.Float32bits(want[p]) {
					t.Fatalf("k=%d [%d]: q %d (want %d), value %v (want %v)", k, p, v.Q[p], q[p], v.Dequantized()[p], want[p])
				}
			}
		}
	})
}
