package backendtest

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// These tests check the suite itself, with no backend: the references against values worked out
// by hand and against finite differences, and the tables' coverage.

func tensor(dims []int, f ...float64) *Tensor { return &Tensor{Dims: dims, F: f} }

func requireClose(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if msg := compare(got, want, []int{len(got)}, tol); msg != "" {
		t.Errorf("%s: %s", what, msg)
	}
}

func TestReferencesByHand(t *testing.T) {
	a := tensor(dims(2, 3), 1, 2, 3, 4, 5, 6)
	requireClose(t, "broadcast add", RefBinary(a, tensor(dims(3), 10, 20, 30), func(x, y float64) float64 { return x + y }).F,
		[]float64{11, 22, 33, 14, 25, 36}, 0)
	requireClose(t, "broadcast col", RefBinary(tensor(dims(2, 1), 1, 2), tensor(dims(1, 3), 1, 2, 3), func(x, y float64) float64 { return x * y }).F,
		[]float64{1, 2, 3, 2, 4, 6}, 0)
	b := tensor(dims(3, 2), 1, 0, 0, 1, 1, 1)
	requireClose(t, "matmul", RefMatMul(a, b, false, false).F, []float64{4, 5, 10, 11}, 0)
	requireClose(t, "matmul transA", RefMatMul(tensor(dims(3, 2), 1, 4, 2, 5, 3, 6), b, true, false).F, []float64{4, 5, 10, 11}, 0)
	requireClose(t, "matmul transB", RefMatMul(a, tensor(dims(2, 3), 1, 0, 1, 0, 1, 1), false, true).F, []float64{4, 5, 10, 11}, 0)
	batched := RefMatMul(tensor(dims(2, 1, 2), 1, 2, 3, 4), tensor(dims(2, 1), 10, 1), false, false)
	requireClose(t, "matmul batch", batched.F, []float64{12, 34}, 0)
	if !slices.Equal(batched.Dims, dims(2, 1, 1)) {
		t.Errorf("batched dims %v", batched.Dims)
	}
	requireClose(t, "sum axis 0", RefSum(a, dims(0), false).F, []float64{5, 7, 9}, 0)
	requireClose(t, "sum axis 1 keep", RefSum(a, dims(1), true).F, []float64{6, 15}, 0)
	requireClose(t, "transpose", RefTranspose(a, dims(1, 0)).F, []float64{1, 4, 2, 5, 3, 6}, 0)
	requireClose(t, "slice", RefSlice(a, 1, 1, 3).F, []float64{2, 3, 5, 6}, 0)
	requireClose(t, "pad", RefPad(a, 0, 1, 0).F, []float64{0, 0, 0, 1, 2, 3, 4, 5, 6}, 0)
	requireClose(t, "concat", RefConcat(1, a, tensor(dims(2, 1), 7, 8)).F, []float64{1, 2, 3, 7, 4, 5, 6, 8}, 0)
	idx := &Tensor{Dims: dims(3), I: []int64{1, 0, 1}}
	requireClose(t, "gather", RefGather(a, idx).F, []float64{4, 5, 6, 1, 2, 3, 4, 5, 6}, 0)
	requireClose(t, "scatter", RefScatterAdd(idx, tensor(dims(3, 1), 1, 2, 3), 3).F, []float64{2, 4, 0}, 0)
	sm := RefSoftmax(tensor(dims(1, 2), 0, math.Log(3)), 1)
	requireClose(t, "softmax", sm.F, []float64{0.25, 0.75}, 1e-15)
	ce := RefCrossEntropy(tensor(dims(1, 2), 0, math.Log(3)), &Tensor{Dims: dims(1), I: []int64{1}})
	requireClose(t, "cross-entropy", ce.F, []float64{-math.Log(0.75)}, 1e-15)
	rn := RefRMSNorm(tensor(dims(1, 2), 3, 4), tensor(dims(2), 1, 2), 0)
	r := math.Sqrt(12.5)
	requireClose(t, "rmsnorm", rn.F, []float64{3 / r, 8 / r}, 1e-15)
	// groups = channels: every h normalises to sign(h)·w.
	gn := RefGatedRMSNorm(tensor(dims(1, 2), 2, -3), tensor(dims(1, 2), 1, 1), tensor(dims(2), 1, 2), 0, 2)
	requireClose(t, "gated rmsnorm per channel", gn.F, []float64{1, -2}, 1e-15)
}

