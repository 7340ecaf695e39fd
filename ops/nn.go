package ops

import (
	"github.com/mamba2go/mamba2/shapes"
)

// SoftmaxOp normalises exp(x) along Axis (computed stably: the maximum is subtracted first).
type SoftmaxOp struct{ Axis int }

// Name is "Softmax".
func (SoftmaxOp) Name() string { return "Softmax" }

// Infer returns the input shape.
func (op SoftmaxOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 1); err != nil {
		return nil, err
	}
	if err := sameFloat(in); err != nil {
		return nil, err
	}
	if _, err := shapes.NormAxis(op.Axis, in[0].Rank()); err != nil {
		return fail("input %s: %v", in[0], err)
	}
	return one(in[0].Clone())
}

// VJP is y·(g − Σ_axis g·y).
func (op SoftmaxOp) VJP(in, out, gout []Value) ([]Value, error) {
	g, y := gout[0], out[0]
	return []Value{Mul(y, Sub(g, SumKeep(Mul(g, y), op.Axis)))}, nil
}

// Softmax returns exp(x) normalised to sum 1 along axis (negative counts from the end).
func Softmax[V Value](x V, axis int) V { return apply1(SoftmaxOp{Axis: axis}, x) }

// CrossEntropyOp is the per-position negative log-likelihood: inputs logits [..., V] (float) and
// targets [...] (int64, the logits' leading dimensions); output [...] = logsumexp(logits) −
// logits[target]. A target outside [0, V) is a run-time error of the kernel.
type CrossEntropyOp struct{}

// Name is "CrossEntropy".
func (CrossEntropyOp) Name() string { return "CrossEntropy" }

// checkLogitsTargets validates the logits/targets pair shared by CrossEntropy and its gradient.
func checkLogitsTargets(logits, targets shapes.Shape) error {
	if !logits.DType.IsFloat() || logits.Rank() < 1 {
		_, err := fail("logits %s must be float with a class axis [..., V]", logits)
		return err
	}
	if targets.DType != shapes.Int64 {
		_, err := fail("targets %s must be int64", targets)
		return err
	}
	if !shapes.EqualDims(targets.Dims, logits.Dims[:logits.Rank()-1]) {
		_, err := fail("targets %s must have the leading dimensions of logits %s", targets, logits)
		return err
	}
	return nil
}

// Infer returns the targets' dimensions with the logits' dtype.
func (op CrossEntropyOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 2); err != nil {
		return nil, err
	}
	if err := checkLogitsTargets(in[0], in[1]); err != nil {
		return nil, err
	}
	return one(shapes.Make(in[0].DType, in[1].Dims...))
}

// VJP is (softmax(logits) − onehot(target))·g, computed by CrossEntropyGradOp; targets get none.
func (op CrossEntropyOp) VJP(in, out, gout []Value) ([]Value, error) {
	return []Value{apply1(CrossEntropyGradOp{}, in[0], in[1], gout[0]), nil}, nil
}

// CrossEntropy returns logsumexp(logits) − logits[targets] per position: logits [..., V], int64
// targets [...], result [...].
func CrossEntropy[V Value](logits, targets V) V {
	return apply1(CrossEntropyOp{}, logits, targets)
}

// CrossEntropyGradOp is CrossEntropy's backward: inputs logits [..., V], targets [...] and the
// loss gradient g [...]; output (softmax(logits) − onehot(target))·g, shaped like logits.
type CrossEntropyGradOp struct{}

// Name is "CrossEntropyGrad".
func (CrossEntropyGradOp) Name() string { return "CrossEntropyGrad" }

// Infer returns the logits' shape.
func (op CrossEntropyGradOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 3); err != nil {
		return nil, err
	}
	if err := checkLogitsTargets(in[0], in[1]); err != nil {
		return nil, err
	}
	if in[2].DType != in[0].DType || !shapes.EqualDims(in[2].Dims, in[1].Dims) {
		return fail("gradient %s must be %s with the targets' dimensions %s", in[2], in[0].DType, in[1])
	}
	return one(in[0].Clone())
}

// VJP: backward ops are not differentiated again.
func (op CrossEntropyGradOp) VJP(in, out, gout []Value) ([]Value, error) { return nil, ErrNoGradient }

// RMSNormOp normalises the last axis: x / sqrt(mean(x²) + Eps) · weight, with x [..., D] and
// weight [D].
type RMSNormOp struct{ Eps float64 }

// Name is "RMSNorm".
func (RMSNormOp) Name() string { return "RMSNorm" }

// checkNormWeight checks that xs are float tensors of one shape [..., D] and weight is [D].
func checkNormWeight(in []shapes.Shape, nx int) error {
	if err := sameFloat(in); err != nil {
		return err
	}
	x := in[0]
	if x.Rank() < 1 {
		_, err := fail("input %s needs a feature axis", x)
		return err
	}
	for i := 1; i < nx; i++ {
		if !shapes.EqualDims(in[i].Dims, x.Dims) {
			_, err := fail("input %d %s differs from input 0 %s", i, in[i], x)
			return err
		}
	}
	w := in[nx]
	if w.Rank() != 1 || w.Dims[0] != x.Dims[x.Rank()-1] {
		_, err := fail("weight %s must be [%d] for input %s", w, x.Dims[x.Rank()-1], x)
		return err
	}
	return nil
}

