package kernels

import (
	"math/rand/v2"
	"testing"
)

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

// TestDequantizeRows: the panels the prefill product dequantises are bitwise the values of
// package quant (Dequantize, which goes through it), row ranges included, at every level.
func TestDequantizeRows(t *testing.T) {
	levels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(15, 16))
		for _, k := range []int{1, 7, 31, 32, 33, 64, 65, 200, 768} {
			n := 5
			w := randF32(r, n*k)
			for _, q := range []struct {
				name string
				all  func([]float32)
				rows func(dst []float32, lo, hi int)
			}{
				{"bf16", NewBF16Matrix(w, n, k).Dequantize, NewBF16Matrix(w, n, k).DequantizeRows},
				{"f16", NewF16Matrix(w, n, k).Dequantize, NewF16Matrix(w, n, k).DequantizeRows},
				{"int8", NewInt8Matrix(w, n, k).Dequantize, NewInt8Matrix(w, n, k).DequantizeRows},
			} {
				want := make([]float32, n*k)
				q.all(want)
				for _, rg := range [][2]int{{0, n}, {1, 4}, {2, 3}, {3, 3}} {
					got := make([]float32, (rg[1]-rg[0])*k+1)
					got[len(got)-1] = 42 // past the rows: must stay
					q.rows(got, rg[0], rg[1])
					for i, v := range got[:len(got)-1] {
						if v != want[rg[0]*k+i] {
							t.Fatalf("%s k=%d rows %v: element %d is %v, want %v", q.name, k, rg, i, v, want[rg[0]*k+i])
						}
					}
					if got[len(got)-1] != 42 {
						t.Fatalf("%s k=%d rows %v wrote past its rows", q.name, k, rg)
					}
				}
			}
		}
	})
}
