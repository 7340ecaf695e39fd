package cuda

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/shapes"
)

// A compiled op is a kernel: a short, fixed list of steps (kernel launches, memsets, device
// copies, cuBLAS calls) whose sizes were all worked out by Compile. Run only checks and binds the
// buffers, writes their addresses into the prepared argument slots, and issues the steps on the
// default stream; it does not allocate and does not wait for the GPU, except for kernels that
// validate indices (see errRecord).

// refKind says where a pointer argument comes from at run time.
type refKind uint8

const (
	refIn      refKind = iota // input buffer i
	refOut                    // output buffer i
	refScratch                // kernel-owned device memory i
	refFlag                   // the kernel's error record
)

// ref is a device address known at run time: a buffer or scratch area plus a byte offset.
type ref struct {
	kind refKind
	i    int
	off  int
}

func inRef(i int) ref      { return ref{kind: refIn, i: i} }
func outRef(i int) ref     { return ref{kind: refOut, i: i} }
func scratchRef(i int) ref { return ref{kind: refScratch, i: i} }
func flagRef() ref         { return ref{kind: refFlag} }

// maxDims bounds the rank of the index arrays passed by value (struct Dims in prelude.cuh).
const maxDims = 8

// args builds a kernel's parameter block: 8-byte slots, a struct of maxDims slots for index
// arrays, and the kernelParams array pointing at each parameter's first slot.
type args struct {
	slots  []uint64
	starts []int
	ptrs   []ptrArg
	err    error
}

type ptrArg struct {
	slot int
	r    ref
}

func (a *args) start() { a.starts = append(a.starts, len(a.slots)) }

// buf adds a pointer parameter bound at run time.
func (a *args) buf(r ref) *args {
	a.start()
	a.ptrs = append(a.ptrs, ptrArg{len(a.slots), r})
	a.slots = append(a.slots, 0)
	return a
}

// i64 adds a long long parameter.
func (a *args) i64(v int) *args {
	a.start()
	a.slots = append(a.slots, uint64(int64(v)))
	return a
}

// f64 adds a double parameter.
func (a *args) f64(v float64) *args {
	a.start()
	a.slots = append(a.slots, math.Float64bits(v))
	return a
}

// dims adds a Dims parameter (up to maxDims values, the rest zero).
func (a *args) dims(v []int) *args {
	if len(v) > maxDims && a.err == nil {
		a.err = fmt.Errorf("%d axes after merging, the kernels take at most %d: %w", len(v), maxDims, backends.ErrUnsupported)
	}
	a.start()
	for i := 0; i < maxDims; i++ {
		var x int
		if i < len(v) {
			x = v[i]
		}
		a.slots = append(a.slots, uint64(int64(x)))
	}
	return a
}

type stepKind uint8

const (
	stepLaunch stepKind = iota
	stepMemset
	stepCopy
	stepGemm
)

// step is one thing a kernel's Run does.
type step struct {
	kind stepKind
	// launch
	fn          uintptr
	grid, block [3]uint32
	slots       []uint64
	params      []uintptr
	ptrs        []ptrArg
	name        string
	// memset (zero bytes at dst) and copy (bytes from src to dst)
	dst, src ref
	bytes    int
	gemm     *gemmStep
}

// kernel is a compiled op.
type kernel struct {
	be      *Backend
	op      string
	in, out []shapes.Shape
	inPtr   []uint64
	outPtr  []uint64
	scratch []uint64
	steps   []step

	// errRecord is device memory of two int64: the number of invalid indices met and the smallest
	// position holding one. Kernels that read indices (Gather, ScatterAdd, CrossEntropy, lengths)
	// fill it; Run then reads it back, which waits for the GPU.
	errRecord uint64
	errHost   [2]int64
	errMsg    func(k *kernel, pos int64) string

	call     [15]uintptr
	pin      runtime.Pinner
	isClosed bool
}

func newKernel(b *Backend, op string, in, out []shapes.Shape) *kernel {
	k := &kernel{be: b, op: op}
	for _, s := range in {
		k.in = append(k.in, s.Clone())
	}
	for _, s := range out {
		k.out = append(k.out, s.Clone())
	}
	k.inPtr = make([]uint64, len(in))
	k.outPtr = make([]uint64, len(out))
	return k
}

// Close releases the kernel's device scratch memory and error record now instead of at the
// backend's Close. The Backend interface does not require it; callers that drop kernels (a
// program being closed) may call it through io.Closer. The kernel must not be run afterwards.
func (k *kernel) Close() error {
	k.release()
	k.steps, k.isClosed = nil, true
	return nil
}

// release frees what the kernel allocated.
func (k *kernel) release() {
	for _, p := range k.scratch {
		k.be.freeOwned(p)
	}
	if k.errRecord != 0 {
		k.be.freeOwned(k.errRecord)
	}
	k.scratch, k.errRecord = nil, 0
}

