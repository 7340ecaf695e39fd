package cuda

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/shapes"
)

// ErrUnavailable is wrapped by New (and so by backends.New("cuda")) when this machine cannot run
// the backend: no NVIDIA driver, no device, an unsupported platform, or no way to get kernels
// (neither NVRTC nor matching embedded PTX). The message says which.
var ErrUnavailable = errors.New("cuda: unavailable")

func init() {
	if err := backends.Register("cuda", func() (backends.Backend, error) { return New() }); err != nil {
		panic(err) // two packages registering "cuda" is a build mistake, not bad input
	}
}

// Info describes the device and libraries a backend uses.
type Info struct {
	Device        string // "NVIDIA H200"
	Ordinal       int
	CC            int   // compute capability ×10 (90 for sm_90)
	SMs           int   // multiprocessors
	Memory        int64 // bytes
	DriverVersion int   // 12040 for CUDA 12.4
	Driver        string
	NVRTC         string // library path and version, or why there is none
	CUBLAS        string // library path, or why MatMul uses the built-in GEMM
	Kernels       string // "nvrtc sm_90 (cubin)" or "embedded PTX"
}

func (i Info) String() string {
	return fmt.Sprintf("device %d: %s (sm_%d, %d SMs, %.1f GiB), driver %d.%d (%s); nvrtc: %s; cublas: %s; kernels: %s",
		i.Ordinal, i.Device, i.CC, i.SMs, float64(i.Memory)/(1<<30), i.DriverVersion/1000, (i.DriverVersion%1000)/10,
		i.Driver, i.NVRTC, i.CUBLAS, i.Kernels)
}

// Backend runs kernels on one NVIDIA GPU. Its methods are safe for concurrent use.
type Backend struct {
	l    *libSet
	drv  *driverAPI
	dev  int32
	ctx  uintptr
	info Info

	mu      sync.Mutex
	closed  bool
	bufs    map[*Buffer]struct{}
	owned   map[uint64]struct{} // kernels' scratch memory and error records
	modules map[string]*module

	blasMu sync.Mutex // a cuBLAS handle must not be used by two threads at once
	blas   uintptr    // 0 when cuBLAS is unavailable

	calls chan *callArgs
}

// New opens the device named by $MAMBA2_CUDA_DEVICE (default 0). Without a usable driver and device
// it returns an error wrapping ErrUnavailable and never panics.
func New() (*Backend, error) {
	ordinal := 0
	if s := strings.TrimSpace(os.Getenv(EnvDevice)); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: $%s=%q is not a device ordinal", ErrUnavailable, EnvDevice, s)
		}
		ordinal = n
	}
	return NewDevice(ordinal)
}

