package ops

import (
	"fmt"

	"github.com/mamba2go/mamba2/shapes"
)

// layoutDType checks that a layout op's input has a known dtype (layout ops move elements, so
// int64 tensors are accepted as well as floats). Storage dtypes are refused: their tensors are
// weights that only the quantized ops read (Reshape alone accepts them).
func layoutDType(s shapes.Shape) error {
	switch {
	case !s.DType.Known():
		return fmt.Errorf("invalid dtype %v", s.DType)
	case s.DType.IsStorage():
		return storageErr(s)
	}
	return nil
}

// TransposeOp permutes the axes: output axis i is input axis Perm[i].
type TransposeOp struct{ Perm []int }

// Name is "Transpose".
func (TransposeOp) Name() string { return "Transpose" }

// checkPerm verifies that perm is a permutation of 0..rank-1.
func checkPerm(perm []int, rank int) error {
	if len(perm) != rank {
		return fmt.Errorf("permutation %v has %d entries for rank %d", perm, len(perm), rank)
	}
	seen := make([]bool, rank)
	for _, p := range perm {
		if p < 0 || p >= rank || seen[p] {
			return fmt.Errorf("%v is not a permutation of the %d axes", perm, rank)
		}
		seen[p] = true
	}
	return nil
}

// Infer permutes the input dimensions.
func (op TransposeOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 1); err != nil {
		return nil, err
	}
	if err := layoutDType(in[0]); err != nil {
		return nil, err
	}
	if err := checkPerm(op.Perm, in[0].Rank()); err != nil {
		return fail("input %s: %v", in[0], err)
	}
	dims := make([]int, len(op.Perm))
	for i, p := range op.Perm {
		dims[i] = in[0].Dims[p]
	}
	return one(shapes.Make(in[0].DType, dims...))
}

// VJP transposes the gradient by the inverse permutation.
func (op TransposeOp) VJP(in, out, gout []Value) ([]Value, error) {
	if err := checkPerm(op.Perm, in[0].Shape().Rank()); err != nil {
		return nil, err
	}
	inv := make([]int, len(op.Perm))
	for i, p := range op.Perm {
		inv[p] = i
	}
	return []Value{Transpose(gout[0], inv...)}, nil
}

// Transpose permutes x's axes: output axis i is x's axis perm[i]. With no perm the axes are
// reversed (as numpy does). The identity permutation returns x itself.
func Transpose[V Value](x V, perm ...int) V {
	r := x.Shape().Rank()
	if len(perm) == 0 {
		perm = make([]int, r)
		for i := range perm {
			perm[i] = r - 1 - i
		}
	}
	identity := len(perm) == r
	for i, p := range perm {
		identity = identity && p == i
	}
	if identity {
		return x
	}
	return apply1(TransposeOp{Perm: append([]int(nil), perm...)}, x)
}

// SliceOp keeps the half-open range [Start, End) of one axis (Axis may be negative).
type SliceOp struct{ Axis, Start, End int }

// Name is "Slice".
func (SliceOp) Name() string { return "Slice" }

// Infer checks the range and shortens the axis.
func (op SliceOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 1); err != nil {
		return nil, err
	}
	if err := layoutDType(in[0]); err != nil {
		return nil, err
	}
	ax, err := shapes.NormAxis(op.Axis, in[0].Rank())
	if err != nil {
		return fail("input %s: %v", in[0], err)
	}
	d := in[0].Dims[ax]
	if op.Start < 0 || op.End > d || op.Start >= op.End {
		return fail("range [%d,%d) is not a non-empty part of axis %d (size %d) of %s",
			op.Start, op.End, op.Axis, d, in[0])
	}
	dims := append([]int(nil), in[0].Dims...)
	dims[ax] = op.End - op.Start
	return one(shapes.Make(in[0].DType, dims...))
}

// VJP zero-pads the gradient back to the input's size.
func (op SliceOp) VJP(in, out, gout []Value) ([]Value, error) {
	x := in[0].Shape()
	ax, err := shapes.NormAxis(op.Axis, x.Rank())
	if err != nil {
		return nil, err
	}
	return []Value{Pad(gout[0], ax, op.Start, x.Dims[ax]-op.End)}, nil
}

// Slice returns x restricted to [start, end) along axis (negative axis counts from the end).
// The whole axis returns x itself.
func Slice[V Value](x V, axis, start, end int) V {
	s := x.Shape()
	if ax, err := shapes.NormAxis(axis, s.Rank()); err == nil && start == 0 && end == s.Dims[ax] {
		return x
	}
	return apply1(SliceOp{Axis: axis, Start: start, End: end}, x)
}

// PadOp adds Before zeros in front of and After zeros behind one axis.
type PadOp struct{ Axis, Before, After int }

// Name is "Pad".
func (PadOp) Name() string { return "Pad" }

// Infer lengthens the axis.
func (op PadOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 1); err != nil {
		return nil, err
	}
	if err := layoutDType(in[0]); err != nil {
		return nil, err
	}
	ax, err := shapes.NormAxis(op.Axis, in[0].Rank())
	if err != nil {
		return fail("input %s: %v", in[0], err)
	}
	if op.Before < 0 || op.After < 0 {
		return fail("negative padding (%d before, %d after)", op.Before, op.After)
	}
	dims := append([]int(nil), in[0].Dims...)
	dims[ax] += op.Before + op.After
	return one(shapes.Make(in[0].DType, dims...))
}

