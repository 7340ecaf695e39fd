package ops_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/quant"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

func shp(dt shapes.DType, dims ...int) shapes.Shape { return shapes.Make(dt, dims...) }

// TestQuantInfer: the output shapes for x of rank 1 to 3, every weight dtype, and gathers of
// indices of any rank.
func TestQuantInfer(t *testing.T) {
	for _, dt := range []shapes.DType{shapes.BFloat16, shapes.Float16, shapes.Int8} {
		for _, x := range [][]int{{7}, {3, 7}, {2, 3, 7}} {
			g := graph.New()
			w := g.Param("w", shp(dt, 5, 7))
			var scale []*graph.Node
			if dt == shapes.Int8 {
				scale = append(scale, g.Param("scale", shp(shapes.Float32, 5)))
			}
			y := ops.QuantMatMul(g.Input("x", shp(shapes.Float32, x...)), w, scale...)
			e := ops.QuantGather(w, g.Input("ids", shp(shapes.Int64, x[:len(x)-1]...)), scale...)
			require.NoError(t, g.Err())
			require.Equal(t, shp(shapes.Float32, append(append([]int(nil), x[:len(x)-1]...), 5)...), y.Shape())
			require.Equal(t, shp(shapes.Float32, append(append([]int(nil), x[:len(x)-1]...), 7)...), e.Shape())
		}
	}
}

// TestQuantInferErrors: each misuse is an error naming the op, the input at fault and the shapes.
func TestQuantInferErrors(t *testing.T) {
	f32 := func(d ...int) shapes.Shape { return shp(shapes.Float32, d...) }
	bf := func(d ...int) shapes.Shape { return shp(shapes.BFloat16, d...) }
	i8 := func(d ...int) shapes.Shape { return shp(shapes.Int8, d...) }
	ids := shp(shapes.Int64, 2)
	for _, c := range []struct {
		name  string
		in    []shapes.Shape
		op    func(in []*graph.Node) *graph.Node
		parts []string
	}{
		{"K mismatch", []shapes.Shape{f32(2, 7), bf(3, 8)}, mm,
			[]string{"QuantMatMul", "x float32[2,7]", "K=7", "weight w bfloat16[3,8]", "K=8"}},
		{"int8 without scale", []shapes.Shape{f32(2, 7), i8(3, 7)}, mm,
			[]string{"QuantMatMul", "int8 weight w int8[3,7]", "scale [3]"}},
		{"bf16 with scale", []shapes.Shape{f32(2, 7), bf(3, 7), f32(3)}, mm,
			[]string{"QuantMatMul", "bfloat16[3,7]", "takes no scale", "float32[3]"}},
		{"f16 with scale", []shapes.Shape{f32(2, 7), shp(shapes.Float16, 3, 7), f32(3)}, mm,
			[]string{"float16[3,7]", "takes no scale"}},
		{"scale of the wrong size", []shapes.Shape{f32(2, 7), i8(3, 7), f32(7)}, mm,
			[]string{"scale float32[7]", "int8[3,7]", "float32 [3]"}},
		{"float64 scale", []shapes.Shape{f32(2, 7), i8(3, 7), shp(shapes.Float64, 3)}, mm,
			[]string{"scale float64[3]"}},
		{"float32 weight", []shapes.Shape{f32(2, 7), f32(3, 7)}, mm,
			[]string{"QuantMatMul", "weight w float32[3,7] is float32", "bfloat16, float16 or int8"}},
		{"int64 weight", []shapes.Shape{f32(2, 7), shp(shapes.Int64, 3, 7)}, mm,
			[]string{"weight w int64[3,7]", "bfloat16, float16 or int8"}},
		{"weight not a matrix", []shapes.Shape{f32(2, 7), bf(3, 7, 1)}, mm,
			[]string{"bfloat16[3,7,1]", "matrix"}},
		{"float64 x", []shapes.Shape{shp(shapes.Float64, 2, 7), bf(3, 7)}, mm,
			[]string{"x float64[2,7]", "float32"}},
		{"scalar x", []shapes.Shape{f32(), bf(3, 1)}, mm, []string{"x float32[]"}},
		{"two scales", []shapes.Shape{f32(2, 7), i8(3, 7), f32(3), f32(3)}, func(in []*graph.Node) *graph.Node {
			return ops.QuantMatMul(in[0], in[1], in[2], in[3])
		}, []string{"QuantMatMul", "4 inputs"}},
		{"gather float32 table", []shapes.Shape{f32(5, 3), ids}, gather,
			[]string{"QuantGather", "table float32[5,3]"}},
		{"gather float indices", []shapes.Shape{bf(5, 3), f32(2)}, gather,
			[]string{"QuantGather", "indices float32[2]", "int64", "bfloat16[5,3]"}},
		{"gather int8 without scale", []shapes.Shape{i8(5, 3), ids}, gather,
			[]string{"int8 table int8[5,3]", "scale [5]"}},
		{"gather scale of the wrong size", []shapes.Shape{i8(5, 3), ids, f32(3)}, gather,
			[]string{"scale float32[3]", "int8 table int8[5,3]"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := graph.New()
			in := make([]*graph.Node, len(c.in))
			for i, s := range c.in {
				in[i] = g.Input(string(rune('a'+i)), s)
			}
			noPanicT(t, func() { g.Output("y", c.op(in)) })
			requireContains(t, g.Err(), c.parts...)
		})
	}
}

