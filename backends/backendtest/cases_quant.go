package backendtest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/quant"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	caseTables = append(caseTables, quantCases)
	errorCaseTables = append(errorCaseTables, quantErrorCases)
}

// quantDTypes are the storage dtypes the quantized ops read, with a short name for case names.
var quantDTypes = []struct {
	name string
	dt   shapes.DType
}{{"bf16", shapes.BFloat16}, {"f16", shapes.Float16}, {"int8", shapes.Int8}}

// quantWeightIn describes a quantized [rows, cols] weight input and, for int8, its scale input.
func quantWeightIn(dt shapes.DType, rows, cols int) []In {
	if dt != shapes.Int8 {
		return []In{{Dims: dims(rows, cols), DType: dt, Lo: -1, Hi: 1}}
	}
	// Scales as a checkpoint's would be: weights of magnitude up to ~2.5.
	return []In{{Dims: dims(rows, cols), DType: dt}, {Dims: dims(rows), DType: shapes.Float32, Lo: 0.001, Hi: 0.02}}
}

// quantCases check QuantMatMul and QuantGather in float32 against float64 references computed
// from the dequantized weights. The shapes cover decode (M = 1, 2: the mat-vec path) and prefill
// (M = 5, 37, 130: dequantized panels and the GEMM, over several panels and workers when N·K is
// large), inner sizes that are not multiples of any vector width (7, 33) and a model's (768),
// and x of rank 1 to 3.
func quantCases() []Case {
	var cs []Case
	for _, q := range quantDTypes {
		for _, s := range []struct {
			x []int
			n int
		}{
			{dims(7), 3},
			{dims(1, 7), 1},
			{dims(1, 768), 300},
			{dims(2, 33), 65},
			{dims(1, 2, 768), 65},
			{dims(4, 768), 65},
			{dims(5, 33), 3},
			{dims(5, 768), 300},
			{dims(37, 7), 65},
			{dims(37, 768), 300},
			{dims(130, 33), 1},
			{dims(2, 65, 33), 300},
			{dims(130, 768), 65},
		} {
			k := s.x[len(s.x)-1]
			in := append([]In{{Dims: s.x, DType: shapes.Float32}}, quantWeightIn(q.dt, s.n, k)...)
			cs = append(cs, Case{
				Name:   fmt.Sprintf("QuantMatMul/%s/x%v-n%d", q.name, s.x, s.n),
				In:     in,
				Only32: true,
				// Float32 sums of K terms: each rounding is relative to a partial sum that grows
				// like √K, and K of them add up like √K, so the error grows like K.
				Tol: math.Max(1, float64(k)/32),
				Build: func(in []*graph.Node) []*graph.Node {
					return nodes(ops.QuantMatMul(in[0], in[1], in[2:]...))
				},
				Ref: func(in []*Tensor) []*Tensor {
					return tensors(RefQuantMatMul(in[0], in[1], scaleArg(in, 2)))
				},
			})
		}
		for _, g := range []struct {
			rows, d int
			idx     In
		}{
			{7, 33, In{Dims: dims(5), Int: true, Ints: []int64{0, 6, 3, 3, 1}}},
			{300, 768, In{Dims: dims(2, 3), Int: true, IntMax: 300}},
			{65, 7, In{Dims: dims(1), Int: true, IntMax: 65}},
			{3, 65, In{Dims: dims(2, 2, 2), Int: true, IntMax: 3}},
		} {
			in := append(quantWeightIn(q.dt, g.rows, g.d)[:1], g.idx)
			in = append(in, quantWeightIn(q.dt, g.rows, g.d)[1:]...)
			cs = append(cs, Case{
				Name:   fmt.Sprintf("QuantGather/%s/table%dx%d-idx%v", q.name, g.rows, g.d, g.idx.Dims),
				In:     in,
				Only32: true,
				Tol:    0.1, // the rows are exact but for the rounding of scale·q to float32
				Build: func(in []*graph.Node) []*graph.Node {
					return nodes(ops.QuantGather(in[0], in[1], in[2:]...))
				},
				Ref: func(in []*Tensor) []*Tensor {
					return tensors(RefQuantGather(in[0], in[1], scaleArg(in, 2)))
				},
			})
		}
	}
	return cs
}

// scaleArg returns in[i], or nil when there is no such input.
func scaleArg(in []*Tensor, i int) *Tensor {
	if len(in) > i {
		return in[i]
	}
	return nil
}

