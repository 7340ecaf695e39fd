package mamba2_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/models/mamba2"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"
)

// randomConfig draws a small valid configuration exercising groups, conv kernels 2–5, chunk sizes,
// tied/untied heads and biases.
func randomConfig(rng *rand.Rand) mamba2.Config {
	groups := []int{1, 2, 4}[rng.IntN(3)]
	heads := groups * (1 + rng.IntN(2))
	headDim := []int{2, 4, 8}[rng.IntN(3)]
	expand := 1 + rng.IntN(2)
	inner := heads * headDim
	hidden := inner / expand
	if inner%expand != 0 {
		expand, hidden = 1, inner
	}
	return mamba2.Config{
		VocabSize: 11 + rng.IntN(20), HiddenSize: hidden, StateSize: []int{2, 4, 8}[rng.IntN(3)],
		NumHiddenLayers: 1 + rng.IntN(2), Expand: expand, ConvKernel: 2 + rng.IntN(4), NGroups: groups,
		HeadDim: headDim, NumHeads: heads, ChunkSize: []int{1, 2, 3, 4, 8, 64}[rng.IntN(6)], TimeStepRank: 1,
		UseBias: rng.IntN(2) == 0, UseConvBias: rng.IntN(3) != 0, TieWordEmbeddings: rng.IntN(2) == 0,
		RMSNorm: true, ResidualInFP32: true, LayerNormEpsilon: 1e-5,
		TimeStepMin: 0.001, TimeStepMax: 0.1, TimeStepFloor: 1e-4, InitializerRange: 0.1,
		TimeStepLimit: [2]float64{0, math.Inf(1)}, HiddenAct: "silu", GroupedNorm: rng.IntN(4) == 0,
		Layout: "hf",
	}
}

// randomModel initialises weights for c and perturbs the ones the HF init sets to constants, so
// that every term of the model matters.
func randomModel(t *testing.T, be backends.Backend, c mamba2.Config, seed uint64, dt shapes.DType) *mamba2.Model {
	t.Helper()
	ck, err := mamba2.RandomCheckpoint(c, seed)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(seed, 9))
	for _, tn := range ck.Tensors {
		d := tn.Data().([]float32)
		for i := range d {
			d[i] += float32(0.1 * rng.NormFloat64())
		}
	}
	m, err := mamba2.New(be, ck, mamba2.Options{DType: dt})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// randomSchedule splits T tokens into chunks mixing steps, chunks shorter than the conv kernel and
// chunks not multiples of the chunk size.
func randomSchedule(rng *rand.Rand, T int) []int {
	var s []int
	for left := T; left > 0; {
		var n int
		switch rng.IntN(3) {
		case 0:
			n = 1
		case 1:
			n = 1 + rng.IntN(3)
		default:
			n = 1 + rng.IntN(left)
		}
		n = min(n, left)
		s = append(s, n)
		left -= n
	}
	return s
}

func randomIDs(rng *rand.Rand, B, T, V int) [][]int {
	rows := make([][]int, B)
	for b := range rows {
		for t := 0; t < T; t++ {
			rows[b] = append(rows[b], rng.IntN(V))
		}
	}
	return rows
}

func toFloat64(t *tensor.Dense) []float64 {
	switch d := t.Data().(type) {
	case []float32:
		out := make([]float64, len(d))
		for i, v := range d {
			out[i] = float64(v)
		}
		return out
	case []float64:
		return d
	}
	return nil
}

func maxDiff(a, b []float64) float64 {
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(a[i]-b[i]))
	}
	return m
}

// cacheValues returns every state tensor of the session, concatenated.
func cacheValues(t *testing.T, s *mamba2.Session) []float64 {
	var all []float64
	for _, name := range s.Cache().Names() {
		_, data, err := s.Cache().Read(name)
		require.NoError(t, err)
		switch d := data.(type) {
		case []float32:
			for _, v := range d {
				all = append(all, float64(v))
			}
		case []float64:
			all = append(all, d...)
		}
	}
	return all
}

func TestSplitInvariance(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	for _, tc := range []struct {
		dt  shapes.DType
		tol float64
		n   int
	}{{shapes.Float64, 1e-9, 30}, {shapes.Float32, 1e-4, 30}} {
		for i := 0; i < tc.n; i++ {
			seed := uint64(1000 + i)
			rng := rand.New(rand.NewPCG(seed, 1))
			c := randomConfig(rng)
			m := randomModel(t, be, c, seed, tc.dt)
			B, T := 1+rng.IntN(3), 1+rng.IntN(24)
			ids := randomIDs(rng, B, T, c.VocabSize)
			sched := randomSchedule(rng, T)
			t.Run(fmt.Sprintf("%s/seed%d/K%d/chunk%d/G%d/T%d/%v", tc.dt, seed, c.ConvKernel, c.ChunkSize, c.NGroups, T, sched), func(t *testing.T) {
				whole, err := m.NewSession(B)
				require.NoError(t, err)
				defer whole.Close()
				ref, err := whole.FeedTokens(ids)
				require.NoError(t, err)
				want := toFloat64(ref.Logits)
				V := c.VocabSize

				split, err := m.NewSession(B)
				require.NoError(t, err)
				defer split.Close()
				start := 0
				for _, n := range sched {
					part := make([][]int, B)
					for b := range part {
						part[b] = ids[b][start : start+n]
					}
					res, err := split.FeedTokens(part)
					require.NoError(t, err)
					got := toFloat64(res.Logits)
					for b := 0; b < B; b++ {
						d := maxDiff(got[b*n*V:(b+1)*n*V], want[(b*T+start)*V:(b*T+start+n)*V])
						require.LessOrEqual(t, d, tc.tol, "logits of row %d, tokens %d..%d", b, start, start+n-1)
					}
					start += n
				}
				require.LessOrEqual(t, maxDiff(cacheValues(t, split), cacheValues(t, whole)), tc.tol, "final states")
				require.Equal(t, whole.Cache().Lengths(), split.Cache().Lengths())
			})
		}
	}
}
