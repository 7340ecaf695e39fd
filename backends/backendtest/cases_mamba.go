package backendtest

import (
	"fmt"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	caseTables = append(caseTables, convCases, ssdCases)
	gradCaseTables = append(gradCaseTables, mambaGradCases)
	errorCaseTables = append(errorCaseTables, mambaErrorCases)
}

// convShape sizes a causal convolution: x [B,T,C], kernel K.
type convShape struct{ B, T, C, K int }

// convIn returns the inputs x, w, bias, state of a causal convolution.
func convIn(s convShape) []In {
	return []In{{Dims: dims(s.B, s.T, s.C)}, {Dims: dims(s.C, s.K)}, {Dims: dims(s.C)}, {Dims: dims(s.B, s.C, s.K)}}
}

// lengthsIn is an int64 lengths input (nil: none).
func lengthsIn(l []int64) []In {
	if l == nil {
		return nil
	}
	return []In{{Dims: dims(len(l)), Int: true, Ints: l}}
}

func optional(in []*Tensor, i int) *Tensor {
	if i < len(in) {
		return in[i]
	}
	return nil
}

func convCases() []Case {
	var cs []Case
	for _, c := range []struct {
		name    string
		s       convShape
		lengths []int64
	}{
		{"basic", convShape{2, 5, 3, 4}, nil},
		{"short", convShape{2, 2, 3, 4}, nil}, // T < K: part of the old state stays
		{"step", convShape{3, 1, 5, 4}, nil},
		{"kernel-1", convShape{2, 4, 3, 1}, nil},
		{"kernel-2", convShape{1, 7, 2, 2}, nil},
		{"large", convShape{2, 64, 256, 4}, nil},
		{"lengths", convShape{3, 6, 4, 4}, []int64{6, 0, 3}},
		{"lengths-short", convShape{2, 2, 3, 4}, []int64{1, 2}},
		{"lengths-all-full", convShape{2, 5, 3, 3}, []int64{5, 5}},
	} {
		in := append(convIn(c.s), lengthsIn(c.lengths)...)
		name := "CausalConv1D/" + c.name
		cs = append(cs, Case{
			Name: name,
			In:   in,
			Build: func(in []*graph.Node) []*graph.Node {
				if len(in) == 5 {
					y, st := ops.CausalConv1DLen(in[0], in[1], in[2], in[3], in[4])
					return nodes(y, st)
				}
				y, st := ops.CausalConv1D(in[0], in[1], in[2], in[3])
				return nodes(y, st)
			},
			Ref: func(in []*Tensor) []*Tensor {
				y, st := RefCausalConv1D(in[0], in[1], in[2], in[3], optional(in, 4))
				return tensors(y, st)
			},
		})
		if c.s.T > 10 {
			continue
		}
		gin := append(convIn(c.s), In{Dims: dims(c.s.B, c.s.T, c.s.C)}, In{Dims: dims(c.s.B, c.s.C, c.s.K)})
		gin = append(gin, lengthsIn(c.lengths)...)
		cs = append(cs, Case{
			Name: "CausalConv1DGrad/" + c.name,
			In:   gin,
			Build: func(in []*graph.Node) []*graph.Node {
				return outs(ops.CausalConv1DGradOp{}, in...)
			},
			Ref: func(in []*Tensor) []*Tensor {
				dx, dw, db, ds := RefCausalConv1DGrad(in[0], in[1], in[2], in[3], in[4], in[5], optional(in, 6))
				return tensors(dx, dw, db, ds)
			},
		})
	}
	return cs
}

// ssdShape sizes a selective scan.
type ssdShape struct{ B, T, H, P, G, N int }

// ssdIn returns the inputs x, dt, A, B, C, D, state of SSD (or SSDStep when step): dt positive,
// A negative, as the model produces them. dtLo/dtHi default to [0.05, 0.6).
func ssdIn(s ssdShape, step bool, dtLo, dtHi float64) []In {
	if dtLo == 0 && dtHi == 0 {
		dtLo, dtHi = 0.05, 0.6
	}
	bt := dims(s.B, s.T)
	if step {
		bt = dims(s.B)
	}
	with := func(d ...int) []int { return append(append([]int(nil), bt...), d...) }
	return []In{
		{Dims: with(s.H, s.P)},
		{Dims: with(s.H), Lo: dtLo, Hi: dtHi},
		{Dims: dims(s.H), Lo: -2, Hi: -0.1},
		{Dims: with(s.G, s.N)},
		{Dims: with(s.G, s.N)},
		{Dims: dims(s.H), Lo: -1, Hi: 1},
		{Dims: dims(s.B, s.H, s.P, s.N)},
	}
}

