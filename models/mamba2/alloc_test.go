package mamba2_test

import (
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/models/mamba2"
	"github.com/mamba2go/mamba2/quant"
	"github.com/stretchr/testify/require"
)

// TestStepDoesNotAllocate: the decode path allocates nothing after its first call, with every
// weight format.
func TestStepDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	be, err := backends.New("cpu")
	require.NoError(t, err)
	for _, c := range []struct {
		name string
		f    quant.Format
	}{{"tiny", quant.F32}, {"groups", quant.F32}, {"tiny", quant.BF16}, {"tiny", quant.F16}, {"tiny", quant.Int8}} {
		name := c.name + "/" + c.f.String()
		m, err := mamba2.Load(be, caseDir(c.name), mamba2.Options{Weights: c.f})
		require.NoError(t, err)
		defer m.Close()
		s, err := m.NewSession(2)
		require.NoError(t, err)
		defer s.Close()
		tokens := []int64{3, 4}
		logits := make([]float32, 2*m.Config.VocabSize)
		require.NoError(t, s.Step(tokens, logits))
		allocs := testing.AllocsPerRun(20, func() {
			if err := s.Step(tokens, logits); err != nil {
				t.Fatal(err)
			}
		})
		require.Zero(t, allocs, "allocations per Step (%s)", name)
	}
}
