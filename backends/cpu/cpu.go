// Package cpu is the default backend: Go kernels over host memory, parallel across a persistent
// pool of goroutines. It registers itself as "cpu" with package backends.
//
// Every kernel supports float32 and float64 (Gather and CrossEntropy also take int64 indices).
// Weights may also be stored as bfloat16, float16 or int8 (host slices []uint16 of raw bits and
// []int8), which QuantMatMul and QuantGather read, computing in float32 (see quant.go).
// Kernels are compiled for fixed shapes: sizes and strides are computed once in Compile, and Run
// does no heap allocation.
package cpu

import (
	"fmt"
	"runtime"
	"sort"
	"strings"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/cpu/kernels"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	if err := backends.Register("cpu", func() (backends.Backend, error) { return New(0), nil }); err != nil {
		panic(err) // two packages registering "cpu" is a build mistake, not bad input
	}
}

// Float is the set of element types kernels compute in.
type Float interface{ float32 | float64 }

// elem is the set of element types buffers hold: the float types, int64 indices, and the storage
// types (bfloat16 and float16 bits as uint16, int8).
type elem interface {
	float32 | float64 | int64 | uint16 | int8
}

// Buffer is host memory holding one tensor.
type Buffer struct {
	shape shapes.Shape
	data  any // []float32, []float64, []int64, []uint16 (bfloat16, float16) or []int8
	freed bool
}

// Shape returns the buffer's shape.
func (b *Buffer) Shape() shapes.Shape { return b.shape }

// Data returns the backing slice ([]float32, []float64, []int64, or for the storage dtypes
// []uint16 and []int8). Writing to it is allowed for
// buffers the caller owns.
func (b *Buffer) Data() any { return b.data }

// Backend is the CPU backend.
type Backend struct {
	pool  *pool
	arena arena // scratch memory kernels borrow for one Run
}

// New returns a CPU backend using threads goroutines for parallel kernels (0: GOMAXPROCS).
func New(threads int) *Backend {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	return &Backend{pool: newPool(threads)}
}

// Name is "cpu".
func (b *Backend) Name() string { return "cpu" }

// Threads is the number of goroutines kernels use.
func (b *Backend) Threads() int { return b.pool.threads }

// Alloc returns a zeroed host buffer.
func (b *Backend) Alloc(s shapes.Shape) (backends.Buffer, error) {
	if err := s.Valid(); err != nil {
		return nil, err
	}
	buf := &Buffer{shape: s.Clone()}
	switch s.DType {
	case shapes.Float32:
		buf.data = make([]float32, s.Size())
	case shapes.Float64:
		buf.data = make([]float64, s.Size())
	case shapes.Int64:
		buf.data = make([]int64, s.Size())
	case shapes.BFloat16, shapes.Float16:
		buf.data = make([]uint16, s.Size())
	case shapes.Int8:
		buf.data = make([]int8, s.Size())
	default:
		return nil, fmt.Errorf("cpu: Alloc(%s): dtype %s: %w", s, s.DType, backends.ErrUnsupported)
	}
	return buf, nil
}

func asBuffer(b backends.Buffer) (*Buffer, error) {
	cb, ok := b.(*Buffer)
	if !ok || cb == nil {
		return nil, fmt.Errorf("cpu: buffer %T is not from the cpu backend", b)
	}
	if cb.freed {
		return nil, fmt.Errorf("cpu: buffer %s used after Free", cb.shape)
	}
	return cb, nil
}

// Free drops the buffer's memory.
func (b *Backend) Free(buf backends.Buffer) error {
	cb, err := asBuffer(buf)
	if err != nil {
		return err
	}
	cb.freed = true
	cb.data = nil
	return nil
}

// Write copies host data into dst.
func (b *Backend) Write(dst backends.Buffer, src any) error {
	cb, err := asBuffer(dst)
	if err != nil {
		return err
	}
	return copyHost(cb.data, src, cb.shape)
}

// Read copies src into host data.
func (b *Backend) Read(dst any, src backends.Buffer) error {
	cb, err := asBuffer(src)
	if err != nil {
		return err
	}
	return copyHost(dst, cb.data, cb.shape)
}

func copyHost(dst, src any, s shapes.Shape) error {
	n := s.Size()
	if hostLen(dst) == n && hostLen(src) == n && copySlice(dst, src) {
		return nil
	}
	return fmt.Errorf("cpu: cannot copy %s to %s for a %s tensor (want %d elements of %s)",
		describe(src), describe(dst), s, n, hostType(s.DType))
}

// hostType names the Go slice type holding dtype dt.
func hostType(dt shapes.DType) string {
	switch dt {
	case shapes.BFloat16, shapes.Float16:
		return "[]uint16 (" + dt.String() + " bits)"
	case shapes.Int8:
		return "[]int8"
	}
	return "[]" + dt.String()
}

// hostLen is the length of a slice of a buffer element type, -1 for anything else.
func hostLen(v any) int {
	switch x := v.(type) {
	case []float32:
		return len(x)
	case []float64:
		return len(x)
	case []int64:
		return len(x)
	case []uint16:
		return len(x)
	case []int8:
		return len(x)
	}
	return -1
}