// NewDevice opens device ordinal.
func NewDevice(ordinal int) (*Backend, error) {
	l := loadLibs()
	if !l.cuda.ok() {
		if platformNote != "" {
			return nil, fmt.Errorf("%w: %s", ErrUnavailable, platformNote)
		}
		return nil, fmt.Errorf("%w: libcuda.so.1 not found: no NVIDIA driver on this machine (tried %s)",
			ErrUnavailable, strings.Join(l.cuda.tried, ", "))
	}
	if l.drvErr != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, l.cuda.path, l.drvErr)
	}
	drv := &l.drv
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := drv.init(); err != nil {
		switch code(err) {
		case cudaErrorNoDevice:
			return nil, fmt.Errorf("%w: no CUDA device on this machine (%v)", ErrUnavailable, err)
		case cudaErrorStubLibrary:
			return nil, fmt.Errorf("%w: %s is the CUDA toolkit's stub, not a driver (%v)", ErrUnavailable, l.cuda.path, err)
		}
		return nil, fmt.Errorf("%w: the NVIDIA driver does not initialise: %v", ErrUnavailable, err)
	}
	n, err := drv.deviceCount()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if ordinal >= n {
		return nil, fmt.Errorf("%w: device %d requested, the machine has %d", ErrUnavailable, ordinal, n)
	}
	dev, err := drv.device(ordinal)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	b := &Backend{l: l, drv: drv, dev: dev, bufs: map[*Buffer]struct{}{}, owned: map[uint64]struct{}{}, modules: map[string]*module{},
		calls: make(chan *callArgs, concurrentCalls)}
	for i := 0; i < concurrentCalls; i++ {
		b.calls <- new(callArgs)
	}
	b.info.Ordinal = ordinal
	b.info.Device = drv.deviceName(dev)
	b.info.Memory = drv.totalMem(dev)
	b.info.DriverVersion = drv.driverVersion()
	b.info.Driver = l.cuda.path
	major, err1 := drv.attribute(dev, attrCCMajor)
	minor, err2 := drv.attribute(dev, attrCCMinor)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	b.info.CC = 10*major + minor
	b.info.SMs, _ = drv.attribute(dev, attrMultiprocessors)
	b.info.SMs = max(b.info.SMs, 1)

	switch {
	case l.nvrtcOff:
		b.info.NVRTC = "disabled by $" + EnvLibNVRTC
	case l.haveNVRTC():
		maj, mi := l.rtc.version()
		b.info.NVRTC = fmt.Sprintf("%s (%d.%d)", l.nvrtc.path, maj, mi)
	case l.nvrtc.ok():
		b.info.NVRTC = fmt.Sprintf("%s unusable: %v", l.nvrtc.path, l.rtcErr)
	default:
		b.info.NVRTC = l.nvrtc.err.Error()
	}
	if !l.haveNVRTC() {
		if missing := missingPTX(); len(missing) > 0 {
			return nil, fmt.Errorf("%w: no way to build kernels: NVRTC is unavailable (%s) and the embedded PTX lacks %s "+
				"(install the CUDA NVRTC library, e.g. the cuda-nvrtc package or pip nvidia-cuda-nvrtc-cu12, or set $%s)",
				ErrUnavailable, b.info.NVRTC, strings.Join(missing, ", "), EnvLibNVRTC)
		}
		b.info.Kernels = "embedded PTX (" + ptxArch + ")"
	} else {
		b.info.Kernels = "nvrtc"
	}

	ctx, err := drv.retainPrimary(dev)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	b.ctx = ctx
	if err := drv.setCurrent(ctx); err != nil {
		drv.releasePrimary(dev)
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}

	switch {
	case l.cublasOff:
		b.info.CUBLAS = "disabled by $" + EnvLibCUBLAS + " (built-in GEMM kernel)"
	case l.haveCUBLAS():
		var h uintptr
		if err := cublasCheck("cublasCreate_v2", ccall(l.blas.cublasCreate, uintptr(unsafe.Pointer(&h)))); err != nil {
			b.info.CUBLAS = fmt.Sprintf("%s: %v (built-in GEMM kernel)", l.cublas.path, err)
		} else {
			b.blas = h
			var v int32
			ccall(l.blas.cublasGetVersion, h, uintptr(unsafe.Pointer(&v)))
			b.info.CUBLAS = fmt.Sprintf("%s (version %d)", l.cublas.path, v)
		}
	case l.cublas.ok():
		b.info.CUBLAS = fmt.Sprintf("%s unusable: %v (built-in GEMM kernel)", l.cublas.path, l.blaErr)
	default:
		b.info.CUBLAS = l.cublas.err.Error() + " (built-in GEMM kernel)"
	}
	return b, nil
}

// Name is "cuda".
func (b *Backend) Name() string { return "cuda" }

// Info describes the device and the libraries in use.
func (b *Backend) Info() Info { return b.info }

// Kernels names the kernel set, as the cpu backend's method of that name does: the architecture,
// where the kernels come from, and the GEMM library ("sm_90 nvrtc+cublas").
func (b *Backend) Kernels() string {
	gemm := "builtin-gemm"
	if b.blas != 0 {
		gemm = "cublas"
	}
	src := "nvrtc"
	if !b.l.haveNVRTC() {
		src = "ptx"
	}
	return fmt.Sprintf("sm_%d %s+%s", b.info.CC, src, gemm)
}

// enter binds the backend's context to the calling goroutine's OS thread; exit releases the thread.
// Every driver call happens between the two.
func (b *Backend) enter() error {
	runtime.LockOSThread()
	c := <-b.calls
	c.a[0] = b.ctx
	r := callv(b.drv.cuCtxSetCurrent, &c.a, 1)
	b.calls <- c
	if r != 0 {
		runtime.UnlockOSThread()
		return b.drv.check("cuCtxSetCurrent", r)
	}
	return nil
}

