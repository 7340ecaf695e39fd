package mamba2

import (
	"fmt"

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
	u16     []uint16
	i8      []int8
	scale   []float32
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
	if fl.format != quant.F32 && Quantizable(name) {
		return fl.fillQuant(name, dims, read)
	}
	s := shapes.Make(fl.dtype, dims...)
	buf, err := fl.weights.Alloc(name, s)
	if err != nil {
		return fmt.Errorf("mamba2: %w", err)
	}
	n := s.Size()
	step := fl.step(n, dims)
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

// fillQuant is fill for a weight stored in fl.format: [rows, k] encoded row by row, plus float32
// scales [rows] for int8.
func (fl *filler) fillQuant(name string, dims []int, read func(dst []float32, offset int) error) error {
	s := shapes.Make(fl.format.DType(), dims...)
	buf, err := fl.weights.Alloc(name, s)
	if err != nil {
		return fmt.Errorf("mamba2: %w", err)
	}
	k := rowLen(dims)
	n := s.Size()
	var scaleBuf backends.Buffer
	if fl.format == quant.Int8 {
		if scaleBuf, err = fl.weights.Alloc(ScaleName(name), shapes.Make(shapes.Float32, n/k)); err != nil {
			return fmt.Errorf("mamba2: %w", err)
		}
	}
	be := fl.weights.Backend()
	write := func(dst backends.Buffer, off int, src any) error {
		if fl.rw != nil {
			return fl.rw.WriteRange(dst, off, src)
		}
		return be.Write(dst, src)
	}
	step := fl.step(n, dims)
	for off := 0; off < n; off += step {
		m := min(step, n-off)
		fl.f32 = grow(fl.f32, m)
		chunk := fl.f32[:m]
		if err := read(chunk, off); err != nil {
			return err
		}
		var data any
		switch fl.format {
		case quant.BF16, quant.F16:
			fl.u16 = grow(fl.u16, m)
			data = fl.u16[:m]
			if fl.format == quant.BF16 {
				err = quant.BF16FromFloat32(fl.u16[:m], chunk)
			} else {
				err = quant.F16FromFloat32(fl.u16[:m], chunk)
			}
		case quant.Int8:
			fl.i8 = grow(fl.i8, m)
			fl.scale = grow(fl.scale, m/k)
			data = fl.i8[:m]
			if err = quant.Int8Rows(fl.i8[:m], fl.scale[:m/k], chunk, k); err == nil {
				err = write(scaleBuf, off/k, fl.scale[:m/k])
			}
		default:
			err = fmt.Errorf("unknown weight format %v", fl.format)
		}
		if err == nil {
			err = write(buf, off, data)
		}
		if err != nil {
			return fmt.Errorf("mamba2: weight %s as %s: %w", name, fl.format, err)
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
