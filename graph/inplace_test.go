package graph_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

// copyCounter counts Backend.Copy calls: a program copies only for state write-backs and
// start-of-run snapshots.
type copyCounter struct {
	backends.Backend
	copies int
}

func (c *copyCounter) Copy(dst, src backends.Buffer) error {
	c.copies++
	return c.Backend.Copy(dst, src)
}

// TestStateInPlace: a conv state updated by a kernel that can write over its input is updated
// where it lies (no copy per run), gives the same outputs and states as the copying path (forced
// here by also returning the start-of-run state), and follows BindState.
func TestStateInPlace(t *testing.T) {
	inner, err := backends.New("cpu")
	require.NoError(t, err)
	const B, C, K = 2, 5, 4
	sx := shapes.Make(shapes.Float32, B, 1, C)
	ss := shapes.Make(shapes.Float32, B, C, K)
	build := func(exposeOld bool) *graph.Graph {
		g := graph.New()
		x := g.Input("x", sx)
		w := g.Input("w", shapes.Make(shapes.Float32, C, K))
		bias := g.Input("bias", shapes.Make(shapes.Float32, C))
		st := g.State("conv", ss)
		y, ns := ops.CausalConv1D(x, w, bias, st)
		g.SetState("conv", ns)
		g.Output("y", y)
		if exposeOld {
			g.Output("old", st)
		}
		return g
	}
	rng := rand.New(rand.NewPCG(1, 2))
	vec := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	wv, bv := vec(C*K), vec(C)
	var progs [2]*graph.Program
	var counters [2]*copyCounter
	for i, expose := range []bool{false, true} {
		counters[i] = &copyCounter{Backend: inner}
		p, err := build(expose).Compile(counters[i], nil)
		require.NoError(t, err)
		defer p.Close()
		require.NoError(t, p.SetInput("w", wv))
		require.NoError(t, p.SetInput("bias", bv))
		progs[i] = p
	}
	read := func(p *graph.Program) []float32 {
		buf, err := p.StateBuffer("conv")
		require.NoError(t, err)
		v := make([]float32, B*C*K)
		require.NoError(t, inner.Read(v, buf))
		return v
	}
	prev := make([]float32, B*C*K)
	for run := 0; run < 6; run++ {
		xv := vec(B * C)
		var ys [2][]float32
		for i, p := range progs {
			require.NoError(t, p.SetInput("x", xv))
			counters[i].copies = 0
			require.NoError(t, p.Run())
			ys[i] = make([]float32, B*C)
			require.NoError(t, p.ReadOutput("y", ys[i]))
		}
		require.Zero(t, counters[0].copies, "run %d: the in-place program copied", run)
		require.NotZero(t, counters[1].copies, "run %d: the program returning the old state must keep it", run)
		require.Equal(t, ys[0], ys[1], "run %d: y", run)
		require.Equal(t, read(progs[0]), read(progs[1]), "run %d: state", run)
		old := make([]float32, B*C*K)
		require.NoError(t, progs[1].ReadOutput("old", old))
		require.Equal(t, prev, old, "run %d: start-of-run state", run)
		prev = read(progs[1])
		// The newest input is the last column of the window.
		for b := 0; b < B; b++ {
			for c := 0; c < C; c++ {
				require.Equal(t, xv[b*C+c], prev[(b*C+c)*K+K-1])
			}
		}
	}

	// BindState moves the in-place update to the new buffer and leaves the old one alone.
	own, err := progs[0].StateBuffer("conv")
	require.NoError(t, err)
	before := read(progs[0])
	ext, err := inner.Alloc(ss)
	require.NoError(t, err)
	require.NoError(t, progs[0].BindState("conv", ext))
	xv := vec(B * C)
	require.NoError(t, progs[0].SetInput("x", xv))
	require.NoError(t, progs[0].Run())
	got := make([]float32, B*C*K)
	require.NoError(t, inner.Read(got, own))
	require.Equal(t, before, got, "the unbound buffer changed")
	require.NoError(t, inner.Read(got, ext))
	for b := 0; b < B; b++ {
		for c := 0; c < C; c++ {
			window := got[(b*C+c)*K : (b*C+c+1)*K]
			require.Equal(t, []float32{0, 0, 0, xv[b*C+c]}, window, "row %d channel %d of the bound state", b, c)
		}
	}
}

// TestReshapeTakesDeadBuffer: a reshape whose input nobody reads afterwards shares the input's
// buffer (one allocation fewer, no copy); one whose input is read later gets its own; results
// are the same either way.
func TestReshapeTakesDeadBuffer(t *testing.T) {
	inner, err := backends.New("cpu")
	require.NoError(t, err)
	build := func(readLater bool) *graph.Graph {
		g := graph.New()
		x := g.Input("x", shapes.Make(shapes.Float32, 2, 6))
		e := ops.Exp(x)
		r := ops.Reshape(e, 3, 4)
		g.Output("r2", ops.Scale(r, 2))
		if readLater {
			g.Output("e1", ops.AddConst(e, 1))
		}
		return g
	}
	xv := []float32{0, 1, 2, 3, -1, -2, 0.5, 0.25, 4, -4, 1.5, 2.5}
	counts := map[bool]int{}
	for _, later := range []bool{false, true} {
		g := build(later)
		ac := &allocCounter{Backend: inner}
		p, err := g.Compile(ac, nil)
		require.NoError(t, err)
		counts[later] = ac.n
		for run := 0; run < 2; run++ {
			require.NoError(t, p.SetInput("x", xv))
			require.NoError(t, p.Run())
			got := make([]float32, 12)
			require.NoError(t, p.ReadOutput("r2", got))
			for i, v := range xv {
				require.InDelta(t, 2*math.Exp(float64(v)), got[i], 1e-5, "later=%v r2[%d]", later, i)
			}
			if later {
				require.NoError(t, p.ReadOutput("e1", got))
				for i, v := range xv {
					require.InDelta(t, math.Exp(float64(v))+1, got[i], 1e-5, "e1[%d]", i)
				}
			}
		}
		require.NoError(t, p.Close())
	}
	// With e read later the reshape needs its own buffer, and e1 one more.
	require.Equal(t, counts[false]+2, counts[true])
}
