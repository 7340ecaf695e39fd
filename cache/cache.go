// Package cache holds the recurrent state of a model between program runs: a set of named per-row
// tensors (for Mamba2, each layer's conv window and SSM state) plus the number of tokens each row
// has consumed. Programs read and write it through their state bindings (Bind), so no caller ever
// passes a position: where a row is in its sequence is part of the state.
//
// Operations never alias: Clone, Snapshot, Select and Merge copy, so writing to one cache never
// shows in another.
package cache

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/shapes"
)

// TensorSpec names one state tensor and gives its per-row dimensions (without the batch axis).
type TensorSpec struct {
	Name string
	Dims []int
}

// Spec describes a model's cache.
type Spec struct {
	Tensors []TensorSpec
	DType   shapes.DType
	// Fingerprint identifies the model configuration; Load refuses a file with another one.
	Fingerprint string
}

// Cache is the recurrent state of a batch of rows on a backend.
type Cache struct {
	be      backends.Backend
	spec    Spec
	batch   int
	bufs    []backends.Buffer
	index   map[string]int
	lengths []int
	zeros   any // Reset's source: host zeros of the largest tensor's size and the state dtype
}

// New returns a zeroed cache for batch rows.
func New(be backends.Backend, spec Spec, batch int) (*Cache, error) {
	if be == nil {
		return nil, errors.New("cache: nil backend")
	}
	if batch <= 0 {
		return nil, fmt.Errorf("cache: batch size %d must be positive", batch)
	}
	if len(spec.Tensors) == 0 {
		return nil, errors.New("cache: the spec has no tensors")
	}
	if !spec.DType.IsFloat() {
		// The state is computed, so it has the model's compute dtype; weights may be stored in
		// bfloat16, float16 or int8, the state may not.
		return nil, fmt.Errorf("cache: state dtype %s is not float32 or float64", spec.DType)
	}
	c := &Cache{be: be, spec: spec, batch: batch, index: map[string]int{}, lengths: make([]int, batch)}
	for i, t := range spec.Tensors {
		if _, dup := c.index[t.Name]; dup {
			return nil, fmt.Errorf("cache: tensor %q listed twice", t.Name)
		}
		buf, err := be.Alloc(c.shapeOf(i))
		if err != nil {
			c.Free()
			return nil, fmt.Errorf("cache: tensor %q: %w", t.Name, err)
		}
		c.index[t.Name] = i
		c.bufs = append(c.bufs, buf)
	}
	return c, nil
}

func (c *Cache) shapeOf(i int) shapes.Shape {
	return shapes.Make(c.spec.DType, append([]int{c.batch}, c.spec.Tensors[i].Dims...)...)
}

// Batch is the number of rows.
func (c *Cache) Batch() int { return c.batch }

// Spec returns the cache's description.
func (c *Cache) Spec() Spec { return c.spec }

// Backend returns the backend holding the buffers.
func (c *Cache) Backend() backends.Backend { return c.be }

// Lengths returns how many tokens each row has consumed.
func (c *Cache) Lengths() []int { return append([]int(nil), c.lengths...) }

// Advance records that row b consumed n[b] more tokens. Model sessions call it after each run.
func (c *Cache) Advance(n []int) error {
	if len(n) != c.batch {
		return fmt.Errorf("cache: Advance got %d counts for %d rows", len(n), c.batch)
	}
	for b, k := range n {
		if k < 0 {
			return fmt.Errorf("cache: row %d: negative token count %d", b, k)
		}
	}
	for b, k := range n {
		c.lengths[b] += k
	}
	return nil
}

// Buffer returns the buffer of state tensor name, [batch, dims...].
func (c *Cache) Buffer(name string) (backends.Buffer, error) {
	i, ok := c.index[name]
	if !ok {
		return nil, fmt.Errorf("cache: no tensor %q (have: %s)", name, strings.Join(c.names(), ", "))
	}
	return c.bufs[i], nil
}