// callArgs is a heap-allocated argument array for calls on the data path (Write, Read, Copy,
// context binding). A backend keeps a fixed set in a channel (a sync.Pool would be emptied by
// every GC and allocate again), so that these calls do not allocate.
type callArgs struct {
	a   [15]uintptr
	pin runtime.Pinner
}

// concurrentCalls is how many data-path calls may be in flight at once.
const concurrentCalls = 16

// copyCall runs a cuMemcpy* function with (dst, src, bytes), pinning host memory at p.
func (b *Backend) copyCall(fn uintptr, name string, dst, src uintptr, bytes int, p unsafe.Pointer) error {
	c := <-b.calls
	if p != nil {
		c.pin.Pin(p)
	}
	c.a[0], c.a[1], c.a[2] = dst, src, uintptr(bytes)
	r := callv(fn, &c.a, 3)
	c.pin.Unpin()
	b.calls <- c
	if r != 0 {
		return b.drv.check(name, r)
	}
	return nil
}

func (b *Backend) exit() { runtime.UnlockOSThread() }

// Buffer is device memory holding one tensor. It stays on the device until Free or Close.
type Buffer struct {
	be    *Backend
	shape shapes.Shape
	ptr   uint64
	bytes int
	freed atomic.Bool
}

// Shape returns the buffer's shape.
func (b *Buffer) Shape() shapes.Shape { return b.shape }

// DevicePointer returns the buffer's device address (for interoperation; 0 after Free).
func (b *Buffer) DevicePointer() uint64 {
	if b.freed.Load() {
		return 0
	}
	return b.ptr
}

var errClosed = errors.New("cuda: backend is closed")

// Alloc returns a zero-filled device buffer.
func (b *Backend) Alloc(s shapes.Shape) (backends.Buffer, error) {
	if err := s.Valid(); err != nil {
		return nil, fmt.Errorf("cuda: Alloc: %w", err)
	}
	bytes := s.Size() * s.DType.Size()
	p, err := b.allocDevice(bytes)
	if err != nil {
		return nil, fmt.Errorf("cuda: Alloc(%s): %w", s, err)
	}
	buf := &Buffer{be: b, shape: s.Clone(), ptr: p, bytes: bytes}
	b.mu.Lock()
	b.bufs[buf] = struct{}{}
	b.mu.Unlock()
	return buf, nil
}

// allocDevice returns zeroed device memory (not tracked).
func (b *Backend) allocDevice(bytes int) (uint64, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return 0, errClosed
	}
	if err := b.enter(); err != nil {
		return 0, err
	}
	defer b.exit()
	p, err := b.drv.memAlloc(max(bytes, 1))
	if err != nil {
		return 0, err
	}
	if err := b.drv.memsetD8(p, 0, max(bytes, 1)); err != nil {
		b.drv.memFree(p)
		return 0, err
	}
	return p, nil
}

// allocOwned returns zeroed device memory the backend frees at Close (kernel scratch).
func (b *Backend) allocOwned(bytes int) (uint64, error) {
	p, err := b.allocDevice(bytes)
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	b.owned[p] = struct{}{}
	b.mu.Unlock()
	return p, nil
}

func (b *Backend) freeOwned(p uint64) {
	b.mu.Lock()
	_, ok := b.owned[p]
	delete(b.owned, p)
	b.mu.Unlock()
	if ok && b.enter() == nil {
		b.drv.memFree(p)
		b.exit()
	}
}

func (b *Backend) asBuffer(x backends.Buffer) (*Buffer, error) {
	cb, ok := x.(*Buffer)
	if !ok || cb == nil {
		return nil, fmt.Errorf("cuda: buffer %T is not from the cuda backend", x)
	}
	if cb.be != b {
		return nil, errors.New("cuda: buffer belongs to another cuda backend")
	}
	if cb.freed.Load() {
		return nil, fmt.Errorf("cuda: buffer %s used after Free", cb.shape)
	}
	return cb, nil
}

