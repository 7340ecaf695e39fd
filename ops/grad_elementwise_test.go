package ops_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/mamba2go/mamba2/backends/backendtest"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
)

// unaryCase builds a one-input gradient case.
func unaryCase(name string, arg backendtest.Arg, f func(x *graph.Node) *graph.Node) backendtest.GradCase {
	return backendtest.GradCase{
		Name:  name,
		Args:  []backendtest.Arg{arg},
		Build: func(in []*graph.Node) []*graph.Node { return []*graph.Node{f(in[0])} },
	}
}

func TestGradBinary(t *testing.T) {
	pairs := []struct {
		name string
		a, b []int
	}{
		{"same", []int{2, 3, 4}, []int{2, 3, 4}},
		{"trailing", []int{2, 3, 4}, []int{4}},
		{"column", []int{2, 3, 4}, []int{3, 1}},
		{"middle", []int{2, 3, 4}, []int{2, 1, 4}},
		{"left-broadcast", []int{4}, []int{2, 3, 4}},
		{"both", []int{2, 1, 5}, []int{3, 1}},
		{"scalar", []int{3, 5}, []int{}},
	}
	kinds := []struct {
		name string
		f    func(a, b *graph.Node) *graph.Node
	}{
		{"Add", ops.Add[*graph.Node]},
		{"Sub", ops.Sub[*graph.Node]},
		{"Mul", ops.Mul[*graph.Node]},
		{"Div", ops.Div[*graph.Node]},
	}
	for _, k := range kinds {
		for _, p := range pairs {
			f := k.f
			b := backendtest.Arg{Dims: p.b}
			if k.name == "Div" {
				b.Offset, b.Scale = 3, 0.5 // keep the denominator away from zero
			}
			checkGrad(t, backendtest.GradCase{
				Name: k.name + "/" + p.name,
				Args: []backendtest.Arg{{Dims: p.a}, b},
				Build: func(in []*graph.Node) []*graph.Node {
					return []*graph.Node{f(in[0], in[1])}
				},
			})
		}
	}
	// The same node on both sides: gradients from both operands add up.
	checkGrad(t, unaryCase("Mul/self", backendtest.Arg{Dims: []int{3, 4}}, func(x *graph.Node) *graph.Node {
		return ops.Mul(x, x)
	}))
}

func TestGradUnary(t *testing.T) {
	dims := []int{3, 5, 2}
	pos := backendtest.Arg{Dims: dims, Offset: 3, Scale: 0.5}
	std := backendtest.Arg{Dims: dims}
	wide := backendtest.Arg{Dims: dims, Scale: 3}
	for _, tc := range []struct {
		name string
		arg  backendtest.Arg
		f    func(x *graph.Node) *graph.Node
	}{
		{"Exp", std, ops.Exp[*graph.Node]},
		{"Log", pos, ops.Log[*graph.Node]},
		{"Neg", std, ops.Neg[*graph.Node]},
		{"SiLU", wide, ops.SiLU[*graph.Node]},
		{"Sigmoid", wide, ops.Sigmoid[*graph.Node]},
		{"Softplus", wide, ops.Softplus[*graph.Node]},
		{"Sqrt", pos, ops.Sqrt[*graph.Node]},
		{"Square", std, ops.Square[*graph.Node]},
		{"Scale", std, func(x *graph.Node) *graph.Node { return ops.Scale(x, -2.5) }},
		{"AddConst", std, func(x *graph.Node) *graph.Node { return ops.AddConst(x, 1.75) }},
		{"Clamp", backendtest.Arg{Dims: dims, Values: clampValues(30)},
			func(x *graph.Node) *graph.Node { return ops.Clamp(x, -0.5, 0.7) }},
		{"Clamp/open-above", backendtest.Arg{Dims: dims, Values: clampValues(30)},
			func(x *graph.Node) *graph.Node { return ops.Clamp(x, -0.5, math.Inf(1)) }},
		// Composites exercise gradients flowing through several unary ops.
		{"Log(Softplus)", wide, func(x *graph.Node) *graph.Node { return ops.Log(ops.Softplus(x)) }},
		{"Sqrt(AddConst(Square))", std, func(x *graph.Node) *graph.Node {
			return ops.Sqrt(ops.AddConst(ops.Square(x), 0.1))
		}},
	} {
		checkGrad(t, unaryCase(tc.name, tc.arg, tc.f))
	}
}

