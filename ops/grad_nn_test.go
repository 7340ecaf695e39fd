package ops_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mamba2go/mamba2/backends/backendtest"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

func TestGradSoftmax(t *testing.T) {
	for _, tc := range []struct {
		name string
		dims []int
		axis int
	}{
		{"last", []int{3, 7}, -1},
		{"last-3d", []int{2, 3, 5}, 2},
		{"first", []int{4, 3}, 0},
		{"middle", []int{2, 5, 3}, 1},
		{"vector", []int{6}, 0},
	} {
		axis := tc.axis
		checkGrad(t, unaryCase("Softmax/"+tc.name, backendtest.Arg{Dims: tc.dims, Scale: 2}, func(x *graph.Node) *graph.Node {
			return ops.Softmax(x, axis)
		}))
	}
	// Large logits must not overflow (stability) and still differentiate.
	checkGrad(t, unaryCase("Softmax/offset", backendtest.Arg{Dims: []int{2, 4}, Offset: 800}, func(x *graph.Node) *graph.Node {
		return ops.Softmax(x, -1)
	}))
}

func TestGradCrossEntropy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		logits []int
	}{
		{"rows", []int{5, 7}},
		{"batched", []int{2, 3, 4}},
		{"single", []int{9}},
		{"two-classes", []int{3, 2, 2}},
	} {
		lead := tc.logits[:len(tc.logits)-1]
		v := tc.logits[len(tc.logits)-1]
		checkGrad(t, backendtest.GradCase{
			Name: "CrossEntropy/" + tc.name,
			Args: []backendtest.Arg{{Dims: tc.logits, Scale: 2}, {Dims: lead, Int64: true, IntMax: v}},
			Build: func(in []*graph.Node) []*graph.Node {
				return []*graph.Node{ops.CrossEntropy(in[0], in[1])}
			},
		})
	}
	// A mean loss over the batch, as training uses it, with logits from a matmul.
	checkGrad(t, backendtest.GradCase{
		Name: "CrossEntropy/mean-of-matmul",
		Args: []backendtest.Arg{{Dims: []int{2, 3, 4}}, {Dims: []int{4, 6}}, {Dims: []int{2, 3}, Int64: true, IntMax: 6}},
		Build: func(in []*graph.Node) []*graph.Node {
			return []*graph.Node{ops.Mean(ops.CrossEntropy(ops.MatMul(in[0], in[1]), in[2]))}
		},
	})
}

func TestGradRMSNorm(t *testing.T) {
	for _, tc := range []struct {
		name string
		x    []int
		eps  float64
	}{
		{"rows", []int{3, 5}, 1e-5},
		{"batched", []int{2, 3, 7}, 1e-6},
		{"single", []int{6}, 1e-5},
		{"big-eps", []int{4, 3}, 0.5},
		{"zero-eps", []int{2, 4}, 0},
	} {
		d := tc.x[len(tc.x)-1]
		eps := tc.eps
		checkGrad(t, backendtest.GradCase{
			Name: "RMSNorm/" + tc.name,
			Args: []backendtest.Arg{{Dims: tc.x}, {Dims: []int{d}, Offset: 1, Scale: 0.3}},
			Build: func(in []*graph.Node) []*graph.Node {
				return []*graph.Node{ops.RMSNorm(in[0], in[1], eps)}
			},
		})
	}
}

func TestGradGatedRMSNorm(t *testing.T) {
	for _, tc := range []struct {
		name   string
		y      []int
		groups int
	}{
		{"g1", []int{3, 6}, 1},
		{"g0", []int{2, 5}, 0},
		{"g2", []int{3, 6}, 2},
		{"g2-batched", []int{2, 3, 8}, 2},
		{"g3-batched", []int{2, 2, 9}, 3},
		{"g1-batched", []int{2, 3, 7}, 1},
		{"g4-awkward", []int{3, 12}, 4},
	} {
		d := tc.y[len(tc.y)-1]
		groups := tc.groups
		checkGrad(t, backendtest.GradCase{
			Name: fmt.Sprintf("GatedRMSNorm/%s", tc.name),
			Args: []backendtest.Arg{
				{Dims: tc.y},
				{Dims: tc.y, Scale: 2},
				{Dims: []int{d}, Offset: 1, Scale: 0.3},
			},
			Build: func(in []*graph.Node) []*graph.Node {
				return []*graph.Node{ops.GatedRMSNorm(in[0], in[1], in[2], 1e-5, groups)}
			},
		})
	}
}

