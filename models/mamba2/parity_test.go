package mamba2_test

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	_ "github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/models/mamba2"
	"github.com/mamba2go/mamba2/safetensors"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"
)

// parityTol is the absolute tolerance against the Hugging Face float32 reference.
const parityTol = 1e-4

var goldenCases = []string{"tiny", "groups"}

func caseDir(name string) string { return filepath.Join("..", "..", "testdata", "hf-mamba2", name) }

type golden struct {
	f *safetensors.File
}

func openGolden(t *testing.T, name string) golden {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(caseDir(name), "case.safetensors"))
	require.NoError(t, err)
	return golden{f}
}

func (g golden) f32(t *testing.T, name string) ([]float32, []int) {
	t.Helper()
	d, s, err := g.f.Float32(name)
	require.NoError(t, err, name)
	return d, s
}

func (g golden) ids(t *testing.T) *tensor.Dense {
	t.Helper()
	d, s, err := g.f.Int64("input_ids")
	require.NoError(t, err)
	return tensor.New(tensor.WithShape(s...), tensor.WithBacking(d))
}

func (g golden) scalar(t *testing.T, name string) int {
	t.Helper()
	d, _, err := g.f.Int64(name)
	require.NoError(t, err, name)
	return int(d[0])
}

func loadModel(t *testing.T, be backends.Backend, name string, dt shapes.DType) *mamba2.Model {
	t.Helper()
	m, err := mamba2.Load(be, caseDir(name), mamba2.Options{DType: dt})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// maxAbsDiff compares a result tensor (float32 or float64) with golden float32 data.
func maxAbsDiff(t *testing.T, got *tensor.Dense, want []float32, wantShape []int) float64 {
	t.Helper()
	require.NotNil(t, got)
	require.Equal(t, wantShape, []int(got.Shape()), "shape")
	var m float64
	switch d := got.Data().(type) {
	case []float32:
		for i, v := range d {
			m = math.Max(m, math.Abs(float64(v)-float64(want[i])))
		}
	case []float64:
		for i, v := range d {
			m = math.Max(m, math.Abs(v-float64(want[i])))
		}
	}
	return m
}

func requireClose(t *testing.T, what string, got *tensor.Dense, want []float32, shape []int) {
	t.Helper()
	d := maxAbsDiff(t, got, want, shape)
	t.Logf("%s: max |diff| %.2e", what, d)
	require.LessOrEqual(t, d, parityTol, what)
}

// stateTensor reads a cache state stacked over layers as [L, B, ...].
func stateTensor(t *testing.T, s *mamba2.Session, conv bool) *tensor.Dense {
	t.Helper()
	c := s.Model().Config
	var all []float64
	var dims []int
	for l := 0; l < c.NumHiddenLayers; l++ {
		name := mamba2.SSMStateName(l)
		if conv {
			name = mamba2.ConvStateName(l)
		}
		sh, data, err := s.Cache().Read(name)
		require.NoError(t, err)
		dims = sh.Dims
		switch d := data.(type) {
		case []float32:
			for _, v := range d {
				all = append(all, float64(v))
			}
		case []float64:
			all = append(all, d...)
		}
	}
	return tensor.New(tensor.WithShape(append([]int{c.NumHiddenLayers}, dims...)...), tensor.WithBacking(all))
}

func TestParityFullForward(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			g := openGolden(t, name)
			m := loadModel(t, be, name, shapes.Float32)
			ids := g.ids(t)
			s, err := m.NewSession(ids.Shape()[0])
			require.NoError(t, err)
			defer s.Close()
			s.Outputs = mamba2.Outputs{Logits: true, Hidden: true, PerLayer: true}
			res, err := s.Feed(ids)
			require.NoError(t, err)
			want, shape := g.f32(t, "logits_full")
			requireClose(t, "logits_full", res.Logits, want, shape)
			want, shape = g.f32(t, "hidden_full")
			requireClose(t, "hidden_full", res.Hidden, want, shape)
			want, shape = g.f32(t, "hidden_per_layer")
			per := shape[1] * shape[2] * shape[3]
			require.Len(t, res.PerLayer, shape[0])
			for l := range res.PerLayer {
				requireClose(t, fmt.Sprintf("hidden_per_layer[%d]", l), res.PerLayer[l], want[l*per:(l+1)*per], shape[1:])
			}
		})
	}
}

func TestParityEmbeds(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			g := openGolden(t, name)
			m := loadModel(t, be, name, shapes.Float32)
			x, xs := g.f32(t, "inputs_embeds")
			s, err := m.NewSession(xs[0])
			require.NoError(t, err)
			defer s.Close()
			s.Outputs = mamba2.Outputs{Logits: true, Hidden: true}
			res, err := s.FeedEmbeds(tensor.New(tensor.WithShape(xs...), tensor.WithBacking(x)))
			require.NoError(t, err)
			want, shape := g.f32(t, "logits_full_embeds")
			requireClose(t, "logits_full_embeds", res.Logits, want, shape)
			want, shape = g.f32(t, "hidden_full_embeds")
			requireClose(t, "hidden_full_embeds", res.Hidden, want, shape)
		})
	}
}

func TestParityPrefillThenSteps(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			g := openGolden(t, name)
			m := loadModel(t, be, name, shapes.Float32)
			ids := g.ids(t)
			B, T := ids.Shape()[0], ids.Shape()[1]
			P, K := g.scalar(t, "trace_prefill_len"), g.scalar(t, "trace_num_steps")
			require.Equal(t, T, P+K)
			all := ids.Data().([]int64)
			rows := func(lo, hi int) [][]int { return tokenRows(all, B, T, lo, hi) }
			s, err := m.NewSession(B)
			require.NoError(t, err)
			defer s.Close()
			res, err := s.FeedTokens(rows(0, P))
			require.NoError(t, err)
			want, shape := g.f32(t, "logits_prefill")
			requireClose(t, "logits_prefill", res.Logits, want, shape)
			want, shape = g.f32(t, "conv_state_prefill")
			requireClose(t, "conv_state_prefill", stateTensor(t, s, true), want, shape)
			want, shape = g.f32(t, "ssm_state_prefill")
			requireClose(t, "ssm_state_prefill", stateTensor(t, s, false), want, shape)

			steps, stepShape := g.f32(t, "logits_step")
			V := stepShape[2]
			for i := 0; i < K; i++ {
				res, err := s.FeedTokens(rows(P+i, P+i+1))
				require.NoError(t, err)
				requireClose(t, fmt.Sprintf("logits_step[%d]", i), res.Logits, steps[i*B*V:(i+1)*B*V], []int{B, 1, V})
			}
			require.Equal(t, []int{T, T}[:1][0], s.Cache().Lengths()[0])
			want, shape = g.f32(t, "conv_state")
			requireClose(t, "conv_state", stateTensor(t, s, true), want, shape)
			want, shape = g.f32(t, "ssm_state")
			requireClose(t, "ssm_state", stateTensor(t, s, false), want, shape)
		})
	}
}

// tokenRows returns columns [lo,hi) of a row-major [B, T] batch of token ids, one slice per row:
// the argument FeedTokens takes.
func tokenRows(ids []int64, B, T, lo, hi int) [][]int {
	r := make([][]int, B)
	for b := range r {
		for t := lo; t < hi; t++ {
			r[b] = append(r[b], int(ids[b*T+t]))
		}
	}
	return r
}
