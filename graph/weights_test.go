package graph_test

import (
	"testing"

	"github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

// TestWeightsAlloc: Alloc installs a zeroed buffer under the name that programs bind to, a
// piecewise fill is what they read, and a second Alloc of the name replaces (and frees) the
// first; invalid shapes are errors naming the weight.
func TestWeightsAlloc(t *testing.T) {
	be := cpu.New(1)
	defer be.Close()
	w := graph.NewWeights(be)
	defer w.Free()
	s := shapes.Make(shapes.Float32, 2, 3)
	buf, err := w.Alloc("w", s)
	require.NoError(t, err)
	got, ok := w.Get("w")
	require.True(t, ok)
	require.Same(t, buf, got)
	_, data, err := w.Read("w")
	require.NoError(t, err)
	require.Equal(t, make([]float32, 6), data, "zero until filled")

	require.NoError(t, be.WriteRange(buf, 0, []float32{1, 2, 3}))
	require.NoError(t, be.WriteRange(buf, 3, []float32{4, 5, 6}))
	g := graph.New()
	x := g.Input("x", s)
	g.Output("y", ops.Add(x, g.Param("w", s)))
	p, err := g.Compile(be, w)
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.SetInput("x", []float32{10, 20, 30, 40, 50, 60}))
	require.NoError(t, p.Run())
	y := make([]float32, 6)
	require.NoError(t, p.ReadOutput("y", y))
	require.Equal(t, []float32{11, 22, 33, 44, 55, 66}, y)

	again, err := w.Alloc("w", shapes.Make(shapes.Float64, 4))
	require.NoError(t, err)
	got, _ = w.Get("w")
	require.Same(t, again, got)
	require.Error(t, be.Write(buf, make([]float32, 6)), "the replaced buffer is freed")
	require.Equal(t, []string{"w"}, w.Names())

	_, err = w.Alloc("bad", shapes.Make(shapes.Float32, 2, -1))
	require.ErrorContains(t, err, `weight "bad"`)
	_, ok = w.Get("bad")
	require.False(t, ok)
}
