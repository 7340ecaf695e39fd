package ops_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// gorgoniaTol is the bound on |ours − gorgonia| for every gradient element (float64).
const gorgoniaTol = 1e-9

// gorgCase is one function written twice: with our ops and with gorgonia's. Both get the same
// float64 inputs; the loss is Σ f(inputs)·R for a fixed random R of the output's shape.
type gorgCase struct {
	name   string
	dims   [][]int
	scale  float64 // of the N(0,1) inputs (1 when 0)
	offset float64
	ours   func(in []*graph.Node) *graph.Node
	theirs func(in []*G.Node) (*G.Node, error)
}

// newDense gives every gorgonia node its own tensor header and backing (gorgonia issue #549:
// graphs must not share a *tensor.Dense).
func newDense(v []float64, dims []int) *tensor.Dense {
	return tensor.New(tensor.WithShape(dims...), tensor.WithBacking(append([]float64(nil), v...)))
}

func gorgoniaGrads(t *testing.T, c gorgCase, vals [][]float64, r []float64, outDims []int) [][]float64 {
	t.Helper()
	g := G.NewGraph()
	in := make([]*G.Node, len(c.dims))
	for i, d := range c.dims {
		in[i] = G.NewTensor(g, tensor.Float64, len(d), G.WithShape(d...), G.WithName(fmt.Sprintf("in%d", i)),
			G.WithValue(newDense(vals[i], d)))
	}
	out, err := c.theirs(in)
	require.NoError(t, err, "gorgonia graph")
	require.Equal(t, outDims, []int(out.Shape()), "gorgonia output shape")
	rn := G.NewTensor(g, tensor.Float64, len(outDims), G.WithShape(outDims...), G.WithName("r"),
		G.WithValue(newDense(r, outDims)))
	prod, err := G.HadamardProd(out, rn)
	require.NoError(t, err)
	loss, err := G.Sum(prod)
	require.NoError(t, err)
	grads, err := G.Grad(loss, in...)
	require.NoError(t, err, "gorgonia.Grad")
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	require.NoError(t, vm.RunAll(), "gorgonia run")
	res := make([][]float64, len(grads))
	for i, gr := range grads {
		d, ok := gr.Value().Data().([]float64)
		require.True(t, ok, "gorgonia gradient %d is %T", i, gr.Value().Data())
		res[i] = append([]float64(nil), d...)
	}
	return res
}

func ourGrads(t *testing.T, c gorgCase, vals [][]float64, r []float64) ([][]float64, []int) {
	t.Helper()
	g := graph.New()
	in := make([]*graph.Node, len(c.dims))
	for i, d := range c.dims {
		in[i] = g.Input(fmt.Sprintf("in%d", i), shapes.Make(shapes.Float64, d...))
	}
	out := c.ours(in)
	require.NoError(t, g.Err())
	outDims := append([]int(nil), out.Shape().Dims...)
	rn := g.Input("r", out.Shape())
	grads := graph.Grad(ops.Sum(ops.Mul(out, rn)), in...)
	for i, gr := range grads {
		g.Output(fmt.Sprintf("g%d", i), gr)
	}
	feeds := map[string]any{"r": r}
	for i := range vals {
		feeds[fmt.Sprintf("in%d", i)] = vals[i]
	}
	p, err := runSingle(t, g, feeds)
	require.NoError(t, err)
	res := make([][]float64, len(grads))
	for i := range grads {
		res[i] = make([]float64, len(vals[i]))
		require.NoError(t, p.ReadOutput(fmt.Sprintf("g%d", i), res[i]))
	}
	return res, outDims
}

func checkGorgonia(t *testing.T, c gorgCase) {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, uint64(len(c.name))))
	sc := c.scale
	if sc == 0 {
		sc = 1
	}
	vals := make([][]float64, len(c.dims))
	for i, d := range c.dims {
		vals[i] = randSlice(rng, shapes.Make(shapes.Float64, d...).Size(), sc, c.offset)
	}
	// Our output's shape decides R's; the gorgonia side must agree.
	probe := graph.New()
	pin := make([]*graph.Node, len(c.dims))
	for i, d := range c.dims {
		pin[i] = probe.Input(fmt.Sprintf("in%d", i), shapes.Make(shapes.Float64, d...))
	}
	outShape := c.ours(pin).Shape()
	require.NoError(t, probe.Err(), c.name)
	r := randSlice(rng, outShape.Size(), 1, 0)

	ours, outDims := ourGrads(t, c, vals, r)
	theirs := gorgoniaGrads(t, c, vals, r, outDims)
	require.Len(t, theirs, len(ours))
	worst, norm := 0.0, 0.0
	for i := range ours {
		for _, v := range ours[i] {
			norm += v * v
		}
		require.Len(t, theirs[i], len(ours[i]), "%s input %d", c.name, i)
		for j := range ours[i] {
			d := ours[i][j] - theirs[i][j]
			worst = max(worst, d, -d)
			require.InDelta(t, theirs[i][j], ours[i][j], gorgoniaTol, "%s: input %d element %d", c.name, i, j)
		}
	}
	require.Greater(t, norm, 1e-6, "%s: the gradients are all zero; the comparison would be vacuous", c.name)
	t.Logf("%s: max |ours − gorgonia| = %.2e", c.name, worst)
}