// copySlice copies src into dst when both are slices of the same element type and src fits,
// reporting whether it did.
func copySlice(dst, src any) bool {
	ok, fits := copyAt(dst, 0, src)
	return ok && fits
}

// copyAt copies src into dst from element offset when both are slices of the same element type
// (ok) and src fits there (fits); otherwise it copies nothing.
func copyAt(dst any, offset int, src any) (ok, fits bool) {
	switch d := dst.(type) {
	case []float32:
		return copyAs(d, offset, src)
	case []float64:
		return copyAs(d, offset, src)
	case []int64:
		return copyAs(d, offset, src)
	case []uint16:
		return copyAs(d, offset, src)
	case []int8:
		return copyAs(d, offset, src)
	}
	return false, false
}

func copyAs[T elem](dst []T, offset int, src any) (ok, fits bool) {
	s, ok := src.([]T)
	if !ok {
		return false, false
	}
	if offset < 0 || offset > len(dst) || len(s) > len(dst)-offset {
		return true, false
	}
	copy(dst[offset:], s)
	return true, true
}

func describe(v any) string {
	if n := hostLen(v); n >= 0 {
		return fmt.Sprintf("%T of %d", v, n)
	}
	return fmt.Sprintf("%T", v)
}

// Copy copies src into dst (same dtype and size).
func (b *Backend) Copy(dst, src backends.Buffer) error {
	d, err := asBuffer(dst)
	if err != nil {
		return err
	}
	s, err := asBuffer(src)
	if err != nil {
		return err
	}
	if d.shape.DType != s.shape.DType || d.shape.Size() != s.shape.Size() || !copySlice(d.data, s.data) {
		return fmt.Errorf("cpu: Copy from %s to %s", s.shape, d.shape)
	}
	return nil
}

// Close stops the worker pool.
func (b *Backend) Close() error {
	b.pool.close()
	return nil
}

// compileFunc builds a kernel for fixed shapes.
type compileFunc func(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error)

// kernels maps op names to compilers. It is filled by init functions in this package only and never
// changes afterwards.
var kernelTable = map[string]compileFunc{}

func register(name string, f compileFunc) {
	if _, dup := kernelTable[name]; dup {
		panic("cpu: kernel " + name + " registered twice")
	}
	kernelTable[name] = f
}

// Ops lists the op names this backend has kernels for.
func Ops() []string {
	names := make([]string, 0, len(kernelTable))
	for n := range kernelTable {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Compile returns the kernel for op.
func (b *Backend) Compile(op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	f, ok := kernelTable[op.Name()]
	if !ok {
		return nil, fmt.Errorf("cpu: op %s: %w (kernels: %s)", op.Name(), backends.ErrUnsupported, strings.Join(Ops(), ", "))
	}
	for i, s := range in {
		if err := s.Valid(); err != nil && len(s.Dims) > 0 {
			return nil, fmt.Errorf("cpu: op %s input %d: %w", op.Name(), i, err)
		}
	}
	k, err := f(b, op, in, out)
	if err != nil {
		return nil, fmt.Errorf("cpu: op %s: %w", op.Name(), err)
	}
	return k, nil
}

// data returns the typed slice of buffer i, or an error naming it.
func data[T elem](bufs []backends.Buffer, i int) ([]T, error) {
	if i >= len(bufs) {
		return nil, fmt.Errorf("cpu: missing buffer %d", i)
	}
	cb, err := asBuffer(bufs[i])
	if err != nil {
		return nil, err
	}
	d, ok := cb.data.([]T)
	if !ok {
		var zero T
		return nil, fmt.Errorf("cpu: buffer %d holds %s, kernel expects %T", i, cb.shape.DType, zero)
	}
	return d, nil
}

// Kernels names the kernel set in use: "simd-avx512", "simd-avx2" or "generic", with "+blas"
// when OpenBLAS was found and large products use it.
func (b *Backend) Kernels() string { return kernels.Kernels() }

// sized records the element counts a kernel was compiled for, so Run can refuse buffers of other
// sizes with an error instead of computing on part of them or indexing out of range.
type sized struct{ in, out []int }

func sizesOf(in, out []shapes.Shape) sized {
	s := sized{in: make([]int, len(in)), out: make([]int, len(out))}
	for i, sh := range in {
		s.in[i] = sh.Size()
	}
	for i, sh := range out {
		s.out[i] = sh.Size()
	}
	return s
}

func (s sized) check(in, out []backends.Buffer) error {
	if len(in) != len(s.in) || len(out) != len(s.out) {
		return fmt.Errorf("cpu: kernel takes %d inputs and %d outputs, got %d and %d", len(s.in), len(s.out), len(in), len(out))
	}
	for i, b := range in {
		if err := checkSize(b, s.in[i]); err != nil {
			return fmt.Errorf("input %d: %w", i, err)
		}
	}
	for i, b := range out {
		if err := checkSize(b, s.out[i]); err != nil {
			return fmt.Errorf("output %d: %w", i, err)
		}
	}
	return nil
}

func checkSize(b backends.Buffer, want int) error {
	cb, err := asBuffer(b)
	if err != nil {
		return err
	}
	if n := hostLen(cb.data); n != want {
		return fmt.Errorf("cpu: buffer holds %d elements, the kernel was compiled for %d", n, want)
	}
	return nil
}