// randSlice returns n N(0,1)·scale + offset values.
func randSlice(rng *rand.Rand, n int, scale, offset float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64()*scale + offset
	}
	return v
}

func toF32(v []float64) []float32 {
	r := make([]float32, len(v))
	for i, x := range v {
		r[i] = float32(x)
	}
	return r
}

// refGatedNorm is a plain reference of the gated (z != nil) or plain RMS norm.
func refGatedNorm(y, z, w []float64, d, groups int, eps float64) []float64 {
	out := make([]float64, len(y))
	groups = max(groups, 1)
	dg := d / groups
	for r := 0; r < len(y)/d; r++ {
		h := make([]float64, d)
		for j := range h {
			h[j] = y[r*d+j]
			if z != nil {
				zv := z[r*d+j]
				h[j] *= zv / (1 + math.Exp(-zv))
			}
		}
		for g0 := 0; g0 < d; g0 += dg {
			var ss float64
			for _, v := range h[g0 : g0+dg] {
				ss += v * v
			}
			inv := 1 / math.Sqrt(ss/float64(dg)+eps)
			for j := g0; j < g0+dg; j++ {
				out[r*d+j] = h[j] * inv * w[j]
			}
		}
	}
	return out
}

func TestNormForward(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const rows, d, eps = 37, 1200, 1e-5 // big enough for the parallel paths
	y := randSlice(rng, rows*d, 1, 0)
	z := randSlice(rng, rows*d, 2, 0)
	w := randSlice(rng, d, 0.3, 1)
	for _, dt := range []shapes.DType{shapes.Float64, shapes.Float32} {
		for _, groups := range []int{0, 1, 2, 8} {
			for _, gated := range []bool{false, true} {
				if !gated && groups > 1 {
					continue
				}
				g := graph.New()
				yn := g.Input("y", shapes.Make(dt, rows, d))
				zn := g.Input("z", shapes.Make(dt, rows, d))
				wn := g.Input("w", shapes.Make(dt, d))
				var out *graph.Node
				var want []float64
				if gated {
					out = ops.GatedRMSNorm(yn, zn, wn, eps, groups)
					want = refGatedNorm(y, z, w, d, groups, eps)
				} else {
					out = ops.RMSNorm(yn, wn, eps)
					want = refGatedNorm(y, nil, w, d, 1, eps)
				}
				g.Output("out", out)
				feeds := map[string]any{"y": y, "z": z, "w": w}
				tol := 1e-12
				if dt == shapes.Float32 {
					feeds = map[string]any{"y": toF32(y), "z": toF32(z), "w": toF32(w)}
					tol = 2e-5
				}
				p, err := runSingle(t, g, feeds)
				require.NoError(t, err)
				got := make([]float64, rows*d)
				if dt == shapes.Float32 {
					g32 := make([]float32, rows*d)
					require.NoError(t, p.ReadOutput("out", g32))
					for i, v := range g32 {
						got[i] = float64(v)
					}
				} else {
					require.NoError(t, p.ReadOutput("out", got))
				}
				for i := range got {
					require.InDelta(t, want[i], got[i], tol*(1+math.Abs(want[i])),
						"%s gated=%v groups=%d at %d", dt, gated, groups, i)
				}
			}
		}
	}
}

