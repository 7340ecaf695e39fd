package backendtest

import (
	"math"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
)

// gradCaseTables lists the groups of gradient cases; adding an op is adding entries.
var gradCaseTables = []func() []GradCase{coreGradCases}

// GradCases returns a representative gradient case for every differentiable op.
func GradCases() []GradCase {
	var all []GradCase
	for _, f := range gradCaseTables {
		all = append(all, f()...)
	}
	return all
}

// RunGrad checks graph.Grad against central differences (float64, step 1e-6) for every case of
// GradCases; the norm-wise relative error must not exceed opts' GradTol (default 1e-6).
func RunGrad(t *testing.T, be backends.Backend, opts ...Options) {
	o := options(opts)
	for _, c := range GradCases() {
		t.Run(c.Name, func(t *testing.T) {
			noPanic(t, func() {
				res, err := CheckGrad(be, c, seedOf(c.Name), 1e-6)
				if err != nil {
					t.Fatalf("CheckGrad: %v", err)
				}
				t.Logf("max relative error %.2e (per input %.2e)", res.Max, res.RelErr)
				if !(res.Max <= o.GradTol) {
					t.Errorf("gradient relative error %.3e exceeds %.1e (per input %.3e)", res.Max, o.GradTol, res.RelErr)
				}
			})
		})
	}
}

func unaryGrad(name string, f func(*graph.Node) *graph.Node, a Arg) GradCase {
	return GradCase{Name: name, Args: []Arg{a}, Build: func(in []*graph.Node) []*graph.Node { return nodes(f(in[0])) }}
}

func coreGradCases() []GradCase {
	var cs []GradCase
	for _, b := range []struct {
		name string
		f    func(a, b *graph.Node) *graph.Node
	}{
		{"Add", ops.Add[*graph.Node]}, {"Sub", ops.Sub[*graph.Node]},
		{"Mul", ops.Mul[*graph.Node]}, {"Div", ops.Div[*graph.Node]},
	} {
		f := b.f
		den := Arg{Offset: 2, Scale: 0.3} // keeps Div's denominator away from 0
		for _, sh := range []struct {
			name string
			a, b []int
		}{{"same", dims(3, 4), dims(3, 4)}, {"broadcast", dims(2, 3, 4), dims(3, 1)}, {"broadcast-lhs", dims(1, 4), dims(3, 1)}} {
			bArg := den
			bArg.Dims = sh.b
			if b.name != "Div" {
				bArg = Arg{Dims: sh.b}
			}
			cs = append(cs, GradCase{
				Name:  b.name + "/" + sh.name,
				Args:  []Arg{{Dims: sh.a}, bArg},
				Build: func(in []*graph.Node) []*graph.Node { return nodes(f(in[0], in[1])) },
			})
		}
	}
	cs = append(cs,
		unaryGrad("Exp", ops.Exp[*graph.Node], Arg{Dims: dims(3, 4)}),
		unaryGrad("Log", ops.Log[*graph.Node], Arg{Dims: dims(3, 4), Offset: 3, Scale: 0.5}),
		unaryGrad("Neg", ops.Neg[*graph.Node], Arg{Dims: dims(3, 4)}),
		unaryGrad("SiLU", ops.SiLU[*graph.Node], Arg{Dims: dims(3, 4), Scale: 3}),
		unaryGrad("Sigmoid", ops.Sigmoid[*graph.Node], Arg{Dims: dims(3, 4), Scale: 3}),
		unaryGrad("Softplus", ops.Softplus[*graph.Node], Arg{Dims: dims(3, 4), Scale: 3}),
		unaryGrad("Sqrt", ops.Sqrt[*graph.Node], Arg{Dims: dims(3, 4), Offset: 3, Scale: 0.5}),
		unaryGrad("Square", ops.Square[*graph.Node], Arg{Dims: dims(3, 4)}),
		unaryGrad("Scale", func(x *graph.Node) *graph.Node { return apply1(ops.ScaleOp{Factor: -1.5, Offset: 0.5}, x) }, Arg{Dims: dims(2, 5)}),
		unaryGrad("Clamp", func(x *graph.Node) *graph.Node { return ops.Clamp(x, -0.5, 0.7) }, Arg{Dims: dims(4, 5)}),
		unaryGrad("Clamp/open", func(x *graph.Node) *graph.Node { return ops.Clamp(x, math.Inf(-1), 0.2) }, Arg{Dims: dims(4, 5)}),
		unaryGrad("Reshape", func(x *graph.Node) *graph.Node { return ops.Reshape(x, 4, -1) }, Arg{Dims: dims(2, 3, 4)}),
		unaryGrad("BroadcastTo", func(x *graph.Node) *graph.Node { return ops.BroadcastTo(x, 2, 3, 4) }, Arg{Dims: dims(3, 1)}),
		unaryGrad("Sum/all", func(x *graph.Node) *graph.Node { return ops.Sum(x) }, Arg{Dims: dims(3, 4)}),
		unaryGrad("Sum/axes", func(x *graph.Node) *graph.Node { return ops.Sum(x, 0, 2) }, Arg{Dims: dims(2, 3, 4)}),
		unaryGrad("Sum/keep", func(x *graph.Node) *graph.Node { return ops.SumKeep(x, -1) }, Arg{Dims: dims(2, 3, 4)}),
		unaryGrad("Mean", func(x *graph.Node) *graph.Node { return ops.Mean(x, 1) }, Arg{Dims: dims(2, 3, 4)}),
		// Fill has no inputs; a gradient through a graph that uses a constant must ignore it.
		unaryGrad("Fill", func(x *graph.Node) *graph.Node { return ops.Mul(x, ops.Full(x, 1.5, 3, 4)) }, Arg{Dims: dims(3, 4)}),
	)
	for _, m := range []struct {
		name   string
		a, b   []int
		ta, tb bool
	}{
		{"plain", dims(3, 4), dims(4, 5), false, false},
		{"transA", dims(4, 3), dims(4, 5), true, false},
		{"transB", dims(3, 4), dims(5, 4), false, true},
		{"both", dims(4, 3), dims(5, 4), true, true},
		{"batched-shared-B", dims(2, 3, 4), dims(4, 5), false, false},
		{"batch-broadcast", dims(2, 1, 3, 4), dims(3, 5, 4), false, true},
	} {
		ta, tb := m.ta, m.tb
		cs = append(cs, GradCase{
			Name:  "MatMul/" + m.name,
			Args:  []Arg{{Dims: m.a}, {Dims: m.b}},
			Build: func(in []*graph.Node) []*graph.Node { return nodes(ops.MatMulT(in[0], in[1], ta, tb)) },
		})
	}
	// A small composite: a gated MLP, checking that gradients accumulate across shared uses.
	cs = append(cs, GradCase{
		Name: "composite/gated-mlp",
		Args: []Arg{{Dims: dims(2, 3, 4)}, {Dims: dims(4, 6)}, {Dims: dims(6)}, {Dims: dims(3, 4)}},
		Build: func(in []*graph.Node) []*graph.Node {
			h := ops.Add(ops.MatMul(in[0], in[1]), in[2])
			gated := ops.Mul(ops.SiLU(h), ops.Sigmoid(h))
			y := ops.MatMulT(gated, in[1], false, true)
			return nodes(ops.Sub(y, in[3]), ops.Mean(ops.Square(y)))
		},
	})
	return cs
}
