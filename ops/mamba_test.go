package ops_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

// mbIn is one input of a forward run: float data (converted to the run's dtype) or int64 data.
type mbIn struct {
	dims []int
	f    []float64
	i    []int64
}

// mbTryRun builds a graph of the given inputs, compiles it on be in dtype dt, runs it once and
// returns every output as float64.
func mbTryRun(be backends.Backend, dt shapes.DType, ins []mbIn, build func(in []*graph.Node) []*graph.Node) ([][]float64, error) {
	g := graph.New()
	nodes := make([]*graph.Node, len(ins))
	for i, in := range ins {
		s := shapes.Make(dt, in.dims...)
		if in.i != nil {
			s = shapes.Make(shapes.Int64, in.dims...)
		}
		nodes[i] = g.Input(fmt.Sprintf("in%d", i), s)
	}
	outs := build(nodes)
	for i, o := range outs {
		g.Output(fmt.Sprintf("out%d", i), o)
	}
	p, err := g.Compile(be, nil)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	for i, in := range ins {
		var v any = in.i
		if in.i == nil {
			v = mbConvert(dt, in.f)
		}
		if err := p.SetInput(fmt.Sprintf("in%d", i), v); err != nil {
			return nil, err
		}
	}
	if err := p.Run(); err != nil {
		return nil, err
	}
	res := make([][]float64, len(outs))
	for i, o := range outs {
		n := o.Shape().Size()
		if dt == shapes.Float32 {
			buf := make([]float32, n)
			if err := p.ReadOutput(fmt.Sprintf("out%d", i), buf); err != nil {
				return nil, err
			}
			res[i] = make([]float64, n)
			for j, v := range buf {
				res[i][j] = float64(v)
			}
			continue
		}
		res[i] = make([]float64, n)
		if err := p.ReadOutput(fmt.Sprintf("out%d", i), res[i]); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func mbRun(t *testing.T, be backends.Backend, dt shapes.DType, ins []mbIn, build func(in []*graph.Node) []*graph.Node) [][]float64 {
	t.Helper()
	res, err := mbTryRun(be, dt, ins, build)
	require.NoError(t, err)
	return res
}

func mbConvert(dt shapes.DType, v []float64) any {
	if dt == shapes.Float32 {
		f := make([]float32, len(v))
		for i, x := range v {
			f[i] = float32(x)
		}
		return f
	}
	return v
}

func mbUniform(rng *rand.Rand, n int, lo, hi float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = lo + (hi-lo)*rng.Float64()
	}
	return v
}

// mbClose asserts |got − want| ≤ tol·max(1, |want|) element-wise.
func mbClose(t *testing.T, want, got []float64, tol float64, what string) {
	t.Helper()
	require.Equal(t, len(want), len(got), what)
	worst, at := 0.0, -1
	for i := range want {
		e := math.Abs(got[i]-want[i]) / math.Max(1, math.Abs(want[i]))
		if !(e <= worst) {
			worst, at = e, i
		}
	}
	if !(worst <= tol) {
		t.Fatalf("%s: element %d: got %v, want %v (relative error %.3g > %.1g)", what, at, got[at], want[at], worst, tol)
	}
}

// ---- SSD ----

type mbSSDCase struct {
	B, T, H, P, G, N int
}

// mbSSDInputs draws x, dt, A, B, C, D and state (zero when !withState).
func mbSSDInputs(rng *rand.Rand, c mbSSDCase, withState bool) [][]float64 {
	st := make([]float64, c.B*c.H*c.P*c.N)
	if withState {
		st = mbUniform(rng, len(st), -1, 1)
	}
	return [][]float64{
		mbUniform(rng, c.B*c.T*c.H*c.P, -1, 1),
		mbUniform(rng, c.B*c.T*c.H, 0.05, 0.8),
		mbUniform(rng, c.H, -1.5, -0.2),
		mbUniform(rng, c.B*c.T*c.G*c.N, -1, 1),
		mbUniform(rng, c.B*c.T*c.G*c.N, -1, 1),
		mbUniform(rng, c.H, -1, 1),
		st,
	}
}

func (c mbSSDCase) ins(v [][]float64) []mbIn {
	return []mbIn{
		{dims: []int{c.B, c.T, c.H, c.P}, f: v[0]},
		{dims: []int{c.B, c.T, c.H}, f: v[1]},
		{dims: []int{c.H}, f: v[2]},
		{dims: []int{c.B, c.T, c.G, c.N}, f: v[3]},
		{dims: []int{c.B, c.T, c.G, c.N}, f: v[4]},
		{dims: []int{c.H}, f: v[5]},
		{dims: []int{c.B, c.H, c.P, c.N}, f: v[6]},
	}
}

// mbRefSSD is the per-token recurrence S_t = exp(dt·A)·S_{t−1} + dt·x⊗B, y = S·C + D·x.
func mbRefSSD(c mbSSDCase, v [][]float64) (y, s []float64) {
	x, dt, a, bm, cm, d, st := v[0], v[1], v[2], v[3], v[4], v[5], v[6]
	y = make([]float64, len(x))
	s = append([]float64(nil), st...)
	hpg := c.H / c.G
	for b := 0; b < c.B; b++ {
		for h := 0; h < c.H; h++ {
			g := h / hpg
			S := s[(b*c.H+h)*c.P*c.N:][:c.P*c.N]
			for t := 0; t < c.T; t++ {
				dtv := dt[(b*c.T+t)*c.H+h]
				decay := math.Exp(dtv * a[h])
				for p := 0; p < c.P; p++ {
					xv := x[((b*c.T+t)*c.H+h)*c.P+p]
					acc := 0.0
					for n := 0; n < c.N; n++ {
						bo := ((b*c.T+t)*c.G+g)*c.N + n
						S[p*c.N+n] = decay*S[p*c.N+n] + dtv*xv*bm[bo]
						acc += S[p*c.N+n] * cm[bo]
					}
					y[((b*c.T+t)*c.H+h)*c.P+p] = acc + d[h]*xv
				}
			}
		}
	}
	return y, s
}

func mbSSDBuild(chunk int) func(in []*graph.Node) []*graph.Node {
	return func(in []*graph.Node) []*graph.Node {
		y, s := ops.SSD(in[0], in[1], in[2], in[3], in[4], in[5], in[6], chunk)
		return []*graph.Node{y, s}
	}
}

func TestSSDChunkedMatchesRecurrence(t *testing.T) {
	be := cpuBackend(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []mbSSDCase{
		{B: 2, T: 11, H: 4, P: 3, G: 1, N: 5},
		{B: 2, T: 11, H: 4, P: 3, G: 2, N: 5},
		{B: 1, T: 17, H: 6, P: 2, G: 3, N: 4},
		{B: 3, T: 1, H: 2, P: 2, G: 2, N: 3},
	} {
		for _, withState := range []bool{false, true} {
			v := mbSSDInputs(rng, c, withState)
			wantY, wantS := mbRefSSD(c, v)
			for _, chunk := range []int{1, 3, 8, c.T, c.T + 5} {
				name := fmt.Sprintf("%+v/state=%v/chunk=%d", c, withState, chunk)
				got := mbRun(t, be, shapes.Float64, c.ins(v), mbSSDBuild(chunk))
				mbClose(t, wantY, got[0], 1e-10, name+"/y")
				mbClose(t, wantS, got[1], 1e-10, name+"/state")
				got32 := mbRun(t, be, shapes.Float32, c.ins(v), mbSSDBuild(chunk))
				mbClose(t, got[0], got32[0], 1e-5, name+"/y float32")
				mbClose(t, got[1], got32[1], 1e-5, name+"/state float32")
			}
		}
	}
}

// TestSSDLongChunk runs a longer sequence with Mamba2-like chunking so that the decay spans
// several orders of magnitude inside a chunk.
func TestSSDLongChunk(t *testing.T) {
	be := cpuBackend(t)
	rng := rand.New(rand.NewPCG(5, 6))
	c := mbSSDCase{B: 2, T: 150, H: 4, P: 4, G: 2, N: 8}
	v := mbSSDInputs(rng, c, true)
	wantY, wantS := mbRefSSD(c, v)
	for _, chunk := range []int{64, 256} {
		got := mbRun(t, be, shapes.Float64, c.ins(v), mbSSDBuild(chunk))
		mbClose(t, wantY, got[0], 1e-10, "y")
		mbClose(t, wantS, got[1], 1e-10, "state")
		got32 := mbRun(t, be, shapes.Float32, c.ins(v), mbSSDBuild(chunk))
		mbClose(t, got[0], got32[0], 1e-5, "y float32")
		mbClose(t, got[1], got32[1], 1e-5, "state float32")
	}
}

// TestSSDZeroDtIsPadding: tokens with dt = 0 leave the state alone, whatever their x, B and C.
func TestSSDZeroDtIsPadding(t *testing.T) {
	be := cpuBackend(t)
	rng := rand.New(rand.NewPCG(7, 8))
	full := mbSSDCase{B: 1, T: 9, H: 4, P: 3, G: 2, N: 4}
	short := full
	short.T = 5
	v := mbSSDInputs(rng, full, true)
	for t0 := short.T; t0 < full.T; t0++ {
		for h := 0; h < full.H; h++ {
			v[1][t0*full.H+h] = 0
		}
	}
	vs := make([][]float64, 7)
	for i, n := range []int{short.T * full.H * full.P, short.T * full.H, -1, short.T * full.G * full.N, short.T * full.G * full.N, -1, -1} {
		vs[i] = v[i]
		if n >= 0 {
			vs[i] = v[i][:n]
		}
	}
	got := mbRun(t, be, shapes.Float64, full.ins(v), mbSSDBuild(4))
	want := mbRun(t, be, shapes.Float64, short.ins(vs), mbSSDBuild(4))
	mbClose(t, want[1], got[1], 1e-12, "state after padding")
	mbClose(t, want[0], got[0][:len(want[0])], 1e-12, "outputs before padding")
}

func TestSSDStepRepeatedEqualsSSD(t *testing.T) {
	be := cpuBackend(t)
	rng := rand.New(rand.NewPCG(9, 10))
	for _, dt := range []shapes.DType{shapes.Float64, shapes.Float32} {
		for _, c := range []mbSSDCase{{B: 2, T: 7, H: 4, P: 3, G: 2, N: 5}, {B: 1, T: 5, H: 3, P: 2, G: 1, N: 4}} {
			v := mbSSDInputs(rng, c, true)
			want := mbRun(t, be, dt, c.ins(v), mbSSDBuild(3))

			g := graph.New()
			x := g.Input("x", shapes.Make(dt, c.B, c.H, c.P))
			dtn := g.Input("dt", shapes.Make(dt, c.B, c.H))
			a := g.Input("A", shapes.Make(dt, c.H))
			bm := g.Input("B", shapes.Make(dt, c.B, c.G, c.N))
			cm := g.Input("C", shapes.Make(dt, c.B, c.G, c.N))
			d := g.Input("D", shapes.Make(dt, c.H))
			st := g.State("ssm", shapes.Make(dt, c.B, c.H, c.P, c.N))
			y, ns := ops.SSDStep(x, dtn, a, bm, cm, d, st)
			g.Output("y", y)
			g.SetState("ssm", ns)
			p, err := g.Compile(be, nil)
			require.NoError(t, err)
			stBuf, err := p.StateBuffer("ssm")
			require.NoError(t, err)
			require.NoError(t, be.Write(stBuf, mbConvert(dt, v[6])))
			require.NoError(t, p.SetInput("A", mbConvert(dt, v[2])))
			require.NoError(t, p.SetInput("D", mbConvert(dt, v[5])))
			gotY := make([]float64, len(want[0]))
			for tk := 0; tk < c.T; tk++ {
				// Gather token tk of every row.
				sel := func(src []float64, inner int) []float64 {
					out := make([]float64, 0, c.B*inner)
					for b := 0; b < c.B; b++ {
						out = append(out, src[(b*c.T+tk)*inner:][:inner]...)
					}
					return out
				}
				require.NoError(t, p.SetInput("x", mbConvert(dt, sel(v[0], c.H*c.P))))
				require.NoError(t, p.SetInput("dt", mbConvert(dt, sel(v[1], c.H))))
				require.NoError(t, p.SetInput("B", mbConvert(dt, sel(v[3], c.G*c.N))))
				require.NoError(t, p.SetInput("C", mbConvert(dt, sel(v[4], c.G*c.N))))
				require.NoError(t, p.Run())
				out, err := p.Output("y")
				require.NoError(t, err)
				yv := mbFloats(out.Data())
				for b := 0; b < c.B; b++ {
					copy(gotY[(b*c.T+tk)*c.H*c.P:][:c.H*c.P], yv[b*c.H*c.P:][:c.H*c.P])
				}
			}
			gotS := make([]float64, len(want[1]))
			if dt == shapes.Float32 {
				s32 := make([]float32, len(gotS))
				require.NoError(t, be.Read(s32, stBuf))
				for i, s := range s32 {
					gotS[i] = float64(s)
				}
			} else {
				require.NoError(t, be.Read(gotS, stBuf))
			}
			require.NoError(t, p.Close())
			tol := 1e-12
			if dt == shapes.Float32 {
				tol = 1e-5
			}
			mbClose(t, want[0], gotY, tol, fmt.Sprintf("%v %+v y", dt, c))
			mbClose(t, want[1], gotS, tol, fmt.Sprintf("%v %+v state", dt, c))
		}
	}
}

func mbFloats(v any) []float64 {
	switch x := v.(type) {
	case []float64:
		return x
	case []float32:
		out := make([]float64, len(x))
		for i, f := range x {
			out[i] = float64(f)
		}
		return out
	}
	return nil
}

func TestSSDInferErrors(t *testing.T) {
	f := func(d ...int) shapes.Shape { return shapes.Make(shapes.Float32, d...) }
	good := []shapes.Shape{f(2, 5, 4, 3), f(2, 5, 4), f(4), f(2, 5, 2, 6), f(2, 5, 2, 6), f(4), f(2, 4, 3, 6)}
	_, err := ops.SSDOp{ChunkSize: 4}.Infer(good)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		i    int
		s    shapes.Shape
		want string
	}{
		{"B", 3, f(2, 5, 3, 6), "C "},
		{"C", 4, f(2, 5, 2, 7), "C "},
		{"dt", 1, f(2, 4, 4), "dt "},
		{"A", 2, f(3), "A "},
		{"D", 5, f(5), "D "},
		{"state", 6, f(2, 4, 3, 5), "state "},
		{"x rank", 0, f(2, 5, 12), "x "},
		{"dtype", 2, shapes.Make(shapes.Float64, 4), "dtype"},
	} {
		in := append([]shapes.Shape(nil), good...)
		in[tc.i] = tc.s
		_, err := ops.SSDOp{ChunkSize: 4}.Infer(in)
		require.Error(t, err, tc.name)
		require.Contains(t, err.Error(), tc.want, tc.name)
	}
	in := append([]shapes.Shape(nil), good...)
	in[3], in[4] = f(2, 5, 3, 6), f(2, 5, 3, 6)
	_, err = ops.SSDOp{ChunkSize: 4}.Infer(in)
	require.ErrorContains(t, err, "not divisible")
	_, err = ops.SSDOp{}.Infer(good)
	require.ErrorContains(t, err, "chunk size")
	step := []shapes.Shape{f(2, 4, 3), f(2, 4), f(4), f(2, 2, 6), f(2, 2, 6), f(4), f(2, 4, 3, 6)}
	_, err = ops.SSDStepOp{}.Infer(step)
	require.NoError(t, err)
	step[3] = f(2, 3, 6)
	_, err = ops.SSDStepOp{}.Infer(step)
	require.Error(t, err)
}

// ---- CausalConv1D ----

// mbRefConv computes y and the new state from the definition (u = state columns then x).
func mbRefConv(nb, nt, nc, nk int, x, w, bias, st []float64, lens []int64) (y, ns []float64) {
	y = make([]float64, nb*nt*nc)
	ns = make([]float64, nb*nc*nk)
	for b := 0; b < nb; b++ {
		valid := nt
		if lens != nil {
			valid = int(lens[b])
		}
		for c := 0; c < nc; c++ {
			u := make([]float64, 0, nk+nt)
			for j := 0; j < nk; j++ {
				u = append(u, st[(b*nc+c)*nk+j])
			}
			for t := 0; t < valid; t++ {
				u = append(u, x[(b*nt+t)*nc+c])
			}
			for t := 0; t < valid; t++ {
				acc := bias[c]
				for j := 0; j < nk; j++ {
					acc += w[c*nk+j] * u[t+1+j]
				}
				y[(b*nt+t)*nc+c] = acc
			}
			copy(ns[(b*nc+c)*nk:][:nk], u[len(u)-nk:])
		}
	}
	return y, ns
}

func mbConvBuild(in []*graph.Node) []*graph.Node {
	if len(in) == 5 {
		y, s := ops.CausalConv1DLen(in[0], in[1], in[2], in[3], in[4])
		return []*graph.Node{y, s}
	}
	y, s := ops.CausalConv1D(in[0], in[1], in[2], in[3])
	return []*graph.Node{y, s}
}

func mbConvIns(nb, nt, nc, nk int, x, w, bias, st []float64) []mbIn {
	return []mbIn{{dims: []int{nb, nt, nc}, f: x}, {dims: []int{nc, nk}, f: w}, {dims: []int{nc}, f: bias}, {dims: []int{nb, nc, nk}, f: st}}
}

func TestCausalConv1DStateContinuation(t *testing.T) {
	be := cpuBackend(t)
	rng := rand.New(rand.NewPCG(11, 12))
	const nb, nc = 2, 5
	for _, nk := range []int{1, 2, 3, 4} {
		for _, t1 := range []int{1, nk - 1, nk, nk + 3} {
			if t1 < 1 {
				continue
			}
			for _, t2 := range []int{1, 2, nk + 2} {
				name := fmt.Sprintf("K=%d/T1=%d/T2=%d", nk, t1, t2)
				nt := t1 + t2
				x := mbUniform(rng, nb*nt*nc, -1, 1)
				w := mbUniform(rng, nc*nk, -1, 1)
				bias := mbUniform(rng, nc, -1, 1)
				s0 := mbUniform(rng, nb*nc*nk, -1, 1)
				// Split x into its first t1 and last t2 tokens per row.
				x1, x2 := make([]float64, 0, nb*t1*nc), make([]float64, 0, nb*t2*nc)
				for b := 0; b < nb; b++ {
					x1 = append(x1, x[b*nt*nc:][:t1*nc]...)
					x2 = append(x2, x[(b*nt+t1)*nc:][:t2*nc]...)
				}
				wantY, wantS := mbRefConv(nb, nt, nc, nk, x, w, bias, s0, nil)
				for _, dt := range []shapes.DType{shapes.Float64, shapes.Float32} {
					tol := 1e-12
					if dt == shapes.Float32 {
						tol = 1e-5
					}
					full := mbRun(t, be, dt, mbConvIns(nb, nt, nc, nk, x, w, bias, s0), mbConvBuild)
					mbClose(t, wantY, full[0], tol, name+"/y vs reference")
					mbClose(t, wantS, full[1], tol, name+"/state vs reference")
					r1 := mbRun(t, be, dt, mbConvIns(nb, t1, nc, nk, x1, w, bias, s0), mbConvBuild)
					r2 := mbRun(t, be, dt, mbConvIns(nb, t2, nc, nk, x2, w, bias, r1[1]), mbConvBuild)
					var y12 []float64
					for b := 0; b < nb; b++ {
						y12 = append(y12, r1[0][b*t1*nc:][:t1*nc]...)
						y12 = append(y12, r2[0][b*t2*nc:][:t2*nc]...)
					}
					mbClose(t, full[0], y12, tol, name+"/y continued")
					mbClose(t, full[1], r2[1], tol, name+"/state continued")
				}
			}
		}
	}
}

func TestCausalConv1DLengths(t *testing.T) {
	be := cpuBackend(t)
	rng := rand.New(rand.NewPCG(13, 14))
	const nt, nc = 6, 3
	for _, nk := range []int{2, 4} {
		lens := []int64{6, 2, 0, 3}
		nb := len(lens)
		x := mbUniform(rng, nb*nt*nc, -1, 1) // pad positions hold garbage too
		w := mbUniform(rng, nc*nk, -1, 1)
		bias := mbUniform(rng, nc, -1, 1)
		s0 := mbUniform(rng, nb*nc*nk, -1, 1)
		for _, dt := range []shapes.DType{shapes.Float64, shapes.Float32} {
			tol := 1e-12
			if dt == shapes.Float32 {
				tol = 1e-5
			}
			ins := append(mbConvIns(nb, nt, nc, nk, x, w, bias, s0), mbIn{dims: []int{nb}, i: lens})
			got := mbRun(t, be, dt, ins, mbConvBuild)
			wantY, wantS := mbRefConv(nb, nt, nc, nk, x, w, bias, s0, lens)
			mbClose(t, wantY, got[0], tol, "y")
			mbClose(t, wantS, got[1], tol, "state")
			// Each row alone, unpadded.
			for b, l := range lens {
				sb := s0[b*nc*nk:][:nc*nk]
				if l == 0 {
					mbClose(t, sb, got[1][b*nc*nk:][:nc*nk], tol, "state of an empty row")
					continue
				}
				alone := mbRun(t, be, dt, mbConvIns(1, int(l), nc, nk, x[b*nt*nc:][:int(l)*nc], w, bias, sb), mbConvBuild)
				mbClose(t, alone[1], got[1][b*nc*nk:][:nc*nk], tol, fmt.Sprintf("row %d state", b))
				mbClose(t, alone[0], got[0][b*nt*nc:][:int(l)*nc], tol, fmt.Sprintf("row %d y", b))
				for _, v := range got[0][(b*nt+int(l))*nc : (b+1)*nt*nc] {
					require.Zero(t, v, "padded outputs are zero")
				}
			}
		}
		// Out-of-range lengths are run-time errors, not panics.
		for _, bad := range [][]int64{{7, 0, 0, 0}, {0, -1, 0, 0}} {
			ins := append(mbConvIns(nb, nt, nc, nk, x, w, bias, s0), mbIn{dims: []int{nb}, i: bad})
			_, err := mbTryRun(be, shapes.Float64, ins, mbConvBuild)
			require.ErrorContains(t, err, "lengths")
		}
	}
}

func TestCausalConv1DInferErrors(t *testing.T) {
	f := func(d ...int) shapes.Shape { return shapes.Make(shapes.Float32, d...) }
	good := []shapes.Shape{f(2, 5, 3), f(3, 4), f(3), f(2, 3, 4)}
	out, err := ops.CausalConv1DOp{}.Infer(good)
	require.NoError(t, err)
	require.Equal(t, []int{2, 5, 3}, out[0].Dims)
	require.Equal(t, []int{2, 3, 4}, out[1].Dims)
	for _, tc := range []struct {
		in   []shapes.Shape
		want string
	}{
		{[]shapes.Shape{f(2, 5, 3), f(4, 4), f(3), f(2, 3, 4)}, "weight"},
		{[]shapes.Shape{f(2, 5, 3), f(3, 4), f(4), f(2, 3, 4)}, "bias"},
		{[]shapes.Shape{f(2, 5, 3), f(3, 4), f(3), f(2, 3, 3)}, "state"},
		{[]shapes.Shape{f(5, 3), f(3, 4), f(3), f(2, 3, 4)}, "x "},
		{append(append([]shapes.Shape(nil), good...), f(2)), "lengths"},
		{append(append([]shapes.Shape(nil), good...), shapes.Make(shapes.Int64, 3)), "lengths"},
		{good[:3], "inputs"},
	} {
		_, err := ops.CausalConv1DOp{}.Infer(tc.in)
		require.ErrorContains(t, err, tc.want)
	}
	_, err = ops.CausalConv1DOp{}.Infer(append(append([]shapes.Shape(nil), good...), shapes.Make(shapes.Int64, 2)))
	require.NoError(t, err)
}
