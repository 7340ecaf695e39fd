//go:build !linux

package cpu

// futexSleeper is unavailable here: pool workers always park on their condition variable.
type futexSleeper struct{}

func (*futexSleeper) ok() bool                           { return false }
func (*futexSleeper) wait(addr *uint32, old uint32) bool { return false }

func futexWake(addr *uint32, n int) {}