func TestGradGorgoniaMatMul(t *testing.T) {
	for _, c := range []gorgCase{
		{name: "MatMul/3x4x5", dims: [][]int{{3, 4}, {4, 5}},
			ours:   func(in []*graph.Node) *graph.Node { return ops.MatMul(in[0], in[1]) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.Mul(in[0], in[1]) }},
		{name: "MatMul/7x1x2", dims: [][]int{{7, 1}, {1, 2}},
			ours:   func(in []*graph.Node) *graph.Node { return ops.MatMul(in[0], in[1]) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.Mul(in[0], in[1]) }},
		{name: "BatchedMatMul/2x3x4x5", dims: [][]int{{2, 3, 4}, {2, 4, 5}},
			ours:   func(in []*graph.Node) *graph.Node { return ops.MatMul(in[0], in[1]) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.BatchedMatMul(in[0], in[1]) }},
		{name: "MatMul/transB-via-Transpose", dims: [][]int{{3, 4}, {5, 4}},
			ours: func(in []*graph.Node) *graph.Node { return ops.MatMulT(in[0], in[1], false, true) },
			theirs: func(in []*G.Node) (*G.Node, error) {
				bt, err := G.Transpose(in[1])
				if err != nil {
					return nil, err
				}
				return G.Mul(in[0], bt)
			}},
		{name: "Transpose/3d", dims: [][]int{{2, 3, 4}},
			ours: func(in []*graph.Node) *graph.Node { return ops.Transpose(in[0], 1, 2, 0) },
			theirs: func(in []*G.Node) (*G.Node, error) {
				return G.Transpose(in[0], 1, 2, 0)
			}},
	} {
		checkGorgonia(t, c)
	}
}

func TestGradGorgoniaSoftmax(t *testing.T) {
	for _, c := range []gorgCase{
		{name: "Softmax/3x5", dims: [][]int{{3, 5}}, scale: 2,
			ours:   func(in []*graph.Node) *graph.Node { return ops.Softmax(in[0], -1) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.SoftMax(in[0]) }},
		{name: "Softmax/2x3x4-last", dims: [][]int{{2, 3, 4}}, scale: 2,
			ours:   func(in []*graph.Node) *graph.Node { return ops.Softmax(in[0], 2) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.SoftMax(in[0], 2) }},
		{name: "Softmax/4x3-axis0", dims: [][]int{{4, 3}}, scale: 2,
			ours:   func(in []*graph.Node) *graph.Node { return ops.Softmax(in[0], 0) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.SoftMax(in[0], 0) }},
		{name: "Softmax/2x4x3-axis1", dims: [][]int{{2, 4, 3}}, scale: 2,
			ours:   func(in []*graph.Node) *graph.Node { return ops.Softmax(in[0], 1) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.SoftMax(in[0], 1) }},
		{name: "Softmax/vector", dims: [][]int{{6}}, scale: 2,
			ours:   func(in []*graph.Node) *graph.Node { return ops.Softmax(in[0], 0) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.SoftMax(in[0]) }},
	} {
		checkGorgonia(t, c)
	}
}

