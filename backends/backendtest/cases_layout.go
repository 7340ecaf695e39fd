package backendtest

import (
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	caseTables = append(caseTables, layoutCases)
	gradCaseTables = append(gradCaseTables, layoutGradCases)
	errorCaseTables = append(errorCaseTables, layoutErrorCases)
}

// intIn is an int64 input for layout ops, which move indices as well as floats.
func intIn(d ...int) In { return In{Dims: d, Int: true, IntMax: 1000} }

func layoutCases() []Case {
	var cs []Case
	for _, tr := range []struct {
		name string
		in   In
		perm []int
	}{
		{"matrix", In{Dims: dims(2, 3)}, dims(1, 0)},
		{"rotate", In{Dims: dims(2, 3, 4)}, dims(2, 0, 1)},
		{"rotate-back", In{Dims: dims(2, 3, 4)}, dims(1, 2, 0)},
		{"middle", In{Dims: dims(2, 3, 4, 5)}, dims(0, 2, 1, 3)},
		{"heads", In{Dims: dims(2, 5, 3, 4)}, dims(0, 2, 1, 3)}, // [B,T,H,P] → [B,H,T,P]
		{"reverse", In{Dims: dims(3, 1, 4)}, dims(2, 1, 0)},
		{"unit-axes", In{Dims: dims(1, 7, 1)}, dims(2, 0, 1)},
		{"large", In{Dims: dims(300, 201)}, dims(1, 0)},
		{"int64", intIn(3, 4, 2), dims(2, 0, 1)},
	} {
		perm := tr.perm
		cs = append(cs, Case{
			Name:   "Transpose/" + tr.name,
			In:     []In{tr.in},
			Only64: tr.in.Int,
			Build:  func(in []*graph.Node) []*graph.Node { return nodes(ops.Transpose(in[0], perm...)) },
			Ref:    func(in []*Tensor) []*Tensor { return tensors(RefTranspose(in[0], perm)) },
		})
	}
	for _, sl := range []struct {
		name             string
		in               In
		axis, start, end int
	}{
		{"rows", In{Dims: dims(5, 6)}, 0, 1, 4},
		{"cols-negative-axis", In{Dims: dims(5, 6)}, -1, 2, 6},
		{"first", In{Dims: dims(2, 7, 3)}, 1, 0, 1},
		{"last", In{Dims: dims(2, 7, 3)}, 1, 6, 7},
		{"inner", In{Dims: dims(2, 3, 9)}, 2, 3, 8},
		{"vector", In{Dims: dims(11)}, 0, 4, 9},
		{"large", In{Dims: dims(256, 300)}, 1, 17, 290},
		{"int64", intIn(4, 5), 0, 1, 3},
	} {
		axis, start, end := sl.axis, sl.start, sl.end
		cs = append(cs, Case{
			Name:   "Slice/" + sl.name,
			In:     []In{sl.in},
			Only64: sl.in.Int,
			Build:  func(in []*graph.Node) []*graph.Node { return nodes(ops.Slice(in[0], axis, start, end)) },
			Ref: func(in []*Tensor) []*Tensor {
				return tensors(RefSlice(in[0], normAxis(axis, len(in[0].Dims)), start, end))
			},
		})
	}
	for _, pd := range []struct {
		name                string
		in                  In
		axis, before, after int
	}{
		{"rows", In{Dims: dims(3, 4)}, 0, 2, 1},
		{"after-only", In{Dims: dims(3, 4)}, -1, 0, 3},
		{"before-only", In{Dims: dims(2, 3, 4)}, 1, 2, 0},
		{"causal", In{Dims: dims(2, 5, 3)}, 1, 3, 0}, // conv-style left padding in time
		{"vector", In{Dims: dims(5)}, 0, 1, 1},
		{"large", In{Dims: dims(200, 160)}, 0, 30, 20},
		{"int64", intIn(2, 3), 1, 1, 2},
	} {
		axis, before, after := pd.axis, pd.before, pd.after
		cs = append(cs, Case{
			Name:   "Pad/" + pd.name,
			In:     []In{pd.in},
			Only64: pd.in.Int,
			Build:  func(in []*graph.Node) []*graph.Node { return nodes(ops.Pad(in[0], axis, before, after)) },
			Ref: func(in []*Tensor) []*Tensor {
				return tensors(RefPad(in[0], normAxis(axis, len(in[0].Dims)), before, after))
			},
		})
	}
	for _, cc := range []struct {
		name string
		axis int
		in   []In
	}{
		{"rows", 0, []In{{Dims: dims(2, 3)}, {Dims: dims(4, 3)}}},
		{"cols-three", -1, []In{{Dims: dims(2, 3)}, {Dims: dims(2, 1)}, {Dims: dims(2, 5)}}},
		{"middle", 1, []In{{Dims: dims(2, 3, 4)}, {Dims: dims(2, 1, 4)}}},
		{"vectors", 0, []In{{Dims: dims(3)}, {Dims: dims(4)}, {Dims: dims(1)}, {Dims: dims(2)}}},
		{"xBC", 2, []In{{Dims: dims(2, 3, 8)}, {Dims: dims(2, 3, 4)}, {Dims: dims(2, 3, 4)}}},
		{"large", 1, []In{{Dims: dims(128, 300)}, {Dims: dims(128, 213)}}},
		{"int64", 0, []In{intIn(2, 2), intIn(3, 2)}},
	} {
		axis := cc.axis
		cs = append(cs, Case{
			Name:   "Concat/" + cc.name,
			In:     cc.in,
			Only64: cc.in[0].Int,
			Build:  func(in []*graph.Node) []*graph.Node { return nodes(ops.Concat(axis, in...)) },
			Ref: func(in []*Tensor) []*Tensor {
				return tensors(RefConcat(normAxis(axis, len(in[0].Dims)), in...))
			},
		})
	}
	for _, ga := range []struct {
		name  string
		table []int
		idx   In
	}{
		{"vector", dims(7, 5), In{Dims: dims(6), Int: true, Ints: []int64{0, 6, 3, 3, 1, 0}}},
		{"matrix", dims(9, 4), In{Dims: dims(2, 3), Int: true, IntMax: 9}},
		{"scalar", dims(5, 3), In{Dims: dims(), Int: true, Ints: []int64{4}}},
		{"one-row", dims(1, 6), In{Dims: dims(3), Int: true, Ints: []int64{0, 0, 0}}},
		{"large", dims(1000, 64), In{Dims: dims(3, 50), Int: true, IntMax: 1000}},
	} {
		cs = append(cs, Case{
			Name:  "Gather/" + ga.name,
			In:    []In{{Dims: ga.table}, ga.idx},
			Build: func(in []*graph.Node) []*graph.Node { return nodes(ops.Gather(in[0], in[1])) },
			Ref:   func(in []*Tensor) []*Tensor { return tensors(RefGather(in[0], in[1])) },
		})
	}
	for _, sc := range []struct {
		name string
		idx  In
		g    []int
		rows int
	}{
		{"repeats", In{Dims: dims(6), Int: true, Ints: []int64{1, 3, 1, 0, 3, 3}}, dims(6, 5), 4},
		{"matrix", In{Dims: dims(2, 3), Int: true, IntMax: 7}, dims(2, 3, 4), 7},
		{"untouched-rows", In{Dims: dims(2), Int: true, Ints: []int64{8, 2}}, dims(2, 3), 10},
		{"large", In{Dims: dims(4, 100), Int: true, IntMax: 50}, dims(4, 100, 64), 50},
	} {
		rows := sc.rows
		cs = append(cs, Case{
			Name: "ScatterAdd/" + sc.name,
			In:   []In{sc.idx, {Dims: sc.g}},
			Build: func(in []*graph.Node) []*graph.Node {
				return nodes(ops.ScatterAdd(in[0], in[1], rows))
			},
			Ref: func(in []*Tensor) []*Tensor { return tensors(RefScatterAdd(in[0], in[1], rows)) },
		})
	}
	return cs
}

