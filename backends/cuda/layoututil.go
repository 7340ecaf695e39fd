package cuda

import (
	"fmt"

	"github.com/mamba2go/mamba2/shapes"
)

// bcastStrides returns, per axis of outDims, the element stride of an operand with dims inDims
// broadcast to it (0 where the operand has size 1 or lacks the axis).
func bcastStrides(outDims, inDims []int) []int {
	st := make([]int, len(outDims))
	ist := shapes.Strides(inDims)
	lead := len(outDims) - len(inDims)
	for i := range outDims {
		if j := i - lead; j >= 0 && inDims[j] != 1 {
			st[i] = ist[j]
		}
	}
	return st
}

// collapse drops size-1 axes and merges neighbouring axes that every operand walks contiguously
// (or broadcasts over both), so that index arithmetic in the kernels runs over as few axes as
// possible. The row-major order of the remaining axes is kept.
func collapse(dims []int, strides ...[]int) ([]int, [][]int) {
	var d []int
	st := make([][]int, len(strides))
	for i, n := range dims {
		if n == 1 {
			continue
		}
		if len(d) > 0 {
			last := len(d) - 1
			merge := true
			for k := range strides {
				if st[k][last] != strides[k][i]*n {
					merge = false
					break
				}
			}
			if merge {
				d[last] *= n
				for k := range strides {
					st[k][last] = strides[k][i]
				}
				continue
			}
		}
		d = append(d, n)
		for k := range strides {
			st[k] = append(st[k], strides[k][i])
		}
	}
	return d, st
}

// axisSplit returns the product of the dimensions before axis, the axis size and the product of
// those after it.
func axisSplit(dims []int, axis int) (outer, n, inner int) {
	outer, inner = 1, 1
	for _, d := range dims[:axis] {
		outer *= d
	}
	for _, d := range dims[axis+1:] {
		inner *= d
	}
	return outer, dims[axis], inner
}

// wantArity checks the numbers of inputs and outputs a kernel builder got.
func wantArity(in, out []shapes.Shape, nin, nout int) error {
	if len(in) != nin || len(out) != nout {
		return fmt.Errorf("%d inputs and %d outputs, want %d and %d", len(in), len(out), nin, nout)
	}
	return nil
}
