package cuda

import (
	"fmt"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	for _, name := range []string{"Exp", "Log", "Neg", "SiLU", "Sigmoid", "Softplus", "Sqrt", "Square", "Scale", "Clamp"} {
		register(name, compileUnary)
	}
	for _, name := range []string{"Add", "Sub", "Mul", "Div"} {
		register(name, compileBinary)
	}
	register("ClampGrad", compileClampGrad)
	register("Fill", compileFill)
	register("BroadcastTo", compileBroadcastTo)
	register("Reshape", compileReshape)
}

const elementwiseCU = "elementwise.cu"

// Unary kinds beyond ops.UnaryKind (see elementwise.cu).
const (
	unaryScale = 100
	unaryClamp = 101
)

func compileUnary(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	if err := wantArity(in, out, 1, 1); err != nil {
		return err
	}
	if in[0].DType != out[0].DType || in[0].Size() != out[0].Size() {
		return fmt.Errorf("input %s, output %s", in[0], out[0])
	}
	sfx, err := suffix(out[0].DType)
	if err != nil {
		return err
	}
	var kind int
	var p0, p1 float64
	switch o := op.(type) {
	case ops.Unary:
		kind = int(o.Kind)
	case ops.ScaleOp:
		kind, p0, p1 = unaryScale, o.Factor, o.Offset
	case ops.ClampOp:
		kind, p0, p1 = unaryClamp, o.Min, o.Max
	default:
		return fmt.Errorf("op %T is not a unary op", op)
	}
	n := out[0].Size()
	a := new(args).i64(n).i64(kind).f64(p0).f64(p1).buf(inRef(0)).buf(outRef(0))
	return k.launch(elementwiseCU, "unary_"+sfx, k.grid(n, threads), threads, a)
}

func compileBinary(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	bo, ok := op.(ops.Binary)
	if !ok {
		return fmt.Errorf("op %T is not ops.Binary", op)
	}
	if err := wantArity(in, out, 2, 1); err != nil {
		return err
	}
	dt := out[0].DType
	if in[0].DType != dt || in[1].DType != dt {
		return fmt.Errorf("dtypes %s, %s → %s", in[0].DType, in[1].DType, dt)
	}
	sfx, err := suffix(dt)
	if err != nil {
		return err
	}
	od := out[0].Dims
	bd, err := shapes.Broadcast(in[0].Dims, in[1].Dims)
	if err != nil || !shapes.EqualDims(bd, od) {
		return fmt.Errorf("inputs %s and %s do not broadcast to %s", in[0], in[1], out[0])
	}
	n := out[0].Size()
	contig := shapes.EqualDims(in[0].Dims, od) && shapes.EqualDims(in[1].Dims, od)
	var dims []int
	st := [][]int{nil, nil}
	if !contig {
		dims, st = collapse(od, bcastStrides(od, in[0].Dims), bcastStrides(od, in[1].Dims))
	}
	c := 0
	if contig {
		c = 1
	}
	a := new(args).i64(n).i64(int(bo.Kind)).i64(c).i64(len(dims)).dims(dims).dims(st[0]).dims(st[1]).
		buf(inRef(0)).buf(inRef(1)).buf(outRef(0))
	return k.launch(elementwiseCU, "binary_"+sfx, k.grid(n, threads), threads, a)
}

func compileClampGrad(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.ClampGradOp)
	if !ok {
		return fmt.Errorf("op %T is not ops.ClampGradOp", op)
	}
	if err := wantArity(in, out, 2, 1); err != nil {
		return err
	}
	if !in[0].Equal(in[1]) || in[0].DType != out[0].DType || in[0].Size() != out[0].Size() {
		return fmt.Errorf("x %s, gradient %s, output %s", in[0], in[1], out[0])
	}
	sfx, err := suffix(out[0].DType)
	if err != nil {
		return err
	}
	n := out[0].Size()
	a := new(args).i64(n).f64(o.Min).f64(o.Max).buf(inRef(0)).buf(inRef(1)).buf(outRef(0))
	return k.launch(elementwiseCU, "clamp_grad_"+sfx, k.grid(n, threads), threads, a)
}

func compileFill(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.FillOp)
	if !ok {
		return fmt.Errorf("op %T is not ops.FillOp", op)
	}
	if err := wantArity(in, out, 0, 1); err != nil {
		return err
	}
	sfx, err := suffix(out[0].DType)
	if err != nil {
		return err
	}
	n := out[0].Size()
	a := new(args).i64(n).f64(o.Value).buf(outRef(0))
	return k.launch(elementwiseCU, "fill_"+sfx, k.grid(n, threads), threads, a)
}

func compileBroadcastTo(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	if err := wantArity(in, out, 1, 1); err != nil {
		return err
	}
	od := out[0].Dims
	if b, err := shapes.Broadcast(in[0].Dims, od); err != nil || !shapes.EqualDims(b, od) || in[0].DType != out[0].DType {
		return fmt.Errorf("cannot broadcast %s to %s", in[0], out[0])
	}
	return stridedCopy(k, out[0], bcastStrides(od, in[0].Dims))
}

// stridedCopy launches y[i] = x[Σ index_k(i)·st_k] over out's dimensions.
func stridedCopy(k *kernel, out shapes.Shape, st []int) error {
	sfx, err := widthSuffix(out.DType)
	if err != nil {
		return err
	}
	dims, sts := collapse(out.Dims, st)
	n := out.Size()
	a := new(args).i64(n).i64(len(dims)).dims(dims).dims(sts[0]).buf(inRef(0)).buf(outRef(0))
	return k.launch(layoutCU, "strided_"+sfx, k.grid(n, threads), threads, a)
}

func compileReshape(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	if err := wantArity(in, out, 1, 1); err != nil {
		return err
	}
	if in[0].DType != out[0].DType || in[0].Size() != out[0].Size() {
		return fmt.Errorf("cannot reshape %s to %s", in[0], out[0])
	}
	k.copyStep(outRef(0), inRef(0), out[0].Size()*out[0].DType.Size())
	return nil
}