func (c *Cache) names() []string {
	n := make([]string, len(c.spec.Tensors))
	for i, t := range c.spec.Tensors {
		n[i] = t.Name
	}
	return n
}

// Bind binds every state of p to this cache's buffer of the same name. A state the cache does not
// have is an error naming it.
func (c *Cache) Bind(p *graph.Program) error {
	for _, st := range p.States() {
		buf, err := c.Buffer(st.Name)
		if err != nil {
			return fmt.Errorf("cache: program state %q: %w", st.Name, err)
		}
		if err := p.BindState(st.Name, buf); err != nil {
			return fmt.Errorf("cache: %w", err)
		}
	}
	return nil
}

// Read returns a copy of state tensor name on the host ([]float32 or []float64) and its shape.
func (c *Cache) Read(name string) (shapes.Shape, any, error) {
	buf, err := c.Buffer(name)
	if err != nil {
		return shapes.Shape{}, nil, err
	}
	s := buf.Shape()
	data := graph.NewHostSlice(s)
	if err := c.be.Read(data, buf); err != nil {
		return s, nil, fmt.Errorf("cache: reading %q: %w", name, err)
	}
	return s, data, nil
}

// Write replaces state tensor name with host data of its shape.
func (c *Cache) Write(name string, data any) error {
	buf, err := c.Buffer(name)
	if err != nil {
		return err
	}
	if err := c.be.Write(buf, data); err != nil {
		return fmt.Errorf("cache: writing %q %s: %w", name, buf.Shape(), err)
	}
	return nil
}

// Reset zeroes every tensor and every row's length. It writes from one host slice of zeros,
// made on the first Reset and kept: a new slice per tensor made every Reset allocate the whole
// cache's size again (19 MB for the 130m shape), garbage that raised a process's peak memory.
func (c *Cache) Reset() error {
	for i, buf := range c.bufs {
		if err := c.be.Write(buf, c.zerosFor(c.shapeOf(i))); err != nil {
			return fmt.Errorf("cache: reset %q: %w", c.spec.Tensors[i].Name, err)
		}
	}
	clear(c.lengths)
	return nil
}

// zerosFor returns host zeros of s's size and dtype, sliced from c.zeros.
func (c *Cache) zerosFor(s shapes.Shape) any {
	if c.zeros == nil {
		most := 0
		for i := range c.bufs {
			most = max(most, c.shapeOf(i).Size())
		}
		c.zeros = graph.NewHostSlice(shapes.Make(s.DType, most))
	}
	switch z := c.zeros.(type) {
	case []float32:
		return z[:s.Size()]
	case []float64:
		return z[:s.Size()]
	}
	return graph.NewHostSlice(s)
}

// Clone returns an independent copy.
func (c *Cache) Clone() (*Cache, error) {
	d, err := New(c.be, c.spec, c.batch)
	if err != nil {
		return nil, err
	}
	if err := d.Restore(c); err != nil {
		d.Free()
		return nil, err
	}
	return d, nil
}

// Snapshot returns a copy of the current state (a prefix cache entry) that Restore can bring
// back later, into this cache or another of the same spec and batch size.
func (c *Cache) Snapshot() (*Cache, error) { return c.Clone() }

// Restore overwrites this cache with the contents of from, which must have the same spec and
// batch size.
func (c *Cache) Restore(from *Cache) error {
	if err := c.compatible(from); err != nil {
		return err
	}
	if from.batch != c.batch {
		return fmt.Errorf("cache: restore of %d rows into a cache of %d", from.batch, c.batch)
	}
	for i := range c.bufs {
		if err := c.be.Copy(c.bufs[i], from.bufs[i]); err != nil {
			return fmt.Errorf("cache: restore %q: %w", c.spec.Tensors[i].Name, err)
		}
	}
	copy(c.lengths, from.lengths)
	return nil
}

