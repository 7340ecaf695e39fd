// Package shapes describes tensors symbolically: an element type (DType) and static dimensions.
//
// It is the vocabulary every other package shares (ops infer shapes, graph checks them, backends
// allocate them), so it has no dependencies of its own.
package shapes

import (
	"fmt"
	"strings"
)

// DType is the element type of a tensor.
type DType uint8

const (
	// InvalidDType is the zero value; no valid tensor has it.
	InvalidDType DType = iota
	// Float32 is IEEE-754 single precision.
	Float32
	// Float64 is IEEE-754 double precision.
	Float64
	// Int64 holds integer indices (token ids, gather indices); no arithmetic op accepts it.
	Int64
	// BFloat16 stores weights as the top 16 bits of a float32 (host slice []uint16 of raw bits).
	// It is a storage type: it halves the bytes a memory-bound mat-vec reads, and only the
	// quantized ops (QuantMatMul, QuantGather) read it, widening to float32 as they go.
	BFloat16
	// Float16 stores weights in IEEE 754 half precision (host slice []uint16 of raw bits). A
	// storage type, like BFloat16: more mantissa, less range.
	Float16
	// Int8 stores weights as signed bytes with one float32 scale per row kept in a separate
	// tensor (host slice []int8). A storage type: a quarter of the float32 bytes.
	Int8
)

// String returns the lower-case name used in error messages ("float32").
func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case Float64:
		return "float64"
	case Int64:
		return "int64"
	case BFloat16:
		return "bfloat16"
	case Float16:
		return "float16"
	case Int8:
		return "int8"
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// Size is the number of bytes of one element.
func (d DType) Size() int {
	switch d {
	case Float32:
		return 4
	case Float64, Int64:
		return 8
	case BFloat16, Float16:
		return 2
	case Int8:
		return 1
	}
	return 0
}

// IsFloat reports whether d is a floating-point type that ops compute in (float32, float64).
// The 16-bit float storage types are not: no arithmetic op takes them.
func (d DType) IsFloat() bool { return d == Float32 || d == Float64 }

// IsStorage reports whether d is a storage-only type (BFloat16, Float16, Int8): tensors of it
// hold weights compactly and are read by the quantized ops only, which compute in float32.
func (d DType) IsStorage() bool { return d == BFloat16 || d == Float16 || d == Int8 }

// Known reports whether d is one of the dtypes above (not InvalidDType or an out-of-range value).
func (d DType) Known() bool { return d > InvalidDType && d <= Int8 }

// Shape is a dtype and a list of static dimensions. A scalar has no dimensions.
type Shape struct {
	DType DType
	Dims  []int
}

// Make returns a shape with the given dtype and dimensions (copied).
func Make(dt DType, dims ...int) Shape {
	return Shape{DType: dt, Dims: append([]int(nil), dims...)}
}

// Rank is the number of dimensions.
func (s Shape) Rank() int { return len(s.Dims) }

// Size is the number of elements (1 for a scalar).
func (s Shape) Size() int {
	n := 1
	for _, d := range s.Dims {
		n *= d
	}
	return n
}

// Dim returns dimension i; negative i counts from the end (-1 is the last axis).
func (s Shape) Dim(i int) int {
	if i < 0 {
		i += len(s.Dims)
	}
	return s.Dims[i]
}

// Equal reports whether two shapes have the same dtype and dimensions.
func (s Shape) Equal(o Shape) bool {
	return s.DType == o.DType && EqualDims(s.Dims, o.Dims)
}

// EqualDims reports whether two dimension lists are identical.
func EqualDims(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Clone returns a deep copy.
func (s Shape) Clone() Shape { return Make(s.DType, s.Dims...) }

// WithDims returns a shape of the same dtype with other dimensions.
func (s Shape) WithDims(dims ...int) Shape { return Make(s.DType, dims...) }

// Valid reports whether the dtype is known and every dimension is positive.
func (s Shape) Valid() error {
	if !s.DType.Known() {
		return fmt.Errorf("invalid dtype %v", s.DType)
	}
	for i, d := range s.Dims {
		if d <= 0 {
			return fmt.Errorf("shape %v: dimension %d is %d, must be positive", s, i, d)
		}
	}
	return nil
}

// String formats a shape as "float32[2,3]".
func (s Shape) String() string {
	return s.DType.String() + DimsString(s.Dims)
}

// DimsString formats dimensions as "[2,3]".
func DimsString(dims []int) string {
	var sb strings.Builder
	sb.WriteByte('[')
	for i, d := range dims {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "%d", d)
	}
	sb.WriteByte(']')
	return sb.String()
}

// Strides returns row-major element strides for dims.
func Strides(dims []int) []int {
	st := make([]int, len(dims))
	s := 1
	for i := len(dims) - 1; i >= 0; i-- {
		st[i] = s
		s *= dims[i]
	}
	return st
}

// Broadcast returns the numpy-style broadcast of two dimension lists (trailing axes aligned; a
// dimension of 1 stretches), or an error naming both.
func Broadcast(a, b []int) ([]int, error) {
	n := len(a)
	if len(b) > n {
		n = len(b)
	}
	out := make([]int, n)
	for i := 0; i < n; i++ {
		da, db := 1, 1
		if j := len(a) - n + i; j >= 0 {
			da = a[j]
		}
		if j := len(b) - n + i; j >= 0 {
			db = b[j]
		}
		switch {
		case da == db:
			out[i] = da
		case da == 1:
			out[i] = db
		case db == 1:
			out[i] = da
		default:
			return nil, fmt.Errorf("shapes %s and %s do not broadcast (axis %d: %d vs %d)",
				DimsString(a), DimsString(b), i, da, db)
		}
	}
	return out, nil
}

// NormAxis turns a possibly negative axis into 0..rank-1, or reports it out of range.
func NormAxis(axis, rank int) (int, error) {
	a := axis
	if a < 0 {
		a += rank
	}
	if a < 0 || a >= rank {
		return 0, fmt.Errorf("axis %d out of range for rank %d", axis, rank)
	}
	return a, nil
}
