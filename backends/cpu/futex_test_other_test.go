//go:build !linux

package cpu

import "time"

func lightSleepForTest() time.Duration { return time.Millisecond }
