//go:build !amd64

package cpu

// canSpin is false off amd64: pool workers go straight to sleep between loops.
const canSpin = false

func cpuRelax() {}