// clampValues spreads n values over [-2, 2] while keeping each at least 0.01 away from the clamp
// bounds used above (-0.5 and 0.7), where the derivative jumps.
func clampValues(n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		x := -2 + 4*float64(i)/float64(n-1) + 0.013
		for _, b := range []float64{-0.5, 0.7} {
			if x > b-0.01 && x < b+0.01 {
				x += 0.03
			}
		}
		v[i] = x
	}
	return v
}

func TestGradReduce(t *testing.T) {
	x := []int{2, 3, 4}
	for _, tc := range []struct {
		name string
		f    func(x *graph.Node) *graph.Node
	}{
		{"Sum/all", func(x *graph.Node) *graph.Node { return ops.Sum(x) }},
		{"Sum/0", func(x *graph.Node) *graph.Node { return ops.Sum(x, 0) }},
		{"Sum/-1", func(x *graph.Node) *graph.Node { return ops.Sum(x, -1) }},
		{"Sum/0,2", func(x *graph.Node) *graph.Node { return ops.Sum(x, 0, 2) }},
		{"SumKeep/1", func(x *graph.Node) *graph.Node { return ops.SumKeep(x, 1) }},
		{"SumKeep/0,2", func(x *graph.Node) *graph.Node { return ops.SumKeep(x, 0, 2) }},
		{"Mean/all", func(x *graph.Node) *graph.Node { return ops.Mean(x) }},
		{"Mean/1", func(x *graph.Node) *graph.Node { return ops.Mean(x, 1) }},
		{"Mean/-1,0", func(x *graph.Node) *graph.Node { return ops.Mean(x, -1, 0) }},
		{"SumTo", func(x *graph.Node) *graph.Node { return ops.SumTo(x, []int{3, 1}) }},
	} {
		checkGrad(t, unaryCase(tc.name, backendtest.Arg{Dims: x}, tc.f))
	}
}

func TestGradShapeOps(t *testing.T) {
	for _, tc := range []struct {
		name string
		dims []int
		f    func(x *graph.Node) *graph.Node
	}{
		{"Reshape", []int{2, 3, 4}, func(x *graph.Node) *graph.Node { return ops.Reshape(x, 4, 6) }},
		{"Reshape/-1", []int{2, 3, 4}, func(x *graph.Node) *graph.Node { return ops.Reshape(x, 3, -1, 2) }},
		{"BroadcastTo/lead", []int{3, 4}, func(x *graph.Node) *graph.Node { return ops.BroadcastTo(x, 2, 3, 4) }},
		{"BroadcastTo/ones", []int{2, 1, 4}, func(x *graph.Node) *graph.Node { return ops.BroadcastTo(x, 3, 2, 5, 4) }},
		{"BroadcastTo/scalar", []int{}, func(x *graph.Node) *graph.Node { return ops.BroadcastTo(x, 2, 3) }},
	} {
		checkGrad(t, unaryCase(tc.name, backendtest.Arg{Dims: tc.dims}, tc.f))
	}
}

// TestGradChained checks a small network mixing matmul, broadcasting and non-linearities, so that
// gradient accumulation across shared nodes is exercised.
func TestGradChained(t *testing.T) {
	for b := 1; b <= 3; b += 2 {
		checkGrad(t, backendtest.GradCase{
			Name: fmt.Sprintf("mlp/batch%d", b),
			Args: []backendtest.Arg{{Dims: []int{b, 5, 3}}, {Dims: []int{3, 7}}, {Dims: []int{7}}},
			Build: func(in []*graph.Node) []*graph.Node {
				h := ops.SiLU(ops.Add(ops.MatMul(in[0], in[1]), in[2]))
				return []*graph.Node{ops.Mul(h, ops.Sigmoid(h)), ops.Sum(h, 1)}
			},
		})
	}
}
