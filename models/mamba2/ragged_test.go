package mamba2_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/cache"
	"github.com/mamba2go/mamba2/models/mamba2"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"
)

// raggedTol is the bound for batched-vs-solo agreement in float32.
const raggedTol = 1e-4

// soloRun runs one row alone in one prefill: per-position logits [L*V] and every state row.
func soloRun(t *testing.T, m *mamba2.Model, row []int) ([]float64, map[string][]float64) {
	s, err := m.NewSession(1)
	require.NoError(t, err)
	defer s.Close()
	res, err := s.FeedTokens([][]int{row})
	require.NoError(t, err)
	return toFloat64(res.Logits), rowStates(t, s.Cache(), 0)
}

// rowStates reads row b of every state tensor.
func rowStates(t *testing.T, c *cache.Cache, b int) map[string][]float64 {
	out := map[string][]float64{}
	for _, name := range c.Names() {
		sh, data, err := c.Read(name)
		require.NoError(t, err)
		per := sh.Size() / c.Batch()
		all := toFloat64(tensor.New(tensor.WithShape(sh.Size()), tensor.WithBacking(data)))
		out[name] = all[b*per : (b+1)*per]
	}
	return out
}

// padded builds a [B,n] id matrix holding take[b] tokens of row b from offset done[b], on the
// given side.
func padded(rows [][]int, done, take []int, n int, pad mamba2.Padding) *tensor.Dense {
	B := len(rows)
	ids := make([]int64, B*n)
	for b := range rows {
		off := 0
		if pad == mamba2.PadLeft {
			off = n - take[b]
		}
		for i := 0; i < take[b]; i++ {
			ids[b*n+off+i] = int64(rows[b][done[b]+i])
		}
	}
	return tensor.New(tensor.WithShape(B, n), tensor.WithBacking(ids))
}

// TestRaggedMatchesSolo is the property test: random configs, batch sizes, lengths, padding sides
// and random interleavings of prefill chunks, steps, Select, Merge, Snapshot/Restore and Save/Load;
// every row's logits and final state equal its solo run.
func TestRaggedMatchesSolo(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	cases := 220
	if testing.Short() {
		cases = 40
	}
	for i := 0; i < cases; i++ {
		seed := uint64(5000 + i)
		rng := rand.New(rand.NewPCG(seed, 3))
		c := randomConfig(rng)
		m := randomModel(t, be, c, seed, shapes.Float32)
		B := 1 + rng.IntN(4)
		rows := make([][]int, B)
		for b := range rows {
			rows[b] = randomIDs(rng, 1, 1+rng.IntN(14), c.VocabSize)[0]
		}
		t.Run(fmt.Sprintf("seed%d/B%d/K%d/chunk%d", seed, B, c.ConvKernel, c.ChunkSize), func(t *testing.T) {
			raggedCase(t, m, rng, rows)
		})
	}
}

