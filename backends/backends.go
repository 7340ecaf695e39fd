// Package backends defines what a compute backend provides — device buffers and compiled kernels —
// and a registry that maps backend names ("cpu", "cuda") to constructors.
//
// A backend never sees a graph. The graph package compiles each node into a Kernel by calling
// Backend.Compile with the node's op (a value from package ops, identified by its Name) and the
// static input and output shapes, once; a Program then calls Kernel.Run on every run with buffers it
// planned ahead of time. Kernels therefore know all sizes and strides at compile time and must not
// allocate in Run.
//
// Error policy: every method returns an error; nothing panics on bad input. A backend that cannot run
// an op returns an error wrapping ErrUnsupported that names the op.
package backends

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/mamba2go/mamba2/shapes"
)

// Op is the part of an op definition a backend needs: a name to pick the kernel by. The concrete
// value (a struct from package ops) carries the attributes, which a kernel reads by type assertion.
type Op interface {
	Name() string
}

// Buffer is memory owned by a backend holding one tensor.
type Buffer interface {
	Shape() shapes.Shape
}

// Kernel is an op compiled for fixed shapes. Run reads the inputs and overwrites the outputs; it must
// not allocate, and it must be safe to call from one goroutine at a time (programs own their kernels).
type Kernel interface {
	Run(in, out []Buffer) error
}

// InPlacer is implemented by kernels that can write an output over one of their inputs. When
// InPlace(out) returns i ≥ 0, Run gives the same results when out[out] and in[i] are one buffer.
// Programs use it to update a recurrent state where it lies instead of copying the new state back
// after every run (for a decode step that copy is the whole SSM state, twice).
type InPlacer interface {
	InPlace(out int) int
}

// Backend allocates buffers, moves data to and from the host, and compiles ops into kernels.
// Methods are safe for concurrent use.
type Backend interface {
	// Name is the registry name ("cpu").
	Name() string
	// Alloc returns a zero-filled buffer of the given shape.
	Alloc(s shapes.Shape) (Buffer, error)
	// Free releases a buffer; using it afterwards is an error.
	Free(b Buffer) error
	// Write copies a host slice ([]float32, []float64 or []int64 matching the dtype, []uint16 of
	// raw bits for bfloat16 and float16, []int8 for int8; with exactly Shape().Size() elements)
	// into dst.
	Write(dst Buffer, src any) error
	// Read copies src into a host slice of the matching type and size.
	Read(dst any, src Buffer) error
	// Copy copies src into dst; both must have the same shape.
	Copy(dst, src Buffer) error
	// Compile returns a kernel that runs op on inputs of shapes in producing outputs of shapes out.
	Compile(op Op, in, out []shapes.Shape) (Kernel, error)
	// Close releases everything the backend holds.
	Close() error
}

// RangeWriter is implemented by backends that can write part of a buffer. Loaders use it to fill
// a large weight from a file piece by piece, through a small reusable host buffer, instead of
// holding the whole tensor on the host a second time; without it they fall back to one Write.
type RangeWriter interface {
	// WriteRange copies src ([]float32, []float64 or []int64 matching dst's dtype) into dst's
	// elements [offset, offset+len(src)), in row-major order. A range outside dst, another type
	// and a freed or foreign buffer are errors that name the offset, the sizes and the types.
	WriteRange(dst Buffer, offset int, src any) error
}

// ErrUnsupported is wrapped by errors for ops or dtypes a backend does not implement.
var ErrUnsupported = errors.New("unsupported by backend")

// ErrUnknownBackend is wrapped by New when no backend of that name is registered.
var ErrUnknownBackend = errors.New("unknown backend")

// Constructor creates a backend instance.
type Constructor func() (Backend, error)

// EnvBackend names the environment variable that chooses the default backend for New("").
const EnvBackend = "MAMBA2_BACKEND"

// DefaultName is used by New("") when EnvBackend is unset.
const DefaultName = "cpu"

var registry = struct {
	sync.RWMutex
	ctors map[string]Constructor
}{ctors: map[string]Constructor{}}

// Register makes a backend available under name. Backends register themselves from an init
// function, as database/sql drivers do. Registering a name twice is an error.
func Register(name string, ctor Constructor) error {
	if name == "" || ctor == nil {
		return errors.New("backends: Register needs a name and a constructor")
	}
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.ctors[name]; dup {
		return fmt.Errorf("backends: %q registered twice", name)
	}
	registry.ctors[name] = ctor
	return nil
}

// Names lists the registered backends, sorted.
func Names() []string {
	registry.RLock()
	defer registry.RUnlock()
	names := make([]string, 0, len(registry.ctors))
	for n := range registry.ctors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New creates the backend registered under name. An empty name means $MAMBA2_BACKEND, or "cpu" when
// that is unset. An unknown name is an error listing the registered ones.
func New(name string) (Backend, error) {
	if name == "" {
		name = os.Getenv(EnvBackend)
	}
	if name == "" {
		name = DefaultName
	}
	registry.RLock()
	ctor, ok := registry.ctors[name]
	registry.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (registered: %s)", ErrUnknownBackend, name, strings.Join(Names(), ", "))
	}
	be, err := ctor()
	if err != nil {
		return nil, fmt.Errorf("backend %q: %w", name, err)
	}
	return be, nil
}
