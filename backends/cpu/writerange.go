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
	switch ok, fits := copyAt(cb.data, offset, src); {
	case !ok:
		return fmt.Errorf("cpu: WriteRange of %s at offset %d into a %s tensor (want a %s)", describe(src), offset, cb.shape, hostType(cb.shape.DType))
	case !fits:
		return fmt.Errorf("cpu: WriteRange of elements [%d, %d) is outside a %s tensor of %d elements", offset, offset+hostLen(src), cb.shape, hostLen(cb.data))
	}
	return nil
}