// RefQuantMatMul returns x [..., K] · Wᵀ for a weight w [N, K] holding the dequantized values,
// or for int8 the integers with scale [N]: W[j, p] = scale[j]·w[j, p] (scale nil: W = w). With
// int8 weights x is first rounded per block as the op defines (quant.RoundInt16Blocks on its
// float32 values).
func RefQuantMatMul(x, w, scale *Tensor) *Tensor {
	n, k := w.Dims[0], w.Dims[1]
	m := size(x.Dims) / k
	out := NewTensor(append(slices.Clone(x.Dims[:len(x.Dims)-1]), n)...)
	if scale != nil {
		x = roundActivations(x, k)
	}
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			s := 1.0
			if scale != nil {
				s = scale.F[j]
			}
			var acc float64
			for p := 0; p < k; p++ {
				acc += x.F[i*k+p] * s * w.F[j*k+p]
			}
			out.F[i*n+j] = acc
		}
	}
	return out
}

// roundActivations returns a copy of x whose rows of k are rounded per block to int16 and back
// (quant.RoundInt16Blocks), in float32 as the backends see them.
func roundActivations(x *Tensor, k int) *Tensor {
	f := make([]float32, len(x.F))
	for i, v := range x.F {
		f[i] = float32(v)
	}
	if k > 0 {
		_ = quant.RoundInt16Blocks(f, f, k) // fails only on sizes, which Infer checked
	}
	r := NewTensor(x.Dims...)
	for i, v := range f {
		r.F[i] = float64(v)
	}
	return r
}

// RefQuantGather returns the dequantized rows table[indices] (scale as for RefQuantMatMul).
func RefQuantGather(table, indices, scale *Tensor) *Tensor {
	out := RefGather(table, indices)
	if scale != nil {
		d := table.Dims[1]
		for i, r := range indices.I {
			for j := 0; j < d; j++ {
				out.F[i*d+j] *= scale.F[r]
			}
		}
	}
	return out
}

// skipUnsupported skips the test when err wraps backends.ErrUnsupported and o allows it for op.
func skipUnsupported(t *testing.T, o Options, op string, err error) {
	t.Helper()
	if err != nil && errors.Is(err, backends.ErrUnsupported) && slices.Contains(o.Skip, op) {
		t.Skipf("skipped: %v", err)
	}
}

