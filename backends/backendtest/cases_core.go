package backendtest

import (
	"math"

	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

// Helpers that keep case tables short.

func nodes(ns ...*graph.Node) []*graph.Node { return ns }
func tensors(ts ...*Tensor) []*Tensor       { return ts }
func dims(d ...int) []int                   { return d }

// apply1 applies op directly (for kernels without a constructor, such as ClampGrad).
func apply1(op ops.Op, in ...*graph.Node) *graph.Node {
	vals := make([]ops.Value, len(in))
	for i, n := range in {
		vals[i] = n
	}
	return in[0].Builder().Apply(op, vals...)[0].(*graph.Node)
}

func elementwiseCases() []Case {
	var cs []Case
	binaries := []struct {
		name string
		f    func(a, b *graph.Node) *graph.Node
		ref  func(x, y float64) float64
	}{
		{"Add", ops.Add[*graph.Node], func(x, y float64) float64 { return x + y }},
		{"Sub", ops.Sub[*graph.Node], func(x, y float64) float64 { return x - y }},
		{"Mul", ops.Mul[*graph.Node], func(x, y float64) float64 { return x * y }},
		{"Div", ops.Div[*graph.Node], func(x, y float64) float64 { return x / y }},
	}
	shapePairs := []struct {
		name string
		a, b []int
	}{
		{"same", dims(3, 5), dims(3, 5)},
		{"row", dims(4, 7), dims(7)},
		{"col-and-row", dims(4, 1), dims(1, 6)},
		{"scalar-rhs", dims(2, 3, 5), dims()},
		{"scalar-lhs", dims(), dims(3, 2)},
		{"middle", dims(2, 1, 5), dims(3, 1)},
		{"rank4", dims(2, 3, 1, 4), dims(3, 5, 1)},
		{"vector", dims(13), dims(13)},
		{"large-same", dims(201, 199), dims(201, 199)},    // above the parallel threshold
		{"large-bcast", dims(700, 97), dims(700, 1)},      // row-parallel broadcast
		{"large-bcast-row", dims(3, 300, 67), dims(67)},   // many short rows
		{"large-bcast-lhs", dims(1, 97), dims(700, 97)},   // stretched left operand
		{"large-flat", dims(40000), dims(40000)},          // rank 1, parallel
		{"large-lead", dims(5, 1, 8200), dims(1, 1, 1)},   // scalar-shaped rank-3 operand
		{"unit", dims(1, 1), dims(1)},                     // everything size 1
		{"odd", dims(7, 11, 3), dims(7, 1, 3)},            // awkward sizes
		{"bcast-both-lead", dims(1, 4, 1), dims(3, 1, 5)}, // both stretched
	}
	for _, b := range binaries {
		for _, sp := range shapePairs {
			rhs := In{Dims: sp.b}
			if b.name == "Div" {
				rhs.Lo, rhs.Hi = 0.5, 2 // keep away from 0
			}
			f, ref := b.f, b.ref
			cs = append(cs, Case{
				Name:  b.name + "/" + sp.name,
				In:    []In{{Dims: sp.a}, rhs},
				Build: func(in []*graph.Node) []*graph.Node { return nodes(f(in[0], in[1])) },
				Ref:   func(in []*Tensor) []*Tensor { return tensors(RefBinary(in[0], in[1], ref)) },
			})
		}
	}
	cs = append(cs, Case{
		Name:  "Div/negative-denominator",
		In:    []In{{Dims: dims(3, 4)}, {Dims: dims(4), Values: []float64{-0.5, -2, 1.5, -1}}},
		Build: func(in []*graph.Node) []*graph.Node { return nodes(ops.Div(in[0], in[1])) },
		Ref: func(in []*Tensor) []*Tensor {
			return tensors(RefBinary(in[0], in[1], func(x, y float64) float64 { return x / y }))
		},
	})

	unaries := []struct {
		name   string
		f      func(*graph.Node) *graph.Node
		ref    func(float64) float64
		lo, hi float64
		edge   []float64 // special values checked too
	}{
		{"Exp", ops.Exp[*graph.Node], math.Exp, -3, 3, []float64{-20, 0, 10}},
		{"Log", ops.Log[*graph.Node], math.Log, 0.05, 5, []float64{1, 1e-3, 100}},
		{"Neg", ops.Neg[*graph.Node], func(x float64) float64 { return -x }, -3, 3, []float64{0}},
		{"SiLU", ops.SiLU[*graph.Node], refSiLU, -6, 6, []float64{-50, -20, 0, 20, 50}},
		{"Sigmoid", ops.Sigmoid[*graph.Node], refSigmoid, -6, 6, []float64{-50, -20, 0, 20, 50}},
		{"Softplus", ops.Softplus[*graph.Node], refSoftplus, -6, 6, []float64{-30, -5, 0, 19.9, 20.1, 30}},
		{"Sqrt", ops.Sqrt[*graph.Node], math.Sqrt, 0, 5, []float64{0, 1, 1e-4, 100}},
		{"Square", ops.Square[*graph.Node], func(x float64) float64 { return x * x }, -3, 3, []float64{0, -1e3}},
	}
	for _, u := range unaries {
		f, ref := u.f, u.ref
		build := func(in []*graph.Node) []*graph.Node { return nodes(f(in[0])) }
		refFn := func(in []*Tensor) []*Tensor { return tensors(RefUnary(in[0], ref)) }
		cs = append(cs,
			Case{Name: u.name + "/small", In: []In{{Dims: dims(3, 7), Lo: u.lo, Hi: u.hi}}, Build: build, Ref: refFn},
			Case{Name: u.name + "/scalar", In: []In{{Dims: dims(), Lo: u.lo, Hi: u.hi}}, Build: build, Ref: refFn},
			Case{Name: u.name + "/large", In: []In{{Dims: dims(150, 151), Lo: u.lo, Hi: u.hi}}, Build: build, Ref: refFn},
			Case{Name: u.name + "/edges", In: []In{{Dims: dims(len(u.edge)), Values: u.edge}}, Build: build, Ref: refFn},
		)
	}

	for _, sc := range []struct {
		name        string
		fac, offset float64
	}{{"factor", 2.5, 0}, {"affine", -0.75, 1.25}, {"zero", 0, 3}} {
		fac, off := sc.fac, sc.offset
		for _, d := range [][]int{dims(4, 5), dims(150, 151)} {
			cs = append(cs, Case{
				Name: "Scale/" + sc.name + "/" + shapes.DimsString(d),
				In:   []In{{Dims: d}},
				Build: func(in []*graph.Node) []*graph.Node {
					return nodes(apply1(ops.ScaleOp{Factor: fac, Offset: off}, in[0]))
				},
				Ref: func(in []*Tensor) []*Tensor {
					return tensors(RefUnary(in[0], func(x float64) float64 { return x*fac + off }))
				},
			})
		}
	}

	inf := math.Inf(1)
	for _, cl := range []struct {
		name   string
		lo, hi float64
	}{{"interval", -0.5, 1}, {"upper", -inf, 0.375}, {"lower", -0.125, inf}, {"point", 0.25, 0.25}} {
		// Bounds are exact in float32, so that probes at the bounds mean the same in both dtypes.
		lo, hi := cl.lo, cl.hi
		for _, d := range [][]int{dims(6, 7), dims(150, 151)} {
			cs = append(cs, Case{
				Name:  "Clamp/" + cl.name + "/" + shapes.DimsString(d),
				In:    []In{{Dims: d}},
				Build: func(in []*graph.Node) []*graph.Node { return nodes(ops.Clamp(in[0], lo, hi)) },
				Ref: func(in []*Tensor) []*Tensor {
					return tensors(RefUnary(in[0], func(x float64) float64 { return math.Min(math.Max(x, lo), hi) }))
				},
			})
		}
		cs = append(cs, Case{
			Name: "ClampGrad/" + cl.name,
			In:   []In{{Dims: dims(5, 9), Values: clampProbe(45, lo, hi)}, {Dims: dims(5, 9)}},
			Build: func(in []*graph.Node) []*graph.Node {
				return nodes(apply1(ops.ClampGradOp{Min: lo, Max: hi}, in[0], in[1]))
			},
			Ref: func(in []*Tensor) []*Tensor {
				return tensors(RefBinary(in[0], in[1], func(x, g float64) float64 {
					if x >= lo && x <= hi {
						return g
					}
					return 0
				}))
			},
		})
	}

	for _, fl := range []struct {
		name string
		d    []int
		v    float64
	}{{"matrix", dims(2, 3), 1.5}, {"scalar", dims(), -4}, {"large", dims(300, 70), 0.25}, {"zero", dims(7), 0}} {
		d, v := fl.d, fl.v
		cs = append(cs, Case{
			Name: "Fill/" + fl.name,
			In:   []In{{Dims: dims(1)}},
			Build: func(in []*graph.Node) []*graph.Node {
				return nodes(ops.Full(in[0], v, d...))
			},
			Ref: func(in []*Tensor) []*Tensor { return tensors(RefFill(d, v)) },
		})
	}
	return cs
}

// clampProbe returns n values around and exactly at the bounds.
func clampProbe(n int, lo, hi float64) []float64 {
	base := []float64{-3, -1, -0.5, -0.2, 0, 0.25, 0.3, 0.5, 1, 3}
	for _, b := range []float64{lo, hi} {
		if !math.IsInf(b, 0) {
			base = append(base, b, b-1e-3, b+1e-3)
		}
	}
	v := make([]float64, n)
	for i := range v {
		v[i] = base[i%len(base)]
	}
	return v
}

func shapeCases() []Case {
	var cs []Case
	for _, r := range []struct {
		name     string
		from, to []int
		want     []int
	}{
		{"merge", dims(2, 3, 4), dims(6, 4), dims(6, 4)},
		{"infer", dims(2, 3, 4), dims(4, -1), dims(4, 6)},
		{"flatten", dims(3, 5), dims(15), dims(15)},
		{"to-scalar", dims(1, 1), dims(), dims()},
		{"add-axes", dims(6), dims(1, 2, 1, 3), dims(1, 2, 1, 3)},
		{"large", dims(200, 150), dims(300, 100), dims(300, 100)},
	} {
		to, want := r.to, r.want
		cs = append(cs, Case{
			Name:  "Reshape/" + r.name,
			In:    []In{{Dims: r.from}},
			Build: func(in []*graph.Node) []*graph.Node { return nodes(apply1(ops.ReshapeOp{Dims: to}, in[0])) },
			Ref:   func(in []*Tensor) []*Tensor { return tensors(RefReshape(in[0], want)) },
		})
	}
	for _, b := range []struct {
		name     string
		from, to []int
	}{
		{"lead", dims(5), dims(4, 5)},
		{"middle", dims(3, 1), dims(2, 3, 5)},
		{"scalar", dims(), dims(2, 2)},
		{"ones", dims(1, 1), dims(3, 4)},
		{"same-rank", dims(1, 4, 1), dims(3, 4, 2)},
		{"large", dims(1, 130), dims(300, 130)},
	} {
		to := b.to
		cs = append(cs, Case{
			Name:  "BroadcastTo/" + b.name,
			In:    []In{{Dims: b.from}},
			Build: func(in []*graph.Node) []*graph.Node { return nodes(ops.BroadcastTo(in[0], to...)) },
			Ref:   func(in []*Tensor) []*Tensor { return tensors(RefBroadcastTo(in[0], to)) },
		})
	}
	for _, s := range []struct {
		name string
		d    []int
		axes []int // nil: all
		keep bool
	}{
		{"all", dims(3, 4, 5), nil, false},
		{"axis0", dims(3, 4, 5), dims(0), false},
		{"axis1", dims(3, 4, 5), dims(1), false},
		{"last", dims(3, 4, 5), dims(-1), false},
		{"outer-keep", dims(3, 4, 5), dims(0, 2), true},
		{"inner-keep", dims(3, 4, 5), dims(1, 2), true},
		{"vector", dims(17), dims(0), false},
		{"unit-axis", dims(3, 1, 4), dims(1), false},
		{"large-rows", dims(300, 200), dims(1), false}, // float32 sums of 200 terms: see Tol
		{"large-cols", dims(300, 200), dims(0), true},
		{"rank4", dims(2, 3, 4, 5), dims(0, 2), false},
	} {
		d, axes, keep := s.d, s.axes, s.keep
		tol := 1.0
		if size(d) > 1000 {
			tol = 10 // rounding grows with the number of terms
		}
		cs = append(cs, Case{
			Name: "Sum/" + s.name,
			In:   []In{{Dims: d}},
			Tol:  tol,
			Build: func(in []*graph.Node) []*graph.Node {
				if axes == nil {
					return nodes(ops.Sum(in[0]))
				}
				if keep {
					return nodes(ops.SumKeep(in[0], axes...))
				}
				return nodes(ops.Sum(in[0], axes...))
			},
			Ref: func(in []*Tensor) []*Tensor {
				ax := axes
				if ax == nil {
					ax = make([]int, len(d))
					for i := range ax {
						ax[i] = i
					}
				}
				norm := make([]int, len(ax))
				for i, a := range ax {
					norm[i] = normAxis(a, len(d))
				}
				return tensors(RefSum(in[0], norm, keep))
			},
		})
	}
	return cs
}

func matmulCases() []Case {
	var cs []Case
	for _, m := range []struct {
		name   string
		a, b   []int
		ta, tb bool
		tol    float64
	}{
		{"plain", dims(3, 4), dims(4, 5), false, false, 0},
		{"transA", dims(4, 3), dims(4, 5), true, false, 0},
		{"transB", dims(3, 4), dims(5, 4), false, true, 0},
		{"both", dims(4, 3), dims(5, 4), true, true, 0},
		{"row-vector", dims(1, 7), dims(7, 9), false, false, 0},
		{"col-vector", dims(6, 7), dims(7, 1), false, false, 0},
		{"inner-1", dims(5, 1), dims(1, 4), false, false, 0},
		{"batched-shared-B", dims(2, 3, 4), dims(4, 5), false, false, 0},
		{"batched-shared-A", dims(3, 4), dims(2, 4, 5), false, false, 0},
		{"batched", dims(2, 3, 4), dims(2, 4, 5), false, false, 0},
		{"batched-transB", dims(2, 3, 4), dims(2, 5, 4), false, true, 0},
		{"batched-transA", dims(3, 4, 2), dims(3, 4, 5), true, false, 0},
		{"batch-broadcast", dims(2, 1, 3, 4), dims(3, 4, 5), false, false, 0},
		{"batch-broadcast-both", dims(2, 1, 3, 4), dims(1, 3, 5, 4), false, true, 0},
		{"large", dims(37, 65), dims(65, 67), false, false, 3},
		{"large-transB", dims(37, 65), dims(67, 65), false, true, 3},
		{"large-transA", dims(65, 37), dims(65, 67), true, false, 3},
		{"large-batched", dims(3, 29, 70), dims(3, 70, 61), false, false, 3},
		{"large-both", dims(2, 70, 29), dims(61, 70), true, true, 3},
	} {
		ta, tb := m.ta, m.tb
		cs = append(cs, Case{
			Name: "MatMul/" + m.name,
			In:   []In{{Dims: m.a}, {Dims: m.b}},
			Tol:  m.tol,
			Build: func(in []*graph.Node) []*graph.Node {
				return nodes(ops.MatMulT(in[0], in[1], ta, tb))
			},
			Ref: func(in []*Tensor) []*Tensor { return tensors(RefMatMul(in[0], in[1], ta, tb)) },
		})
	}
	return cs
}
