package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSSMStepRows checks the one-token state-space step against float64 at every level, in
// place and into a separate o, for state widths with and without a last 16 and row counts from
// 0; at levels or widths without a kernel it must report false and leave o and y alone.
func TestSSMStepRows(t *testing.T) {
	levelsL(t, func(t *testing.T, l Level) {
		r := rand.New(rand.NewPCG(41, 42))
		for _, n := range []int{8, 16, 17, 32, 48, 64, 128, 144} {
			for _, rows := range []int{0, 1, 3, 64} {
				for _, inPlace := range []bool{false, true} {
					s, x, b, c := randF32(r, rows*n), randF32(r, rows), randF32(r, n), randF32(r, n)
					decay, dt, d := float32(0.83), float32(0.37), float32(-1.25)
					o := make([]float32, rows*n)
					if inPlace {
						o = append([]float32(nil), s...)
					}
					s0 := append([]float32(nil), s...)
					y := make([]float32, rows)
					src := s
					if inPlace {
						src = o
					}
					ok := SSMStepRows(o, src, x, y, b, c, n, decay, dt, d)
					if want := l == AVX512 && n%16 == 0; ok != want {
						t.Fatalf("n=%d: reported %v, want %v", n, ok, want)
					}
					if !ok {
						for p := range y {
							if y[p] != 0 {
								t.Fatalf("n=%d: reported false but wrote y", n)
							}
						}
						continue
					}
					for p := 0; p < rows; p++ {
						f := float64(dt) * float64(x[p])
						var dot, abs float64
						for i := 0; i < n; i++ {
							t1, t2 := float64(decay)*float64(s0[p*n+i]), f*float64(b[i])
							v := t1 + t2
							if got := o[p*n+i]; math.Abs(float64(got)-v) > 2e-7*(math.Abs(t1)+math.Abs(t2))+1e-30 {
								t.Fatalf("n=%d rows=%d in place %v: o[%d,%d] = %v, want %v", n, rows, inPlace, p, i, got, v)
							}
							dot += v * float64(c[i])
							abs += math.Abs(v * float64(c[i]))
						}
						want := dot + float64(d)*float64(x[p])
						if !close32(y[p], want, abs+math.Abs(float64(d)*float64(x[p])), n) {
							t.Fatalf("n=%d rows=%d in place %v: y[%d] = %v, want %v", n, rows, inPlace, p, y[p], want)
						}
					}
				}
			}
		}
	})
}
