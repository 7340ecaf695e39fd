package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// pool runs parallel loops on persistent goroutines: the caller of a loop works through its
// pieces and the workers join in when they wake (see parallel).
//
// Between the loops of a run, a worker first spins for up to spinFor, watching for the next
// loop: a 130m decode step posts 73 loops with a few microseconds to tens of microseconds
// between them, and waking a sleeping worker cost the poster a system call of ~10 µs on this
// project's VMs (int8 decode step 6.0 → 4.8 ms with spinning). It spins only on amd64, with
// PAUSE, and only when every worker and the caller can have a P of their own. Then it sleeps on
// a futex where there is one (Linux) rather than park in the Go scheduler: waking a parked
// goroutine took about 65 µs (an idle M must be woken, then steal the goroutine from the waker's
// P), as long as a layer's whole mat-vec, while the kernel wakes a thread blocked in the futex
// system call in about 9 µs. A thread asleep in a system call keeps its P until the runtime
// takes it back, so that sleep is bounded (lightSleep) and used under the same condition as
// spinning; after it, and otherwise, a worker parks on a condition variable.
type pool struct {
	threads int
	seq     uint32                   // bumped each time a loop is posted, and on close (the futex word)
	light   atomic.Int32             // workers about to sleep, or asleep, on the futex
	deep    atomic.Int32             // workers about to park, or parked, on cond
	posted  atomic.Pointer[parallel] // the newest loop still open
	closed  atomic.Bool
	mu      sync.Mutex
	cond    *sync.Cond
	once    sync.Once
}

func newPool(threads int) *pool {
	p := &pool{threads: threads}
	p.cond = sync.NewCond(&p.mu)
	for i := 1; i < threads; i++ {
		go p.worker()
	}
	return p
}

// worker helps with each posted loop until the pool closes.
func (p *pool) worker() {
	var fs futexSleeper
	var last uint32 // seq's value in newPool: a worker that starts late still sees later posts and close
	light := true   // whether the next wait may be a futex sleep
	for {
		if s := atomic.LoadUint32(&p.seq); s != last {
			last, light = s, true
			if p.closed.Load() {
				return
			}
			if l := p.posted.Load(); l != nil {
				l.help()
			}
			continue
		}
		ownP := runtime.GOMAXPROCS(0) >= p.threads
		if light && ownP && canSpin && p.spin(last) {
			continue
		}
		// Each sleeper announces itself before its last look at seq, and a poster bumps seq
		// before it counts sleepers: either the poster sees the worker and wakes it, or the
		// worker sees the new seq.
		if light && fs.ok() && ownP {
			p.light.Add(1)
			if atomic.LoadUint32(&p.seq) == last {
				light = fs.wait(&p.seq, last) // false: timed out, park next time
			}
			p.light.Add(-1)
			continue
		}
		p.deep.Add(1)
		p.mu.Lock()
		for atomic.LoadUint32(&p.seq) == last {
			p.cond.Wait()
		}
		p.mu.Unlock()
		p.deep.Add(-1)
	}
}

// spinFor bounds a worker's spin between loops (see pool): longer than most gaps between the
// loops of a decode step (with 60 µs, 3 of its 73 loops still had to wake a worker),
// short enough that an idle worker soon stops using its core.
const spinFor = 200 * time.Microsecond

