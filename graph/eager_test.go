package graph_test

import (
	"fmt"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

const eagerLayers = 3

// layeredStates builds a stack like a model's layers, each with a recurrent state:
//
//	h = x; for each layer l: y = h + s_l; s_l ← y + s_l; h = y;  out = h
//
// Each new state is computed right after the layer's last read of the old one, so programs
// write it back at once and reuse its buffer. readLate adds s_0 to out at the end, after its
// new value exists (so s_0 must wait for the end of the run); outputWrites also returns every
// new state as an output (so each keeps its own buffer).
func layeredStates(readLate, outputWrites bool) *graph.Graph {
	s := shapes.Make(shapes.Float64, 4)
	g := graph.New()
	x := g.Input("x", s)
	h := x
	var first *graph.Node
	for l := 0; l < eagerLayers; l++ {
		name := fmt.Sprintf("s%d", l)
		st := g.State(name, s)
		if l == 0 {
			first = st
		}
		y := ops.Add(h, st)
		next := ops.Add(y, st)
		g.SetState(name, next)
		if outputWrites {
			g.Output("new_"+name, next)
		}
		h = y
	}
	if readLate {
		h = ops.Add(h, first)
	}
	g.Output("out", h)
	return g
}

// layeredReference runs layeredStates on the host.
func layeredReference(readLate bool, x []float64, states [][]float64) []float64 {
	h := append([]float64(nil), x...)
	old0 := append([]float64(nil), states[0]...)
	for l := range states {
		for i := range h {
			y := h[i] + states[l][i]
			states[l][i] = y + states[l][i]
			h[i] = y
		}
	}
	if readLate {
		for i := range h {
			h[i] += old0[i]
		}
	}
	return h
}

// TestEagerStateWriteBack: states written back right after the step that computes them give
// the same outputs and states as the end-of-run write-back, over several runs, with a bound
// external state buffer too, and also when an old value is read after the new one exists.
func TestEagerStateWriteBack(t *testing.T) {
	be := cpu.New(1)
	defer be.Close()
	for _, readLate := range []bool{false, true} {
		t.Run(fmt.Sprintf("readLate=%t", readLate), func(t *testing.T) {
			p, err := layeredStates(readLate, false).Compile(be, nil)
			require.NoError(t, err)
			defer p.Close()
			ext, err := be.Alloc(shapes.Make(shapes.Float64, 4))
			require.NoError(t, err)
			defer be.Free(ext)
			require.NoError(t, be.Write(ext, []float64{0.5, -1, 2, 0}))
			require.NoError(t, p.BindState("s1", ext))
			states := [][]float64{make([]float64, 4), {0.5, -1, 2, 0}, make([]float64, 4)}
			for run := 0; run < 3; run++ {
				x := []float64{1, 2, float64(run), -3}
				want := layeredReference(readLate, x, states)
				require.NoError(t, p.SetInput("x", x))
				require.NoError(t, p.Run())
				out := make([]float64, 4)
				require.NoError(t, p.ReadOutput("out", out))
				require.Equal(t, want, out, "run %d: out", run)
				for l := range states {
					buf, err := p.StateBuffer(fmt.Sprintf("s%d", l))
					require.NoError(t, err)
					got := make([]float64, 4)
					require.NoError(t, be.Read(got, buf))
					require.Equal(t, states[l], got, "run %d: state s%d", run, l)
				}
			}
		})
	}
}

// allocCounter counts the buffers a backend allocates.
type allocCounter struct {
	backends.Backend
	n int
}

func (a *allocCounter) Alloc(s shapes.Shape) (backends.Buffer, error) {
	a.n++
	return a.Backend.Alloc(s)
}

// TestEagerStateWriteBackSavesBuffers: a program does not keep a buffer per new state until the
// end of the run when it can write each back at once: the layers share one.
func TestEagerStateWriteBackSavesBuffers(t *testing.T) {
	count := func(readLate, outputWrites bool) int {
		be := &allocCounter{Backend: cpu.New(1)}
		defer be.Close()
		p, err := layeredStates(readLate, outputWrites).Compile(be, nil)
		require.NoError(t, err)
		require.NoError(t, p.Close())
		return be.n
	}
	eager, kept := count(false, false), count(false, true)
	t.Logf("buffers: %d with early write-back, %d with every new state kept", eager, kept)
	require.LessOrEqual(t, eager, kept-(eagerLayers-1), "new states kept to the end of the run")
	require.Equal(t, eager+1, count(true, false), "s0, read after its new value exists, keeps its own buffer")
}

// TestBoundStatesAllocateNothing: a program allocates its own buffer for a state only when it
// runs (or is asked for the buffer) with none bound, so binding every state first — as a cache
// does — leaves no second copy of the state; and the bound program computes the same outputs.
func TestBoundStatesAllocateNothing(t *testing.T) {
	for _, readLate := range []bool{false, true} {
		t.Run(fmt.Sprintf("readLate=%t", readLate), func(t *testing.T) {
			run := func(bind bool) (allocs int, out []float64) {
				be := &allocCounter{Backend: cpu.New(1)}
				defer be.Close()
				p, err := layeredStates(readLate, false).Compile(be, nil)
				require.NoError(t, err)
				defer p.Close()
				if bind {
					for _, st := range p.States() {
						buf, err := be.Backend.Alloc(st.Shape) // not counted: the caller's
						require.NoError(t, err)
						require.NoError(t, be.Write(buf, []float64{0.5, -1, 2, 0}))
						require.NoError(t, p.BindState(st.Name, buf))
					}
				}
				for r := 0; r < 3; r++ {
					require.NoError(t, p.SetInput("x", []float64{1, 2, float64(r), -3}))
					require.NoError(t, p.Run())
				}
				out = make([]float64, 4)
				require.NoError(t, p.ReadOutput("out", out))
				if !bind {
					own, err := p.StateBuffer("s1")
					require.NoError(t, err)
					again, err := p.StateBuffer("s1")
					require.NoError(t, err)
					require.Same(t, own, again)
				}
				return be.n, out
			}
			boundAllocs, boundOut := run(true)
			ownAllocs, _ := run(false)
			require.Equal(t, eagerLayers, ownAllocs-boundAllocs, "buffers of the program's own for its states")
			states := [][]float64{{0.5, -1, 2, 0}, {0.5, -1, 2, 0}, {0.5, -1, 2, 0}}
			var want []float64
			for r := 0; r < 3; r++ {
				want = layeredReference(readLate, []float64{1, 2, float64(r), -3}, states)
			}
			require.Equal(t, want, boundOut)
		})
	}
}
