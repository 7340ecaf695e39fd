package ops

import (
	"fmt"

	"github.com/mamba2go/mamba2/shapes"
)

// ReshapeOp reinterprets the elements (row-major order) with other dimensions of the same size.
type ReshapeOp struct{ Dims []int }

// Name is "Reshape".
func (ReshapeOp) Name() string { return "Reshape" }

// Infer checks that the element count is kept. One dimension may be -1 (inferred).
func (op ReshapeOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 1); err != nil {
		return nil, err
	}
	dims, err := resolveDims(op.Dims, in[0].Size())
	if err != nil {
		return fail("cannot reshape %s to %v: %v", in[0], op.Dims, err)
	}
	return one(shapes.Make(in[0].DType, dims...))
}

func resolveDims(dims []int, size int) ([]int, error) {
	out := append([]int(nil), dims...)
	infer, n := -1, 1
	for i, d := range out {
		switch {
		case d == -1 && infer < 0:
			infer = i
		case d <= 0:
			return nil, fmt.Errorf("dimension %d is %d", i, d)
		default:
			n *= d
		}
	}
	if infer >= 0 {
		if n == 0 || size%n != 0 {
			return nil, fmt.Errorf("size %d is not a multiple of %d", size, n)
		}
		out[infer] = size / n
		n = size
	}
	if n != size {
		return nil, fmt.Errorf("size %d != %d", n, size)
	}
	return out, nil
}

// VJP reshapes the gradient back.
func (op ReshapeOp) VJP(in, out, gout []Value) ([]Value, error) {
	return []Value{Reshape(gout[0], in[0].Shape().Dims...)}, nil
}

// Reshape returns x with new dimensions (one may be -1).
func Reshape[V Value](x V, dims ...int) V {
	if shapes.EqualDims(x.Shape().Dims, dims) {
		return x
	}
	return apply1(ReshapeOp{Dims: append([]int(nil), dims...)}, x)
}

// BroadcastToOp stretches size-1 (or missing leading) axes to Dims.
type BroadcastToOp struct{ Dims []int }

// Name is "BroadcastTo".
func (BroadcastToOp) Name() string { return "BroadcastTo" }

// Infer checks that the input broadcasts to Dims.
func (op BroadcastToOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 1); err != nil {
		return nil, err
	}
	b, err := shapes.Broadcast(in[0].Dims, op.Dims)
	if err != nil || !shapes.EqualDims(b, op.Dims) {
		return fail("cannot broadcast %s to %s", in[0], shapes.DimsString(op.Dims))
	}
	return one(shapes.Make(in[0].DType, op.Dims...))
}

// VJP sums the gradient back.
func (op BroadcastToOp) VJP(in, out, gout []Value) ([]Value, error) {
	return []Value{SumTo(gout[0], in[0].Shape().Dims)}, nil
}

// BroadcastTo stretches x to dims.
func BroadcastTo[V Value](x V, dims ...int) V {
	if shapes.EqualDims(x.Shape().Dims, dims) {
		return x
	}
	return apply1(BroadcastToOp{Dims: append([]int(nil), dims...)}, x)
}

// SumOp adds over Axes; KeepDims keeps them with size 1.
type SumOp struct {
	Axes     []int
	KeepDims bool
}

// Name is "Sum".
func (SumOp) Name() string { return "Sum" }

// Infer removes (or sets to 1) the reduced axes.
func (op SumOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 1); err != nil {
		return nil, err
	}
	if err := sameFloat(in); err != nil {
		return nil, err
	}
	red, err := reducedAxes(op.Axes, in[0].Rank())
	if err != nil {
		return nil, err
	}
	var dims []int
	for i, d := range in[0].Dims {
		switch {
		case !red[i]:
			dims = append(dims, d)
		case op.KeepDims:
			dims = append(dims, 1)
		}
	}
	return one(shapes.Make(in[0].DType, dims...))
}

func reducedAxes(axes []int, rank int) ([]bool, error) {
	red := make([]bool, rank)
	for _, a := range axes {
		n, err := shapes.NormAxis(a, rank)
		if err != nil {
			return nil, err
		}
		if red[n] {
			return nil, fmt.Errorf("axis %d listed twice", a)
		}
		red[n] = true
	}
	return red, nil
}

// VJP broadcasts the gradient over the reduced axes.
func (op SumOp) VJP(in, out, gout []Value) ([]Value, error) {
	x := in[0].Shape()
	red, err := reducedAxes(op.Axes, x.Rank())
	if err != nil {
		return nil, err
	}
	keep := make([]int, x.Rank())
	for i, d := range x.Dims {
		keep[i] = d
		if red[i] {
			keep[i] = 1
		}
	}
	return []Value{BroadcastTo(Reshape(gout[0], keep...), x.Dims...)}, nil
}

// Sum adds x over axes (all axes when none are given).
func Sum[V Value](x V, axes ...int) V {
	return apply1(SumOp{Axes: allAxes(x, axes)}, x)
}

// SumKeep adds x over axes, keeping them as size 1.
func SumKeep[V Value](x V, axes ...int) V {
	return apply1(SumOp{Axes: allAxes(x, axes), KeepDims: true}, x)
}

// Mean averages x over axes (all axes when none are given).
func Mean[V Value](x V, axes ...int) V {
	axes = allAxes(x, axes)
	n := 1
	for _, a := range axes {
		if a < 0 {
			a += x.Shape().Rank()
		}
		if a >= 0 && a < x.Shape().Rank() {
			n *= x.Shape().Dims[a]
		}
	}
	return Scale(Sum(x, axes...), 1/float64(n))
}

func allAxes[V Value](x V, axes []int) []int {
	if len(axes) > 0 {
		return append([]int(nil), axes...)
	}
	all := make([]int, x.Shape().Rank())
	for i := range all {
		all[i] = i
	}
	return all
}

// SumTo reduces a broadcast gradient g back to dims: it sums over leading axes that dims lacks and
// over axes where dims has 1.
func SumTo[V Value](g V, dims []int) V {
	gd := g.Shape().Dims
	if shapes.EqualDims(gd, dims) {
		return g
	}
	lead := len(gd) - len(dims)
	var axes []int
	for i := range gd {
		if i < lead || (dims[i-lead] == 1 && gd[i] != 1) {
			axes = append(axes, i)
		}
	}
	if len(axes) == 0 {
		return Reshape(g, dims...)
	}
	return Reshape(apply1(SumOp{Axes: axes, KeepDims: true}, g), dims...)
}