// composedGatedNorm is GatedRMSNorm written with elementary ops (groups via a reshape).
func composedGatedNorm(y, z, w *graph.Node, eps float64, groups int) *graph.Node {
	h := y
	if z != nil {
		h = ops.Mul(y, ops.SiLU(z))
	}
	dims := h.Shape().Dims
	d := dims[len(dims)-1]
	groups = max(groups, 1)
	gd := append(append([]int(nil), dims[:len(dims)-1]...), groups, d/groups)
	hg := ops.Reshape(h, gd...)
	ms := ops.Scale(ops.SumKeep(ops.Square(hg), -1), 1/float64(d/groups))
	n := ops.Div(hg, ops.Sqrt(ops.AddConst(ms, eps)))
	return ops.Mul(ops.Reshape(n, dims...), w)
}

// TestGradNormVsComposed compares the fused backward kernels with the gradients of the same norm
// composed from elementary ops, at sizes that take the parallel, multi-block paths.
func TestGradNormVsComposed(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const b, tt, d, eps = 3, 13, 1024, 1e-5
	n := b * tt * d
	y, z := randSlice(rng, n, 1, 0), randSlice(rng, n, 2, 0)
	w, r := randSlice(rng, d, 0.3, 1), randSlice(rng, n, 1, 0)
	for _, groups := range []int{-1, 1, 4} { // -1: plain RMSNorm
		g := graph.New()
		yn := g.Input("y", shapes.Make(shapes.Float64, b, tt, d))
		zn := g.Input("z", shapes.Make(shapes.Float64, b, tt, d))
		wn := g.Input("w", shapes.Make(shapes.Float64, d))
		rn := g.Input("r", shapes.Make(shapes.Float64, b, tt, d))
		var fused, comp *graph.Node
		if groups < 0 {
			fused, comp = ops.RMSNorm(yn, wn, eps), composedGatedNorm(yn, nil, wn, eps, 1)
		} else {
			fused, comp = ops.GatedRMSNorm(yn, zn, wn, eps, groups), composedGatedNorm(yn, zn, wn, eps, groups)
		}
		gf := graph.Grad(ops.Sum(ops.Mul(fused, rn)), yn, zn, wn)
		gc := graph.Grad(ops.Sum(ops.Mul(comp, rn)), yn, zn, wn)
		for i := range gf {
			g.Output(fmt.Sprintf("f%d", i), gf[i])
			g.Output(fmt.Sprintf("c%d", i), gc[i])
		}
		p, err := runSingle(t, g, map[string]any{"y": y, "z": z, "w": w, "r": r})
		require.NoError(t, err)
		for i, size := range []int{n, n, d} {
			f, c := make([]float64, size), make([]float64, size)
			require.NoError(t, p.ReadOutput(fmt.Sprintf("f%d", i), f))
			require.NoError(t, p.ReadOutput(fmt.Sprintf("c%d", i), c))
			for j := range f {
				require.InDelta(t, c[j], f[j], 1e-10*(1+math.Abs(c[j])), "groups %d grad %d at %d", groups, i, j)
			}
		}
	}
}

func TestSoftmaxForward(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []struct {
		dims []int
		axis int
	}{{[]int{3, 4, 5}, -1}, {[]int{3, 4, 5}, 1}, {[]int{3, 4, 5}, 0}, {[]int{40, 2000}, 1}} {
		size := shapes.Make(shapes.Float32, tc.dims...).Size()
		x := randSlice(rng, size, 30, 0)
		g := graph.New()
		xn := g.Input("x", shapes.Make(shapes.Float32, tc.dims...))
		g.Output("y", ops.Softmax(xn, tc.axis))
		g.Output("s", ops.Sum(ops.Softmax(xn, tc.axis), tc.axis))
		p, err := runSingle(t, g, map[string]any{"x": toF32(x)})
		require.NoError(t, err)
		sums := make([]float32, size/tc.dims[(tc.axis+len(tc.dims))%len(tc.dims)])
		require.NoError(t, p.ReadOutput("s", sums))
		for i, s := range sums {
			require.InDelta(t, 1, s, 1e-5, "%v axis %d sum %d", tc.dims, tc.axis, i)
		}
		y := make([]float32, size)
		require.NoError(t, p.ReadOutput("y", y))
		for _, v := range y {
			require.False(t, math.IsNaN(float64(v)) || v < 0 || v > 1)
		}
	}
	// Exact values for a tiny case, including huge logits.
	g := graph.New()
	xn := g.Input("x", shapes.Make(shapes.Float64, 2, 2))
	g.Output("y", ops.Softmax(xn, -1))
	p, err := runSingle(t, g, map[string]any{"x": []float64{0, math.Log(3), 1000, 1000}})
	require.NoError(t, err)
	y := make([]float64, 4)
	require.NoError(t, p.ReadOutput("y", y))
	require.InDeltaSlice(t, []float64{0.25, 0.75, 0.5, 0.5}, y, 1e-15)
}

