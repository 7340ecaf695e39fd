package mamba2

import (
	"fmt"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/shapes"
)

// loadChunkElems bounds the elements one chunk of a streamed load holds: 1 MiB of float32 (and
// 2 MiB more as float64 for a float64 model), unless one row is longer. A variable so that tests
// can make it small.
var loadChunkElems = 1 << 18

// filler uploads weights to a backend a chunk of whole rows at a time, through host buffers it
// reuses across tensors.
type filler struct {
	weights *graph.Weights
	rw      backends.RangeWriter // nil when the backend lacks it: each tensor is written whole
	dtype   shapes.DType         // the compute type of the buffers
	f32     []float32
	f64     []float64
}

func newFiller(w *graph.Weights, dt shapes.DType) *filler {
	rw, _ := w.Backend().(backends.RangeWriter)
	return &filler{weights: w, rw: rw, dtype: dt}
}

// fill allocates weight name of shape dims in the compute type and fills it from read, which
// decodes the source tensor's elements [offset, offset+len(dst)) in row-major order into dst.
//
// Each chunk holds whole rows (of the last axis): at most loadChunkElems elements, or one row
// when a row is longer, or the whole tensor when the backend cannot write ranges. So a storage
// format that converts a row at a time (bf16, int8 with per-row scales) can convert each chunk
// on its own between read and write.
func (fl *filler) fill(name string, dims []int, read func(dst []float32, offset int) error) error {
	s := shapes.Make(fl.dtype, dims...)
	buf, err := fl.weights.Alloc(name, s)
	if err != nil {
		return fmt.Errorf("mamba2: %w", err)
	}
	n := s.Size()
	step := n
	if fl.rw != nil {
		row := 1
		if len(dims) > 0 {
			row = max(dims[len(dims)-1], 1)
		}
		step = max(loadChunkElems/row, 1) * row
	}
	for off := 0; off < n; off += step {
		k := min(step, n-off)
		fl.f32 = grow(fl.f32, k)
		chunk := fl.f32[:k]
		if err := read(chunk, off); err != nil {
			return err
		}
		var src any = chunk
		if fl.dtype == shapes.Float64 {
			fl.f64 = grow(fl.f64, k)
			wide := fl.f64[:k]
			for i, v := range chunk {
				wide[i] = float64(v)
			}
			src = wide
		}
		if fl.rw != nil {
			err = fl.rw.WriteRange(buf, off, src)
		} else {
			err = fl.weights.Backend().Write(buf, src)
		}
		if err != nil {
			return fmt.Errorf("mamba2: weight %s: %w", name, err)
		}
	}
	return nil
}

// grow returns s with room for n elements, reallocating only when it has too few.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
