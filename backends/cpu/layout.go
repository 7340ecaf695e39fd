package cpu

import (
	"fmt"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	register("Transpose", compileTranspose)
	register("Slice", compileSlice)
	register("Pad", compilePad)
	register("Concat", compileConcat)
	register("Gather", compileGather)
	register("ScatterAdd", compileScatterAdd)
}

// layoutElem is the element types layout kernels move (they never compute, so int64 is fine).
type layoutElem interface{ float32 | float64 | int64 }

// copyGrain is roughly how many elements one goroutine should copy to make a parallel copy pay.
const copyGrain = 1 << 15

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

// checkLen reports a buffer whose length differs from what the kernel was compiled for.
func checkLen(what string, got, want int) error {
	if got != want {
		return fmt.Errorf("%s has %d elements, the kernel was compiled for %d", what, got, want)
	}
	return nil
}

// ---- Transpose ----

type transposeKernel[T layoutElem] struct {
	be          *Backend
	outDims     []int
	srcStride   []int // per output axis: the input stride of that axis
	rows, inner int
	innerStride int
	size        int
	x, y        []T
	fn          func(lo, hi int)
	par         parallel
}

func compileTranspose(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.TransposeOp)
	if !ok || len(in) != 1 || len(out) != 1 {
		return nil, fmt.Errorf("bad op or arity")
	}
	if len(o.Perm) != in[0].Rank() {
		return nil, fmt.Errorf("permutation %v for rank %d", o.Perm, in[0].Rank())
	}
	switch in[0].DType {
	case shapes.Float32:
		return newTranspose[float32](be, o.Perm, in[0], out[0]), nil
	case shapes.Float64:
		return newTranspose[float64](be, o.Perm, in[0], out[0]), nil
	case shapes.Int64:
		return newTranspose[int64](be, o.Perm, in[0], out[0]), nil
	}
	return nil, fmt.Errorf("dtype %s: %w", in[0].DType, backends.ErrUnsupported)
}

func newTranspose[T layoutElem](be *Backend, perm []int, in, out shapes.Shape) *transposeKernel[T] {
	st := shapes.Strides(in.Dims)
	k := &transposeKernel[T]{be: be, outDims: out.Dims, srcStride: make([]int, len(perm)), rows: 1, inner: 1, size: in.Size()}
	for i, p := range perm {
		k.srcStride[i] = st[p]
	}
	if r := len(perm); r > 0 {
		k.inner = out.Dims[r-1]
		k.innerStride = k.srcStride[r-1]
		k.rows = k.size / k.inner
	}
	k.fn = k.run
	return k
}

func (k *transposeKernel[T]) Run(in, out []backends.Buffer) error {
	var err error
	if k.x, err = data[T](in, 0); err != nil {
		return err
	}
	if k.y, err = data[T](out, 0); err != nil {
		return err
	}
	if err := checkLen("transpose input", len(k.x), k.size); err != nil {
		return err
	}
	if err := checkLen("transpose output", len(k.y), k.size); err != nil {
		return err
	}
	k.be.pool.parallelFor(&k.par, k.rows, max(1, copyGrain/max(1, k.inner)), k.fn)
	return nil
}

func (k *transposeKernel[T]) run(lo, hi int) {
	n, s := k.inner, k.innerStride
	last := len(k.outDims) - 2
	for r := lo; r < hi; r++ {
		off, rr := 0, r
		for i := last; i >= 0; i-- {
			d := k.outDims[i]
			off += (rr % d) * k.srcStride[i]
			rr /= d
		}
		row := k.y[r*n : r*n+n]
		if s == 1 {
			copy(row, k.x[off:off+n])
			continue
		}
		for i := range row {
			row[i] = k.x[off+i*s]
		}
	}
}

// ---- Slice and Pad ----

// blockCopyKernel copies, for each of outer blocks, a run of n elements from the input at
// o*srcBlock+srcOff to the output at o*dstBlock+dstOff. Slice and Pad are both such copies (Pad
// first zeroes the output).
type blockCopyKernel[T layoutElem] struct {
	be                 *Backend
	outer, n           int
	srcBlock, srcOff   int
	dstBlock, dstOff   int
	inSize, outSize    int
	zero               bool
	x, y               []T
	fn                 func(lo, hi int)
	par                parallel
	minBlocksPerThread int
}