// addScratch allocates zeroed device memory owned by the kernel and returns its index.
func (k *kernel) addScratch(bytes int) (int, error) {
	p, err := k.be.allocOwned(bytes)
	if err != nil {
		return 0, fmt.Errorf("scratch of %d bytes: %w", bytes, err)
	}
	k.scratch = append(k.scratch, p)
	return len(k.scratch) - 1, nil
}

// useErrRecord gives the kernel an error record; msg formats the error for the first bad position.
func (k *kernel) useErrRecord(msg func(k *kernel, pos int64) string) error {
	p, err := k.be.allocOwned(16)
	if err != nil {
		return err
	}
	k.errRecord = p
	k.errMsg = msg
	return k.resetErrRecord()
}

func (k *kernel) resetErrRecord() error {
	init := [2]int64{0, math.MaxInt64}
	if err := k.be.enter(); err != nil {
		return err
	}
	defer k.be.exit()
	return k.be.drv.htod(k.errRecord, unsafe.Pointer(&init[0]), 16)
}

// launch adds a kernel launch of function name from a .cu file with the given grid and block.
func (k *kernel) launch(file, name string, grid, block int, a *args) error {
	return k.launch3(file, name, [3]int{grid, 1, 1}, [3]int{block, 1, 1}, a)
}

func (k *kernel) launch3(file, name string, grid, block [3]int, a *args) error {
	if a.err != nil {
		return a.err
	}
	fn, limit, err := k.be.function(file, name)
	if err != nil {
		return err
	}
	if n := block[0] * block[1] * block[2]; limit > 0 && n > limit {
		return fmt.Errorf("kernel %s needs %d threads per block, this device runs it with at most %d: %w",
			name, n, limit, backends.ErrUnsupported)
	}
	st := step{kind: stepLaunch, fn: fn, slots: a.slots, ptrs: a.ptrs, name: name}
	for i := 0; i < 3; i++ {
		if grid[i] < 1 || block[i] < 1 || grid[i] > math.MaxInt32 {
			return fmt.Errorf("launch of %s: grid %v block %v", name, grid, block)
		}
		st.grid[i], st.block[i] = uint32(grid[i]), uint32(block[i])
	}
	st.params = make([]uintptr, len(a.starts))
	if len(st.slots) == 0 {
		st.slots = make([]uint64, 1)
	}
	for i, s := range a.starts {
		st.params[i] = uintptr(unsafe.Pointer(&st.slots[s]))
	}
	if len(st.params) == 0 {
		st.params = make([]uintptr, 1)
	}
	k.steps = append(k.steps, st)
	return nil
}

// memset adds a step zeroing bytes at r.
func (k *kernel) memset(r ref, bytes int) {
	k.steps = append(k.steps, step{kind: stepMemset, dst: r, bytes: bytes})
}

// copyStep adds a device-to-device copy.
func (k *kernel) copyStep(dst, src ref, bytes int) {
	k.steps = append(k.steps, step{kind: stepCopy, dst: dst, src: src, bytes: bytes})
}

// threads is the block size of the element-wise and reduction kernels (prelude.cuh's BLOCK).
const threads = 256

// grid returns how many blocks of threads cover n items (grid-stride loops do the rest).
func (k *kernel) grid(n, per int) int {
	blocks := (n + per - 1) / per
	return max(1, min(blocks, k.be.info.SMs*32))
}

// blocks returns how many blocks to launch for n items of one block each.
func (k *kernel) blocks(n int) int { return max(1, min(n, k.be.info.SMs*32)) }

// bind checks the run's buffers against the compiled shapes (dtype and element count: the graph
// reuses buffers across shapes of one size) and records their addresses.
func (k *kernel) bind(in, out []backends.Buffer) error {
	if len(in) != len(k.in) || len(out) != len(k.out) {
		return fmt.Errorf("cuda: %s: %d inputs and %d outputs, compiled for %d and %d", k.op, len(in), len(out), len(k.in), len(k.out))
	}
	for i, x := range in {
		p, err := k.check(x, k.in[i], "input", i)
		if err != nil {
			return err
		}
		k.inPtr[i] = p
	}
	for i, x := range out {
		p, err := k.check(x, k.out[i], "output", i)
		if err != nil {
			return err
		}
		k.outPtr[i] = p
	}
	return nil
}

func (k *kernel) check(x backends.Buffer, want shapes.Shape, what string, i int) (uint64, error) {
	cb, err := k.be.asBuffer(x)
	if err != nil {
		return 0, fmt.Errorf("cuda: %s %s %d: %w", k.op, what, i, err)
	}
	if cb.shape.DType != want.DType || cb.shape.Size() != want.Size() {
		return 0, fmt.Errorf("cuda: %s %s %d is %s, the kernel was compiled for %s", k.op, what, i, cb.shape, want)
	}
	return cb.ptr, nil
}

func (k *kernel) resolve(r ref) uint64 {
	var base uint64
	switch r.kind {
	case refIn:
		base = k.inPtr[r.i]
	case refOut:
		base = k.outPtr[r.i]
	case refScratch:
		base = k.scratch[r.i]
	case refFlag:
		base = k.errRecord
	}
	return base + uint64(r.off)
}

