package cpu

import (
	"fmt"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/cpu/kernels"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	register("Sum", compileSum)
	register("MatMul", compileMatMul)
}

// sumKernel adds the input into an output that the layout broadcasts back over the input's shape.
type sumKernel[T Float] struct {
	sized
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
		return &sumKernel[float32]{sizesOf(in, out), l}, nil
	case shapes.Float64:
		return &sumKernel[float64]{sizesOf(in, out), l}, nil
	}
	return nil, backends.ErrUnsupported
}

func (k *sumKernel[T]) Run(in, out []backends.Buffer) error {
	if err := k.check(in, out); err != nil {
		return err
	}
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

// matmulKernel computes batched products. Float32 products run the blocked SIMD kernels of
// package kernels (or OpenBLAS when loaded and the product is large); work is split across the
// pool by rows of C, or by columns when C has few rows (decode: a matrix–vector product).
type matmulKernel[T Float] struct {
	sized
	be             *Backend
	m, k, n        int
	transA, transB bool
	batch          int
	flat           bool  // B has no batch axes and A's batches are contiguous: one [batch·m × k] product
	aOff, bOff     []int // matrix offsets per batch index
	a, b, c        []T
	rowsFn, colsFn func(lo, hi int)
	batchFn        func(lo, hi int)
	par            parallel
}

func compileMatMul(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.MatMulOp)
	if !ok {
		return nil, fmt.Errorf("op %T is not ops.MatMulOp", op)
	}
	switch out[0].DType {
	case shapes.Float32:
		return newMatMul[float32](be, o, in, out)
	case shapes.Float64:
		return newMatMul[float64](be, o, in, out)
	}
	return nil, backends.ErrUnsupported
}

func newMatMul[T Float](be *Backend, o ops.MatMulOp, in, out []shapes.Shape) (*matmulKernel[T], error) {
	batch, m, kk, n, err := o.MatMulDims(in[0].Dims, in[1].Dims)
	if err != nil {
		return nil, err
	}
	k := &matmulKernel[T]{sized: sizesOf(in, out), be: be, m: m, k: kk, n: n, transA: o.TransA, transB: o.TransB}
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
	k.flat = len(bd) == 0 && !o.TransA && shapes.EqualDims(ad, batch)
	k.rowsFn, k.colsFn, k.batchFn = k.rows, k.cols, k.batches
	return k, nil
}

func (k *matmulKernel[T]) Run(in, out []backends.Buffer) error {
	if err := k.check(in, out); err != nil {
		return err
	}
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
	pool := k.be.pool
	switch {
	case k.flat:
		rows := k.batch * k.m
		if k.useBLAS(rows) {
			k.gemm(0, rows, 0, k.n) // OpenBLAS threads itself
			return nil
		}
		// Few rows: split the columns (each worker streams its share of B).
		if rows < 4*pool.threads && k.transB {
			pool.parallelFor(&k.par, k.n, max(64, 1<<16/max(1, k.k*rows)), k.colsFn)
		} else {
			pool.parallelPieces(&k.par, rows, max(1, (1<<15)/max(1, k.k*k.n)), 1, k.rowsFn)
		}
	default:
		pool.parallelFor(&k.par, k.batch, max(1, (1<<15)/max(1, k.m*k.k*k.n)), k.batchFn)
	}
	return nil
}

func (k *matmulKernel[T]) useBLAS(rows int) bool {
	if _, ok := any(k.c).([]float32); !ok || !k.transB || k.transA {
		return false
	}
	return kernels.UseBLAS(rows, k.n, k.k)
}

// rows computes rows [lo,hi) of the flat product.
func (k *matmulKernel[T]) rows(lo, hi int) { k.gemm(lo, hi, 0, k.n) }

// cols computes columns [lo,hi) of the flat product.
func (k *matmulKernel[T]) cols(lo, hi int) { k.gemm(0, k.batch*k.m, lo, hi) }

// batches computes whole matrices of batch indices [lo,hi).
func (k *matmulKernel[T]) batches(lo, hi int) {
	m, kk, n := k.m, k.k, k.n
	for bi := lo; bi < hi; bi++ {
		a := k.a[k.aOff[bi] : k.aOff[bi]+m*kk]
		b := k.b[k.bOff[bi] : k.bOff[bi]+kk*n]
		c := k.c[bi*m*n : (bi+1)*m*n]
		product(c, a, b, m, n, kk, k.transA, k.transB, 0, m, 0, n)
	}
}

// gemm computes the block rows [i0,i1) × columns [j0,j1) of the flat product.
func (k *matmulKernel[T]) gemm(i0, i1, j0, j1 int) {
	rows := k.batch * k.m
	if k.useBLAS(rows) && i0 == 0 && i1 == rows && j0 == 0 && j1 == k.n {
		kernels.GemmNT(any(k.c).([]float32), any(k.a).([]float32), any(k.b).([]float32), rows, k.n, k.k, false)
		return
	}
	product(k.c, k.a, k.b, rows, k.n, k.k, false, k.transB, i0, i1, j0, j1)
}

// product computes the block [i0,i1)×[j0,j1) of C[m×n] = op(A)·op(B) for one matrix pair.
func product[T Float](c, a, b []T, m, n, kk int, transA, transB bool, i0, i1, j0, j1 int) {
	switch cv := any(c).(type) {
	case []float32:
		av, bv := any(a).([]float32), any(b).([]float32)
		switch {
		case !transA && transB:
			kernels.GemmNTBlock(cv, av, bv, m, n, kk, i0, i1, j0, j1, false)
			return
		case !transA && !transB && j0 == 0 && j1 == n:
			kernels.GemmNNRange(cv, av, bv, m, n, kk, i0, i1, false)
			return
		case transA && !transB && j0 == 0 && j1 == n:
			kernels.GemmTNRange(cv, av, bv, m, n, kk, i0, i1, false)
			return
		}
	case []float64:
		av, bv := any(a).([]float64), any(b).([]float64)
		if j0 == 0 && j1 == n {
			switch {
			case !transA && transB:
				kernels.GemmNTRange64(cv, av, bv, m, n, kk, i0, i1, false)
				return
			case !transA && !transB:
				kernels.GemmNNRange64(cv, av, bv, m, n, kk, i0, i1, false)
				return
			case transA && !transB:
				kernels.GemmTNRange64(cv, av, bv, m, n, kk, i0, i1, false)
				return
			}
		}
	}
	productGeneric(c, a, b, m, n, kk, transA, transB, i0, i1, j0, j1)
}

// productGeneric is the portable fallback for every transpose combination.
func productGeneric[T Float](c, a, b []T, m, n, kk int, transA, transB bool, i0, i1, j0, j1 int) {
	for i := i0; i < i1; i++ {
		cr := c[i*n+j0 : i*n+j1]
		for j := range cr {
			jj := j0 + j
			var acc T
			for p := 0; p < kk; p++ {
				var av, bv T
				if transA {
					av = a[p*m+i]
				} else {
					av = a[i*kk+p]
				}
				if transB {
					bv = b[jj*kk+p]
				} else {
					bv = b[p*n+jj]
				}
				acc += av * bv
			}
			cr[j] = acc
		}
	}
}
