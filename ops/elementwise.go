package ops

import (
	"fmt"
	"math"

	"github.com/mamba2go/mamba2/shapes"
)

// BinaryKind selects an element-wise binary operation.
type BinaryKind uint8

// The element-wise binary operations; all broadcast numpy-style.
const (
	AddKind BinaryKind = iota
	SubKind
	MulKind
	DivKind
)

var binaryNames = [...]string{"Add", "Sub", "Mul", "Div"}

// Binary is an element-wise binary op with numpy-style broadcasting.
type Binary struct{ Kind BinaryKind }

// Name is "Add", "Sub", "Mul" or "Div".
func (op Binary) Name() string { return binaryNames[op.Kind] }

// Infer broadcasts the two input shapes.
func (op Binary) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 2); err != nil {
		return nil, err
	}
	if err := sameFloat(in); err != nil {
		return nil, err
	}
	dims, err := shapes.Broadcast(in[0].Dims, in[1].Dims)
	if err != nil {
		return nil, err
	}
	return one(shapes.Make(in[0].DType, dims...))
}

// VJP reduces the output gradient back to each input's shape.
func (op Binary) VJP(in, out, gout []Value) ([]Value, error) {
	g := gout[0]
	a, b := in[0], in[1]
	var ga, gb Value
	switch op.Kind {
	case AddKind:
		ga, gb = g, g
	case SubKind:
		ga, gb = g, Neg(g)
	case MulKind:
		ga, gb = Mul(g, b), Mul(g, a)
	case DivKind:
		ga = Div(g, b)
		gb = Neg(Div(Mul(g, out[0]), b))
	}
	return []Value{SumTo(ga, a.Shape().Dims), SumTo(gb, b.Shape().Dims)}, nil
}

// Add returns a+b (broadcasting).
func Add[V Value](a, b V) V { return apply1(Binary{AddKind}, a, b) }

// Sub returns a-b (broadcasting).
func Sub[V Value](a, b V) V { return apply1(Binary{SubKind}, a, b) }

// Mul returns a*b element-wise (broadcasting).
func Mul[V Value](a, b V) V { return apply1(Binary{MulKind}, a, b) }

// Div returns a/b element-wise (broadcasting).
func Div[V Value](a, b V) V { return apply1(Binary{DivKind}, a, b) }

// UnaryKind selects an element-wise unary operation.
type UnaryKind uint8

// The element-wise unary operations.
const (
	ExpKind UnaryKind = iota
	LogKind
	NegKind
	SiLUKind
	SigmoidKind
	SoftplusKind
	SqrtKind
	SquareKind
)

var unaryNames = [...]string{"Exp", "Log", "Neg", "SiLU", "Sigmoid", "Softplus", "Sqrt", "Square"}

// Unary is an element-wise function of one input. Softplus is log(1+exp(x)) computed stably (it
// returns x for x > 20, as PyTorch does).
type Unary struct{ Kind UnaryKind }

// Name is the function's name ("Exp", "SiLU", …).
func (op Unary) Name() string { return unaryNames[op.Kind] }

// Infer returns the input shape.
func (op Unary) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 1); err != nil {
		return nil, err
	}
	if err := sameFloat(in); err != nil {
		return nil, err
	}
	return one(in[0].Clone())
}

// VJP multiplies the output gradient by the derivative.
func (op Unary) VJP(in, out, gout []Value) ([]Value, error) {
	g, x, y := gout[0], in[0], out[0]
	var d Value
	switch op.Kind {
	case ExpKind:
		d = Mul(g, y)
	case LogKind:
		d = Div(g, x)
	case NegKind:
		d = Neg(g)
	case SigmoidKind:
		d = Mul(g, Sub(y, Mul(y, y)))
	case SiLUKind:
		s := Sigmoid(x)
		d = Mul(g, Sub(Add(s, y), Mul(y, s))) // s + x·s·(1−s)
	case SoftplusKind:
		d = Mul(g, Sigmoid(x))
	case SqrtKind:
		d = Div(Scale(g, 0.5), y)
	case SquareKind:
		d = Mul(Scale(g, 2), x)
	default:
		return nil, fmt.Errorf("%s: %w", op.Name(), ErrNoGradient)
	}
	return []Value{d}, nil
}

// Exp returns e^x.
func Exp[V Value](x V) V { return apply1(Unary{ExpKind}, x) }

// Log returns the natural logarithm.
func Log[V Value](x V) V { return apply1(Unary{LogKind}, x) }

