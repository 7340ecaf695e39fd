package encdec

import (
	"errors"
	"fmt"
	"sync"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/shapes"
)

// Seq is one sequence: token ids (token models) or vectors (vector models), one entry per position.
type Seq struct {
	Tokens  []int
	Vectors [][]float64
}

// Len is the number of positions.
func (s Seq) Len() int {
	if s.Vectors != nil {
		return len(s.Vectors)
	}
	return len(s.Tokens)
}

// Example is a source and the target the model should produce for it.
type Example struct {
	Src, Tgt Seq
}

// Options tune how a model is created or loaded.
type Options struct {
	// DType is the compute type: shapes.Float32 (the default when zero) or shapes.Float64.
	DType shapes.DType
}

// Model is an encoder–decoder's configuration and weights on a backend, with the programs compiled
// for it so far (one per phase and shape). Its methods serialise on an internal lock, so one Model
// may be shared, but calls do not run concurrently.
type Model struct {
	Config  Config
	be      backends.Backend
	dtype   shapes.DType
	weights *graph.Weights
	shapes  map[string][]int

	mu    sync.Mutex
	progs map[Spec]*graph.Program
	order []Spec
}

// maxPrograms bounds the compiled programs a model keeps (least recently compiled dropped first).
const maxPrograms = 16

// New returns a model with freshly initialised weights (the same seed gives the same weights).
func New(be backends.Backend, c Config, seed uint64, opts Options) (*Model, error) {
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return NewWithParams(be, c, c.initParams(seed), opts)
}

// NewWithParams returns a model with the given weights (every name of Config.ParamShapes, in
// row-major order; a conv weight may also be given with the [C,1,K] checkpoint shape).
func NewWithParams(be backends.Backend, c Config, params map[string][]float64, opts Options) (*Model, error) {
	if be == nil {
		return nil, errors.New("encdec: nil backend")
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	dt := opts.DType
	if dt == shapes.InvalidDType {
		dt = shapes.Float32
	}
	if dt != shapes.Float32 && dt != shapes.Float64 {
		return nil, fmt.Errorf("encdec: dtype %s: want float32 or float64", dt)
	}
	m := &Model{Config: c, be: be, dtype: dt, weights: graph.NewWeights(be), shapes: c.ParamShapes(),
		progs: map[Spec]*graph.Program{}}
	for name := range params {
		if _, ok := m.shapes[name]; !ok {
			m.weights.Free()
			return nil, fmt.Errorf("encdec: unexpected parameter %s (not in the configuration)", name)
		}
	}
	for _, name := range c.ParamNames() {
		v, ok := params[name]
		s := shapes.Make(dt, m.shapes[name]...)
		if !ok {
			m.weights.Free()
			return nil, fmt.Errorf("encdec: missing parameter %s %v", name, m.shapes[name])
		}
		if len(v) != s.Size() {
			m.weights.Free()
			return nil, fmt.Errorf("encdec: parameter %s has %d values, the configuration expects %v (%d)", name, len(v), m.shapes[name], s.Size())
		}
		if err := m.weights.Set(name, s, hostSlice(v, dt)); err != nil {
			m.weights.Free()
			return nil, fmt.Errorf("encdec: %w", err)
		}
	}
	return m, nil
}

// hostSlice converts float64 values to a host slice of dt.
func hostSlice(v []float64, dt shapes.DType) any {
	if dt == shapes.Float64 {
		return v
	}
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// toFloat64 copies a []float32 or []float64 into dst (len must match) and returns it.
func toFloat64(dst []float64, src any) []float64 {
	switch s := src.(type) {
	case []float32:
		for i, x := range s {
			dst[i] = float64(x)
		}
	case []float64:
		copy(dst, s)
	}
	return dst
}

// Backend returns the backend the model runs on.
func (m *Model) Backend() backends.Backend { return m.be }

// DType returns the compute type.
func (m *Model) DType() shapes.DType { return m.dtype }

// Weights returns the weights on the backend (programs are bound to these buffers).
func (m *Model) Weights() *graph.Weights { return m.weights }

// NumParams is the number of scalar parameters.
func (m *Model) NumParams() int {
	n := 0
	for _, d := range m.shapes {
		n += shapes.Make(m.dtype, d...).Size()
	}
	return n
}

// Params returns a host copy of every parameter (graph shapes, row-major).
func (m *Model) Params() (map[string][]float64, error) {
	out := map[string][]float64{}
	for _, name := range m.Config.ParamNames() {
		s, data, err := m.weights.Read(name)
		if err != nil {
			return nil, fmt.Errorf("encdec: %w", err)
		}
		out[name] = toFloat64(make([]float64, s.Size()), data)
	}
	return out, nil
}

// SetParams overwrites the named parameters in place (compiled programs see the new values).
func (m *Model) SetParams(params map[string][]float64) error {
	for name, v := range params {
		buf, ok := m.weights.Get(name)
		if !ok {
			return fmt.Errorf("encdec: no parameter %s", name)
		}
		if len(v) != buf.Shape().Size() {
			return fmt.Errorf("encdec: parameter %s: %d values for %s", name, len(v), buf.Shape())
		}
		if err := m.be.Write(buf, hostSlice(v, m.dtype)); err != nil {
			return fmt.Errorf("encdec: parameter %s: %w", name, err)
		}
	}
	return nil
}

// Close frees the programs and the weights.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.progs {
		p.Close()
	}
	m.progs = nil
	return m.weights.Free()
}

// Compile builds and compiles the program for spec (its DType is set to the model's). The caller
// owns the result; programs the model compiles for itself are cached separately.
func (m *Model) Compile(spec Spec) (*graph.Program, error) {
	spec.DType = m.dtype
	g := graph.New()
	if err := Build(g, m.Config, spec); err != nil {
		return nil, err
	}
	return g.Compile(m.be, m.weights)
}

// program returns the cached program for spec, compiling it on first use. m.mu must be held.
func (m *Model) program(spec Spec) (*graph.Program, error) {
	if m.progs == nil {
		return nil, errors.New("encdec: the model is closed")
	}
	spec.DType = m.dtype
	if p, ok := m.progs[spec]; ok {
		return p, nil
	}
	p, err := m.Compile(spec)
	if err != nil {
		return nil, err
	}
	if len(m.order) >= maxPrograms {
		old := m.order[0]
		m.order = m.order[1:]
		m.progs[old].Close()
		delete(m.progs, old)
	}
	m.progs[spec] = p
	m.order = append(m.order, spec)
	return p, nil
}