func raggedCase(t *testing.T, m *mamba2.Model, rng *rand.Rand, rows [][]int) {
	V := m.Config.VocabSize
	B := len(rows)
	wantLogits := make([][]float64, B)
	wantState := make([]map[string][]float64, B)
	for b, r := range rows {
		wantLogits[b], wantState[b] = soloRun(t, m, r)
	}
	gotLogits := make([][]float64, B)
	gotState := make([]map[string][]float64, B)

	s, err := m.NewSession(B)
	require.NoError(t, err)
	defer func() { s.Close() }()
	ids := make([]int, B) // current batch position → original row
	for b := range ids {
		ids[b] = b
	}
	done := make([]int, B) // tokens consumed per original row
	var log []string
	for guard := 0; len(ids) > 0 && guard < 200; guard++ {
		switch op := rng.IntN(10); {
		case op == 0 && len(ids) > 1: // Select: permute (and drop nothing)
			perm := rng.Perm(len(ids))
			sel, err := s.Cache().Select(perm)
			require.NoError(t, err)
			require.NoError(t, s.SetCache(sel))
			nids := make([]int, len(ids))
			for j, p := range perm {
				nids[j] = ids[p]
			}
			ids = nids
			log = append(log, fmt.Sprintf("select%v", perm))
			continue
		case op == 1 && len(ids) > 1: // Merge: split in two and merge back in the other order
			k := 1 + rng.IntN(len(ids)-1)
			first, err := s.Cache().Select(seq(0, k))
			require.NoError(t, err)
			second, err := s.Cache().Select(seq(k, len(ids)))
			require.NoError(t, err)
			merged, err := cache.Merge(second, first)
			require.NoError(t, err)
			first.Free()
			second.Free()
			require.NoError(t, s.SetCache(merged))
			ids = append(append([]int(nil), ids[k:]...), ids[:k]...)
			log = append(log, fmt.Sprintf("merge@%d", k))
			continue
		case op == 2: // Snapshot, scribble, Restore
			snap, err := s.Cache().Snapshot()
			require.NoError(t, err)
			junk := make([][]int, len(ids))
			for j := range junk {
				junk[j] = randomIDs(rng, 1, 1+rng.IntN(3), V)[0]
			}
			_, err = s.FeedTokens(junk)
			require.NoError(t, err)
			require.NoError(t, s.Cache().Restore(snap))
			snap.Free()
			log = append(log, "snapshot/restore")
			continue
		case op == 3: // Save / Load
			path := filepath.Join(t.TempDir(), "cache.safetensors")
			require.NoError(t, s.Cache().Save(path))
			loaded, err := cache.Load(m.Backend(), m.CacheSpec(), path)
			require.NoError(t, err)
			require.NoError(t, s.SetCache(loaded))
			log = append(log, "save/load")
			continue
		}
		// A call: n positions, each row consuming 0..n of its remaining tokens.
		n := 1
		if rng.IntN(2) == 0 {
			n = 1 + rng.IntN(6)
		}
		pad := mamba2.Padding(rng.IntN(2))
		take := make([]int, len(ids))
		cur := make([]int, len(ids))
		batchRows := make([][]int, len(ids))
		any := false
		for j, r := range ids {
			left := len(rows[r]) - done[r]
			take[j] = min(left, rng.IntN(n+1))
			if rng.IntN(3) > 0 {
				take[j] = min(left, n)
			}
			cur[j] = done[r]
			batchRows[j] = rows[r]
			any = any || take[j] > 0
		}
		if !any {
			continue
		}
		log = append(log, fmt.Sprintf("feed n=%d %v pad=%d", n, take, pad))
		res, err := s.FeedPadded(padded(batchRows, cur, take, n, pad), take, pad)
		require.NoError(t, err, "%v", log)
		got := toFloat64(res.Logits)
		for j, r := range ids {
			off := 0
			if pad == mamba2.PadLeft {
				off = n - take[j]
			}
			gotLogits[r] = append(gotLogits[r], got[(j*n+off)*V:(j*n+off+take[j])*V]...)
			// Padding outputs are zeros.
			for p := 0; p < n; p++ {
				if p < off || p >= off+take[j] {
					require.Zero(t, maxDiff(got[(j*n+p)*V:(j*n+p+1)*V], make([]float64, V)), "pad output row %d pos %d", j, p)
				}
			}
			done[r] += take[j]
		}
		require.Equal(t, len(ids), len(s.Cache().Lengths()))
		for j, r := range ids {
			require.Equal(t, done[r], s.Cache().Lengths()[j], "cache length of row %d (%v)", r, log)
		}
		// Finished rows: record their state, then drop them from the batch (Select).
		var keep []int
		for j, r := range ids {
			if done[r] == len(rows[r]) {
				gotState[r] = rowStates(t, s.Cache(), j)
			} else {
				keep = append(keep, j)
			}
		}
		if len(keep) == 0 {
			break
		}
		if len(keep) < len(ids) {
			sel, err := s.Cache().Select(keep)
			require.NoError(t, err)
			require.NoError(t, s.SetCache(sel))
			nids := make([]int, len(keep))
			for k, j := range keep {
				nids[k] = ids[j]
			}
			ids = nids
			log = append(log, fmt.Sprintf("drop-finished keep=%v", keep))
		}
	}
	for r := range rows {
		require.Equal(t, len(rows[r]), done[r], "row %d did not finish (%v)", r, log)
		require.LessOrEqual(t, maxDiff(gotLogits[r], wantLogits[r]), raggedTol, "row %d logits (%v)", r, log)
		for name, want := range wantState[r] {
			require.LessOrEqual(t, maxDiff(gotState[r][name], want), raggedTol, "row %d state %s (%v)", r, name, log)
		}
	}
}

