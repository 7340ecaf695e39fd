package cpu

import (
	"fmt"
	"math"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	for _, name := range []string{"Add", "Sub", "Mul", "Div"} {
		register(name, compileBinary)
	}
	for _, name := range []string{"Exp", "Log", "Neg", "SiLU", "Sigmoid", "Softplus", "Sqrt", "Square"} {
		register(name, compileUnary)
	}
	register("Scale", compileUnary)
	register("Clamp", compileUnary)
	register("ClampGrad", compileClampGrad)
	register("Fill", compileFill)
	register("BroadcastTo", compileBroadcastTo)
	register("Reshape", compileReshape)
}

// layout maps each row (all axes but the last) of an output to the offsets of an operand that is
// broadcast to it, so inner loops run over the last axis with a fixed stride.
type layout struct {
	outDims []int
	rows    int
	inner   int
	strides [][]int // per operand, per output axis: element stride, 0 where broadcast
}

func newLayout(outDims []int, operands ...[]int) layout {
	l := layout{outDims: outDims, rows: 1, inner: 1}
	if len(outDims) > 0 {
		l.inner = outDims[len(outDims)-1]
		for _, d := range outDims[:len(outDims)-1] {
			l.rows *= d
		}
	}
	for _, od := range operands {
		st := make([]int, len(outDims))
		ost := shapes.Strides(od)
		lead := len(outDims) - len(od)
		for i := range outDims {
			j := i - lead
			if j >= 0 && od[j] != 1 {
				st[i] = ost[j]
			}
		}
		l.strides = append(l.strides, st)
	}
	return l
}

// offset returns operand k's element offset at the start of row r.
func (l *layout) offset(k, r int) int {
	off := 0
	st := l.strides[k]
	for i := len(l.outDims) - 2; i >= 0; i-- {
		d := l.outDims[i]
		off += (r % d) * st[i]
		r /= d
	}
	return off
}

// innerStride is operand k's stride along the last axis.
func (l *layout) innerStride(k int) int {
	if len(l.outDims) == 0 {
		return 0
	}
	return l.strides[k][len(l.outDims)-1]
}

type binaryKernel[T Float] struct {
	sized
	be     *Backend
	kind   ops.BinaryKind
	l      layout
	same   bool // both operands have the output's shape
	a, b   []T
	c      []T
	fn     func(lo, hi int)
	flatFn func(lo, hi int)
	par    parallel
}

func compileBinary(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	bo, ok := op.(ops.Binary)
	if !ok || len(in) != 2 || len(out) != 1 {
		return nil, fmt.Errorf("bad op or arity")
	}
	switch out[0].DType {
	case shapes.Float32:
		return newBinary[float32](be, bo.Kind, in, out), nil
	case shapes.Float64:
		return newBinary[float64](be, bo.Kind, in, out), nil
	}
	return nil, fmt.Errorf("dtype %s: %w", out[0].DType, backends.ErrUnsupported)
}

func newBinary[T Float](be *Backend, kind ops.BinaryKind, in, out []shapes.Shape) *binaryKernel[T] {
	k := &binaryKernel[T]{sized: sizesOf(in, out), be: be, kind: kind, l: newLayout(out[0].Dims, in[0].Dims, in[1].Dims)}
	k.same = shapes.EqualDims(in[0].Dims, out[0].Dims) && shapes.EqualDims(in[1].Dims, out[0].Dims)
	k.fn = k.rows
	k.flatFn = k.flat
	return k
}

func (k *binaryKernel[T]) Run(in, out []backends.Buffer) error {
	if err := k.check(in, out); err != nil {
		return err
	}
	var err error
	if k.a, err = data[T](in, 0); err != nil {
		return err
	}
	if k.b, err = data[T](in, 1); err != nil {
		return err
	}
	if k.c, err = data[T](out, 0); err != nil {
		return err
	}
	if k.same {
		k.be.pool.parallelFor(&k.par, len(k.c), 1<<15, k.flatFn)
		return nil
	}
	k.be.pool.parallelFor(&k.par, k.l.rows, max(1, (1<<15)/max(1, k.l.inner)), k.fn)
	return nil
}

func binop[T Float](kind ops.BinaryKind, x, y T) T {
	switch kind {
	case ops.AddKind:
		return x + y
	case ops.SubKind:
		return x - y
	case ops.MulKind:
		return x * y
	default:
		return x / y
	}
}

