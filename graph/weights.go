package graph

import (
	"fmt"
	"sort"
	"sync"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/shapes"
	"gorgonia.org/tensor"
)

// Weights is a named set of read-only backend buffers that programs bind their Params to. Upload
// once; any number of programs (running concurrently, too) may share it.
type Weights struct {
	be   backends.Backend
	mu   sync.RWMutex
	bufs map[string]backends.Buffer
}

// NewWeights returns an empty set on be.
func NewWeights(be backends.Backend) *Weights {
	return &Weights{be: be, bufs: map[string]backends.Buffer{}}
}

// Backend returns the backend holding the buffers.
func (w *Weights) Backend() backends.Backend { return w.be }

// Set uploads host data ([]float32, []float64 or []int64) as weight name with the given shape,
// replacing any previous value. A new value of the same shape is written in place, so programs
// compiled against the weights see it; a new shape replaces the buffer (recompile those programs).
func (w *Weights) Set(name string, s shapes.Shape, data any) error {
	if err := s.Valid(); err != nil {
		return fmt.Errorf("weight %q: %w", name, err)
	}
	// Same shape: write in place, so that programs already bound to the buffer see the new value.
	if old, ok := w.Get(name); ok && old.Shape().Equal(s) {
		if err := w.be.Write(old, data); err != nil {
			return fmt.Errorf("weight %q: %w", name, err)
		}
		return nil
	}
	buf, err := w.be.Alloc(s)
	if err != nil {
		return fmt.Errorf("weight %q: %w", name, err)
	}
	if err := w.be.Write(buf, data); err != nil {
		_ = w.be.Free(buf)
		return fmt.Errorf("weight %q: %w", name, err)
	}
	w.install(name, buf)
	return nil
}

// install makes buf the value of weight name and frees the previous one.
func (w *Weights) install(name string, buf backends.Buffer) {
	w.mu.Lock()
	old := w.bufs[name]
	w.bufs[name] = buf
	w.mu.Unlock()
	if old != nil {
		_ = w.be.Free(old)
	}
}

// Alloc allocates a zero-filled buffer of shape s as weight name and returns it, for a loader
// that fills the weight piecewise (backends.RangeWriter) rather than from one host slice as Set
// does. A previous value of the name is freed and replaced: programs compiled against it must be
// recompiled. Until filled, the weight reads as zeros.
func (w *Weights) Alloc(name string, s shapes.Shape) (backends.Buffer, error) {
	if err := s.Valid(); err != nil {
		return nil, fmt.Errorf("weight %q: %w", name, err)
	}
	buf, err := w.be.Alloc(s)
	if err != nil {
		return nil, fmt.Errorf("weight %q: %w", name, err)
	}
	w.install(name, buf)
	return buf, nil
}

// SetDense uploads a gorgonia tensor (float32 or float64) as weight name.
func (w *Weights) SetDense(name string, t *tensor.Dense) error {
	s, data, err := FromDense(t)
	if err != nil {
		return fmt.Errorf("weight %q: %w", name, err)
	}
	return w.Set(name, s, data)
}

// Get returns the buffer of weight name.
func (w *Weights) Get(name string) (backends.Buffer, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	b, ok := w.bufs[name]
	return b, ok
}

// Read copies weight name into a new host slice.
func (w *Weights) Read(name string) (shapes.Shape, any, error) {
	b, ok := w.Get(name)
	if !ok {
		return shapes.Shape{}, nil, fmt.Errorf("no weight %q", name)
	}
	s := b.Shape()
	data := NewHostSlice(s)
	if err := w.be.Read(data, b); err != nil {
		return s, nil, fmt.Errorf("weight %q: %w", name, err)
	}
	return s, data, nil
}

// Names lists the weights, sorted.
func (w *Weights) Names() []string {
	w.mu.RLock()
	defer w.mu.RUnlock()
	names := make([]string, 0, len(w.bufs))
	for n := range w.bufs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Free releases every buffer.
func (w *Weights) Free() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var first error
	for n, b := range w.bufs {
		if err := w.be.Free(b); err != nil && first == nil {
			first = err
		}
		delete(w.bufs, n)
	}
	return first
}

// NewHostSlice returns a zeroed host slice of the Go type matching s's dtype ([]uint16 of raw
// bits for bfloat16 and float16, []int8 for int8).
func NewHostSlice(s shapes.Shape) any {
	switch s.DType {
	case shapes.Float32:
		return make([]float32, s.Size())
	case shapes.Float64:
		return make([]float64, s.Size())
	case shapes.Int64:
		return make([]int64, s.Size())
	case shapes.BFloat16, shapes.Float16:
		return make([]uint16, s.Size()) // raw bits
	case shapes.Int8:
		return make([]int8, s.Size())
	}
	return nil
}

// FromDense returns the shape and backing data of a gorgonia tensor.
func FromDense(t *tensor.Dense) (shapes.Shape, any, error) {
	if t == nil {
		return shapes.Shape{}, nil, fmt.Errorf("nil tensor")
	}
	dims := append([]int(nil), t.Shape()...)
	if t.IsScalar() {
		dims = nil
	}
	if !t.IsNativelyAccessible() {
		return shapes.Shape{}, nil, fmt.Errorf("tensor is not host memory")
	}
	if t.RequiresIterator() {
		t = t.Materialize().(*tensor.Dense)
	}
	switch d := t.Data().(type) {
	case []float32:
		return shapes.Make(shapes.Float32, dims...), d, nil
	case []float64:
		return shapes.Make(shapes.Float64, dims...), d, nil
	case []int64:
		return shapes.Make(shapes.Int64, dims...), d, nil
	case float32:
		return shapes.Make(shapes.Float32), []float32{d}, nil
	case float64:
		return shapes.Make(shapes.Float64), []float64{d}, nil
	}
	return shapes.Shape{}, nil, fmt.Errorf("tensor dtype %v is not float32, float64 or int64", t.Dtype())
}

// ToDense wraps host data of shape s in a gorgonia tensor (no copy).
func ToDense(s shapes.Shape, data any) (*tensor.Dense, error) {
	n := -1
	switch d := data.(type) {
	case []float32:
		n = len(d)
	case []float64:
		n = len(d)
	case []int64:
		n = len(d)
	case []uint16:
		n = len(d)
	case []int8:
		n = len(d)
	}
	if n != s.Size() {
		return nil, fmt.Errorf("host data %T of %d elements does not fit shape %s", data, n, s)
	}
	dims := s.Dims
	if len(dims) == 0 {
		dims = []int{1}
	}
	return tensor.New(tensor.WithShape(dims...), tensor.WithBacking(data)), nil
}