func layoutGradCases() []GradCase {
	return []GradCase{
		unaryGrad("Transpose", func(x *graph.Node) *graph.Node { return ops.Transpose(x, 2, 0, 1) }, Arg{Dims: dims(2, 3, 4)}),
		unaryGrad("Slice", func(x *graph.Node) *graph.Node { return ops.Slice(x, 1, 1, 3) }, Arg{Dims: dims(2, 4, 3)}),
		unaryGrad("Pad", func(x *graph.Node) *graph.Node { return ops.Pad(x, -1, 2, 1) }, Arg{Dims: dims(3, 4)}),
		{
			Name: "Concat",
			Args: []Arg{{Dims: dims(2, 3)}, {Dims: dims(2, 1)}, {Dims: dims(2, 4)}},
			Build: func(in []*graph.Node) []*graph.Node {
				return nodes(ops.Concat(1, in...))
			},
		},
		{
			Name: "Gather",
			Args: []Arg{{Dims: dims(6, 4)}, {Dims: dims(2, 5), Int64: true, Ints: []int64{0, 5, 2, 2, 1, 5, 5, 3, 0, 2}}},
			Build: func(in []*graph.Node) []*graph.Node {
				return nodes(ops.Gather(in[0], in[1]))
			},
		},
	}
}

// runIndexed compiles build on be with a float input "x" and an int64 input "idx" and runs it;
// it returns Run's error.
func runIndexed(t *testing.T, be backends.Backend, xDims []int, idx []int64, idxDims []int,
	build func(x, idx *graph.Node) *graph.Node) error {
	t.Helper()
	g := graph.New()
	x := g.Input("x", shapes.Make(shapes.Float32, xDims...))
	ix := g.Input("idx", shapes.Make(shapes.Int64, idxDims...))
	g.Output("y", build(x, ix))
	p, err := g.Compile(be, nil)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	defer p.Close()
	if err := p.SetInput("idx", idx); err != nil {
		t.Fatalf("SetInput: %v", err)
	}
	return p.Run()
}

func layoutErrorCases() []errorCase {
	gather := func(x, idx *graph.Node) *graph.Node { return ops.Gather(x, idx) }
	scatter := func(g, idx *graph.Node) *graph.Node { return ops.ScatterAdd(idx, g, 5) }
	return []errorCase{
		{"gather-index-out-of-range", func(t *testing.T, be backends.Backend, o Options) {
			wantErr(t, "index = rows", runIndexed(t, be, dims(5, 3), []int64{0, 5}, dims(2), gather))
			wantErr(t, "negative index", runIndexed(t, be, dims(5, 3), []int64{-1, 2}, dims(2), gather))
			wantErr(t, "huge index", runIndexed(t, be, dims(5, 3), []int64{1 << 40, 2}, dims(2), gather))
			if err := runIndexed(t, be, dims(5, 3), []int64{0, 4}, dims(2), gather); err != nil {
				t.Errorf("valid indices: %v", err)
			}
		}},
		{"scatter-index-out-of-range", func(t *testing.T, be backends.Backend, o Options) {
			wantErr(t, "index = rows", runIndexed(t, be, dims(2, 3), []int64{0, 5}, dims(2), scatter))
			wantErr(t, "negative index", runIndexed(t, be, dims(2, 3), []int64{-3, 1}, dims(2), scatter))
			if err := runIndexed(t, be, dims(2, 3), []int64{4, 4}, dims(2), scatter); err != nil {
				t.Errorf("valid indices: %v", err)
			}
		}},
	}
}