func newBlockCopy[T layoutElem](be *Backend, outer, n, srcBlock, srcOff, dstBlock, dstOff, inSize, outSize int, zero bool) *blockCopyKernel[T] {
	k := &blockCopyKernel[T]{be: be, outer: outer, n: n, srcBlock: srcBlock, srcOff: srcOff,
		dstBlock: dstBlock, dstOff: dstOff, inSize: inSize, outSize: outSize, zero: zero}
	k.minBlocksPerThread = max(1, copyGrain/max(1, n))
	k.fn = k.run
	return k
}

func (k *blockCopyKernel[T]) Run(in, out []backends.Buffer) error {
	var err error
	if k.x, err = data[T](in, 0); err != nil {
		return err
	}
	if k.y, err = data[T](out, 0); err != nil {
		return err
	}
	if err := checkLen("input", len(k.x), k.inSize); err != nil {
		return err
	}
	if err := checkLen("output", len(k.y), k.outSize); err != nil {
		return err
	}
	if k.zero {
		clear(k.y)
	}
	k.be.pool.parallelFor(&k.par, k.outer, k.minBlocksPerThread, k.fn)
	return nil
}

func (k *blockCopyKernel[T]) run(lo, hi int) {
	for o := lo; o < hi; o++ {
		s := o*k.srcBlock + k.srcOff
		d := o*k.dstBlock + k.dstOff
		copy(k.y[d:d+k.n], k.x[s:s+k.n])
	}
}

func compileBlockCopy(be *Backend, dt shapes.DType, outer, n, srcBlock, srcOff, dstBlock, dstOff, inSize, outSize int, zero bool) (backends.Kernel, error) {
	switch dt {
	case shapes.Float32:
		return newBlockCopy[float32](be, outer, n, srcBlock, srcOff, dstBlock, dstOff, inSize, outSize, zero), nil
	case shapes.Float64:
		return newBlockCopy[float64](be, outer, n, srcBlock, srcOff, dstBlock, dstOff, inSize, outSize, zero), nil
	case shapes.Int64:
		return newBlockCopy[int64](be, outer, n, srcBlock, srcOff, dstBlock, dstOff, inSize, outSize, zero), nil
	}
	return nil, fmt.Errorf("dtype %s: %w", dt, backends.ErrUnsupported)
}

func compileSlice(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.SliceOp)
	if !ok || len(in) != 1 || len(out) != 1 {
		return nil, fmt.Errorf("bad op or arity")
	}
	ax, err := shapes.NormAxis(o.Axis, in[0].Rank())
	if err != nil {
		return nil, err
	}
	outer, n, inner := axisSplit(in[0].Dims, ax)
	if o.Start < 0 || o.End > n || o.Start >= o.End {
		return nil, fmt.Errorf("range [%d,%d) of an axis of size %d", o.Start, o.End, n)
	}
	m := o.End - o.Start
	return compileBlockCopy(be, in[0].DType, outer, m*inner, n*inner, o.Start*inner, m*inner, 0,
		in[0].Size(), out[0].Size(), false)
}

func compilePad(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.PadOp)
	if !ok || len(in) != 1 || len(out) != 1 {
		return nil, fmt.Errorf("bad op or arity")
	}
	ax, err := shapes.NormAxis(o.Axis, in[0].Rank())
	if err != nil {
		return nil, err
	}
	if o.Before < 0 || o.After < 0 {
		return nil, fmt.Errorf("negative padding (%d, %d)", o.Before, o.After)
	}
	outer, n, inner := axisSplit(in[0].Dims, ax)
	m := n + o.Before + o.After
	return compileBlockCopy(be, in[0].DType, outer, n*inner, n*inner, 0, m*inner, o.Before*inner,
		in[0].Size(), out[0].Size(), true)
}

// ---- Concat ----

