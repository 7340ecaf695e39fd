package cpu

import (
	"fmt"

	"github.com/mamba2go/mamba2/backends"
)

var _ backends.RangeWriter = (*Backend)(nil)

// WriteRange copies host data src into dst's elements [offset, offset+len(src)), so that a
// loader can fill a large buffer through a small reusable host slice (backends.RangeWriter).
func (b *Backend) WriteRange(dst backends.Buffer, offset int, src any) error {
	cb, err := asBuffer(dst)
	if err != nil {
		return err
	}
	switch d := cb.data.(type) {
	case []float32:
		if s, ok := src.([]float32); ok {
			return copyRange(d, s, offset, cb)
		}
	case []float64:
		if s, ok := src.([]float64); ok {
			return copyRange(d, s, offset, cb)
		}
	case []int64:
		if s, ok := src.([]int64); ok {
			return copyRange(d, s, offset, cb)
		}
	case []uint16:
		if s, ok := src.([]uint16); ok {
			return copyRange(d, s, offset, cb)
		}
	case []int8:
		if s, ok := src.([]int8); ok {
			return copyRange(d, s, offset, cb)
		}
	}
	return fmt.Errorf("cpu: WriteRange of %s at offset %d into a %s tensor (want a %s)", describe(src), offset, cb.shape, hostType(cb.shape.DType))
}

func copyRange[T elem](dst, src []T, offset int, cb *Buffer) error {
	if offset < 0 || offset > len(dst) || len(src) > len(dst)-offset {
		return fmt.Errorf("cpu: WriteRange of elements [%d, %d) is outside a %s tensor of %d elements", offset, offset+len(src), cb.shape, len(dst))
	}
	copy(dst[offset:], src)
	return nil
}