func TestCrossEntropyForward(t *testing.T) {
	g := graph.New()
	lg := g.Input("logits", shapes.Make(shapes.Float32, 2, 3))
	tg := g.Input("targets", shapes.Make(shapes.Int64, 2))
	g.Output("loss", ops.CrossEntropy(lg, tg))
	logits := []float32{1, 2, 3, 1000, 0, 1000}
	p, err := runSingle(t, g, map[string]any{"logits": logits, "targets": []int64{2, 1}})
	require.NoError(t, err)
	loss := make([]float32, 2)
	require.NoError(t, p.ReadOutput("loss", loss))
	want0 := math.Log(math.Exp(1)+math.Exp(2)+math.Exp(3)) - 3
	require.InDelta(t, want0, loss[0], 1e-6)
	require.InDelta(t, 1000+math.Log(2), loss[1], 1e-3)

	for _, bad := range []int64{3, -1} {
		require.NoError(t, p.SetInput("targets", []int64{0, bad}))
		err := p.Run()
		require.Error(t, err)
		require.Contains(t, err.Error(), fmt.Sprintf("target %d", bad))
		require.Contains(t, err.Error(), "[0, 3)")
	}
}

func TestGatedRMSNormGroupsDiffer(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	y, z := randSlice(rng, 16, 1, 0), randSlice(rng, 16, 1, 0)
	// Make the two halves of each row differ in scale so per-group norms must differ.
	for i := range y {
		if i%8 >= 4 {
			y[i] *= 5
		}
	}
	w := randSlice(rng, 8, 0.3, 1)
	outs := map[int][]float64{}
	for _, groups := range []int{1, 2} {
		g := graph.New()
		yn := g.Input("y", shapes.Make(shapes.Float64, 2, 8))
		zn := g.Input("z", shapes.Make(shapes.Float64, 2, 8))
		wn := g.Input("w", shapes.Make(shapes.Float64, 8))
		g.Output("out", ops.GatedRMSNorm(yn, zn, wn, 1e-6, groups))
		p, err := runSingle(t, g, map[string]any{"y": y, "z": z, "w": w})
		require.NoError(t, err)
		outs[groups] = make([]float64, 16)
		require.NoError(t, p.ReadOutput("out", outs[groups]))
		require.InDeltaSlice(t, refGatedNorm(y, z, w, 8, groups, 1e-6), outs[groups], 1e-12)
	}
	diff := 0.0
	for i := range outs[1] {
		diff = math.Max(diff, math.Abs(outs[1][i]-outs[2][i]))
	}
	require.Greater(t, diff, 1e-3, "groups=2 must normalise each half separately")
}

