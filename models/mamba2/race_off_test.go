//go:build !race

package mamba2_test

const raceEnabled = false