func ssdCases() []Case {
	var cs []Case
	for _, c := range []struct {
		name       string
		s          ssdShape
		chunks     []int
		dtLo, dtHi float64
		dtValues   []float64
		tol        float64
	}{
		{name: "basic", s: ssdShape{2, 7, 4, 3, 2, 5}, chunks: []int{1, 3, 7, 16}},
		{name: "one-group", s: ssdShape{1, 6, 4, 2, 1, 3}, chunks: []int{4}},
		{name: "group-per-head", s: ssdShape{2, 5, 3, 2, 3, 4}, chunks: []int{2}},
		{name: "one-token", s: ssdShape{3, 1, 2, 4, 1, 3}, chunks: []int{1, 8}},
		{name: "strong-decay", s: ssdShape{1, 9, 2, 3, 1, 4}, chunks: []int{4}, dtLo: 2, dtHi: 6},
		{name: "masked-tokens", s: ssdShape{2, 6, 2, 2, 1, 3}, chunks: []int{4},
			dtValues: []float64{0.3, 0.2, 0, 0.5, 0.1, 0.4, 0, 0, 0.2, 0.2, 0.7, 0.1,
				0, 0, 0, 0, 0, 0, 0.4, 0.3, 0.1, 0, 0, 0.2}},
		{name: "large", s: ssdShape{2, 64, 8, 16, 2, 16}, chunks: []int{16, 24}, tol: 10},
	} {
		for _, chunk := range c.chunks {
			in := ssdIn(c.s, false, c.dtLo, c.dtHi)
			if c.dtValues != nil {
				in[1].Values = c.dtValues
			}
			cs = append(cs, Case{
				Name: fmt.Sprintf("SSD/%s/chunk-%d", c.name, chunk),
				In:   in,
				Tol:  c.tol,
				Build: func(in []*graph.Node) []*graph.Node {
					y, st := ops.SSD(in[0], in[1], in[2], in[3], in[4], in[5], in[6], chunk)
					return nodes(y, st)
				},
				Ref: func(in []*Tensor) []*Tensor {
					y, st := RefSSD(in[0], in[1], in[2], in[3], in[4], in[5], in[6])
					return tensors(y, st)
				},
			})
		}
		if c.s.T <= 10 {
			in := ssdIn(c.s, false, c.dtLo, c.dtHi)
			if c.dtValues != nil {
				in[1].Values = c.dtValues
			}
			in = append(in, In{Dims: in[0].Dims}, In{Dims: in[6].Dims})
			cs = append(cs, Case{
				Name:  "SSDGrad/" + c.name,
				In:    in,
				Tol:   10,
				Build: func(in []*graph.Node) []*graph.Node { return outs(ops.SSDGradOp{}, in...) },
				Ref: func(in []*Tensor) []*Tensor {
					return RefSSDGrad(in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8])
				},
			})
		}
	}
	for _, c := range []struct {
		name string
		s    ssdShape
		tol  float64
	}{
		{"basic", ssdShape{B: 2, H: 4, P: 3, G: 2, N: 5}, 0},
		{"one-group", ssdShape{B: 1, H: 3, P: 2, G: 1, N: 4}, 0},
		{"large", ssdShape{B: 4, H: 24, P: 64, G: 1, N: 128}, 10}, // float32 sums over N = 128
	} {
		cs = append(cs, Case{
			Name: "SSDStep/" + c.name,
			Tol:  c.tol,
			In:   ssdIn(c.s, true, 0, 0),
			Build: func(in []*graph.Node) []*graph.Node {
				y, st := ops.SSDStep(in[0], in[1], in[2], in[3], in[4], in[5], in[6])
				return nodes(y, st)
			},
			Ref: func(in []*Tensor) []*Tensor {
				y, st := RefSSDStep(in[0], in[1], in[2], in[3], in[4], in[5], in[6])
				return tensors(y, st)
			},
		})
	}
	return cs
}

