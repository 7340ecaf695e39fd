//go:build race

package cpu_test

// mfRace: the race detector makes sync.Pool (the GEMM packing buffers) drop items, so
// allocation counts are meaningless.
const mfRace = true
