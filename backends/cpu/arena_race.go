//go:build race

package cpu

// poisonScratch fills borrowed scratch with NaN in race-detector builds (make test runs them), so
// a kernel that reads scratch it did not write first fails its tests instead of passing on zeros.
const poisonScratch = true
