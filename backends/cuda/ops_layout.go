package cuda

import (
	"fmt"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	register("Transpose", compileTranspose)
	register("Slice", compileSlice)
	register("Pad", compilePad)
	register("Concat", compileConcat)
	register("Gather", compileGather)
	register("ScatterAdd", compileScatterAdd)
}

const layoutCU = "layout.cu"

func compileTranspose(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.TransposeOp)
	if !ok {
		return fmt.Errorf("op %T is not ops.TransposeOp", op)
	}
	if err := wantArity(in, out, 1, 1); err != nil {
		return err
	}
	if len(o.Perm) != in[0].Rank() || out[0].Size() != in[0].Size() || out[0].DType != in[0].DType {
		return fmt.Errorf("permutation %v of %s to %s", o.Perm, in[0], out[0])
	}
	st := shapes.Strides(in[0].Dims)
	src := make([]int, len(o.Perm))
	for i, p := range o.Perm {
		if p < 0 || p >= len(st) {
			return fmt.Errorf("permutation %v", o.Perm)
		}
		src[i] = st[p]
	}
	return stridedCopy(k, out[0], src)
}

// copyBlocks adds y[o·db + dof + j] = x_input[o·sb + so + j] for o < outer, j < n.
func copyBlocks(k *kernel, dt shapes.DType, input, outer, n, sb, so, db, dof int) error {
	sfx, err := widthSuffix(dt)
	if err != nil {
		return err
	}
	a := new(args).i64(outer).i64(n).i64(sb).i64(so).i64(db).i64(dof).buf(inRef(input)).buf(outRef(0))
	return k.launch(layoutCU, "copy_blocks_"+sfx, k.grid(outer*n, threads), threads, a)
}

func compileSlice(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.SliceOp)
	if !ok {
		return fmt.Errorf("op %T is not ops.SliceOp", op)
	}
	if err := wantArity(in, out, 1, 1); err != nil {
		return err
	}
	ax, err := shapes.NormAxis(o.Axis, in[0].Rank())
	if err != nil {
		return err
	}
	outer, n, inner := axisSplit(in[0].Dims, ax)
	if o.Start < 0 || o.End > n || o.Start >= o.End {
		return fmt.Errorf("range [%d,%d) of an axis of size %d", o.Start, o.End, n)
	}
	m := o.End - o.Start
	if out[0].Size() != outer*m*inner {
		return fmt.Errorf("output %s for slice [%d,%d) of %s", out[0], o.Start, o.End, in[0])
	}
	return copyBlocks(k, in[0].DType, 0, outer, m*inner, n*inner, o.Start*inner, m*inner, 0)
}

func compilePad(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.PadOp)
	if !ok {
		return fmt.Errorf("op %T is not ops.PadOp", op)
	}
	if err := wantArity(in, out, 1, 1); err != nil {
		return err
	}
	ax, err := shapes.NormAxis(o.Axis, in[0].Rank())
	if err != nil {
		return err
	}
	if o.Before < 0 || o.After < 0 {
		return fmt.Errorf("negative padding (%d, %d)", o.Before, o.After)
	}
	outer, n, inner := axisSplit(in[0].Dims, ax)
	m := n + o.Before + o.After
	if out[0].Size() != outer*m*inner {
		return fmt.Errorf("output %s for padding %s", out[0], in[0])
	}
	sfx, err := widthSuffix(in[0].DType)
	if err != nil {
		return err
	}
	a := new(args).i64(outer).i64(n * inner).i64(m * inner).i64(o.Before * inner).buf(inRef(0)).buf(outRef(0))
	return k.launch(layoutCU, "pad_"+sfx, k.grid(outer*m*inner, threads), threads, a)
}

func compileConcat(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.ConcatOp)
	if !ok {
		return fmt.Errorf("op %T is not ops.ConcatOp", op)
	}
	if len(in) == 0 || len(out) != 1 {
		return fmt.Errorf("%d inputs and %d outputs", len(in), len(out))
	}
	ax, err := shapes.NormAxis(o.Axis, out[0].Rank())
	if err != nil {
		return err
	}
	outer, _, inner := axisSplit(out[0].Dims, ax)
	dstBlock := 0
	for _, s := range in {
		if s.Rank() != out[0].Rank() || s.DType != out[0].DType {
			return fmt.Errorf("input %s for output %s", s, out[0])
		}
		dstBlock += s.Dims[ax] * inner
	}
	if dstBlock*outer != out[0].Size() {
		return fmt.Errorf("inputs hold %d elements, the output %s %d", dstBlock*outer, out[0], out[0].Size())
	}
	off := 0
	for i, s := range in {
		b := s.Dims[ax] * inner
		if err := copyBlocks(k, s.DType, i, outer, b, b, 0, dstBlock, off); err != nil {
			return err
		}
		off += b
	}
	return nil
}

func compileGather(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	if _, ok := op.(ops.GatherOp); !ok {
		return fmt.Errorf("op %T is not ops.GatherOp", op)
	}
	if err := wantArity(in, out, 2, 1); err != nil {
		return err
	}
	if in[0].Rank() != 2 || in[1].DType != shapes.Int64 {
		return fmt.Errorf("table %s and indices %s", in[0], in[1])
	}
	rows, d, n := in[0].Dims[0], in[0].Dims[1], in[1].Size()
	if out[0].Size() != n*d || out[0].DType != in[0].DType {
		return fmt.Errorf("output %s for %d rows of %d", out[0], n, d)
	}
	sfx, err := widthSuffix(in[0].DType)
	if err != nil {
		return err
	}
	if err := k.useErrRecord(func(k *kernel, pos int64) string {
		v, _ := k.readInt64(1, pos)
		return fmt.Sprintf("gather: index %d (at position %d) is outside [0, %d)", v, pos, rows)
	}); err != nil {
		return err
	}
	a := new(args).i64(n).i64(rows).i64(d).buf(inRef(0)).buf(inRef(1)).buf(outRef(0)).buf(flagRef())
	return k.launch(layoutCU, "gather_"+sfx, k.grid(n*d, threads), threads, a)
}

func compileScatterAdd(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.ScatterAddOp)
	if !ok {
		return fmt.Errorf("op %T is not ops.ScatterAddOp", op)
	}
	if err := wantArity(in, out, 2, 1); err != nil {
		return err
	}
	if in[0].DType != shapes.Int64 || in[1].Rank() < 1 || o.Rows <= 0 {
		return fmt.Errorf("indices %s, values %s, rows %d", in[0], in[1], o.Rows)
	}
	d := in[1].Dims[in[1].Rank()-1]
	n := in[0].Size()
	if in[1].Size() != n*d || out[0].Size() != o.Rows*d || out[0].DType != in[1].DType {
		return fmt.Errorf("indices %s, values %s, output %s", in[0], in[1], out[0])
	}
	sfx, err := suffix(in[1].DType)
	if err != nil {
		return err
	}
	rows := o.Rows
	if err := k.useErrRecord(func(k *kernel, pos int64) string {
		v, _ := k.readInt64(0, pos)
		return fmt.Sprintf("scatter-add: index %d (at position %d) is outside [0, %d)", v, pos, rows)
	}); err != nil {
		return err
	}
	k.memset(outRef(0), out[0].Size()*out[0].DType.Size())
	a := new(args).i64(n).i64(rows).i64(d).buf(inRef(0)).buf(inRef(1)).buf(outRef(0)).buf(flagRef())
	return k.launch(layoutCU, "scatter_add_"+sfx, k.grid(n*d, threads), threads, a)
}
