package cpu

import (
	"syscall"
	"time"
	"unsafe"
)

// lightSleep bounds a worker's futex sleep (see pool): long enough to span the gaps between
// the loops of one run, short enough that an idle worker soon gives its P back.
const lightSleep = 2 * time.Millisecond

const (
	futexWaitPrivate = 0 | 128 // FUTEX_WAIT | FUTEX_PRIVATE_FLAG
	futexWakePrivate = 1 | 128 // FUTEX_WAKE | FUTEX_PRIVATE_FLAG
)

// futexSleeper is one worker's futex wait, with its timeout allocated once (a pointer passed to
// syscall.Syscall6 escapes).
type futexSleeper struct{ ts *syscall.Timespec }

func (f *futexSleeper) ok() bool { return true }

// wait sleeps while *addr == old, for at most lightSleep. It reports false when it timed out.
func (f *futexSleeper) wait(addr *uint32, old uint32) bool {
	if f.ts == nil {
		ts := syscall.NsecToTimespec(int64(lightSleep))
		f.ts = &ts
	}
	_, _, errno := syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitPrivate,
		uintptr(old), uintptr(unsafe.Pointer(f.ts)), 0, 0)
	return errno != syscall.ETIMEDOUT
}

// futexWake wakes up to n threads asleep on addr.
func futexWake(addr *uint32, n int) {
	syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakePrivate, uintptr(n), 0, 0, 0)
}
