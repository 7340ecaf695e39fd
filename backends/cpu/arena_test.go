package cpu

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestArena: borrowed slices have the asked length, come back best-fit, and a borrow that the
// free list can serve does not allocate.
func TestArena(t *testing.T) {
	var a arena
	big := borrow[float32](&a, 1000)
	small := borrow[float32](&a, 10)
	wide := borrow[float64](&a, 50)
	require.Len(t, big, 1000)
	require.Len(t, small, 10)
	require.Len(t, wide, 50)
	giveBack(&a, big)
	giveBack(&a, small)
	giveBack(&a, wide)
	got := borrow[float32](&a, 8)
	require.Len(t, got, 8)
	require.Equal(t, 10, cap(got), "the smallest slice that fits")
	giveBack(&a, got)
	got = borrow[float32](&a, 500)
	require.Equal(t, 1000, cap(got))
	giveBack(&a, got)
	require.Equal(t, 50, cap(borrow[float64](&a, 20)))
	require.Zero(t, testing.AllocsPerRun(20, func() {
		s := borrow[float32](&a, 900)
		giveBack(&a, s)
	}))
}