type concatKernel[T layoutElem] struct {
	be        *Backend
	outer     int
	block     []int // per input: elements per outer index
	dstOff    []int // per input: offset inside an output block
	dstBlock  int
	xs        [][]T
	y         []T
	fn        func(lo, hi int)
	par       parallel
	minPerThr int
}

func compileConcat(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.ConcatOp)
	if !ok || len(in) == 0 || len(out) != 1 {
		return nil, fmt.Errorf("bad op or arity")
	}
	switch out[0].DType {
	case shapes.Float32:
		return newConcat[float32](be, o, in, out[0])
	case shapes.Float64:
		return newConcat[float64](be, o, in, out[0])
	case shapes.Int64:
		return newConcat[int64](be, o, in, out[0])
	}
	return nil, fmt.Errorf("dtype %s: %w", out[0].DType, backends.ErrUnsupported)
}

func newConcat[T layoutElem](be *Backend, o ops.ConcatOp, in []shapes.Shape, out shapes.Shape) (*concatKernel[T], error) {
	ax, err := shapes.NormAxis(o.Axis, out.Rank())
	if err != nil {
		return nil, err
	}
	outer, _, inner := axisSplit(out.Dims, ax)
	k := &concatKernel[T]{be: be, outer: outer, block: make([]int, len(in)), dstOff: make([]int, len(in)),
		xs: make([][]T, len(in))}
	for i, s := range in {
		if s.Rank() != out.Rank() {
			return nil, fmt.Errorf("input %d %s has rank %d, the output %d", i, s, s.Rank(), out.Rank())
		}
		k.block[i] = s.Dims[ax] * inner
		k.dstOff[i] = k.dstBlock
		k.dstBlock += k.block[i]
	}
	if k.dstBlock*outer != out.Size() {
		return nil, fmt.Errorf("inputs hold %d elements, the output %s %d", k.dstBlock*outer, out, out.Size())
	}
	k.minPerThr = max(1, copyGrain/max(1, k.dstBlock))
	k.fn = k.run
	return k, nil
}

func (k *concatKernel[T]) Run(in, out []backends.Buffer) error {
	if len(in) != len(k.xs) {
		return fmt.Errorf("concat: %d inputs, compiled for %d", len(in), len(k.xs))
	}
	var err error
	for i := range k.xs {
		if k.xs[i], err = data[T](in, i); err != nil {
			return err
		}
		if err := checkLen("concat input", len(k.xs[i]), k.block[i]*k.outer); err != nil {
			return err
		}
	}
	if k.y, err = data[T](out, 0); err != nil {
		return err
	}
	if err := checkLen("concat output", len(k.y), k.dstBlock*k.outer); err != nil {
		return err
	}
	k.be.pool.parallelFor(&k.par, k.outer, k.minPerThr, k.fn)
	return nil
}

func (k *concatKernel[T]) run(lo, hi int) {
	for o := lo; o < hi; o++ {
		dst := k.y[o*k.dstBlock : (o+1)*k.dstBlock]
		for i, x := range k.xs {
			b := k.block[i]
			copy(dst[k.dstOff[i]:k.dstOff[i]+b], x[o*b:(o+1)*b])
		}
	}
}

// ---- Gather and ScatterAdd ----

// checkIndices returns an error naming the first index outside [0, rows).
func checkIndices(what string, idx []int64, rows int) error {
	for i, v := range idx {
		if v < 0 || v >= int64(rows) {
			return fmt.Errorf("%s: index %d (at position %d) is outside [0, %d)", what, v, i, rows)
		}
	}
	return nil
}

type gatherKernel[T Float] struct {
	be      *Backend
	rows, d int // table [rows, d]
	n       int // number of indices
	table   []T
	idx     []int64
	y       []T
	fn      func(lo, hi int)
	par     parallel
}

