//go:build linux

package kernels

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestPerfTable prints single-threaded throughput measured in thread CPU time (getrusage
// RUSAGE_THREAD), which stays meaningful on a machine shared with other jobs, next to wall
// time. Run with MAMBA2_KERNELS_PERF=1 go test -run PerfTable -v ./backends/cpu/kernels/.
func TestPerfTable(t *testing.T) {
	if os.Getenv("MAMBA2_KERNELS_PERF") == "" {
		t.Skip("set MAMBA2_KERNELS_PERF=1")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	// measure runs f reps times per block, three blocks after a warm-up, and returns the best
	// per-call CPU and wall times.
	measure := func(reps int, f func()) (cpuT, wall time.Duration) {
		runtime.GC()
		f()
		cpuT, wall = time.Hour, time.Hour
		for b := 0; b < 3; b++ {
			c0, w0 := cpu(), time.Now()
			for r := 0; r < reps; r++ {
				f()
			}
			cpuT, wall = min(cpuT, (cpu()-c0)/time.Duration(reps)), min(wall, time.Since(w0)/time.Duration(reps))
		}
		return cpuT, wall
	}
	fmt.Printf("Kernels() = %s\n", Kernels())
	for _, s := range matShapes {
		n, k := s[0], s[1]
		w, x, y := benchMatrix(n, k), benchMatrix(1, k), make([]float32, n)
		bf, i8, f16 := NewBF16Matrix(w, n, k), NewInt8Matrix(w, n, k), NewF16Matrix(w, n, k)
		reps := max(3, 100_000_000/(n*k))
		for _, v := range []struct {
			name  string
			bytes int
			f     func()
		}{
			{"MatVecT f32", n * k * 4, func() { MatVecT(y, w, x, n, k) }},
			{"MatVecTBF16", n * k * 2, func() { MatVecTBF16(y, bf, x, 0, n) }},
			{"MatVecTInt8", n * k, func() { MatVecTInt8(y, i8, x, 0, n) }},
			{"MatVecTF16", n * k * 2, func() { MatVecTF16(y, f16, x, 0, n) }},
		} {
			c, wl := measure(reps, v.f)
			fmt.Printf("%-12s %5dx%d: %6.1f GB/s cpu-time  %6.1f GB/s wall  (%.0f µs)\n", v.name, n, k,
				float64(v.bytes)/c.Seconds()/1e9, float64(v.bytes)/wl.Seconds()/1e9, float64(wl.Microseconds()))
		}
	}
	for _, s := range gemmShapes {
		m, n, k := s[0], s[1], s[2]
		a, w, c := benchMatrix(m, k), benchMatrix(n, k), make([]float32, m*n)
		flop := 2 * float64(m) * float64(n) * float64(k)
		ct, wl := measure(max(1, 2_000_000_000/int(flop)), func() { GemmNTRange(c, a, w, m, n, k, 0, m, false) })
		fmt.Printf("GemmNT go   %dx%dx%d: %6.1f GFLOP/s cpu-time  %6.1f wall\n", m, n, k, flop/ct.Seconds()/1e9, flop/wl.Seconds()/1e9)
		if _, ok := BLAS(); ok {
			prev := Threads()
			SetThreads(1)
			_, wl := measure(max(1, 2_000_000_000/int(flop)), func() { SGEMM(false, true, m, n, k, 1, a, k, w, k, 0, c, n) })
			SetThreads(prev)
			fmt.Printf("GemmNT blas1 %dx%dx%d: %6.1f GFLOP/s wall (1 OpenBLAS thread)\n", m, n, k, flop/wl.Seconds()/1e9)
		}
	}
	{
		m, n, k := 512, 768, 3352
		a, b, c := benchMatrix(m, k), benchMatrix(k, n), make([]float32, m*n)
		flop := 2 * float64(m) * float64(n) * float64(k)
		ct, wl := measure(3, func() { GemmNN(c, a, b, m, n, k, false) })
		fmt.Printf("GemmNN go   %dx%dx%d: %6.1f GFLOP/s cpu-time  %6.1f wall\n", m, n, k, flop/ct.Seconds()/1e9, flop/wl.Seconds()/1e9)
		m, n, k = 3352, 768, 512
		a, b, c = benchMatrix(k, m), benchMatrix(k, n), make([]float32, m*n)
		ct, wl = measure(3, func() { GemmTN(c, a, b, m, n, k, false) })
		fmt.Printf("GemmTN go   %dx%dx%d: %6.1f GFLOP/s cpu-time  %6.1f wall\n", m, n, k, flop/ct.Seconds()/1e9, flop/wl.Seconds()/1e9)
	}
	// Two workers: the Go kernel split by columns (each worker packs only its rows of W) against
	// OpenBLAS on two threads, to check BLASMinRows.
	for _, m := range []int{16, 64, 512} {
		n, k := 3352, 768
		a, w, c := benchMatrix(m, k), benchMatrix(n, k), make([]float32, m*n)
		flop := 2 * float64(m) * float64(n) * float64(k)
		reps := max(1, 2_000_000_000/int(flop))
		_, wl := measure(reps, func() {
			var wg sync.WaitGroup
			half := (n/2 + 31) / 32 * 32
			for _, r := range [][2]int{{0, half}, {half, n}} {
				wg.Add(1)
				go func(j0, j1 int) {
					defer wg.Done()
					GemmNTBlock(c, a, w, m, n, k, 0, m, j0, j1, false)
				}(r[0], r[1])
			}
			wg.Wait()
		})
		fmt.Printf("GemmNT go×2 %dx%dx%d: %6.1f GFLOP/s wall (2 goroutines, column split)\n", m, n, k, flop/wl.Seconds()/1e9)
		if _, ok := BLAS(); ok {
			prev := Threads()
			SetThreads(2)
			_, wl := measure(reps, func() { SGEMM(false, true, m, n, k, 1, a, k, w, k, 0, c, n) })
			SetThreads(prev)
			fmt.Printf("GemmNT blas2 %dx%dx%d: %6.1f GFLOP/s wall (2 OpenBLAS threads)\n", m, n, k, flop/wl.Seconds()/1e9)
		}
	}
}
