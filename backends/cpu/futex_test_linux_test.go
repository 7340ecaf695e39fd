package cpu

import "time"

func lightSleepForTest() time.Duration { return lightSleep }
