package cpu

import (
	"math"
	"testing"
)

// activationInputs covers both signs, the vector exp's clamp and flush points, tiny and huge
// values, in lengths that leave every tail size.
func activationInputs() []float32 {
	xs := []float32{0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 3, -3, 17, -17, 41, -41, 41.6, -41.6, 80, -80, 87.5, -87.5, 88.5, -88.5, 100, -100, 1e30, -1e30}
	for i := 0; i < 331; i++ {
		xs = append(xs, float32(math.Sin(float64(i)*1.7)*float64(i%37)))
	}
	return xs
}

// checkActivations compares sigmoid32 and gatedSiLU32 with the float64 definitions.
func checkActivations(t *testing.T, level string) {
	t.Helper()
	xs := activationInputs()
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 31, 33, len(xs)} {
		x := xs[:n]
		z := make([]float32, n)
		for i := range z {
			z[i] = xs[(i*7+3)%len(xs)]
		}
		sig, silu, gated := make([]float32, n), make([]float32, n), make([]float32, n)
		sigmoid32(sig, x, false)
		sigmoid32(silu, x, true)
		gatedSiLU32(gated, x, z)
		for i, v := range x {
			s := sigmoid64(float64(v))
			g := float64(v) * float64(z[i]) * sigmoid64(float64(z[i]))
			for _, c := range []struct {
				name      string
				got, want float64
			}{
				{"sigmoid", float64(sig[i]), s},
				{"silu", float64(silu[i]), float64(v) * s},
				{"gated", float64(gated[i]), g},
			} {
				// About three ulps, or an absolute 1e-30 where the true value is tinier still.
				if d := math.Abs(c.got - c.want); d > 4e-7*math.Abs(c.want) && d > 1e-30 {
					t.Errorf("%s %s(n=%d)[%d] at x=%g z=%g: got %g, want %g", level, c.name, n, i, v, z[i], c.got, c.want)
				}
			}
		}
	}
	nan := float32(math.NaN())
	in := []float32{nan, float32(math.Inf(1)), float32(math.Inf(-1))}
	for len(in) < 40 {
		in = append(in, nan)
	}
	out := make([]float32, len(in))
	sigmoid32(out, in, false)
	if out[1] != 1 || out[2] != 0 {
		t.Errorf("%s: sigmoid(+Inf), sigmoid(−Inf) = %g, %g; want 1, 0", level, out[1], out[2])
	}
	for i, v := range out {
		if i != 1 && i != 2 && !math.IsNaN(float64(v)) {
			t.Errorf("%s: sigmoid(NaN)[%d] = %g, want NaN", level, i, v)
		}
	}
}

func TestActivationsFloat32(t *testing.T) { checkActivations(t, "default") }
