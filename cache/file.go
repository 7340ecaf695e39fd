package cache

import (
	"fmt"
	"strconv"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/safetensors"
	"github.com/mamba2go/mamba2/shapes"
)

// fileFormat tags cache files so that other safetensors files are refused clearly.
const fileFormat = "mamba2go-cache/1"

// lengthsName is the tensor holding each row's consumed-token count in a cache file.
const lengthsName = "__lengths__"

// Save writes the cache to a safetensors file (atomically: a failure leaves no partial file). The
// model fingerprint and dtype are stored in the metadata.
func (c *Cache) Save(path string) error {
	tensors := make([]safetensors.Tensor, 0, len(c.bufs)+1)
	for _, t := range c.spec.Tensors {
		s, data, err := c.Read(t.Name)
		if err != nil {
			return err
		}
		tensors = append(tensors, safetensors.Tensor{Name: t.Name, Shape: s.Dims, Data: data})
	}
	lens := make([]int64, c.batch)
	for b, l := range c.lengths {
		lens[b] = int64(l)
	}
	tensors = append(tensors, safetensors.Tensor{Name: lengthsName, Shape: []int{c.batch}, Data: lens})
	meta := map[string]string{
		"format":      fileFormat,
		"fingerprint": c.spec.Fingerprint,
		"dtype":       c.spec.DType.String(),
		"batch":       strconv.Itoa(c.batch),
	}
	if err := safetensors.Write(path, tensors, meta); err != nil {
		return fmt.Errorf("cache: save: %w", err)
	}
	return nil
}

// Load reads a cache file written by Save for a model with the given spec. A file written for
// another model configuration (a different fingerprint), another dtype, or with missing or
// misshaped tensors is refused with an error naming the file and what differs.
func Load(be backends.Backend, spec Spec, path string) (*Cache, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cache: load: %w", err)
	}
	meta := f.Metadata()
	if meta["format"] != fileFormat {
		return nil, fmt.Errorf("cache: %s is not a cache file (format %q, want %q)", path, meta["format"], fileFormat)
	}
	if meta["fingerprint"] != spec.Fingerprint {
		return nil, fmt.Errorf("cache: %s was saved for another model configuration (fingerprint %s, this model is %s)",
			path, meta["fingerprint"], spec.Fingerprint)
	}
	if meta["dtype"] != spec.DType.String() {
		return nil, fmt.Errorf("cache: %s holds %s state, the model computes in %s", path, meta["dtype"], spec.DType)
	}
	lens, ls, err := f.Int64(lengthsName)
	if err != nil {
		return nil, fmt.Errorf("cache: %s: %w", path, err)
	}
	if len(ls) != 1 || ls[0] <= 0 {
		return nil, fmt.Errorf("cache: %s: %s has shape %v, want [batch]", path, lengthsName, ls)
	}
	c, err := New(be, spec, ls[0])
	if err != nil {
		return nil, err
	}
	for i, t := range spec.Tensors {
		want := c.shapeOf(i)
		var data any
		var dims []int
		if spec.DType == shapes.Float64 {
			data, dims, err = f.Float64(t.Name)
		} else {
			data, dims, err = f.Float32(t.Name)
		}
		if err == nil && !shapes.EqualDims(dims, want.Dims) {
			err = fmt.Errorf("tensor %s has shape %v, the model expects %v", t.Name, dims, want.Dims)
		}
		if err == nil {
			err = c.be.Write(c.bufs[i], data)
		}
		if err != nil {
			c.Free()
			return nil, fmt.Errorf("cache: %s: %w", path, err)
		}
	}
	for b, l := range lens {
		if l < 0 {
			c.Free()
			return nil, fmt.Errorf("cache: %s: row %d has negative length %d", path, b, l)
		}
		c.lengths[b] = int(l)
	}
	return c, nil
}