func compileGather(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	if _, ok := op.(ops.GatherOp); !ok || len(in) != 2 || len(out) != 1 {
		return nil, fmt.Errorf("bad op or arity")
	}
	if in[0].Rank() != 2 || in[1].DType != shapes.Int64 {
		return nil, fmt.Errorf("table %s and indices %s", in[0], in[1])
	}
	rows, d, n := in[0].Dims[0], in[0].Dims[1], in[1].Size()
	switch in[0].DType {
	case shapes.Float32:
		k := &gatherKernel[float32]{be: be, rows: rows, d: d, n: n}
		k.fn = k.run
		return k, nil
	case shapes.Float64:
		k := &gatherKernel[float64]{be: be, rows: rows, d: d, n: n}
		k.fn = k.run
		return k, nil
	}
	return nil, fmt.Errorf("dtype %s: %w", in[0].DType, backends.ErrUnsupported)
}

func (k *gatherKernel[T]) Run(in, out []backends.Buffer) error {
	var err error
	if k.table, err = data[T](in, 0); err != nil {
		return err
	}
	if k.idx, err = data[int64](in, 1); err != nil {
		return err
	}
	if k.y, err = data[T](out, 0); err != nil {
		return err
	}
	if err := checkLen("gather table", len(k.table), k.rows*k.d); err != nil {
		return err
	}
	if err := checkLen("gather indices", len(k.idx), k.n); err != nil {
		return err
	}
	if err := checkLen("gather output", len(k.y), k.n*k.d); err != nil {
		return err
	}
	if err := checkIndices("gather", k.idx, k.rows); err != nil {
		return err
	}
	k.be.pool.parallelFor(&k.par, k.n, max(1, copyGrain/max(1, k.d)), k.fn)
	return nil
}

func (k *gatherKernel[T]) run(lo, hi int) {
	d := k.d
	for i := lo; i < hi; i++ {
		r := int(k.idx[i])
		copy(k.y[i*d:i*d+d], k.table[r*d:r*d+d])
	}
}

// scatterAddKernel splits the columns between goroutines, so every output element is written by
// one goroutine, in index order (deterministic sums).
type scatterAddKernel[T Float] struct {
	be      *Backend
	rows, d int
	n       int
	idx     []int64
	g       []T
	y       []T
	fn      func(lo, hi int)
	par     parallel
}

func compileScatterAdd(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.ScatterAddOp)
	if !ok || len(in) != 2 || len(out) != 1 {
		return nil, fmt.Errorf("bad op or arity")
	}
	if in[0].DType != shapes.Int64 || in[1].Rank() < 1 || o.Rows <= 0 {
		return nil, fmt.Errorf("indices %s, values %s, rows %d", in[0], in[1], o.Rows)
	}
	d := in[1].Dims[in[1].Rank()-1]
	n := in[0].Size()
	switch in[1].DType {
	case shapes.Float32:
		k := &scatterAddKernel[float32]{be: be, rows: o.Rows, d: d, n: n}
		k.fn = k.run
		return k, nil
	case shapes.Float64:
		k := &scatterAddKernel[float64]{be: be, rows: o.Rows, d: d, n: n}
		k.fn = k.run
		return k, nil
	}
	return nil, fmt.Errorf("dtype %s: %w", in[1].DType, backends.ErrUnsupported)
}

func (k *scatterAddKernel[T]) Run(in, out []backends.Buffer) error {
	var err error
	if k.idx, err = data[int64](in, 0); err != nil {
		return err
	}
	if k.g, err = data[T](in, 1); err != nil {
		return err
	}
	if k.y, err = data[T](out, 0); err != nil {
		return err
	}
	if err := checkLen("scatter-add indices", len(k.idx), k.n); err != nil {
		return err
	}
	if err := checkLen("scatter-add values", len(k.g), k.n*k.d); err != nil {
		return err
	}
	if err := checkLen("scatter-add output", len(k.y), k.rows*k.d); err != nil {
		return err
	}
	if err := checkIndices("scatter-add", k.idx, k.rows); err != nil {
		return err
	}
	clear(k.y)
	k.be.pool.parallelFor(&k.par, k.d, max(1, copyGrain/max(1, k.n)), k.fn)
	return nil
}

func (k *scatterAddKernel[T]) run(lo, hi int) {
	d := k.d
	for i, r := range k.idx {
		dst := k.y[int(r)*d+lo : int(r)*d+hi]
		src := k.g[i*d+lo : i*d+hi]
		for j, v := range src {
			dst[j] += v
		}
	}
}
