// Package ops defines the operations a graph is made of: for each op, its attributes, its shape rule
// (Infer), its gradient rule (VJP, written with other ops so that gradients are graphs too) and, by
// its Name, the kernel a backend runs for it. No arithmetic happens here.
//
// The constructors (Add, MatMul, SSD, …) are generic over the caller's node type, so that
//
//	y := ops.MatMul(x, w)   // x, w, y are *graph.Node
//
// reads naturally while this package stays below the graph package. Constructors never return an
// error: a shape or dtype mismatch is recorded in the builder (the first one wins) and reported when
// the graph is compiled, naming the op, the node and the shapes involved.
package ops

import (
	"errors"
	"fmt"

	"github.com/mamba2go/mamba2/shapes"
)

// Value is a symbolic tensor: a node of some builder's graph.
type Value interface {
	// Builder returns the graph the value belongs to (nil for a nil value).
	Builder() Builder
	// Shape is the value's static dtype and dimensions.
	Shape() shapes.Shape
}

// Builder adds op applications to a graph.
type Builder interface {
	// Apply adds op applied to inputs and returns its outputs. When the inputs do not fit the op,
	// the builder records the error and returns placeholder outputs (NumOutputs of them), so that
	// construction can go on and the error surfaces once.
	Apply(op Op, inputs ...Value) []Value
}

// Op is an operation definition.
type Op interface {
	// Name identifies the op and the kernel that runs it ("MatMul").
	Name() string
	// Infer returns the output shapes for the given input shapes, or an error describing the
	// mismatch (the builder adds the op and node names).
	Infer(in []shapes.Shape) ([]shapes.Shape, error)
	// VJP returns, for each input, the gradient of a scalar loss given the op's inputs, outputs and
	// the loss's gradients with respect to the outputs (gout[i] is nil when no gradient reaches
	// output i). A nil entry in the result means no gradient flows to that input. It returns
	// ErrNoGradient for ops that are not differentiable.
	VJP(in, out, gout []Value) ([]Value, error)
}

// MultiOutput is implemented by ops with more than one output.
type MultiOutput interface {
	NumOutputs() int
}

// NumOutputs returns how many outputs op has.
func NumOutputs(op Op) int {
	if m, ok := op.(MultiOutput); ok {
		return m.NumOutputs()
	}
	return 1
}

// CheckOutputs checks the output shapes a backend is asked to compile op for against the op's
// own rule (Infer), so that no kernel is built for shapes the graph would have refused.
func CheckOutputs(op Op, in, out []shapes.Shape) error {
	want, err := op.Infer(in)
	if err != nil {
		return err
	}
	if len(out) != len(want) {
		return fmt.Errorf("%d outputs, the op has %d", len(out), len(want))
	}
	for i := range want {
		if !out[i].Equal(want[i]) {
			return fmt.Errorf("outputs %v, the inputs give %v", out, want)
		}
	}
	return nil
}

// ErrNoGradient is returned by VJP for ops that have no gradient (backward kernels, integer ops).
var ErrNoGradient = errors.New("op has no gradient")

// apply runs op on inputs through the inputs' builder and converts the results back to V.
func apply[V Value](op Op, in ...V) []V {
	vals := make([]Value, len(in))
	for i, v := range in {
		vals[i] = v
	}
	var b Builder
	for _, v := range vals {
		if v == nil {
			continue
		}
		if b = v.Builder(); b != nil {
			break
		}
	}
	res := make([]V, NumOutputs(op))
	if b == nil {
		return res // every input is nil: there is no graph to record the error in
	}
	outs := b.Apply(op, vals...)
	for i, o := range outs {
		res[i] = o.(V)
	}
	return res
}

func apply1[V Value](op Op, in ...V) V { return apply(op, in...)[0] }

// fail formats an Infer error.
func fail(format string, args ...any) ([]shapes.Shape, error) {
	return nil, fmt.Errorf(format, args...)
}

// one wraps a single output shape.
func one(s shapes.Shape) ([]shapes.Shape, error) { return []shapes.Shape{s}, nil }

// wantInputs checks the number of inputs.
func wantInputs(in []shapes.Shape, n int) error {
	if len(in) != n {
		return fmt.Errorf("takes %d inputs, got %d", n, len(in))
	}
	return nil
}

// sameFloat checks that all inputs share one floating-point dtype.
func sameFloat(in []shapes.Shape) error {
	for i, s := range in {
		if s.DType.IsStorage() {
			return fmt.Errorf("input %d: %w", i, storageErr(s))
		}
		if !s.DType.IsFloat() {
			return fmt.Errorf("input %d has dtype %s, want a float type", i, s.DType)
		}
		if s.DType != in[0].DType {
			return fmt.Errorf("dtype mismatch: input 0 is %s, input %d is %s", in[0], i, s)
		}
	}
	return nil
}

// storageErr explains that a tensor of a storage dtype reached an op that computes.
func storageErr(s shapes.Shape) error {
	return fmt.Errorf("%s has a storage dtype: only QuantMatMul and QuantGather read %s weights (load float32 weights for other uses)",
		s, s.DType)
}

// KernelDelegate is implemented by ops that run another op's kernel (for example an op that only
// changes the gradient rule). The graph compiles KernelOp() in their place.
type KernelDelegate interface {
	KernelOp() Op
}