// Free releases the buffer's device memory.
func (b *Backend) Free(x backends.Buffer) error {
	cb, err := b.asBuffer(x)
	if err != nil {
		return err
	}
	b.mu.Lock()
	_, live := b.bufs[cb]
	delete(b.bufs, cb)
	b.mu.Unlock()
	if !live || cb.freed.Swap(true) {
		return fmt.Errorf("cuda: buffer %s freed twice", cb.shape)
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.exit()
	return b.drv.memFree(cb.ptr)
}

// hostBytes checks that host is a slice of s's element type and length and returns its memory
// ([]uint16 for bfloat16 and float16 bits, []int8 for int8: the storage dtypes of quantized
// weights, which the quant.cu kernels read on the device).
func hostBytes(host any, s shapes.Shape) (unsafe.Pointer, error) {
	n := s.Size()
	p, got, dt, ok := hostSlice(host, s.DType)
	if !ok {
		return nil, fmt.Errorf("cuda: host data %T for a %s tensor (want a %s of %d elements)", host, s, hostType(s.DType), n)
	}
	if dt != s.DType || got != n {
		return nil, fmt.Errorf("cuda: host data %T of %d elements for a %s tensor (want a %s of %d)", host, got, s, hostType(s.DType), n)
	}
	return p, nil
}

// hostType names the Go slice type that holds a dtype's elements on the host, for errors.
func hostType(dt shapes.DType) string {
	switch dt {
	case shapes.BFloat16, shapes.Float16:
		return "[]uint16 (" + dt.String() + " bits)"
	}
	return "[]" + dt.String()
}

// hostSlice returns the first element, length and dtype of a host slice; a []uint16 holds the
// raw bits of a bfloat16 or float16 tensor, as want says. ok is false for other types.
func hostSlice(host any, want shapes.DType) (p unsafe.Pointer, n int, dt shapes.DType, ok bool) {
	switch h := host.(type) {
	case []float32:
		dt, n = shapes.Float32, len(h)
		if n > 0 {
			p = unsafe.Pointer(&h[0])
		}
	case []float64:
		dt, n = shapes.Float64, len(h)
		if n > 0 {
			p = unsafe.Pointer(&h[0])
		}
	case []int64:
		dt, n = shapes.Int64, len(h)
		if n > 0 {
			p = unsafe.Pointer(&h[0])
		}
	case []uint16:
		dt, n = shapes.BFloat16, len(h)
		if want == shapes.Float16 {
			dt = shapes.Float16
		}
		if n > 0 {
			p = unsafe.Pointer(&h[0])
		}
	case []int8:
		dt, n = shapes.Int8, len(h)
		if n > 0 {
			p = unsafe.Pointer(&h[0])
		}
	default:
		return nil, 0, shapes.InvalidDType, false
	}
	return p, n, dt, true
}

// Write copies a host slice into dst.
func (b *Backend) Write(dst backends.Buffer, src any) error {
	cb, err := b.asBuffer(dst)
	if err != nil {
		return err
	}
	p, err := hostBytes(src, cb.shape)
	if err != nil {
		return err
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.exit()
	err = b.copyCall(b.drv.cuMemcpyHtoD, "cuMemcpyHtoD_v2", uintptr(cb.ptr), uintptr(p), cb.bytes, p)
	runtime.KeepAlive(src)
	return err
}

var _ backends.RangeWriter = (*Backend)(nil)

// WriteRange copies a host slice into dst's elements [offset, offset+len(src)) with one
// cuMemcpyHtoD at that byte offset, so that a loader can fill a large weight through a small
// host buffer (backends.RangeWriter).
func (b *Backend) WriteRange(dst backends.Buffer, offset int, src any) error {
	cb, err := b.asBuffer(dst)
	if err != nil {
		return err
	}
	n := cb.shape.Size()
	p, got, dt, ok := hostSlice(src, cb.shape.DType)
	if !ok {
		return fmt.Errorf("cuda: WriteRange of %T at offset %d into a %s tensor (want a %s)", src, offset, cb.shape, hostType(cb.shape.DType))
	}
	if dt != cb.shape.DType {
		return fmt.Errorf("cuda: WriteRange of %T at offset %d into a %s tensor (want a %s)", src, offset, cb.shape, hostType(cb.shape.DType))
	}
	if offset < 0 || offset > n || got > n-offset {
		return fmt.Errorf("cuda: WriteRange of elements [%d, %d) is outside a %s tensor of %d elements", offset, offset+got, cb.shape, n)
	}
	if got == 0 {
		return nil
	}
	size := dt.Size()
	if err := b.enter(); err != nil {
		return err
	}
	defer b.exit()
	err = b.copyCall(b.drv.cuMemcpyHtoD, "cuMemcpyHtoD_v2", uintptr(cb.ptr)+uintptr(offset*size), uintptr(p), got*size, p)
	runtime.KeepAlive(src)
	return err
}

// Read copies src into a host slice. It waits for the kernels queued before it.
func (b *Backend) Read(dst any, src backends.Buffer) error {
	cb, err := b.asBuffer(src)
	if err != nil {
		return err
	}
	p, err := hostBytes(dst, cb.shape)
	if err != nil {
		return err
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.exit()
	err = b.copyCall(b.drv.cuMemcpyDtoH, "cuMemcpyDtoH_v2", uintptr(p), uintptr(cb.ptr), cb.bytes, p)
	runtime.KeepAlive(dst)
	return err
}

// Copy copies src into dst on the device (same dtype and element count).
func (b *Backend) Copy(dst, src backends.Buffer) error {
	d, err := b.asBuffer(dst)
	if err != nil {
		return err
	}
	s, err := b.asBuffer(src)
	if err != nil {
		return err
	}
	if d.shape.DType != s.shape.DType || d.shape.Size() != s.shape.Size() {
		return fmt.Errorf("cuda: Copy from %s to %s", s.shape, d.shape)
	}
	if d.ptr == s.ptr {
		return nil
	}
	if err := b.enter(); err != nil {
		return err
	}
	defer b.exit()
	return b.copyCall(b.drv.cuMemcpyDtoD, "cuMemcpyDtoD_v2", uintptr(d.ptr), uintptr(s.ptr), d.bytes, nil)
}

// Synchronize waits until every queued kernel has finished and reports asynchronous errors.
func (b *Backend) Synchronize() error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.exit()
	return b.drv.synchronize()
}

// Close frees every buffer, kernel scratch area and module, and releases the device. Buffers and
// kernels of the backend must not be used afterwards.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	bufs, owned, mods := b.bufs, b.owned, b.modules
	b.bufs, b.owned, b.modules = nil, nil, nil
	b.mu.Unlock()
	if err := b.enter(); err != nil {
		return err
	}
	defer b.exit()
	var errs []error
	errs = append(errs, b.drv.synchronize())
	for buf := range bufs {
		buf.freed.Store(true)
		errs = append(errs, b.drv.memFree(buf.ptr))
	}
	for p := range owned {
		errs = append(errs, b.drv.memFree(p))
	}
	for _, m := range mods {
		if m.h != 0 {
			errs = append(errs, b.drv.moduleUnload(m.h))
		}
	}
	if b.blas != 0 {
		b.blasMu.Lock()
		errs = append(errs, cublasCheck("cublasDestroy_v2", ccall(b.l.blas.cublasDestroy, b.blas)))
		b.blas = 0
		b.blasMu.Unlock()
	}
	errs = append(errs, b.drv.releasePrimary(b.dev))
	return errors.Join(errs...)
}

// compileFunc fills k (its launches and scratch) for op on fixed shapes.
type compileFunc func(k *kernel, op backends.Op, in, out []shapes.Shape) error

// compilers maps op names to kernel builders; filled by init functions of this package only.
var compilers = map[string]compileFunc{}

func register(name string, f compileFunc) {
	if _, dup := compilers[name]; dup {
		panic("cuda: kernel " + name + " registered twice")
	}
	compilers[name] = f
}

// Ops lists the op names this backend has kernels for.
func Ops() []string {
	names := make([]string, 0, len(compilers))
	for n := range compilers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Compile returns the kernel for op on these shapes. The CUDA modules it needs are compiled (once
// per backend) on first use.
func (b *Backend) Compile(op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	if op == nil {
		return nil, errors.New("cuda: Compile of a nil op")
	}
	f, ok := compilers[op.Name()]
	if !ok {
		return nil, fmt.Errorf("cuda: op %s: %w (kernels: %s)", op.Name(), backends.ErrUnsupported, strings.Join(Ops(), ", "))
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	for i, s := range append(append([]shapes.Shape(nil), in...), out...) {
		if err := s.Valid(); err != nil {
			return nil, fmt.Errorf("cuda: op %s shape %d: %w", op.Name(), i, err)
		}
	}
	k := newKernel(b, op.Name(), in, out)
	if err := f(k, op, in, out); err != nil {
		k.release()
		return nil, fmt.Errorf("cuda: op %s: %w", op.Name(), err)
	}
	return k, nil
}