func seq(lo, hi int) []int {
	s := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		s = append(s, i)
	}
	return s
}

// TestRaggedGolden cuts the tiny case's rows to lengths 21 and 13 and checks both paddings, with one
// prefill and with prefill+steps, against the golden rows and the golden states after 13 tokens.
func TestRaggedGolden(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	g := openGolden(t, "tiny")
	m := loadModel(t, be, "tiny", shapes.Float32)
	ids := g.ids(t).Data().([]int64)
	full, fs := g.f32(t, "logits_full")
	T, V := fs[1], fs[2]
	lens := []int{21, 13}
	convP, _ := g.f32(t, "conv_state_prefill") // [L,B,C,K] after 13 tokens
	ssmP, _ := g.f32(t, "ssm_state_prefill")
	convF, _ := g.f32(t, "conv_state") // after 21 tokens
	ssmF, _ := g.f32(t, "ssm_state")
	c := m.Config
	for _, pad := range []mamba2.Padding{mamba2.PadRight, mamba2.PadLeft} {
		for _, sched := range [][]int{{21}, {13, 1, 1, 1, 1, 1, 1, 1, 1}, {4, 9, 8}} {
			t.Run(fmt.Sprintf("pad%d/%v", pad, sched), func(t *testing.T) {
				s, err := m.NewSession(2)
				require.NoError(t, err)
				defer s.Close()
				// The padded input: row 1 holds its first 13 tokens.
				in := make([]int64, 2*T)
				for b, L := range lens {
					off := 0
					if pad == mamba2.PadLeft {
						off = T - L
					}
					for p := 0; p < L; p++ {
						in[b*T+off+p] = ids[b*T+p]
					}
				}
				got := make([]float64, 2*T*V)
				start := 0
				for _, n := range sched {
					chunk := make([]int64, 2*n)
					take := make([]int, 2)
					for b, L := range lens {
						copy(chunk[b*n:(b+1)*n], in[b*T+start:b*T+start+n])
						lo, hi := 0, L
						if pad == mamba2.PadLeft {
							lo, hi = T-L, T
						}
						take[b] = max(0, min(hi, start+n)-max(lo, start))
					}
					res, err := s.FeedPadded(tensor.New(tensor.WithShape(2, n), tensor.WithBacking(chunk)), take, pad)
					require.NoError(t, err)
					r := toFloat64(res.Logits)
					for b := 0; b < 2; b++ {
						copy(got[(b*T+start)*V:(b*T+start+n)*V], r[b*n*V:(b+1)*n*V])
					}
					start += n
				}
				for b, L := range lens {
					off := 0
					if pad == mamba2.PadLeft {
						off = T - L
					}
					want := make([]float64, L*V)
					for i := range want {
						want[i] = float64(full[b*T*V+i])
					}
					require.LessOrEqual(t, maxDiff(got[(b*T+off)*V:(b*T+off+L)*V], want), raggedTol, "row %d logits", b)
				}
				// States: row 0 equals the golden final state, row 1 the golden state after 13 tokens.
				per := []int{c.ConvDim() * c.ConvKernel, c.NumHeads * c.HeadDim * c.StateSize}
				for l := 0; l < c.NumHiddenLayers; l++ {
					for k, name := range []string{mamba2.ConvStateName(l), mamba2.SSMStateName(l)} {
						st := rowStates(t, s.Cache(), 0)[name]
						st1 := rowStates(t, s.Cache(), 1)[name]
						final, pre := convF, convP
						if k == 1 {
							final, pre = ssmF, ssmP
						}
						n := per[k]
						w0 := toF64(final[(l*2+0)*n : (l*2+1)*n])
						w1 := toF64(pre[(l*2+1)*n : (l*2+2)*n])
						require.LessOrEqual(t, maxDiff(st, w0), raggedTol, "%s row 0", name)
						require.LessOrEqual(t, maxDiff(st1, w1), raggedTol, "%s row 1", name)
					}
				}
				require.Equal(t, lens, s.Cache().Lengths())
			})
		}
	}
}

func toF64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}
