//go:build !race

package cpu

// poisonScratch: see arena_race.go.
const poisonScratch = false