func (k *binaryKernel[T]) flat(lo, hi int) {
	a, b, c := k.a[lo:hi], k.b[lo:hi], k.c[lo:hi]
	switch k.kind {
	case ops.AddKind:
		for i := range c {
			c[i] = a[i] + b[i]
		}
	case ops.SubKind:
		for i := range c {
			c[i] = a[i] - b[i]
		}
	case ops.MulKind:
		for i := range c {
			c[i] = a[i] * b[i]
		}
	default:
		for i := range c {
			c[i] = a[i] / b[i]
		}
	}
}

func (k *binaryKernel[T]) rows(lo, hi int) {
	n := k.l.inner
	sa, sb := k.l.innerStride(0), k.l.innerStride(1)
	for r := lo; r < hi; r++ {
		oa, ob := k.l.offset(0, r), k.l.offset(1, r)
		c := k.c[r*n : r*n+n]
		for i := range c {
			c[i] = binop(k.kind, k.a[oa+i*sa], k.b[ob+i*sb])
		}
	}
}

type unaryKernel[T Float] struct {
	sized
	be       *Backend
	op       backends.Op
	x, y     []T
	fn       func(lo, hi int)
	par      parallel
	lo, hi   T
	fac, off T
	grain    int // parallelFor's elements per thread
}

func compileUnary(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	if len(in) != 1 || len(out) != 1 {
		return nil, fmt.Errorf("bad arity")
	}
	switch out[0].DType {
	case shapes.Float32:
		return newUnary[float32](be, op, sizesOf(in, out)), nil
	case shapes.Float64:
		return newUnary[float64](be, op, sizesOf(in, out)), nil
	}
	return nil, fmt.Errorf("dtype %s: %w", out[0].DType, backends.ErrUnsupported)
}

func newUnary[T Float](be *Backend, op backends.Op, sz sized) *unaryKernel[T] {
	k := &unaryKernel[T]{sized: sz, be: be, op: op}
	switch o := op.(type) {
	case ops.ClampOp:
		k.lo, k.hi = T(o.Min), T(o.Max)
	case ops.ScaleOp:
		k.fac, k.off = T(o.Factor), T(o.Offset)
	}
	k.fn = k.apply
	// Elements per thread for a split to pay: the float64 transcendentals take tens of
	// nanoseconds an element, the rest about one.
	k.grain = 1 << 14
	if u, ok := op.(ops.Unary); ok && (u.Kind == ops.ExpKind || u.Kind == ops.LogKind || u.Kind == ops.SoftplusKind) {
		k.grain = 1 << 10
	}
	return k
}

func (k *unaryKernel[T]) Run(in, out []backends.Buffer) error {
	if err := k.check(in, out); err != nil {
		return err
	}
	var err error
	if k.x, err = data[T](in, 0); err != nil {
		return err
	}
	if k.y, err = data[T](out, 0); err != nil {
		return err
	}
	k.be.pool.parallelFor(&k.par, len(k.y), k.grain, k.fn)
	return nil
}

func (k *unaryKernel[T]) apply(lo, hi int) {
	x, y := k.x[lo:hi], k.y[lo:hi]
	switch o := k.op.(type) {
	case ops.ClampOp:
		for i, v := range x {
			y[i] = min(max(v, k.lo), k.hi)
		}
	case ops.ScaleOp:
		for i, v := range x {
			y[i] = v*k.fac + k.off
		}
	case ops.Unary:
		switch o.Kind {
		case ops.ExpKind:
			for i, v := range x {
				y[i] = T(math.Exp(float64(v)))
			}
		case ops.LogKind:
			for i, v := range x {
				y[i] = T(math.Log(float64(v)))
			}
		case ops.NegKind:
			for i, v := range x {
				y[i] = -v
			}
		case ops.SiLUKind, ops.SigmoidKind:
			silu := o.Kind == ops.SiLUKind
			if x32, ok := any(x).([]float32); ok {
				sigmoid32(any(y).([]float32), x32, silu)
			} else {
				sigmoidGeneric(y, x, silu)
			}
		case ops.SoftplusKind:
			for i, v := range x {
				y[i] = Softplus(v)
			}
		case ops.SqrtKind:
			for i, v := range x {
				y[i] = T(math.Sqrt(float64(v)))
			}
		case ops.SquareKind:
			for i, v := range x {
				y[i] = v * v
			}
		}
	}
}

// Sigmoid is 1/(1+e^-x), computed without overflow.
func Sigmoid[T Float](x T) T {
	if x >= 0 {
		return T(1 / (1 + math.Exp(-float64(x))))
	}
	e := math.Exp(float64(x))
	return T(e / (1 + e))
}