// spin watches seq for a change from last, with PAUSE, for at most spinFor, and reports whether
// it changed.
func (p *pool) spin(last uint32) bool {
	deadline := time.Now().Add(spinFor)
	for {
		for range 64 {
			if atomic.LoadUint32(&p.seq) != last {
				return true
			}
			cpuRelax()
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// post offers l to the workers, waking up to n of those asleep.
func (p *pool) post(l *parallel, n int) {
	p.posted.Store(l)
	p.wake(n)
}

func (p *pool) wake(n int) {
	atomic.AddUint32(&p.seq, 1)
	if p.light.Load() > 0 {
		futexWake(&p.seq, n)
	}
	if p.deep.Load() > 0 {
		p.mu.Lock()
		p.mu.Unlock() //nolint:staticcheck // orders the broadcast after a parking worker's check
		p.cond.Broadcast()
	}
}

func (p *pool) close() {
	p.once.Do(func() {
		p.closed.Store(true)
		p.wake(p.threads)
	})
}

// parallel is one kernel's parallel loop. Nobody waits for a worker that has not started: the
// caller works through the pieces itself, closes the loop once every piece is claimed and waits
// only for the pieces in flight. A worker that wakes after the loop closed does nothing; one that
// wakes during a later loop of the same kernel helps with that one instead, which is as good. The
// zero value is ready to use; it must not be copied.
type parallel struct {
	fn       func(lo, hi int)
	n, grain int64
	next     atomic.Int64 // the first item not yet claimed
	state    atomic.Int64 // closedBit | the number of workers inside the loop
	done     chan struct{}
}

const (
	closedBit = 1 << 40
	waitBit   = 1 << 41 // the caller waits on done for the workers still inside
)

// piecesPerThread is how many pieces a parallel loop is cut into per thread: enough that a
// worker starting late still finds work and the last pieces end close together, few enough that
// claiming one (an atomic add) stays negligible.
const piecesPerThread = 8

// parallelFor runs fn over [0,n) in contiguous pieces on the caller and the pool's workers. Work
// below minPerThread items per thread runs serially on the caller. The pieces' bounds depend only
// on n, minPerThread and the pool's size, so a kernel computes the same bits on every run. l must
// be owned by the caller's kernel (so the call does not allocate) and not be in use.
func (p *pool) parallelFor(l *parallel, n, minPerThread int, fn func(lo, hi int)) {
	p.parallelPieces(l, n, minPerThread, piecesPerThread, fn)
}

// parallelPieces is parallelFor cutting [0,n) into piecesPerThread pieces per thread: 1 for
// loops where every call of fn has a large fixed cost, such as a GEMM's rows, each range of which
// streams all of B.
func (p *pool) parallelPieces(l *parallel, n, minPerThread, piecesPerThread int, fn func(lo, hi int)) {
	parts := p.threads
	if minPerThread < 1 {
		minPerThread = 1
	}
	if n/minPerThread < parts {
		parts = n / minPerThread
	}
	if parts <= 1 {
		fn(0, n)
		return
	}
	grain := (n + parts*piecesPerThread - 1) / (parts * piecesPerThread)
	if grain >= 16 {
		grain = (grain + 3) &^ 3 // whole groups for the four-row mat-vec kernels
	}
	if l.done == nil {
		l.done = make(chan struct{}, 1)
	}
	l.fn, l.n, l.grain = fn, int64(n), int64(grain)
	l.next.Store(0)
	l.state.Store(0) // open: publishes fn, n and grain to the workers that join
	p.post(l, parts-1)
	l.work()
	if s := l.state.Add(closedBit); s != closedBit {
		l.wait(s)
	}
	p.posted.CompareAndSwap(l, nil) // do not keep the kernel reachable from the pool
}

// work claims and runs pieces until none is left.
func (l *parallel) work() {
	for {
		lo := l.next.Add(l.grain) - l.grain
		if lo >= l.n {
			return
		}
		l.fn(int(lo), int(min(lo+l.grain, l.n)))
	}
}

// help joins the loop if it is still open, works, and leaves.
func (l *parallel) help() {
	for {
		s := l.state.Load()
		if s&closedBit != 0 {
			return
		}
		if l.state.CompareAndSwap(s, s+1) {
			break
		}
	}
	l.work()
	if l.state.Add(-1) == closedBit|waitBit {
		l.done <- struct{}{}
	}
}

// wait returns once the workers still inside the closed loop (state s) have left. It first
// watches state for some tens of microseconds: those workers are running and each has at most
// one piece left, while blocking on done meant a wake-up through the Go scheduler, tens of
// microseconds on this project's VMs (int8 decode of the 130m shape: 7.0 → 6.1 ms per step).
// Only if they are still inside does it ask (waitBit) for the signal and block.
func (l *parallel) wait(s int64) {
	for range 20000 {
		if s = l.state.Load(); s == closedBit {
			return
		}
	}
	for {
		if s == closedBit {
			return
		}
		if l.state.CompareAndSwap(s, s|waitBit) {
			<-l.done // the last worker to leave signals
			return
		}
		s = l.state.Load()
	}
}
