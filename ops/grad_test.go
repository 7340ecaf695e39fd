package ops_test

import (
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/backendtest"
	_ "github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/stretchr/testify/require"
)

// gradTol is the bound on the norm-wise relative error of analytic vs numeric gradients.
const gradTol = 1e-6

func cpuBackend(t *testing.T) backends.Backend {
	t.Helper()
	be, err := backends.New("cpu")
	require.NoError(t, err)
	return be
}

func checkGrad(t *testing.T, c backendtest.GradCase) {
	t.Helper()
	res, err := backendtest.CheckGrad(cpuBackend(t), c, 1, 1e-6)
	require.NoError(t, err, c.Name)
	t.Logf("%s: max relative error %.2e (per input %v)", c.Name, res.Max, res.RelErr)
	require.LessOrEqual(t, res.Max, gradTol, c.Name)
}

func TestGradMatMul(t *testing.T) {
	for _, tc := range []struct {
		name   string
		a, b   []int
		ta, tb bool
	}{
		{"plain", []int{3, 4}, []int{4, 5}, false, false},
		{"transA", []int{4, 3}, []int{4, 5}, true, false},
		{"transB", []int{3, 4}, []int{5, 4}, false, true},
		{"both", []int{4, 3}, []int{5, 4}, true, true},
		{"batched-shared-B", []int{2, 3, 4}, []int{4, 5}, false, false},
		{"batched", []int{2, 3, 4}, []int{2, 5, 4}, false, true},
	} {
		ta, tb := tc.ta, tc.tb
		checkGrad(t, backendtest.GradCase{
			Name: "MatMul/" + tc.name,
			Args: []backendtest.Arg{{Dims: tc.a}, {Dims: tc.b}},
			Build: func(in []*graph.Node) []*graph.Node {
				return []*graph.Node{ops.MatMulT(in[0], in[1], ta, tb)}
			},
		})
	}
}

// wrongExp runs Exp's kernel but scales its gradient by 1.01.
type wrongExp struct{ ops.Unary }

func (w wrongExp) KernelOp() ops.Op { return w.Unary }

func (w wrongExp) VJP(in, out, gout []ops.Value) ([]ops.Value, error) {
	g, err := w.Unary.VJP(in, out, gout)
	if err != nil {
		return nil, err
	}
	return []ops.Value{ops.Scale(g[0], 1.01)}, nil
}

func TestGradCheckerDetectsWrongVJP(t *testing.T) {
	res, err := backendtest.CheckGrad(cpuBackend(t), backendtest.GradCase{
		Name: "wrong-exp",
		Args: []backendtest.Arg{{Dims: []int{3, 4}}},
		Build: func(in []*graph.Node) []*graph.Node {
			v := in[0].Builder().Apply(wrongExp{ops.Unary{Kind: ops.ExpKind}}, in[0])
			return []*graph.Node{v[0].(*graph.Node)}
		},
	}, 1, 1e-6)
	require.NoError(t, err)
	require.Greater(t, res.Max, gradTol, "a VJP scaled by 1.01 must fail the check")
	require.InDelta(t, 0.01/1.01, res.Max, 1e-4)
}
