package graph_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

// mambaLike sizes a one-layer Mamba2-like language model.
type mambaLike struct{ B, T, D, H, P, G, N, K, V int }

func (m mambaLike) inner() int { return m.H * m.P }

// buildMambaLike returns a graph using every kind of op: embedding Gather, RMSNorm, the in/out
// projections, Slice, CausalConv1D with a conv state, Softplus/Clamp for dt, SSD with an SSM state,
// GatedRMSNorm, tied logits, CrossEntropy and Softmax, a few layout ops, and — when train is set —
// the gradients of the loss with respect to every parameter (which run every backward kernel).
// It also returns the parameters and their shapes.
func buildMambaLike(dt shapes.DType, m mambaLike, train bool) (*graph.Graph, map[string]shapes.Shape) {
	g := graph.New()
	params := map[string]shapes.Shape{}
	param := func(name string, dims ...int) *graph.Node {
		s := shapes.Make(dt, dims...)
		params[name] = s
		return g.Param(name, s)
	}
	I, GN := m.inner(), m.G*m.N
	convDim := I + 2*GN
	ids := g.Input("ids", shapes.Make(shapes.Int64, m.B, m.T))
	targets := g.Input("targets", shapes.Make(shapes.Int64, m.B, m.T))
	emb := param("emb", m.V, m.D)
	normW := param("norm", m.D)
	inProj := param("in_proj", m.D, 2*I+2*GN+m.H)
	convW := param("conv_w", convDim, m.K)
	convB := param("conv_b", convDim)
	dtBias := param("dt_bias", m.H)
	aLog := param("A_log", m.H)
	dParam := param("D", m.H)
	gnW := param("gated_norm", I)
	outProj := param("out_proj", I, m.D)
	convState := g.State("conv", shapes.Make(dt, m.B, convDim, m.K))
	ssmState := g.State("ssm", shapes.Make(dt, m.B, m.H, m.P, m.N))

	h := ops.Gather(emb, ids)
	proj := ops.MatMul(ops.RMSNorm(h, normW, 1e-5), inProj)
	z := ops.Slice(proj, -1, 0, I)
	xBC := ops.Slice(proj, -1, I, I+convDim)
	dtRaw := ops.Slice(proj, -1, I+convDim, I+convDim+m.H)
	conv, newConv := ops.CausalConv1D(xBC, convW, convB, convState)
	g.SetState("conv", newConv)
	xBC = ops.SiLU(conv)
	x := ops.Reshape(ops.Slice(xBC, -1, 0, I), m.B, m.T, m.H, m.P)
	bm := ops.Reshape(ops.Slice(xBC, -1, I, I+GN), m.B, m.T, m.G, m.N)
	cm := ops.Reshape(ops.Slice(xBC, -1, I+GN, I+2*GN), m.B, m.T, m.G, m.N)
	dtv := ops.Clamp(ops.Softplus(ops.Add(dtRaw, dtBias)), 0, math.Inf(1))
	a := ops.Neg(ops.Exp(aLog))
	y, newSSM := ops.SSD(x, dtv, a, bm, cm, dParam, ssmState, 8)
	g.SetState("ssm", newSSM)
	yn := ops.GatedRMSNorm(ops.Reshape(y, m.B, m.T, I), z, gnW, 1e-5, 1)
	out := ops.Add(h, ops.MatMul(yn, outProj))
	logits := ops.MatMulT(out, emb, false, true)
	loss := ops.Mean(ops.CrossEntropy(logits, targets))
	g.Output("loss", loss)
	g.Output("probs", ops.Softmax(logits, -1))
	g.Output("layout", ops.Transpose(ops.Pad(ops.Concat(-1, z, dtv), 1, 1, 0), 0, 2, 1))
	if train {
		names := make([]string, 0, len(params))
		nodes := make([]*graph.Node, 0, len(params))
		for _, n := range []*graph.Node{emb, normW, inProj, convW, convB, dtBias, aLog, dParam, gnW, outProj} {
			names = append(names, n.Name())
			nodes = append(nodes, n)
		}
		for i, gr := range graph.Grad(loss, nodes...) {
			g.Output("d_"+names[i], gr)
		}
	}
	return g, params
}

func mambaLikeWeights(t testing.TB, w *graph.Weights, params map[string]shapes.Shape) {
	rng := rand.New(rand.NewPCG(7, 8))
	for name, s := range params {
		v := randSlice(rng, s.Size(), 0.3)
		var data any = v
		if s.DType == shapes.Float32 {
			data = toF32(v)
		}
		require.NoError(t, w.Set(name, s, data))
	}
}

// TestRunDoesNotAllocateAnyKernel: a Mamba-like model (prefill and training variants, on a serial
// and a pooled backend) runs without heap allocation after warm-up — every forward and backward
// kernel is in it.
func TestRunDoesNotAllocateAnyKernel(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	m := mambaLike{B: 2, T: 24, D: 32, H: 4, P: 16, G: 2, N: 16, K: 4, V: 50}
	for _, threads := range []int{1, 3} {
		be := cpu.New(threads)
		for _, dt := range []shapes.DType{shapes.Float32, shapes.Float64} {
			for _, train := range []bool{false, true} {
				g, params := buildMambaLike(dt, m, train)
				require.NoError(t, g.Err())
				w := graph.NewWeights(be)
				mambaLikeWeights(t, w, params)
				p, err := g.Compile(be, w)
				require.NoError(t, err)
				ids := make([]int64, m.B*m.T)
				for i := range ids {
					ids[i] = int64((i * 7) % m.V)
				}
				require.NoError(t, p.SetInput("ids", ids))
				require.NoError(t, p.SetInput("targets", ids))
				require.NoError(t, p.Run())
				loss := make([]float64, 1)
				if dt == shapes.Float64 {
					require.NoError(t, p.ReadOutput("loss", loss))
					require.False(t, math.IsNaN(loss[0]) || math.IsInf(loss[0], 0), "loss %v", loss[0])
				}
				allocs := testing.AllocsPerRun(5, func() {
					if err := p.Run(); err != nil {
						t.Fatal(err)
					}
				})
				require.Zerof(t, allocs, "threads=%d %s train=%v: Program.Run allocated %.1f times per run",
					threads, dt, train, allocs)
				require.NoError(t, p.Close())
			}
		}
		be.Close()
	}
}