// numericGrad differentiates Σ g·f(x) with respect to x[j] by central differences.
func numericGrad(x []float64, f func() []float64, g []float64) []float64 {
	res := make([]float64, len(x))
	const h = 1e-6
	for j := range x {
		orig := x[j]
		x[j] = orig + h
		fp := f()
		x[j] = orig - h
		fm := f()
		x[j] = orig
		var s float64
		for i := range fp {
			s += g[i] * (fp[i] - fm[i])
		}
		res[j] = s / (2 * h)
	}
	return res
}

func randTensor(rng *rand.Rand, lo, hi float64, d ...int) *Tensor {
	t := NewTensor(d...)
	for i := range t.F {
		t.F[i] = lo + (hi-lo)*rng.Float64()
	}
	return t
}

// TestBackwardReferences checks the hand-derived backward references against finite differences
// of the forward references.
func TestBackwardReferences(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const tol = 1e-7
	{
		x, w, g := randTensor(rng, -2, 2, 3, 5), randTensor(rng, 0.5, 1.5, 5), randTensor(rng, -1, 1, 3, 5)
		dx, dw := RefRMSNormGrad(x, w, g, 1e-3)
		fwd := func() []float64 { return RefRMSNorm(x, w, 1e-3).F }
		requireClose(t, "RMSNorm dx", dx.F, numericGrad(x.F, fwd, g.F), tol)
		requireClose(t, "RMSNorm dw", dw.F, numericGrad(w.F, fwd, g.F), tol)
	}
	for _, groups := range []int{1, 2, 6} {
		y, z, w := randTensor(rng, -2, 2, 2, 6), randTensor(rng, -3, 3, 2, 6), randTensor(rng, 0.5, 1.5, 6)
		g := randTensor(rng, -1, 1, 2, 6)
		dy, dz, dw := RefGatedRMSNormGrad(y, z, w, g, 1e-3, groups)
		fwd := func() []float64 { return RefGatedRMSNorm(y, z, w, 1e-3, groups).F }
		requireClose(t, "GatedRMSNorm dy", dy.F, numericGrad(y.F, fwd, g.F), tol)
		requireClose(t, "GatedRMSNorm dz", dz.F, numericGrad(z.F, fwd, g.F), tol)
		requireClose(t, "GatedRMSNorm dw", dw.F, numericGrad(w.F, fwd, g.F), tol)
	}
	{
		logits := randTensor(rng, -3, 3, 4, 5)
		tg := &Tensor{Dims: dims(4), I: []int64{0, 4, 2, 2}}
		g := randTensor(rng, -1, 1, 4)
		d := RefCrossEntropyGrad(logits, tg, g)
		fwd := func() []float64 { return RefCrossEntropy(logits, tg).F }
		requireClose(t, "CrossEntropy dlogits", d.F, numericGrad(logits.F, fwd, g.F), tol)
	}
	for _, c := range backwardRefChecks {
		c(t, rng, tol)
	}
}

// backwardRefChecks holds more backward-reference checks, added by op files.
var backwardRefChecks []func(t *testing.T, rng *rand.Rand, tol float64)

// notDifferentiated are ops with forward cases but no gradient of their own, besides backward
// kernels (named "…Grad"): ScatterAdd, and the quantized ops (inference only).
var notDifferentiated = []string{"ScatterAdd", "QuantMatMul", "QuantGather"}

// TestGradCoverage: every op with forward cases has a gradient case unless it is a backward op.
func TestGradCoverage(t *testing.T) {
	graded := map[string]bool{}
	for _, c := range GradCases() {
		op, _, _ := strings.Cut(c.Name, "/")
		graded[op] = true
	}
	for _, op := range CoveredOps() {
		if !graded[op] && !slices.Contains(notDifferentiated, op) && !strings.HasSuffix(op, "Grad") {
			t.Errorf("op %s has forward cases but no gradient case", op)
		}
	}
}

// TestCaseNamesUnique: subtest names identify cases.
func TestCaseNamesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Cases() {
		if seen[c.Name] {
			t.Errorf("duplicate case %s", c.Name)
		}
		seen[c.Name] = true
	}
	seen = map[string]bool{}
	for _, c := range GradCases() {
		if seen[c.Name] {
			t.Errorf("duplicate gradient case %s", c.Name)
		}
		seen[c.Name] = true
	}
}
