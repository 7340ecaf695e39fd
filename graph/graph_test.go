package graph_test

import (
	"testing"

	"github.com/mamba2go/mamba2/backends"
	_ "github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

func TestSmoke(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	g := graph.New()
	x := g.Input("x", shapes.Make(shapes.Float64, 2, 3))
	w := g.Param("w", shapes.Make(shapes.Float64, 3, 2))
	y := ops.MatMul(x, w)
	loss := ops.Sum(ops.Mul(y, y))
	gw := graph.Grad(loss, w)[0]
	g.Output("y", y)
	g.Output("gw", gw)
	ws := graph.NewWeights(be)
	require.NoError(t, ws.Set("w", shapes.Make(shapes.Float64, 3, 2), []float64{1, 2, 3, 4, 5, 6}))
	p, err := g.Compile(be, ws)
	require.NoError(t, err)
	require.NoError(t, p.SetInput("x", []float64{1, 0, 0, 0, 1, 1}))
	require.NoError(t, p.Run())
	out := make([]float64, 4)
	require.NoError(t, p.ReadOutput("y", out))
	require.Equal(t, []float64{1, 2, 8, 10}, out)
	gwv := make([]float64, 6)
	require.NoError(t, p.ReadOutput("gw", gwv))
	// dL/dW = 2 xᵀ y
	require.Equal(t, []float64{2, 4, 16, 20, 16, 20}, gwv)
}