func TestGradGorgoniaBroadcast(t *testing.T) {
	type bin struct {
		name   string
		ours   func(a, b *graph.Node) *graph.Node
		theirs func(a, b *G.Node, l, r []byte) (*G.Node, error)
	}
	for _, k := range []bin{
		{"Add", ops.Add[*graph.Node], G.BroadcastAdd},
		{"Mul", ops.Mul[*graph.Node], G.BroadcastHadamardProd},
	} {
		for _, p := range []struct {
			name string
			a, b []int
			l, r []byte
		}{
			{"2x3+3", []int{2, 3}, []int{3}, nil, []byte{0}},
			{"3x4+3x1", []int{3, 4}, []int{3, 1}, nil, []byte{1}},
			{"2x3x4+4", []int{2, 3, 4}, []int{4}, nil, []byte{0, 1}},
			{"1x4+3x4", []int{1, 4}, []int{3, 4}, []byte{0}, nil},
			{"same", []int{2, 5}, []int{2, 5}, nil, nil},
		} {
			k, p := k, p
			checkGorgonia(t, gorgCase{
				name:   "Broadcast" + k.name + "/" + p.name,
				dims:   [][]int{p.a, p.b},
				ours:   func(in []*graph.Node) *graph.Node { return k.ours(in[0], in[1]) },
				theirs: func(in []*G.Node) (*G.Node, error) { return k.theirs(in[0], in[1], p.l, p.r) },
			})
		}
	}
}

func TestGradGorgoniaSliceConcat(t *testing.T) {
	for _, c := range []gorgCase{
		{name: "Slice/rows", dims: [][]int{{5, 3}},
			ours:   func(in []*graph.Node) *graph.Node { return ops.Slice(in[0], 0, 1, 4) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.Slice(in[0], G.S(1, 4)) }},
		{name: "Slice/cols", dims: [][]int{{3, 6}},
			ours:   func(in []*graph.Node) *graph.Node { return ops.Slice(in[0], -1, 2, 5) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.Slice(in[0], nil, G.S(2, 5)) }},
		{name: "Slice/both-3d", dims: [][]int{{2, 5, 4}},
			ours: func(in []*graph.Node) *graph.Node {
				return ops.Slice(ops.Slice(in[0], 1, 1, 3), 2, 0, 3)
			},
			theirs: func(in []*G.Node) (*G.Node, error) { return G.Slice(in[0], nil, G.S(1, 3), G.S(0, 3)) }},
		{name: "Concat/axis0", dims: [][]int{{2, 3}, {4, 3}},
			ours:   func(in []*graph.Node) *graph.Node { return ops.Concat(0, in[0], in[1]) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.Concat(0, in[0], in[1]) }},
		{name: "Concat/axis1-three", dims: [][]int{{2, 3}, {2, 1}, {2, 2}},
			ours:   func(in []*graph.Node) *graph.Node { return ops.Concat(1, in...) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.Concat(1, in...) }},
		{name: "Concat/3d-middle", dims: [][]int{{2, 1, 3}, {2, 2, 3}},
			ours:   func(in []*graph.Node) *graph.Node { return ops.Concat(1, in...) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.Concat(1, in...) }},
	} {
		checkGorgonia(t, c)
	}
}

func TestGradGorgoniaUnary(t *testing.T) {
	dims := [][]int{{3, 4}}
	for _, c := range []gorgCase{
		{name: "SiLU", dims: dims, scale: 3,
			ours: func(in []*graph.Node) *graph.Node { return ops.SiLU(in[0]) },
			theirs: func(in []*G.Node) (*G.Node, error) {
				s, err := G.Sigmoid(in[0])
				if err != nil {
					return nil, err
				}
				return G.HadamardProd(in[0], s)
			}},
		{name: "Sigmoid", dims: dims, scale: 3,
			ours:   func(in []*graph.Node) *graph.Node { return ops.Sigmoid(in[0]) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.Sigmoid(in[0]) }},
		{name: "Exp", dims: dims,
			ours:   func(in []*graph.Node) *graph.Node { return ops.Exp(in[0]) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.Exp(in[0]) }},
		{name: "Log", dims: dims, scale: 0.5, offset: 3,
			ours:   func(in []*graph.Node) *graph.Node { return ops.Log(in[0]) },
			theirs: func(in []*G.Node) (*G.Node, error) { return G.Log(in[0]) }},
		{name: "SiLU(MatMul)+Exp", dims: [][]int{{2, 3}, {3, 4}},
			ours: func(in []*graph.Node) *graph.Node {
				return ops.Add(ops.SiLU(ops.MatMul(in[0], in[1])), ops.Exp(ops.MatMul(in[0], in[1])))
			},
			theirs: func(in []*G.Node) (*G.Node, error) {
				m, err := G.Mul(in[0], in[1])
				if err != nil {
					return nil, err
				}
				s, err := G.Sigmoid(m)
				if err != nil {
					return nil, err
				}
				silu, err := G.HadamardProd(m, s)
				if err != nil {
					return nil, err
				}
				e, err := G.Exp(m)
				if err != nil {
					return nil, err
				}
				return G.Add(silu, e)
			}},
	} {
		checkGorgonia(t, c)
	}
}
