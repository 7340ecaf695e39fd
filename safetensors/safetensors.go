// Package safetensors reads and writes files in the safetensors format used by Hugging Face.
//
// A safetensors file is an 8-byte little-endian unsigned header length N, N bytes of a JSON
// header, then the tensor data. The header maps each tensor name to
//
//	{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
//
// where the offsets are byte positions in the data section, and may hold a "__metadata__" object
// of string values. Tensor data is little-endian and row-major (C order).
//
// The reader validates a file completely before handing out any tensor: a header that runs past
// the end of the file, JSON that does not parse, an unknown dtype, a negative or overflowing
// dimension, offsets that do not match shape × dtype size, and tensors that overlap or leave gaps
// are all reported as errors naming the file and the tensor. No input makes it panic. Open reads
// the whole file into memory; OpenLazy reads and validates only the header and reads tensor data
// on demand, whole or in ranges (ReadFloat32), so that loading large weights does not need a
// copy of the file in memory.
//
// The writer stores tensors in the order given, pads the header with spaces to a multiple of 8
// bytes as the reference implementation does, and replaces its output file atomically.
package safetensors

import (
	"fmt"
	"math"
)

// DType names, as they appear in a header.
const (
	Bool    = "BOOL"
	U8      = "U8"
	I8      = "I8"
	F8E5M2  = "F8_E5M2"
	F8E4M3  = "F8_E4M3"
	I16     = "I16"
	U16     = "U16"
	F16     = "F16"
	BF16    = "BF16"
	I32     = "I32"
	U32     = "U32"
	F32     = "F32"
	F64     = "F64"
	I64     = "I64"
	U64     = "U64"
	metaKey = "__metadata__"
)

// maxHeader is the largest header accepted, the reference implementation's limit.
const maxHeader = 100 << 20

// dtypeSize is the size in bytes of one element of each known dtype.
var dtypeSize = map[string]int{
	Bool: 1, U8: 1, I8: 1, F8E5M2: 1, F8E4M3: 1,
	I16: 2, U16: 2, F16: 2, BF16: 2,
	I32: 4, U32: 4, F32: 4,
	F64: 8, I64: 8, U64: 8,
}

// IsFloat reports whether dtype is a floating-point type that Float32 and Float64 convert:
// F64, F32, F16, BF16, F8_E5M2 or F8_E4M3.
func IsFloat(dtype string) bool {
	switch dtype {
	case F64, F32, F16, BF16, F8E5M2, F8E4M3:
		return true
	}
	return false
}

// IsInt reports whether dtype is an integer (or boolean) type that Int64 converts:
// I64, I32, I16, I8, U64, U32, U16, U8 or BOOL.
func IsInt(dtype string) bool {
	switch dtype {
	case I64, I32, I16, I8, U64, U32, U16, U8, Bool:
		return true
	}
	return false
}

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	// DType is the element type as the header spells it, e.g. "F32", "BF16", "I64".
	DType string
	// Shape holds the dimensions, outermost first; empty for a scalar.
	Shape []int
}

// Size returns the number of elements of a tensor with this shape (1 for a scalar).
func (ti TensorInfo) Size() int {
	n := 1
	for _, d := range ti.Shape {
		n *= d
	}
	return n
}

// mulSize returns a·b, or false when either is negative or the product exceeds MaxInt.
func mulSize(a, b int) (int, bool) {
	if a < 0 || b < 0 {
		return 0, false
	}
	if a == 0 || b == 0 {
		return 0, true
	}
	if a > math.MaxInt/b {
		return 0, false
	}
	return a * b, true
}

// errorf builds an error prefixed with the package name and, when known, the file.
func errorf(path, format string, args ...any) error {
	if path != "" {
		return fmt.Errorf("safetensors: %s: "+format, append([]any{path}, args...)...)
	}
	return fmt.Errorf("safetensors: "+format, args...)
}
