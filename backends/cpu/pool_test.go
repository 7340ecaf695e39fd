package cpu

import (
	"sync"
	"sync/atomic"
	"testing"
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