// sigmoidGeneric sets dst[i] = σ(src[i]), or src[i]·σ(src[i]) with silu, through float64.
func sigmoidGeneric[T Float](dst, src []T, silu bool) {
	src = src[:len(dst)]
	for i, v := range src {
		if silu {
			dst[i] = v * Sigmoid(v)
		} else {
			dst[i] = Sigmoid(v)
		}
	}
}

// Softplus is log(1+e^x), returning x above 20 as PyTorch does.
func Softplus[T Float](x T) T {
	if x > 20 {
		return x
	}
	return T(math.Log1p(math.Exp(float64(x))))
}

type clampGradKernel[T Float] struct {
	sized
	lo, hi T
}

func compileClampGrad(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.ClampGradOp)
	if !ok {
		return nil, fmt.Errorf("op %T is not ops.ClampGradOp", op)
	}
	switch out[0].DType {
	case shapes.Float32:
		return &clampGradKernel[float32]{sizesOf(in, out), float32(o.Min), float32(o.Max)}, nil
	case shapes.Float64:
		return &clampGradKernel[float64]{sizesOf(in, out), o.Min, o.Max}, nil
	}
	return nil, backends.ErrUnsupported
}

func (k *clampGradKernel[T]) Run(in, out []backends.Buffer) error {
	if err := k.check(in, out); err != nil {
		return err
	}
	x, err := data[T](in, 0)
	if err != nil {
		return err
	}
	g, err := data[T](in, 1)
	if err != nil {
		return err
	}
	y, err := data[T](out, 0)
	if err != nil {
		return err
	}
	for i, v := range x {
		if v >= k.lo && v <= k.hi {
			y[i] = g[i]
		} else {
			y[i] = 0
		}
	}
	return nil
}

type fillKernel[T Float] struct {
	sized
	v T
}

func compileFill(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.FillOp)
	if !ok {
		return nil, fmt.Errorf("op %T is not ops.FillOp", op)
	}
	switch out[0].DType {
	case shapes.Float32:
		return &fillKernel[float32]{sizesOf(in, out), float32(o.Value)}, nil
	case shapes.Float64:
		return &fillKernel[float64]{sizesOf(in, out), o.Value}, nil
	}
	return nil, backends.ErrUnsupported
}

func (k *fillKernel[T]) Run(in, out []backends.Buffer) error {
	if err := k.check(in, out); err != nil {
		return err
	}
	y, err := data[T](out, 0)
	if err != nil {
		return err
	}
	for i := range y {
		y[i] = k.v
	}
	return nil
}

type broadcastKernel[T Float] struct {
	sized
	l layout
}

func compileBroadcastTo(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	l := newLayout(out[0].Dims, in[0].Dims)
	switch out[0].DType {
	case shapes.Float32:
		return &broadcastKernel[float32]{sizesOf(in, out), l}, nil
	case shapes.Float64:
		return &broadcastKernel[float64]{sizesOf(in, out), l}, nil
	}
	return nil, backends.ErrUnsupported
}

func (k *broadcastKernel[T]) Run(in, out []backends.Buffer) error {
	if err := k.check(in, out); err != nil {
		return err
	}
	x, err := data[T](in, 0)
	if err != nil {
		return err
	}
	y, err := data[T](out, 0)
	if err != nil {
		return err
	}
	n, s := k.l.inner, k.l.innerStride(0)
	for r := 0; r < k.l.rows; r++ {
		o := k.l.offset(0, r)
		row := y[r*n : r*n+n]
		for i := range row {
			row[i] = x[o+i*s]
		}
	}
	return nil
}

// copyKernel copies its input (Reshape: the elements keep their order).
type copyKernel struct{ sized }

func compileReshape(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	return copyKernel{sizesOf(in, out)}, nil
}

func (k copyKernel) Run(in, out []backends.Buffer) error {
	if err := k.check(in, out); err != nil {
		return err
	}
	x, err := asBuffer(in[0])
	if err != nil {
		return err
	}
	y, err := asBuffer(out[0])
	if err != nil {
		return err
	}
	if x == y {
		return nil // the program gave the output the input's buffer (InPlace): a free reshape
	}
	if !copySlice(y.data, x.data) {
		return fmt.Errorf("cpu: Reshape from %s to %s", x.shape, y.shape)
	}
	return nil
}

// InPlace lets a program give a reshape's output its input's buffer when nothing reads the input
// afterwards, so that reshaping costs nothing.
func (copyKernel) InPlace(out int) int {
	if out == 0 {
		return 0
	}
	return -1
}
