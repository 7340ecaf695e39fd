package backendtest

import (
	"math/rand/v2"
	"testing"
)

func init() {
	backwardRefChecks = append(backwardRefChecks, checkConvGradRef, checkSSDGradRef)
}

func checkConvGradRef(t *testing.T, rng *rand.Rand, tol float64) {
	for _, lengths := range [][]int64{nil, {1, 3}} {
		x, w, b, s := randTensor(rng, -1, 1, 2, 3, 2), randTensor(rng, -1, 1, 2, 4), randTensor(rng, -1, 1, 2), randTensor(rng, -1, 1, 2, 2, 4)
		gy, gs := randTensor(rng, -1, 1, 2, 3, 2), randTensor(rng, -1, 1, 2, 2, 4)
		var l *Tensor
		if lengths != nil {
			l = &Tensor{Dims: dims(2), I: lengths}
		}
		dx, dw, db, ds := RefCausalConv1DGrad(x, w, b, s, gy, gs, l)
		g := append(append([]float64(nil), gy.F...), gs.F...)
		fwd := func() []float64 {
			y, st := RefCausalConv1D(x, w, b, s, l)
			return append(append([]float64(nil), y.F...), st.F...)
		}
		requireClose(t, "conv dx", dx.F, numericGrad(x.F, fwd, g), tol)
		requireClose(t, "conv dw", dw.F, numericGrad(w.F, fwd, g), tol)
		requireClose(t, "conv dbias", db.F, numericGrad(b.F, fwd, g), tol)
		requireClose(t, "conv dstate", ds.F, numericGrad(s.F, fwd, g), tol)
	}
}

func checkSSDGradRef(t *testing.T, rng *rand.Rand, tol float64) {
	const bs, ts, hs, ps, gn, ns = 2, 4, 4, 2, 2, 3
	in := []*Tensor{
		randTensor(rng, -1, 1, bs, ts, hs, ps), randTensor(rng, 0.05, 0.6, bs, ts, hs), randTensor(rng, -2, -0.1, hs),
		randTensor(rng, -1, 1, bs, ts, gn, ns), randTensor(rng, -1, 1, bs, ts, gn, ns), randTensor(rng, -1, 1, hs),
		randTensor(rng, -1, 1, bs, hs, ps, ns),
	}
	gy, gs := randTensor(rng, -1, 1, bs, ts, hs, ps), randTensor(rng, -1, 1, bs, hs, ps, ns)
	grads := RefSSDGrad(in[0], in[1], in[2], in[3], in[4], in[5], in[6], gy, gs)
	g := append(append([]float64(nil), gy.F...), gs.F...)
	fwd := func() []float64 {
		y, st := RefSSD(in[0], in[1], in[2], in[3], in[4], in[5], in[6])
		return append(append([]float64(nil), y.F...), st.F...)
	}
	for i, name := range []string{"dx", "ddt", "dA", "dB", "dC", "dD", "dstate"} {
		requireClose(t, "SSD "+name, grads[i].F, numericGrad(in[i].F, fwd, g), tol)
	}
}

// TestSSDByHand: one head, one token, P = N = 1: S = e^{dt·A}·S0 + dt·x·B, y = S·C + D·x.
func TestSSDByHand(t *testing.T) {
	one := func(v float64) *Tensor { return tensor(dims(1, 1, 1, 1), v) }
	y, s := RefSSD(one(2), tensor(dims(1, 1, 1), 0.5), tensor(dims(1), -2), one(3), one(4), tensor(dims(1), 0.25), one(7))
	// S = e^{-1}·7 + 0.5·2·3, y = S·4 + 0.5
	wantS := 7*0.36787944117144233 + 3
	requireClose(t, "state", s.F, []float64{wantS}, 1e-15)
	requireClose(t, "y", y.F, []float64{wantS*4 + 0.5}, 1e-15)
}