func mm(in []*graph.Node) *graph.Node     { return ops.QuantMatMul(in[0], in[1], in[2:]...) }
func gather(in []*graph.Node) *graph.Node { return ops.QuantGather(in[0], in[1], in[2:]...) }

func noPanicT(t *testing.T, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("panic: %v", r)
		}
	}()
	f()
}

func requireContains(t *testing.T, err error, parts ...string) {
	t.Helper()
	require.Error(t, err)
	t.Logf("%v", err)
	for _, p := range parts {
		require.Containsf(t, err.Error(), p, "error %q should mention %q", err, p)
	}
}

// TestStorageDTypesRefused: the ops that compute refuse storage dtypes, pointing at the quantized
// ops; Reshape, which only relabels, takes them.
func TestStorageDTypesRefused(t *testing.T) {
	for name, c := range map[string]struct {
		build func(g *graph.Graph) *graph.Node
		parts []string
	}{
		"MatMul": {func(g *graph.Graph) *graph.Node {
			return ops.MatMulT(g.Input("x", shp(shapes.Float32, 2, 4)), g.Param("w", shp(shapes.BFloat16, 3, 4)), false, true)
		}, []string{"MatMul", "bfloat16[3,4]", "storage dtype", "QuantMatMul"}},
		"Add": {func(g *graph.Graph) *graph.Node {
			return ops.Add(g.Input("a", shp(shapes.Int8, 3)), g.Input("b", shp(shapes.Int8, 3)))
		}, []string{"Add", "int8[3]", "storage dtype"}},
		"Gather": {func(g *graph.Graph) *graph.Node {
			return ops.Gather(g.Param("t", shp(shapes.Float16, 5, 4)), g.Input("i", shp(shapes.Int64, 2)))
		}, []string{"Gather", "float16[5,4]", "QuantGather"}},
		"Transpose": {func(g *graph.Graph) *graph.Node {
			return ops.Transpose(g.Param("t", shp(shapes.BFloat16, 5, 4)))
		}, []string{"Transpose", "bfloat16[5,4]", "storage dtype"}},
	} {
		g := graph.New()
		noPanicT(t, func() { g.Output("y", c.build(g)) })
		requireContains(t, g.Err(), append([]string{name}, c.parts...)...)
	}
	g := graph.New()
	r := ops.Reshape(g.Param("t", shp(shapes.BFloat16, 6, 4)), 3, 8)
	require.NoError(t, g.Err())
	require.Equal(t, shp(shapes.BFloat16, 3, 8), r.Shape())
}