func quantErrorCases() []errorCase {
	f32 := func(d ...int) shapes.Shape { return shapes.Make(shapes.Float32, d...) }
	return []errorCase{
		{"quant-gather-index-out-of-range", func(t *testing.T, be backends.Backend, o Options) {
			for _, q := range quantDTypes {
				g := graph.New()
				table := g.Input("table", shapes.Make(q.dt, 5, 3))
				idx := g.Input("idx", shapes.Make(shapes.Int64, 2))
				var scale []*graph.Node
				if q.dt == shapes.Int8 {
					scale = append(scale, g.Input("scale", f32(5)))
				}
				g.Output("y", ops.QuantGather(table, idx, scale...))
				p, err := g.Compile(be, nil)
				skipUnsupported(t, o, "QuantGather", err)
				if err != nil {
					t.Fatalf("%s: Compile: %v", q.name, err)
				}
				run := func(ids ...int64) error {
					if err := p.SetInput("idx", ids); err != nil {
						t.Fatalf("SetInput: %v", err)
					}
					return p.Run()
				}
				wantErr(t, q.name+" index = rows", run(0, 5))
				wantErr(t, q.name+" negative index", run(-1, 2))
				if err := run(0, 4); err != nil {
					t.Errorf("%s: valid indices: %v", q.name, err)
				}
				p.Close()
			}
		}},
		{"quant-compile-bad-shapes", func(t *testing.T, be backends.Backend, o Options) {
			bf := func(d ...int) shapes.Shape { return shapes.Make(shapes.BFloat16, d...) }
			i8 := func(d ...int) shapes.Shape { return shapes.Make(shapes.Int8, d...) }
			type bad struct {
				what    string
				op      backends.Op
				in, out []shapes.Shape
			}
			for _, c := range []bad{
				{"K mismatch", ops.QuantMatMulOp{}, []shapes.Shape{f32(2, 7), bf(3, 8)}, []shapes.Shape{f32(2, 3)}},
				{"int8 without scale", ops.QuantMatMulOp{}, []shapes.Shape{f32(2, 7), i8(3, 7)}, []shapes.Shape{f32(2, 3)}},
				{"bf16 with scale", ops.QuantMatMulOp{}, []shapes.Shape{f32(2, 7), bf(3, 7), f32(3)}, []shapes.Shape{f32(2, 3)}},
				{"scale of the wrong size", ops.QuantMatMulOp{}, []shapes.Shape{f32(2, 7), i8(3, 7), f32(7)}, []shapes.Shape{f32(2, 3)}},
				{"float32 weight", ops.QuantMatMulOp{}, []shapes.Shape{f32(2, 7), f32(3, 7)}, []shapes.Shape{f32(2, 3)}},
				{"float64 x", ops.QuantMatMulOp{}, []shapes.Shape{shapes.Make(shapes.Float64, 2, 7), bf(3, 7)}, []shapes.Shape{f32(2, 3)}},
				{"wrong output", ops.QuantMatMulOp{}, []shapes.Shape{f32(2, 7), bf(3, 7)}, []shapes.Shape{f32(2, 4)}},
				{"gather float32 table", ops.QuantGatherOp{}, []shapes.Shape{f32(5, 3), shapes.Make(shapes.Int64, 2)}, []shapes.Shape{f32(2, 3)}},
				{"gather float indices", ops.QuantGatherOp{}, []shapes.Shape{bf(5, 3), f32(2)}, []shapes.Shape{f32(2, 3)}},
				{"gather int8 without scale", ops.QuantGatherOp{}, []shapes.Shape{i8(5, 3), shapes.Make(shapes.Int64, 2)}, []shapes.Shape{f32(2, 3)}},
			} {
				k, err := be.Compile(c.op, c.in, c.out)
				wantErr(t, c.what, err)
				if err == nil {
					t.Errorf("%s: compiled a kernel %T", c.what, k)
				} else if !strings.Contains(err.Error(), c.op.Name()) {
					t.Errorf("%s: error %q does not name the op", c.what, err)
				}
			}
		}},
		{"quant-wrong-buffers", func(t *testing.T, be backends.Backend, o Options) {
			x, w, y := f32(2, 7), shapes.Make(shapes.BFloat16, 3, 7), f32(2, 3)
			k, err := be.Compile(ops.QuantMatMulOp{}, []shapes.Shape{x, w}, []shapes.Shape{y})
			skipUnsupported(t, o, "QuantMatMul", err)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			bx, bw, by := mustAlloc(t, be, x), mustAlloc(t, be, w), mustAlloc(t, be, y)
			fw := mustAlloc(t, be, f32(3, 7))
			short := mustAlloc(t, be, shapes.Make(shapes.BFloat16, 2, 7))
			for _, b := range []backends.Buffer{bx, bw, by, fw, short} {
				defer be.Free(b)
			}
			if err := k.Run([]backends.Buffer{bx, bw}, []backends.Buffer{by}); err != nil {
				t.Fatalf("Run with the right buffers: %v", err)
			}
			wantErr(t, "float32 weight buffer", k.Run([]backends.Buffer{bx, fw}, []backends.Buffer{by}))
			wantErr(t, "weight buffer too small", k.Run([]backends.Buffer{bx, short}, []backends.Buffer{by}))
			wantErr(t, "missing weight", k.Run([]backends.Buffer{bx}, []backends.Buffer{by}))
			wantErr(t, "extra input", k.Run([]backends.Buffer{bx, bw, bx}, []backends.Buffer{by}))
			wantErr(t, "float32 output as weight", k.Run([]backends.Buffer{bx, by}, []backends.Buffer{by}))
		}},
		{"quant-round-trip", func(t *testing.T, be backends.Backend, o Options) {
			for _, c := range []struct {
				s    shapes.Shape
				data any
			}{
				{shapes.Make(shapes.BFloat16, 2, 3), []uint16{0x3f80, 0xbf80, 0x7f80, 0, 0x8000, 0x4049}},
				{shapes.Make(shapes.Float16, 5), []uint16{0x3c00, 0xbc00, 0x7c00, 1, 0x7bff}},
				{shapes.Make(shapes.Int8, 4), []int8{-127, 0, 5, 127}},
			} {
				b, err := be.Alloc(c.s)
				if err != nil {
					if errors.Is(err, backends.ErrUnsupported) {
						t.Logf("Alloc(%s): %v", c.s, err)
						continue
					}
					t.Fatalf("Alloc(%s): %v", c.s, err)
				}
				if err := be.Write(b, c.data); err != nil {
					t.Fatalf("Write %s: %v", c.s, err)
				}
				cp := mustAlloc(t, be, c.s)
				if err := be.Copy(cp, b); err != nil {
					t.Fatalf("Copy %s: %v", c.s, err)
				}
				var got any = make([]int8, c.s.Size())
				if _, ok := c.data.([]uint16); ok {
					got = make([]uint16, c.s.Size())
				}
				if err := be.Read(got, cp); err != nil {
					t.Fatalf("Read %s: %v", c.s, err)
				}
				if fmt.Sprint(got) != fmt.Sprint(c.data) {
					t.Errorf("%s: wrote %v, read back %v", c.s, c.data, got)
				}
				wantErr(t, "Write []float32 into "+c.s.String(), be.Write(b, make([]float32, c.s.Size())))
				wantErr(t, "Read a short slice from "+c.s.String(), be.Read(make([]int8, 1), b))
				be.Free(b)
				be.Free(cp)
			}
		}},
	}
}
