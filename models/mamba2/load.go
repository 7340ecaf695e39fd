package mamba2

import (
	"fmt"
	"slices"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/quant"
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
	format  quant.Format         // the storage format of Quantizable weights
	f32     []float32
	f64     []float64
	enc     quant.Encoder // the quantized formats' host slices
}

func newFiller(w *graph.Weights, dt shapes.DType, f quant.Format) *filler {
	rw, _ := w.Backend().(backends.RangeWriter)
	return &filler{weights: w, rw: rw, dtype: dt, format: f}
}

// fill allocates weight name of shape dims in the compute type and fills it from read, which
// decodes the source tensor's elements [offset, offset+len(dst)) in row-major order into dst.
//
// Each chunk holds whole rows (of the last axis): at most loadChunkElems elements, or one row
// when a row is longer, or the whole tensor when the backend cannot write ranges. So a storage
// format that converts a row at a time (bf16, int8 with per-row scales) can convert each chunk
// on its own between read and write.
//
// Quantizable weights of a model with a quantized format are stored in it: each chunk is encoded
// on the host, and an int8 weight gets its per-row scales in ScaleName(name).
func (fl *filler) fill(name string, dims []int, read func(dst []float32, offset int) error) error {
	format, dt, label := quant.F32, fl.dtype, name
	if fl.format != quant.F32 && Quantizable(name) {
		format, dt, label = fl.format, fl.format.DType(), name+" as "+fl.format.String()
	}
	s := shapes.Make(dt, dims...)
	buf, err := fl.weights.Alloc(name, s)
	if err != nil {
		return fmt.Errorf("mamba2: %w", err)
	}
	k, n := rowLen(dims), s.Size()
	var scaleBuf backends.Buffer
	if format == quant.Int8 {
		if scaleBuf, err = fl.weights.Alloc(ScaleName(name), shapes.Make(shapes.Float32, n/k)); err != nil {
			return fmt.Errorf("mamba2: %w", err)
		}
	}
	step := fl.step(n, dims)
	for off := 0; off < n; off += step {
		m := min(step, n-off)
		fl.f32 = slices.Grow(fl.f32[:0], m)[:m]
		chunk := fl.f32[:m]
		if err := read(chunk, off); err != nil {
			return err
		}
		data, scale, err := fl.encode(chunk, format, k)
		if err == nil && scaleBuf != nil {
			err = fl.write(scaleBuf, off/k, scale)
		}
		if err == nil {
			err = fl.write(buf, off, data)
		}
		if err != nil {
			return fmt.Errorf("mamba2: weight %s: %w", label, err)
		}
	}
	return nil
}

// encode converts a chunk of whole rows of k elements to the host slice of format: the compute
// type for quant.F32, else the format's encoding (and int8's scales). The slices are fl's, reused
// by the next chunk.
func (fl *filler) encode(chunk []float32, format quant.Format, k int) (data any, scale []float32, err error) {
	if format != quant.F32 {
		return fl.enc.Encode(format, chunk, k)
	}
	if fl.dtype != shapes.Float64 {
		return chunk, nil, nil
	}
	fl.f64 = slices.Grow(fl.f64[:0], len(chunk))[:len(chunk)]
	for i, v := range chunk {
		fl.f64[i] = float64(v)
	}
	return fl.f64, nil, nil
}

// write copies src into buf from element off: a range write where the backend has one,
// otherwise (each tensor then comes in one chunk) a whole Write.
func (fl *filler) write(buf backends.Buffer, off int, src any) error {
	if fl.rw != nil {
		return fl.rw.WriteRange(buf, off, src)
	}
	return fl.weights.Backend().Write(buf, src)
}

// step returns the elements per chunk: whole rows, see fill.
func (fl *filler) step(n int, dims []int) int {
	if fl.rw == nil {
		return max(n, 1)
	}
	return max(loadChunkElems/rowLen(dims), 1) * rowLen(dims)
}

// rowLen is the length of the last axis (1 for a scalar or an empty axis).
func rowLen(dims []int) int {
	if len(dims) == 0 {
		return 1
	}
	return max(dims[len(dims)-1], 1)
}