// TestQuantNoGradient: differentiating through a quantized op is an error wrapping
// ops.ErrNoGradient that says to load float32 weights, for the weight and for x alike.
func TestQuantNoGradient(t *testing.T) {
	for _, dt := range []shapes.DType{shapes.BFloat16, shapes.Int8} {
		for _, wrtX := range []bool{false, true} {
			g := graph.New()
			x := g.Param("x", shp(shapes.Float32, 2, 4))
			w := g.Param("w", shp(dt, 3, 4))
			var scale []*graph.Node
			if dt == shapes.Int8 {
				scale = append(scale, g.Param("scale", shp(shapes.Float32, 3)))
			}
			loss := ops.Sum(ops.QuantMatMul(x, w, scale...))
			wrt := w
			if wrtX {
				wrt = x
			}
			var grads []*graph.Node
			noPanicT(t, func() { grads = graph.Grad(loss, wrt) })
			require.Len(t, grads, 1)
			err := g.Err()
			require.Error(t, err)
			require.Truef(t, errors.Is(err, ops.ErrNoGradient), "%v does not wrap ErrNoGradient", err)
			requireContains(t, err, "QuantMatMul", dt.String(), "inference only", "float32")
			g.Output("g", grads[0]) // building on goes on quietly; Compile reports the error
			_, cerr := g.Compile(cpuBackend(t), nil)
			require.Error(t, cerr)
		}
	}
	g := graph.New()
	table := g.Param("t", shp(shapes.Float16, 5, 4))
	loss := ops.Sum(ops.Mul(ops.QuantGather(table, g.Input("i", shp(shapes.Int64, 2))), g.Param("v", shp(shapes.Float32, 2, 4))))
	graph.Grad(loss, table)
	require.True(t, errors.Is(g.Err(), ops.ErrNoGradient), "%v", g.Err())
	requireContains(t, g.Err(), "QuantGather", "float16")
}

// TestQuantEndToEnd: weights quantized on the host with package quant, uploaded through
// graph.Weights as Params of their storage dtype, give the product and the rows of their
// dequantized values; the embedding and the projection read the same tied table.
func TestQuantEndToEnd(t *testing.T) {
	be := cpuBackend(t)
	const v, d, b = 11, 40, 3
	rng := rand.New(rand.NewPCG(1, 2))
	emb := make([]float32, v*d)
	for i := range emb {
		emb[i] = float32(rng.NormFloat64())
	}
	ids := []int64{4, 0, 10}
	for _, f := range []quant.Format{quant.BF16, quant.F16, quant.Int8} {
		data, scale, err := f.Quantize(emb, d)
		require.NoError(t, err)
		deq := make([]float32, v*d)
		switch q := data.(type) {
		case []uint16:
			if f == quant.BF16 {
				require.NoError(t, quant.DequantizeBF16(deq, q))
			} else {
				require.NoError(t, quant.DequantizeF16(deq, q))
			}
		case []int8:
			require.NoError(t, quant.DequantizeInt8Rows(deq, q, scale, d))
		}

		g := graph.New()
		table := g.Param("emb", shp(f.DType(), v, d))
		var sc []*graph.Node
		w := graph.NewWeights(be)
		require.NoError(t, w.Set("emb", shp(f.DType(), v, d), data))
		if scale != nil {
			sc = append(sc, g.Param("emb.scale", shp(shapes.Float32, v)))
			require.NoError(t, w.Set("emb.scale", shp(shapes.Float32, v), scale))
		}
		h := ops.QuantGather(table, g.Input("ids", shp(shapes.Int64, b)), sc...)
		g.Output("h", h)
		g.Output("logits", ops.QuantMatMul(h, table, sc...))
		p, err := g.Compile(be, w)
		require.NoError(t, err)
		require.NoError(t, p.SetInput("ids", ids))
		require.NoError(t, p.Run())
		hv, logits := make([]float32, b*d), make([]float32, b*v)
		require.NoError(t, p.ReadOutput("h", hv))
		require.NoError(t, p.ReadOutput("logits", logits))
		for i, id := range ids {
			row := deq[int(id)*d : int(id)*d+d]
			require.Equal(t, row, hv[i*d:i*d+d], "%v row %d", f, i)
			x := row
			if f == quant.Int8 { // int8 products multiply x rounded to int16 per block
				x = make([]float32, d)
				require.NoError(t, quant.RoundInt16Blocks(x, row, d))
			}
			for j := 0; j < v; j++ {
				var want, abs float64
				for k := 0; k < d; k++ {
					want += float64(x[k]) * float64(deq[j*d+k])
					abs += math.Abs(float64(x[k]) * float64(deq[j*d+k]))
				}
				require.InDeltaf(t, want, float64(logits[i*v+j]), 1e-6*abs, "%v logits[%d,%d]", f, i, j)
			}
		}
		require.NoError(t, p.Close())
		require.NoError(t, w.Free())
	}
}