// VJP slices the padding off the gradient.
func (op PadOp) VJP(in, out, gout []Value) ([]Value, error) {
	x := in[0].Shape()
	ax, err := shapes.NormAxis(op.Axis, x.Rank())
	if err != nil {
		return nil, err
	}
	return []Value{Slice(gout[0], ax, op.Before, op.Before+x.Dims[ax])}, nil
}

// Pad adds before zeros in front of and after zeros behind axis. No padding returns x itself.
func Pad[V Value](x V, axis, before, after int) V {
	if before == 0 && after == 0 {
		return x
	}
	return apply1(PadOp{Axis: axis, Before: before, After: after}, x)
}

// ConcatOp joins its inputs along Axis. All inputs have one dtype and the same dimensions except
// along Axis.
type ConcatOp struct{ Axis int }

// Name is "Concat".
func (ConcatOp) Name() string { return "Concat" }

// Infer checks that the inputs fit together and sums the axis.
func (op ConcatOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if len(in) == 0 {
		return fail("needs at least one input")
	}
	if err := layoutDType(in[0]); err != nil {
		return nil, err
	}
	ax, err := shapes.NormAxis(op.Axis, in[0].Rank())
	if err != nil {
		return fail("input 0 %s: %v", in[0], err)
	}
	dims := append([]int(nil), in[0].Dims...)
	for i, s := range in[1:] {
		if s.DType != in[0].DType {
			return fail("dtype mismatch: input 0 is %s, input %d is %s", in[0], i+1, s)
		}
		ok := s.Rank() == in[0].Rank()
		for j := 0; ok && j < s.Rank(); j++ {
			ok = j == ax || s.Dims[j] == in[0].Dims[j]
		}
		if !ok {
			return fail("input %d %s does not match input 0 %s except along axis %d", i+1, s, in[0], op.Axis)
		}
		dims[ax] += s.Dims[ax]
	}
	return one(shapes.Make(in[0].DType, dims...))
}

// VJP slices each input's part out of the gradient.
func (op ConcatOp) VJP(in, out, gout []Value) ([]Value, error) {
	ax, err := shapes.NormAxis(op.Axis, in[0].Shape().Rank())
	if err != nil {
		return nil, err
	}
	res := make([]Value, len(in))
	off := 0
	for i, x := range in {
		d := x.Shape().Dims[ax]
		res[i] = Slice(gout[0], ax, off, off+d)
		off += d
	}
	return res, nil
}

// Concat joins xs along axis. One input is returned as it is. At least one input is required
// (with none there is no graph to add the op to, and the zero V is returned).
func Concat[V Value](axis int, xs ...V) V {
	switch len(xs) {
	case 0:
		var zero V
		return zero
	case 1:
		return xs[0]
	}
	return apply1(ConcatOp{Axis: axis}, xs...)
}

// GatherOp looks rows up in a table: inputs table [V, D] (float) and indices (int64, any
// dimensions [...]); the output [..., D] holds table[indices[...]]. An index outside [0, V) is a
// run-time error of the kernel.
type GatherOp struct{}

// Name is "Gather".
func (GatherOp) Name() string { return "Gather" }

// Infer returns [indices..., D].
func (op GatherOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 2); err != nil {
		return nil, err
	}
	t, idx := in[0], in[1]
	if t.DType.IsStorage() {
		return fail("table %s is %s: quantized tables take QuantGather", t, t.DType)
	}
	if !t.DType.IsFloat() || t.Rank() != 2 {
		return fail("table %s must be a float matrix [V, D]", t)
	}
	if idx.DType != shapes.Int64 {
		return fail("indices %s must be int64", idx)
	}
	return one(shapes.Make(t.DType, append(append([]int(nil), idx.Dims...), t.Dims[1])...))
}

// VJP scatters the gradient rows back into the table's shape; indices get none.
func (op GatherOp) VJP(in, out, gout []Value) ([]Value, error) {
	rows := in[0].Shape().Dims[0]
	return []Value{ScatterAdd(in[1], gout[0], rows), nil}, nil
}

// Gather returns table[indices] with table [V, D] and int64 indices [...]: shape [..., D].
func Gather[V Value](table, indices V) V { return apply1(GatherOp{}, table, indices) }

// ScatterAddOp is Gather's backward: inputs indices (int64 [...]) and g [..., D]; output
// [Rows, D], zero except that row indices[i] accumulates g[i]. An index outside [0, Rows) is a
// run-time error of the kernel.
type ScatterAddOp struct{ Rows int }

// Name is "ScatterAdd".
func (ScatterAddOp) Name() string { return "ScatterAdd" }

// Infer returns [Rows, D].
func (op ScatterAddOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 2); err != nil {
		return nil, err
	}
	idx, g := in[0], in[1]
	if idx.DType != shapes.Int64 {
		return fail("indices %s must be int64", idx)
	}
	if !g.DType.IsFloat() || g.Rank() != idx.Rank()+1 || !shapes.EqualDims(g.Dims[:idx.Rank()], idx.Dims) {
		return fail("values %s must be float with shape [indices..., D] for indices %s", g, idx)
	}
	if op.Rows <= 0 {
		return fail("rows %d must be positive", op.Rows)
	}
	return one(shapes.Make(g.DType, op.Rows, g.Dims[g.Rank()-1]))
}

// VJP: backward ops are not differentiated again.
func (op ScatterAddOp) VJP(in, out, gout []Value) ([]Value, error) { return nil, ErrNoGradient }

// ScatterAdd returns a [rows, D] tensor where row indices[i] accumulates g[i] (g is [..., D] with
// the indices' dimensions in front).
func ScatterAdd[V Value](indices, g V, rows int) V {
	return apply1(ScatterAddOp{Rows: rows}, indices, g)
}