func checkEps(eps float64) error {
	if !(eps >= 0) {
		_, err := fail("eps %v must be ≥ 0", eps)
		return err
	}
	return nil
}

// Infer returns x's shape.
func (op RMSNormOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 2); err != nil {
		return nil, err
	}
	if err := checkEps(op.Eps); err != nil {
		return nil, err
	}
	if err := checkNormWeight(in, 1); err != nil {
		return nil, err
	}
	return one(in[0].Clone())
}

// VJP runs RMSNormGradOp.
func (op RMSNormOp) VJP(in, out, gout []Value) ([]Value, error) {
	g := apply(RMSNormGradOp{Eps: op.Eps}, in[0], in[1], gout[0])
	return []Value{g[0], g[1]}, nil
}

// RMSNorm returns x / sqrt(mean(x², last axis) + eps) · weight.
func RMSNorm[V Value](x, weight V, eps float64) V {
	return apply1(RMSNormOp{Eps: eps}, x, weight)
}

// RMSNormGradOp is RMSNorm's backward: inputs x, weight and g; outputs dx and dweight.
type RMSNormGradOp struct{ Eps float64 }

// Name is "RMSNormGrad".
func (RMSNormGradOp) Name() string { return "RMSNormGrad" }

// NumOutputs is 2 (dx, dweight).
func (RMSNormGradOp) NumOutputs() int { return 2 }

// Infer returns x's and weight's shapes.
func (op RMSNormGradOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 3); err != nil {
		return nil, err
	}
	if err := checkEps(op.Eps); err != nil {
		return nil, err
	}
	if err := checkNormWeight(in[:2], 1); err != nil {
		return nil, err
	}
	if !in[2].Equal(in[0]) {
		return fail("gradient %s differs from x %s", in[2], in[0])
	}
	return []shapes.Shape{in[0].Clone(), in[1].Clone()}, nil
}

// VJP: backward ops are not differentiated again.
func (op RMSNormGradOp) VJP(in, out, gout []Value) ([]Value, error) { return nil, ErrNoGradient }

// GatedRMSNormOp is Mamba2's output norm: inputs y [..., D], z [..., D] and weight [D];
// h = y·silu(z), then h is RMS-normalised over the whole last axis (Groups ≤ 1, Hugging Face) or
// separately over each of Groups contiguous groups of D/Groups channels (original mamba_ssm), and
// multiplied by weight.
type GatedRMSNormOp struct {
	Eps    float64
	Groups int
}

// Name is "GatedRMSNorm".
func (GatedRMSNormOp) Name() string { return "GatedRMSNorm" }

func checkGroups(groups, d int) error {
	if groups > 1 && d%groups != 0 {
		_, err := fail("feature size %d is not divisible by %d groups", d, groups)
		return err
	}
	return nil
}

// Infer returns y's shape.
func (op GatedRMSNormOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 3); err != nil {
		return nil, err
	}
	if err := checkEps(op.Eps); err != nil {
		return nil, err
	}
	if err := checkNormWeight(in, 2); err != nil {
		return nil, err
	}
	if err := checkGroups(op.Groups, in[0].Dims[in[0].Rank()-1]); err != nil {
		return nil, err
	}
	return one(in[0].Clone())
}

// VJP runs GatedRMSNormGradOp.
func (op GatedRMSNormOp) VJP(in, out, gout []Value) ([]Value, error) {
	g := apply(GatedRMSNormGradOp(op), in[0], in[1], in[2], gout[0])
	return []Value{g[0], g[1], g[2]}, nil
}

// GatedRMSNorm returns rmsnorm(y·silu(z))·weight, normalising over the whole last axis when
// groups ≤ 1 and over groups contiguous groups of channels otherwise.
func GatedRMSNorm[V Value](y, z, weight V, eps float64, groups int) V {
	return apply1(GatedRMSNormOp{Eps: eps, Groups: groups}, y, z, weight)
}

// GatedRMSNormGradOp is GatedRMSNorm's backward: inputs y, z, weight and g; outputs dy, dz and
// dweight.
type GatedRMSNormGradOp struct {
	Eps    float64
	Groups int
}

// Name is "GatedRMSNormGrad".
func (GatedRMSNormGradOp) Name() string { return "GatedRMSNormGrad" }

// NumOutputs is 3 (dy, dz, dweight).
func (GatedRMSNormGradOp) NumOutputs() int { return 3 }

// Infer returns y's, z's and weight's shapes.
func (op GatedRMSNormGradOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 4); err != nil {
		return nil, err
	}
	if err := checkEps(op.Eps); err != nil {
		return nil, err
	}
	if err := checkNormWeight(in[:3], 2); err != nil {
		return nil, err
	}
	if err := checkGroups(op.Groups, in[0].Dims[in[0].Rank()-1]); err != nil {
		return nil, err
	}
	if !in[3].Equal(in[0]) {
		return fail("gradient %s differs from y %s", in[3], in[0])
	}
	return []shapes.Shape{in[0].Clone(), in[1].Clone(), in[2].Clone()}, nil
}

// VJP: backward ops are not differentiated again.
func (op GatedRMSNormGradOp) VJP(in, out, gout []Value) ([]Value, error) { return nil, ErrNoGradient }
