package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestParallelForCoversEachItemOnce runs many loops of many sizes back to back on one kernel's
// parallel state, so that workers woken for one loop arrive during later ones, and checks that
// every item of every loop ran exactly once and before parallelFor returned.
func TestParallelForCoversEachItemOnce(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 8} {
		p := newPool(threads)
		var l parallel
		for round := 0; round < 300; round++ {
			n := round*7%200 + 1
			minPer := round % 5
			pieces := 1 + round%9
			counts := make([]int32, n)
			var ranges atomic.Int32
			fn := func(lo, hi int) {
				if lo < 0 || hi > n || lo >= hi {
					t.Errorf("threads %d: range [%d,%d) of %d items", threads, lo, hi, n)
					return
				}
				ranges.Add(1)
				for i := lo; i < hi; i++ {
					atomic.AddInt32(&counts[i], 1)
				}
			}
			p.parallelPieces(&l, n, minPer, pieces, fn)
			for i, c := range counts {
				if c != 1 {
					t.Fatalf("threads %d, n %d, round %d: item %d ran %d times", threads, n, round, i, c)
				}
			}
			if ranges.Load() == 0 {
				t.Fatalf("threads %d, n %d: fn never ran", threads, n)
			}
		}
		p.close()
	}
}

// TestParallelForConcurrentLoops runs loops of different kernels from several goroutines at once
// on one pool, as programs sharing a backend do.
func TestParallelForConcurrentLoops(t *testing.T) {
	p := newPool(3)
	defer p.close()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var l parallel
			for round := 0; round < 200; round++ {
				n := 50 + round%70 + g
				sum := make([]int64, n)
				p.parallelFor(&l, n, 1, func(lo, hi int) {
					for i := lo; i < hi; i++ {
						sum[i] += int64(i) // each item is written by one piece only
					}
				})
				for i, s := range sum {
					if s != int64(i) {
						t.Errorf("goroutine %d, round %d: item %d = %d", g, round, i, s)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// TestParallelForPieceBounds checks that the pieces' bounds depend only on the loop's size, so
// that a kernel computes the same bits on every run, whichever thread takes which piece.
func TestParallelForPieceBounds(t *testing.T) {
	p := newPool(2)
	defer p.close()
	var l parallel
	bounds := func() map[[2]int]bool {
		var mu sync.Mutex
		seen := map[[2]int]bool{}
		p.parallelFor(&l, 1000, 1, func(lo, hi int) {
			mu.Lock()
			seen[[2]int{lo, hi}] = true
			mu.Unlock()
		})
		return seen
	}
	want := bounds()
	if len(want) < 2 {
		t.Fatalf("1000 items on 2 threads ran as %d piece(s)", len(want))
	}
	for i := 0; i < 50; i++ {
		got := bounds()
		if len(got) != len(want) {
			t.Fatalf("run %d: %d pieces, first run %d", i, len(got), len(want))
		}
		for b := range got {
			if !want[b] {
				t.Fatalf("run %d: piece %v not in the first run's", i, b)
			}
		}
	}
}

// TestPoolWorkersWakeFromEverySleep spaces loops further apart than a worker's futex sleep, so
// that workers park, and checks that they still wake and join: some piece of every loop must run
// while another is running.
func TestPoolWorkersWakeFromEverySleep(t *testing.T) {
	for _, gap := range []time.Duration{0, 3 * lightSleepForTest()} {
		p := newPool(2)
		var l parallel
		joined := 0
		for round := 0; round < 5; round++ {
			time.Sleep(gap)
			var inside, most atomic.Int32
			p.parallelFor(&l, 32, 1, func(lo, hi int) {
				n := inside.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(500 * time.Microsecond)
				inside.Add(-1)
			})
			if most.Load() > 1 {
				joined++
			}
		}
		p.close()
		if joined == 0 {
			t.Errorf("gap %v: no worker joined any of 5 loops of 32 pieces of 0.5 ms", gap)
		}
	}
}

// TestPoolWithOneProc runs loops with GOMAXPROCS=1, where a worker can only run when the caller
// blocks or is preempted, and with GOMAXPROCS changing under a sleeping worker.
func TestPoolWithOneProc(t *testing.T) {
	p := newPool(3)
	defer p.close()
	var l parallel
	for _, procs := range []int{1, 2, 1} {
		prev := runtime.GOMAXPROCS(procs)
		for round := 0; round < 50; round++ {
			var sum atomic.Int64
			p.parallelFor(&l, 1000, 1, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					sum.Add(int64(i))
				}
			})
			if got := sum.Load(); got != 999*1000/2 {
				t.Fatalf("GOMAXPROCS %d: sum %d", procs, got)
			}
		}
		runtime.GOMAXPROCS(prev)
	}
}

// TestPoolCloseStopsWorkers: after close, the pool's goroutines end, whether asleep or parked.
func TestPoolCloseStopsWorkers(t *testing.T) {
	base := runtime.NumGoroutine()
	p := newPool(8)
	var l parallel
	p.parallelFor(&l, 100, 1, func(lo, hi int) {})
	p.close()
	p.close() // closing twice is harmless
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Log(string(buf[:runtime.Stack(buf, true)]))
			t.Fatalf("%d goroutines after close, %d before the pool", runtime.NumGoroutine(), base)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestParallelForWaitsForSlowWorker makes the worker's piece outlast the caller's watch (so the
// caller blocks until the worker signals) and then runs quick loops whose pieces the workers
// finish while the caller watches (so no signal is sent): every loop must return only after all
// its pieces ran, which a signal left over from one loop and taken by the next would break.
func TestParallelForWaitsForSlowWorker(t *testing.T) {
	p := newPool(2)
	defer p.close()
	var l parallel
	for round := 0; round < 20; round++ {
		slow := round%2 == 0
		var started, finished atomic.Int32
		p.parallelPieces(&l, 2, 1, 1, func(lo, hi int) {
			if started.Add(1) == 1 {
				// The first piece waits for the second to start, so that the worker holds one.
				for deadline := time.Now().Add(time.Second); started.Load() < 2 && time.Now().Before(deadline); {
					runtime.Gosched()
				}
				finished.Add(1)
				return
			}
			if slow {
				time.Sleep(3 * time.Millisecond)
			}
			finished.Add(1)
		})
		if got := finished.Load(); got != 2 {
			t.Fatalf("round %d (slow %v): parallelPieces returned with %d of 2 pieces finished", round, slow, got)
		}
	}
}