func TestNNInferErrors(t *testing.T) {
	for name, build := range map[string]func(g *graph.Graph, x *graph.Node){
		"softmax-axis": func(g *graph.Graph, x *graph.Node) { ops.Softmax(x, 2) },
		"ce-targets-float": func(g *graph.Graph, x *graph.Node) {
			ops.CrossEntropy(x, g.Input("t", shapes.Make(shapes.Float64, 2)))
		},
		"ce-targets-dims": func(g *graph.Graph, x *graph.Node) {
			ops.CrossEntropy(x, g.Input("t", shapes.Make(shapes.Int64, 3)))
		},
		"rmsnorm-weight": func(g *graph.Graph, x *graph.Node) {
			ops.RMSNorm(x, g.Input("w", shapes.Make(shapes.Float64, 2)), 1e-5)
		},
		"rmsnorm-eps": func(g *graph.Graph, x *graph.Node) {
			ops.RMSNorm(x, g.Input("w", shapes.Make(shapes.Float64, 6)), math.NaN())
		},
		"gated-groups": func(g *graph.Graph, x *graph.Node) {
			ops.GatedRMSNorm(x, x, g.Input("w", shapes.Make(shapes.Float64, 6)), 1e-5, 4)
		},
		"gated-z-shape": func(g *graph.Graph, x *graph.Node) {
			ops.GatedRMSNorm(x, g.Input("z", shapes.Make(shapes.Float64, 6)), g.Input("w", shapes.Make(shapes.Float64, 6)), 1e-5, 1)
		},
	} {
		g := graph.New()
		x := g.Input("x", shapes.Make(shapes.Float64, 2, 6))
		build(g, x)
		require.Error(t, g.Err(), name)
	}
}

// TestNNLayoutKernelsDoNotAllocate runs every kernel of nn.go and layout.go (forward and backward,
// float32, sizes that take the parallel paths) and checks that Program.Run does not allocate.
func TestNNLayoutKernelsDoNotAllocate(t *testing.T) {
	const rows, d, v = 48, 1024, 700
	f32 := func(dims ...int) shapes.Shape { return shapes.Make(shapes.Float32, dims...) }
	g := graph.New()
	x := g.Input("x", f32(rows, d))
	z := g.Input("z", f32(rows, d))
	w := g.Input("w", f32(d))
	lg := g.Input("logits", f32(rows, v))
	tg := g.Input("targets", shapes.Make(shapes.Int64, rows))
	gl := g.Input("gl", f32(rows))
	apply := func(op ops.Op, in ...ops.Value) []ops.Value { return g.Apply(op, in...) }
	var outs []ops.Value
	outs = append(outs, ops.Softmax(x, -1), ops.Softmax(x, 0), ops.CrossEntropy(lg, tg))
	outs = append(outs, apply(ops.CrossEntropyGradOp{}, lg, tg, gl)...)
	outs = append(outs, ops.RMSNorm(x, w, 1e-5), ops.GatedRMSNorm(x, z, w, 1e-5, 1), ops.GatedRMSNorm(x, z, w, 1e-5, 4))
	outs = append(outs, apply(ops.RMSNormGradOp{Eps: 1e-5}, x, w, z)...)
	outs = append(outs, apply(ops.GatedRMSNormGradOp{Eps: 1e-5, Groups: 2}, x, z, w, x)...)
	outs = append(outs, ops.Transpose(x, 1, 0), ops.Slice(x, 1, 3, 900), ops.Pad(x, 0, 2, 5), ops.Concat(1, x, z, x))
	outs = append(outs, ops.Gather(ops.Transpose(lg), tg), ops.ScatterAdd(tg, x, v), ops.Slice(ops.Transpose(ops.Reshape(tg, 6, 8)), 0, 1, 3))
	for i, o := range outs {
		g.Output(fmt.Sprintf("o%d", i), o.(*graph.Node))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]int64, rows)
	for i := range ids {
		ids[i] = int64(rng.IntN(v))
	}
	p, err := runSingle(t, g, map[string]any{
		"x": toF32(randSlice(rng, rows*d, 1, 0)), "z": toF32(randSlice(rng, rows*d, 1, 0)),
		"w": toF32(randSlice(rng, d, 1, 0)), "logits": toF32(randSlice(rng, rows*v, 1, 0)),
		"targets": ids, "gl": toF32(randSlice(rng, rows, 1, 0)),
	})
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(5, func() {
		if err := p.Run(); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs, "Program.Run allocated")
}