// Run issues the kernel's steps. Errors of the launches themselves are returned; faults inside a
// kernel surface at the next synchronising call (a Read, or Run of an index-checking kernel).
func (k *kernel) Run(in, out []backends.Buffer) error {
	if k.isClosed {
		return fmt.Errorf("cuda: %s: kernel used after Close", k.op)
	}
	if err := k.bind(in, out); err != nil {
		return err
	}
	drv := k.be.drv
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	k.call[0] = k.be.ctx
	if err := drv.check("cuCtxSetCurrent", callv(drv.cuCtxSetCurrent, &k.call, 1)); err != nil {
		return err
	}
	for i := range k.steps {
		if err := k.exec(&k.steps[i]); err != nil {
			return fmt.Errorf("cuda: %s: %w", k.op, err)
		}
	}
	if k.errRecord != 0 {
		return k.checkErrRecord()
	}
	return nil
}

func (k *kernel) exec(st *step) error {
	drv := k.be.drv
	c := &k.call
	switch st.kind {
	case stepLaunch:
		for _, p := range st.ptrs {
			st.slots[p.slot] = k.resolve(p.r)
		}
		k.pin.Pin(&st.slots[0])
		k.pin.Pin(&st.params[0])
		c[0] = st.fn
		c[1], c[2], c[3] = uintptr(st.grid[0]), uintptr(st.grid[1]), uintptr(st.grid[2])
		c[4], c[5], c[6] = uintptr(st.block[0]), uintptr(st.block[1]), uintptr(st.block[2])
		c[7], c[8] = 0, 0 // dynamic shared memory, default stream
		c[9] = uintptr(unsafe.Pointer(&st.params[0]))
		c[10] = 0
		r := callv(drv.cuLaunchKernel, c, 11)
		k.pin.Unpin()
		if r != 0 {
			return fmt.Errorf("launching %s: %w", st.name, drv.check("cuLaunchKernel", r))
		}
	case stepMemset:
		c[0], c[1], c[2] = uintptr(k.resolve(st.dst)), 0, uintptr(st.bytes)
		if r := callv(drv.cuMemsetD8, c, 3); r != 0 {
			return drv.check("cuMemsetD8_v2", r)
		}
	case stepCopy:
		d, s := k.resolve(st.dst), k.resolve(st.src)
		if d == s {
			return nil
		}
		c[0], c[1], c[2] = uintptr(d), uintptr(s), uintptr(st.bytes)
		if r := callv(drv.cuMemcpyDtoD, c, 3); r != 0 {
			return drv.check("cuMemcpyDtoD_v2", r)
		}
	case stepGemm:
		return st.gemm.run(k)
	}
	return nil
}

// checkErrRecord reads the error record back (waiting for the GPU) and turns a nonzero count into
// an error, resetting the record for the next run.
func (k *kernel) checkErrRecord() error {
	drv := k.be.drv
	k.pin.Pin(&k.errHost[0])
	k.call[0] = uintptr(unsafe.Pointer(&k.errHost[0]))
	k.call[1] = uintptr(k.errRecord)
	k.call[2] = 16
	r := callv(drv.cuMemcpyDtoH, &k.call, 3)
	k.pin.Unpin()
	if r != 0 {
		return fmt.Errorf("cuda: %s: %w", k.op, drv.check("cuMemcpyDtoH_v2", r))
	}
	if k.errHost[0] == 0 {
		return nil
	}
	n, pos := k.errHost[0], k.errHost[1]
	msg := k.errMsg(k, pos)
	if err := k.resetErrRecord(); err != nil {
		return errors.Join(fmt.Errorf("cuda: %s: %s", k.op, msg), err)
	}
	if n > 1 {
		msg += fmt.Sprintf(" (%d invalid in all)", n)
	}
	return fmt.Errorf("cuda: %s: %s", k.op, msg)
}

// readInt64 reads element i of an int64 input (for error messages; waits for the GPU).
func (k *kernel) readInt64(input int, i int64) (int64, bool) {
	var v int64
	if err := k.be.drv.dtoh(unsafe.Pointer(&v), k.inPtr[input]+uint64(8*i), 8); err != nil {
		return 0, false
	}
	return v, true
}

// suffix names a kernel's float variant.
func suffix(dt shapes.DType) (string, error) {
	switch dt {
	case shapes.Float32:
		return "f32", nil
	case shapes.Float64:
		return "f64", nil
	}
	return "", fmt.Errorf("dtype %s: %w", dt, backends.ErrUnsupported)
}

// widthSuffix names a layout kernel's variant by element size (layout kernels only move bits).
func widthSuffix(dt shapes.DType) (string, error) {
	switch dt.Size() {
	case 4:
		return "b4", nil
	case 8:
		return "b8", nil
	}
	return "", fmt.Errorf("dtype %s: %w", dt, backends.ErrUnsupported)
}
