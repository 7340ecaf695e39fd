//go:build !race

package cpu_test

const mfRace = false
