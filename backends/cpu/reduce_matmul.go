package cpu

import (
	"fmt"
	"sync"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	register("Sum", compileSum)
	register("MatMul", compileMatMul)
}

// sumKernel adds the input into an output that the layout broadcasts back over the input's shape.
type sumKernel[T Float] struct {
	l layout // over the input's dims; operand 0 is the keep-dims output
}

func compileSum(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.SumOp)
	if !ok {
		return nil, fmt.Errorf("op %T is not ops.SumOp", op)
	}
	keep := append([]int(nil), in[0].Dims...)
	for _, a := range o.Axes {
		n, err := shapes.NormAxis(a, len(keep))
		if err != nil {
			return nil, err
		}
		keep[n] = 1
	}
	l := newLayout(in[0].Dims, keep)
	switch out[0].DType {
	case shapes.Float32:
		return &sumKernel[float32]{l}, nil
	case shapes.Float64:
		return &sumKernel[float64]{l}, nil
	}
	return nil, backends.ErrUnsupported
}

func (k *sumKernel[T]) Run(in, out []backends.Buffer) error {
	x, err := data[T](in, 0)
	if err != nil {
		return err
	}
	y, err := data[T](out, 0)
	if err != nil {
		return err
	}
	clear(y)
	n, s := k.l.inner, k.l.innerStride(0)
	for r := 0; r < k.l.rows; r++ {
		o := k.l.offset(0, r)
		row := x[r*n : r*n+n]
		if s == 0 {
			var acc T
			for _, v := range row {
				acc += v
			}
			y[o] += acc
			continue
		}
		for i, v := range row {
			y[o+i*s] += v
		}
	}
	return nil
}

// matmulKernel computes batched products; each (batch, row) pair is one unit of parallel work.
type matmulKernel[T Float] struct {
	be               *Backend
	m, k, n          int
	transA, transB   bool
	batch            int
	batchDims        []int
	aStride, bStride []int // per batch axis, in matrices (0 where broadcast)
	aOff, bOff       []int // matrix offset per batch index
	a, b, c          []T
	fn               func(lo, hi int)
	wg               sync.WaitGroup
}

func compileMatMul(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.MatMulOp)
	if !ok {
		return nil, fmt.Errorf("op %T is not ops.MatMulOp", op)
	}
	switch out[0].DType {
	case shapes.Float32:
		return newMatMul[float32](be, o, in)
	case shapes.Float64:
		return newMatMul[float64](be, o, in)
	}
	return nil, backends.ErrUnsupported
}

func newMatMul[T Float](be *Backend, o ops.MatMulOp, in []shapes.Shape) (*matmulKernel[T], error) {
	batch, m, kk, n, err := o.MatMulDims(in[0].Dims, in[1].Dims)
	if err != nil {
		return nil, err
	}
	k := &matmulKernel[T]{be: be, m: m, k: kk, n: n, transA: o.TransA, transB: o.TransB, batchDims: batch}
	k.batch = 1
	for _, d := range batch {
		k.batch *= d
	}
	ad, bd := in[0].Dims[:in[0].Rank()-2], in[1].Dims[:in[1].Rank()-2]
	la := newLayout(append(append([]int(nil), batch...), 1), append(append([]int(nil), ad...), 1))
	lb := newLayout(append(append([]int(nil), batch...), 1), append(append([]int(nil), bd...), 1))
	k.aOff = make([]int, k.batch)
	k.bOff = make([]int, k.batch)
	for i := 0; i < k.batch; i++ {
		k.aOff[i] = la.offset(0, i) * m * kk
		k.bOff[i] = lb.offset(0, i) * kk * n
	}
	k.fn = k.rows
	return k, nil
}

func (k *matmulKernel[T]) Run(in, out []backends.Buffer) error {
	var err error
	if k.a, err = data[T](in, 0); err != nil {
		return err
	}
	if k.b, err = data[T](in, 1); err != nil {
		return err
	}
	if k.c, err = data[T](out, 0); err != nil {
		return err
	}
	if len(k.c) != k.batch*k.m*k.n {
		return fmt.Errorf("matmul: output has %d elements, want %d", len(k.c), k.batch*k.m*k.n)
	}
	work := k.k * k.n
	k.be.pool.parallelFor(&k.wg, k.batch*k.m, max(1, 4096/max(1, work)), k.fn)
	return nil
}

// rows computes output rows lo..hi (flattened over batch × M).
func (k *matmulKernel[T]) rows(lo, hi int) {
	m, kk, n := k.m, k.k, k.n
	for r := lo; r < hi; r++ {
		bi, i := r/m, r%m
		a := k.a[k.aOff[bi]:]
		b := k.b[k.bOff[bi]:]
		c := k.c[r*n : r*n+n]
		clear(c)
		for p := 0; p < kk; p++ {
			var av T
			if k.transA {
				av = a[p*m+i]
			} else {
				av = a[i*kk+p]
			}
			if av == 0 {
				continue
			}
			if k.transB {
				for j := range c {
					c[j] += av * b[j*kk+p]
				}
			} else {
				brow := b[p*n : p*n+n]
				for j, bv := range brow {
					c[j] += av * bv
				}
			}
		}
	}
}