// Neg returns -x.
func Neg[V Value](x V) V { return apply1(Unary{NegKind}, x) }

// SiLU returns x·sigmoid(x).
func SiLU[V Value](x V) V { return apply1(Unary{SiLUKind}, x) }

// Sigmoid returns 1/(1+e^-x).
func Sigmoid[V Value](x V) V { return apply1(Unary{SigmoidKind}, x) }

// Softplus returns log(1+e^x) (x itself above 20, as PyTorch).
func Softplus[V Value](x V) V { return apply1(Unary{SoftplusKind}, x) }

// Sqrt returns the square root.
func Sqrt[V Value](x V) V { return apply1(Unary{SqrtKind}, x) }

// Square returns x².
func Square[V Value](x V) V { return apply1(Unary{SquareKind}, x) }

// ScaleOp multiplies by a constant and adds a constant: y = x·Factor + Offset.
type ScaleOp struct{ Factor, Offset float64 }

// Name is "Scale".
func (ScaleOp) Name() string { return "Scale" }

// Infer returns the input shape.
func (op ScaleOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) { return Unary{}.Infer(in) }

// VJP scales the gradient.
func (op ScaleOp) VJP(in, out, gout []Value) ([]Value, error) {
	return []Value{Scale(gout[0], op.Factor)}, nil
}

// Scale returns x·factor.
func Scale[V Value](x V, factor float64) V { return apply1(ScaleOp{Factor: factor}, x) }

// AddConst returns x + c.
func AddConst[V Value](x V, c float64) V { return apply1(ScaleOp{Factor: 1, Offset: c}, x) }

// ClampOp limits values to [Min, Max]; either bound may be infinite. The gradient passes where
// Min ≤ x ≤ Max (as PyTorch's clamp does at the bounds) and is zero elsewhere.
type ClampOp struct{ Min, Max float64 }

// Name is "Clamp".
func (ClampOp) Name() string { return "Clamp" }

// Infer returns the input shape.
func (op ClampOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if math.IsNaN(op.Min) || math.IsNaN(op.Max) || op.Min > op.Max {
		return fail("bounds [%v, %v] are not an interval", op.Min, op.Max)
	}
	return Unary{}.Infer(in)
}

// VJP masks the gradient to where the input was inside the bounds.
func (op ClampOp) VJP(in, out, gout []Value) ([]Value, error) {
	return []Value{apply1(ClampGradOp{Min: op.Min, Max: op.Max}, in[0], gout[0])}, nil
}

// Clamp limits x to [lo, hi] (use ±math.Inf for an open side).
func Clamp[V Value](x V, lo, hi float64) V { return apply1(ClampOp{Min: lo, Max: hi}, x) }

// ClampGradOp is Clamp's backward: inputs x and g, output g where lo ≤ x ≤ hi, else 0.
type ClampGradOp struct{ Min, Max float64 }

// Name is "ClampGrad".
func (ClampGradOp) Name() string { return "ClampGrad" }

// Infer checks that x and g have one shape.
func (op ClampGradOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 2); err != nil {
		return nil, err
	}
	if !in[0].Equal(in[1]) {
		return fail("x %s and gradient %s differ", in[0], in[1])
	}
	return Unary{}.Infer(in[:1])
}

// VJP: backward ops are not differentiated again.
func (op ClampGradOp) VJP(in, out, gout []Value) ([]Value, error) { return nil, ErrNoGradient }

// FillOp produces a constant tensor of a given shape (no inputs).
type FillOp struct {
	Shape shapes.Shape
	Value float64
}

// Name is "Fill".
func (FillOp) Name() string { return "Fill" }

// Infer checks the shape.
func (op FillOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 0); err != nil {
		return nil, err
	}
	if err := op.Shape.Valid(); err != nil {
		return nil, err
	}
	if !op.Shape.DType.IsFloat() {
		return fail("dtype %s, want a float type", op.Shape.DType)
	}
	return one(op.Shape.Clone())
}

// VJP: a constant has no inputs.
func (op FillOp) VJP(in, out, gout []Value) ([]Value, error) { return nil, nil }

// Full returns a constant tensor of the given dimensions and value, with like's dtype and builder.
func Full[V Value](like V, value float64, dims ...int) V {
	s := shapes.Make(like.Shape().DType, dims...)
	return like.Builder().Apply(FillOp{Shape: s, Value: value})[0].(V)
}

// ZerosLike returns zeros of like's shape.
func ZerosLike[V Value](like V) V { return Full(like, 0, like.Shape().Dims...) }