// ssdArgs are gradient-check inputs of SSD/SSDStep: dt around 0.3 and A around −1, so that they
// stay positive and negative under the finite-difference steps.
func ssdArgs(s ssdShape, step bool) []Arg {
	in := ssdIn(s, step, 0, 0)
	args := make([]Arg, len(in))
	for i, x := range in {
		args[i] = Arg{Dims: x.Dims}
	}
	args[1].Offset, args[1].Scale = 0.3, 0.1
	args[2].Offset, args[2].Scale = -1, 0.2
	return args
}

func mambaGradCases() []GradCase {
	conv := convShape{2, 5, 3, 4}
	convArgs := []Arg{{Dims: dims(conv.B, conv.T, conv.C)}, {Dims: dims(conv.C, conv.K)}, {Dims: dims(conv.C)}, {Dims: dims(conv.B, conv.C, conv.K)}}
	var cs []GradCase
	cs = append(cs,
		GradCase{
			Name: "CausalConv1D",
			Args: convArgs,
			Build: func(in []*graph.Node) []*graph.Node {
				y, st := ops.CausalConv1D(in[0], in[1], in[2], in[3])
				return nodes(y, st)
			},
		},
		GradCase{
			Name: "CausalConv1D/lengths",
			Args: append(append([]Arg(nil), convArgs...), Arg{Dims: dims(2), Int64: true, Ints: []int64{2, 5}}),
			Build: func(in []*graph.Node) []*graph.Node {
				y, st := ops.CausalConv1DLen(in[0], in[1], in[2], in[3], in[4])
				return nodes(y, st)
			},
		},
		GradCase{
			Name: "CausalConv1D/y-only",
			Args: convArgs,
			Build: func(in []*graph.Node) []*graph.Node {
				y, _ := ops.CausalConv1D(in[0], in[1], in[2], in[3])
				return nodes(y)
			},
		},
	)
	for _, chunk := range []int{2, 8} {
		cs = append(cs, GradCase{
			Name: fmt.Sprintf("SSD/chunk-%d", chunk),
			Args: ssdArgs(ssdShape{2, 5, 4, 3, 2, 3}, false),
			Build: func(in []*graph.Node) []*graph.Node {
				y, st := ops.SSD(in[0], in[1], in[2], in[3], in[4], in[5], in[6], chunk)
				return nodes(y, st)
			},
		})
	}
	cs = append(cs,
		GradCase{
			Name: "SSD/state-only",
			Args: ssdArgs(ssdShape{1, 4, 2, 2, 1, 3}, false),
			Build: func(in []*graph.Node) []*graph.Node {
				_, st := ops.SSD(in[0], in[1], in[2], in[3], in[4], in[5], in[6], 2)
				return nodes(st)
			},
		},
		GradCase{
			Name: "SSDStep",
			Args: ssdArgs(ssdShape{B: 2, H: 4, P: 3, G: 2, N: 3}, true),
			Build: func(in []*graph.Node) []*graph.Node {
				y, st := ops.SSDStep(in[0], in[1], in[2], in[3], in[4], in[5], in[6])
				return nodes(y, st)
			},
		},
	)
	return cs
}

func mambaErrorCases() []errorCase {
	runConv := func(t *testing.T, be backends.Backend, lengths []int64) error {
		t.Helper()
		s := convShape{2, 3, 2, 4}
		g := graph.New()
		f := func(name string, d ...int) *graph.Node { return g.Input(name, shapes.Make(shapes.Float32, d...)) }
		l := g.Input("lengths", shapes.Make(shapes.Int64, s.B))
		y, st := ops.CausalConv1DLen(f("x", s.B, s.T, s.C), f("w", s.C, s.K), f("b", s.C), f("s", s.B, s.C, s.K), l)
		g.Output("y", y)
		g.Output("state", st)
		p, err := g.Compile(be, nil)
		if err != nil {
			t.Fatalf("Compile: %v", err)
		}
		defer p.Close()
		if err := p.SetInput("lengths", lengths); err != nil {
			t.Fatalf("SetInput: %v", err)
		}
		return p.Run()
	}
	return []errorCase{
		{"conv-lengths-out-of-range", func(t *testing.T, be backends.Backend, o Options) {
			wantErr(t, "length > T", runConv(t, be, []int64{3, 4}))
			wantErr(t, "negative length", runConv(t, be, []int64{-1, 2}))
			if err := runConv(t, be, []int64{0, 3}); err != nil {
				t.Errorf("valid lengths: %v", err)
			}
		}},
	}
}