func (c *Cache) compatible(o *Cache) error {
	if o == nil {
		return errors.New("cache: nil cache")
	}
	if o.be != c.be {
		return errors.New("cache: caches live on different backends")
	}
	if o.spec.Fingerprint != c.spec.Fingerprint || o.spec.DType != c.spec.DType || len(o.spec.Tensors) != len(c.spec.Tensors) {
		return fmt.Errorf("cache: caches of different models (fingerprint %q vs %q)", o.spec.Fingerprint, c.spec.Fingerprint)
	}
	for i, t := range c.spec.Tensors {
		if t.Name != o.spec.Tensors[i].Name || !shapes.EqualDims(t.Dims, o.spec.Tensors[i].Dims) {
			return fmt.Errorf("cache: tensor %q differs between caches", t.Name)
		}
	}
	return nil
}

// Select returns a new cache holding the given rows of c, in that order (a row may repeat). Use it
// to drop finished rows from a running batch.
func (c *Cache) Select(rows []int) (*Cache, error) {
	if len(rows) == 0 {
		return nil, errors.New("cache: Select of no rows")
	}
	for _, r := range rows {
		if r < 0 || r >= c.batch {
			return nil, fmt.Errorf("cache: Select row %d out of range [0,%d)", r, c.batch)
		}
	}
	d, err := New(c.be, c.spec, len(rows))
	if err != nil {
		return nil, err
	}
	for i := range c.bufs {
		_, src, err := c.Read(c.spec.Tensors[i].Name)
		if err != nil {
			d.Free()
			return nil, err
		}
		dst := graph.NewHostSlice(d.shapeOf(i))
		per := d.shapeOf(i).Size() / len(rows)
		for j, r := range rows {
			copyRows(dst, src, j*per, r*per, per)
		}
		if err := d.be.Write(d.bufs[i], dst); err != nil {
			d.Free()
			return nil, err
		}
	}
	for j, r := range rows {
		d.lengths[j] = c.lengths[r]
	}
	return d, nil
}

func copyRows(dst, src any, dOff, sOff, n int) {
	switch d := dst.(type) {
	case []float32:
		copy(d[dOff:dOff+n], src.([]float32)[sOff:sOff+n])
	case []float64:
		copy(d[dOff:dOff+n], src.([]float64)[sOff:sOff+n])
	}
}

// Merge returns a new cache whose rows are those of each cache in turn (continuous batching: add
// newly prefilled rows to a running batch).
func Merge(caches ...*Cache) (*Cache, error) {
	if len(caches) == 0 {
		return nil, errors.New("cache: Merge of no caches")
	}
	first := caches[0]
	total := 0
	for _, c := range caches {
		if err := first.compatible(c); err != nil {
			return nil, err
		}
		total += c.batch
	}
	d, err := New(first.be, first.spec, total)
	if err != nil {
		return nil, err
	}
	for i := range d.bufs {
		dst := graph.NewHostSlice(d.shapeOf(i))
		off := 0
		for _, c := range caches {
			_, src, err := c.Read(c.spec.Tensors[i].Name)
			if err != nil {
				d.Free()
				return nil, err
			}
			n := c.shapeOf(i).Size()
			copyRows(dst, src, off, 0, n)
			off += n
		}
		if err := d.be.Write(d.bufs[i], dst); err != nil {
			d.Free()
			return nil, err
		}
	}
	row := 0
	for _, c := range caches {
		row += copy(d.lengths[row:], c.lengths)
	}
	return d, nil
}

// Free releases the buffers. The cache must not be used afterwards.
func (c *Cache) Free() error {
	var first error
	for _, b := range c.bufs {
		if err := c.be.Free(b); err != nil && first == nil {
			first = err
		}
	}
	c.bufs = nil
	return first
}

// Names lists the state tensors, sorted.
func (c *Cache) Names() []string {
	n := c.names()
	sort.Strings(n)
	return n
}
