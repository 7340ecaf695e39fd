package ops_test

import (
	"math/rand/v2"
	"testing"

	"github.com/mamba2go/mamba2/backends/backendtest"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

func TestGradTranspose(t *testing.T) {
	for _, tc := range []struct {
		name string
		dims []int
		perm []int
	}{
		{"2d", []int{3, 5}, []int{1, 0}},
		{"reverse-default", []int{2, 3, 4}, nil},
		{"last-two", []int{2, 3, 4}, []int{0, 2, 1}},
		{"cycle", []int{2, 3, 4, 5}, []int{2, 0, 3, 1}},
		{"lead-unit", []int{1, 3, 2}, []int{2, 1, 0}},
	} {
		perm := tc.perm
		checkGrad(t, unaryCase("Transpose/"+tc.name, backendtest.Arg{Dims: tc.dims}, func(x *graph.Node) *graph.Node {
			return ops.Transpose(x, perm...)
		}))
	}
}

func TestGradSlicePad(t *testing.T) {
	for _, tc := range []struct {
		name              string
		dims              []int
		axis, start, end  int
		before, after     int
		padAxis           int
		usePad, useSlice  bool
		sliceThenPadAgain bool
	}{
		{name: "Slice/first", dims: []int{5, 3, 2}, axis: 0, start: 1, end: 4, useSlice: true},
		{name: "Slice/middle", dims: []int{2, 7, 3}, axis: 1, start: 2, end: 5, useSlice: true},
		{name: "Slice/last-neg", dims: []int{2, 3, 7}, axis: -1, start: 0, end: 6, useSlice: true},
		{name: "Slice/one", dims: []int{2, 3, 7}, axis: -1, start: 6, end: 7, useSlice: true},
		{name: "Pad/first", dims: []int{3, 2, 2}, padAxis: 0, before: 2, after: 1, usePad: true},
		{name: "Pad/middle", dims: []int{2, 3, 2}, padAxis: 1, before: 0, after: 3, usePad: true},
		{name: "Pad/last-neg", dims: []int{2, 3, 5}, padAxis: -1, before: 4, after: 0, usePad: true},
		{name: "Slice+Pad", dims: []int{2, 6, 3}, axis: 1, start: 1, end: 4, padAxis: -1, before: 1, after: 2,
			useSlice: true, usePad: true},
	} {
		tc := tc
		checkGrad(t, unaryCase(tc.name, backendtest.Arg{Dims: tc.dims}, func(x *graph.Node) *graph.Node {
			if tc.useSlice {
				x = ops.Slice(x, tc.axis, tc.start, tc.end)
			}
			if tc.usePad {
				x = ops.Pad(x, tc.padAxis, tc.before, tc.after)
			}
			return x
		}))
	}
	// Two overlapping slices of one input: their gradients add.
	checkGrad(t, unaryCase("Slice/overlap", backendtest.Arg{Dims: []int{2, 9}}, func(x *graph.Node) *graph.Node {
		return ops.Mul(ops.Slice(x, 1, 0, 5), ops.Slice(x, 1, 3, 8))
	}))
}

func TestGradConcat(t *testing.T) {
	for _, tc := range []struct {
		name string
		axis int
		dims [][]int
	}{
		{"axis0", 0, [][]int{{2, 3}, {1, 3}, {4, 3}}},
		{"middle", 1, [][]int{{2, 1, 3}, {2, 4, 3}}},
		{"last-neg", -1, [][]int{{2, 3, 2}, {2, 3, 5}, {2, 3, 1}}},
	} {
		args := make([]backendtest.Arg, len(tc.dims))
		for i, d := range tc.dims {
			args[i] = backendtest.Arg{Dims: d}
		}
		axis := tc.axis
		checkGrad(t, backendtest.GradCase{
			Name: "Concat/" + tc.name,
			Args: args,
			Build: func(in []*graph.Node) []*graph.Node {
				return []*graph.Node{ops.Concat(axis, in...)}
			},
		})
	}
	// The same input twice, and Concat composed with Slice (its inverse).
	checkGrad(t, unaryCase("Concat/self", backendtest.Arg{Dims: []int{3, 2}}, func(x *graph.Node) *graph.Node {
		return ops.Square(ops.Concat(0, x, ops.Scale(x, 2), x))
	}))
	checkGrad(t, unaryCase("Concat/split-swap", backendtest.Arg{Dims: []int{2, 7}}, func(x *graph.Node) *graph.Node {
		a, b := ops.Slice(x, 1, 0, 3), ops.Slice(x, 1, 3, 7)
		return ops.Mul(ops.Concat(1, b, a), x)
	}))
}

func TestGradGather(t *testing.T) {
	for _, tc := range []struct {
		name  string
		table []int
		idx   []int
		ints  []int64
	}{
		{"repeated", []int{5, 3}, []int{7}, []int64{0, 4, 4, 1, 0, 4, 2}},
		{"batched", []int{6, 4}, []int{2, 3}, []int64{5, 5, 0, 3, 3, 3}},
		{"unused-rows", []int{9, 2}, []int{3}, []int64{8, 1, 8}},
		{"scalar-index", []int{4, 5}, []int{}, []int64{2}},
	} {
		ints := tc.ints
		checkGrad(t, backendtest.GradCase{
			Name: "Gather/" + tc.name,
			Args: []backendtest.Arg{{Dims: tc.table}, {Dims: tc.idx, Int64: true, Ints: ints}},
			Build: func(in []*graph.Node) []*graph.Node {
				return []*graph.Node{ops.Gather(in[0], in[1])}
			},
		})
	}
	// Random indices drawn by the checker, gathered rows used non-linearly.
	checkGrad(t, backendtest.GradCase{
		Name: "Gather/random-nonlinear",
		Args: []backendtest.Arg{{Dims: []int{7, 3}}, {Dims: []int{3, 4}, Int64: true, IntMax: 7}},
		Build: func(in []*graph.Node) []*graph.Node {
			return []*graph.Node{ops.Square(ops.Gather(in[0], in[1]))}
		},
	})
}

// runSingle compiles g with one output "y", feeds inputs and runs it once.
func runSingle(t *testing.T, g *graph.Graph, feeds map[string]any) (*graph.Program, error) {
	t.Helper()
	p, err := g.Compile(cpuBackend(t), nil)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	for name, v := range feeds {
		require.NoError(t, p.SetInput(name, v))
	}
	return p, p.Run()
}

func TestGatherOutOfRange(t *testing.T) {
	for _, bad := range []int64{5, -1, 1 << 40} {
		g := graph.New()
		table := g.Input("table", shapes.Make(shapes.Float32, 5, 2))
		idx := g.Input("idx", shapes.Make(shapes.Int64, 3))
		g.Output("y", ops.Gather(table, idx))
		_, err := runSingle(t, g, map[string]any{"table": make([]float32, 10), "idx": []int64{0, bad, 1}})
		require.Error(t, err)
		require.Contains(t, err.Error(), "outside [0, 5)")
		require.Contains(t, err.Error(), "index")
	}
	// The gradient's ScatterAdd checks too (when fed through a graph whose forward would pass, the
	// check is the same code path; here it is compiled directly).
	g := graph.New()
	idx := g.Input("idx", shapes.Make(shapes.Int64, 2))
	v := g.Input("v", shapes.Make(shapes.Float64, 2, 3))
	g.Output("y", ops.ScatterAdd(idx, v, 4))
	_, err := runSingle(t, g, map[string]any{"idx": []int64{3, 4}, "v": make([]float64, 6)})
	require.ErrorContains(t, err, "outside [0, 4)")
}

func TestLayoutForward(t *testing.T) {
	g := graph.New()
	x := g.Input("x", shapes.Make(shapes.Float64, 2, 3))
	ids := g.Input("ids", shapes.Make(shapes.Int64, 2, 3))
	g.Output("t", ops.Transpose(x, 1, 0))
	g.Output("s", ops.Slice(x, 1, 1, 3))
	g.Output("p", ops.Pad(x, 0, 1, 0))
	g.Output("c", ops.Concat(1, x, ops.Slice(x, 1, 0, 1)))
	g.Output("ids", ops.Slice(ops.Transpose(ids), 0, 1, 3)) // int64 layout ops
	g.Output("gat", ops.Gather(x, ops.Slice(ids, 1, 0, 2)))
	p, err := runSingle(t, g, map[string]any{
		"x":   []float64{1, 2, 3, 4, 5, 6},
		"ids": []int64{0, 1, 2, 1, 1, 0},
	})
	require.NoError(t, err)
	read := func(name string, n int) []float64 {
		v := make([]float64, n)
		require.NoError(t, p.ReadOutput(name, v))
		return v
	}
	require.Equal(t, []float64{1, 4, 2, 5, 3, 6}, read("t", 6))
	require.Equal(t, []float64{2, 3, 5, 6}, read("s", 4))
	require.Equal(t, []float64{0, 0, 0, 1, 2, 3, 4, 5, 6}, read("p", 9))
	require.Equal(t, []float64{1, 2, 3, 1, 4, 5, 6, 4}, read("c", 8))
	ints := make([]int64, 4)
	require.NoError(t, p.ReadOutput("ids", ints))
	require.Equal(t, []int64{1, 1, 2, 0}, ints)
	// indices [[0,1],[1,1]] into rows [1,2,3], [4,5,6]
	require.Equal(t, []float64{1, 2, 3, 4, 5, 6, 4, 5, 6, 4, 5, 6}, read("gat", 12))
}

func TestLayoutInferErrors(t *testing.T) {
	for name, build := range map[string]func(x *graph.Node){
		"transpose-perm":  func(x *graph.Node) { ops.Transpose(x, 0, 0) },
		"transpose-rank":  func(x *graph.Node) { ops.Transpose(x, 1, 0, 2) },
		"slice-range":     func(x *graph.Node) { ops.Slice(x, 1, 2, 5) },
		"slice-empty":     func(x *graph.Node) { ops.Slice(x, 1, 2, 2) },
		"slice-axis":      func(x *graph.Node) { ops.Slice(x, 2, 0, 1) },
		"pad-negative":    func(x *graph.Node) { ops.Pad(x, 0, -1, 2) },
		"concat-mismatch": func(x *graph.Node) { ops.Concat(0, x, ops.Transpose(x)) },
		"gather-float-ix": func(x *graph.Node) { ops.Gather(x, x) },
	} {
		g := graph.New()
		x := g.Input("x", shapes.Make(shapes.Float64, 2, 3))
		build(x)
		require.Error(t, g.Err(), name)
	}
}

// TestLayoutLarge checks the layout kernels against plain loops at sizes that take their parallel
// paths.
func TestLayoutLarge(t *testing.T) {
	const m, n, rows = 300, 211, 97
	rng := rand.New(rand.NewPCG(21, 22))
	x := randSlice(rng, m*n, 1, 0)
	ids := make([]int64, rows)
	for i := range ids {
		ids[i] = int64(rng.IntN(m))
	}
	g := graph.New()
	xn := g.Input("x", shapes.Make(shapes.Float64, m, n))
	in := g.Input("ids", shapes.Make(shapes.Int64, rows))
	g.Output("t", ops.Transpose(xn, 1, 0))
	g.Output("c", ops.Concat(1, ops.Slice(xn, 1, 5, n), ops.Pad(ops.Slice(xn, 1, 0, 5), 1, 1, 0)))
	gat := ops.Gather(xn, in)
	g.Output("g", gat)
	g.Output("s", ops.ScatterAdd(in, gat, m))
	p, err := runSingle(t, g, map[string]any{"x": x, "ids": ids})
	require.NoError(t, err)
	read := func(name string, size int) []float64 {
		v := make([]float64, size)
		require.NoError(t, p.ReadOutput(name, v))
		return v
	}
	tr, cc, ga, sc := read("t", m*n), read("c", m*(n+1)), read("g", rows*n), read("s", m*n)
	wantS := make([]float64, m*n)
	for k, id := range ids {
		for j := 0; j < n; j++ {
			require.Equal(t, x[int(id)*n+j], ga[k*n+j])
			wantS[int(id)*n+j] += x[int(id)*n+j]
		}
	}
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			require.Equal(t, x[i*n+j], tr[j*m+i])
			require.InDelta(t, wantS[i*n+j], sc[i*n+j], 1e-12)
		}
		row := cc[i*(n+1) : (i+1)*(n+1)]
		require.Equal(t, x[i*n+5:i*n+n], row[:n-5])
		require.Equal(t, 0.0, row[n-5])
		require.Equal(t, x[i*n:i*n+5], row[n-4:])
	}
}
