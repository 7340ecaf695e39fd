package cpu

import (
	"fmt"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/cpu/kernels"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

// Kernels for weights stored as bfloat16, float16 or int8 (ops.QuantMatMul, ops.QuantGather).
// 16-bit weights are widened to float32 as they are read. Products with int8 weights first round
// x to int16 per block of quant.ActBlock (the op's definition): decode then multiplies
// integers (AVX-512 VNNI where the CPU has it), prefill runs the float32 GEMM on the rounded x.

func init() {
	register("QuantMatMul", compileQuantMatMul)
	register("QuantGather", compileQuantGather)
}

const (
	// quantMatVecRows is the most rows of x that take the mat-vec path (decode, a small batch):
	// each row streams the quantised W through the mat-vec kernels, which widen in registers.
	// Beyond it, dequantising panels of W once and running the float32 GEMM on them is faster.
	quantMatVecRows = 4
	// quantRowBlock is how many rows of W the mat-vec path keeps hot in cache while every row of
	// x passes over them (with more than one row of x).
	quantRowBlock = 16
	// quantPanelBytes bounds one worker's dequantised panel of W so that it stays in L2 while
	// the GEMM packs and sweeps it.
	quantPanelBytes = 512 << 10
)

// quantMatMulKernel computes y [M×N] = x [M×K] · dequant(W [N×K])ᵀ.
//
// Decode (M ≤ quantMatVecRows): the rows of W are split across the pool and every worker runs
// the quantised mat-vec kernels on its share: memory-bound, so reading 2 or 1 bytes per weight
// instead of 4 is the whole point; with int8 weights each row of x is first rounded to a
// kernels.Q16Vector and the products are in integers. Prefill: the rows of W are split across
// workers, and each dequantises a panel of its rows at a time into its own float32 scratch
// (borrowed from the backend's arena for the Run) and computes those columns of y with the
// float32 GEMM kernels, against x rounded per block for int8 weights (never OpenBLAS: handing it
// panels one after another measured slower than the workers' own GEMMs on their panels, which
// matched OpenBLAS on the whole float32 product at M = 512).
type quantMatMulKernel struct {
	sized
	be      *Backend
	dt      shapes.DType
	m, n, k int
	minRows int // decode: rows of W per worker at least

	panel   int         // prefill: rows of W per dequantised panel
	workers int         // prefill: how many workers split the rows of W
	scratch [][]float32 // prefill: per worker, panel·k values borrowed from the backend for a Run

	x, y  []float32
	w16   []uint16
	w8    []int8
	scale []float32

	q16     []*kernels.Q16Vector // int8 decode: each row of x rounded to int16 (allocated at Compile)
	xr      []float32            // int8 prefill: x rounded per block, borrowed for a Run
	roundFn func(lo, hi int)

	rowsFn, panelFn func(lo, hi int)
	par             parallel
}

func compileQuantMatMul(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.QuantMatMulOp)
	if !ok {
		return nil, fmt.Errorf("op %T is not ops.QuantMatMulOp", op)
	}
	if err := ops.CheckOutputs(o, in, out); err != nil {
		return nil, err
	}
	n, k := in[1].Dims[0], in[1].Dims[1]
	q := &quantMatMulKernel{sized: sizesOf(in, out), be: be, dt: in[1].DType, m: in[0].Size() / k, n: n, k: k}
	q.rowsFn, q.panelFn, q.roundFn = q.rows, q.panels, q.round
	if q.m <= quantMatVecRows {
		q.minRows = max(64, (1<<16)/max(1, k*q.m))
		if q.dt == shapes.Int8 {
			q.q16 = make([]*kernels.Q16Vector, q.m)
			for i := range q.q16 {
				q.q16[i] = kernels.NewQ16Vector(k)
			}
		}
		return q, nil
	}
	q.panel = min(512, max(32, quantPanelBytes/(4*k)/32*32), n)
	q.workers = min(be.pool.threads, (n+q.panel-1)/q.panel)
	q.scratch = make([][]float32, q.workers)
	return q, nil
}

func (q *quantMatMulKernel) Run(in, out []backends.Buffer) error {
	if err := q.check(in, out); err != nil {
		return err
	}
	var err error
	if q.x, err = data[float32](in, 0); err != nil {
		return err
	}
	if q.dt == shapes.Int8 {
		if q.w8, err = data[int8](in, 1); err != nil {
			return err
		}
		if q.scale, err = data[float32](in, 2); err != nil {
			return err
		}
	} else if q.w16, err = data[uint16](in, 1); err != nil {
		return err
	}
	if q.y, err = data[float32](out, 0); err != nil {
		return err
	}
	if q.m <= quantMatVecRows {
		for i, v := range q.q16 {
			v.Quantize(q.x[i*q.k : (i+1)*q.k])
		}
		q.be.pool.parallelFor(&q.par, q.n, q.minRows, q.rowsFn)
		return nil
	}
	x := q.x
	if q.dt == shapes.Int8 {
		q.xr = borrow[float32](&q.be.arena, q.m*q.k)
		q.be.pool.parallelFor(&q.par, q.m, max(1, (1<<14)/q.k), q.roundFn)
		q.x = q.xr
	}
	for w := range q.scratch {
		q.scratch[w] = borrow[float32](&q.be.arena, q.panel*q.k)
	}
	q.be.pool.parallelFor(&q.par, q.workers, 1, q.panelFn)
	for w, s := range q.scratch {
		giveBack(&q.be.arena, s)
		q.scratch[w] = nil
	}
	if q.xr != nil {
		giveBack(&q.be.arena, q.xr)
		q.xr, q.x = nil, x
	}
	return nil
}

// round writes the rows [lo,hi) of x, rounded to int16 per block as quant.RoundInt16Blocks does,
// into xr: the int8 prefill path.
func (q *quantMatMulKernel) round(lo, hi int) {
	kernels.RoundInt16Rows(q.xr[lo*q.k:hi*q.k], q.x[lo*q.k:hi*q.k], q.k)
}

// dequantize writes the float32 values of the rows [j0,j1) of W into dst.
func (q *quantMatMulKernel) dequantize(dst []float32, j0, j1 int) {
	dequantRows(dst, q.dt, q.w16, q.w8, q.scale, q.n, q.k, j0, j1)
}

// dequantRows writes the float32 values of the rows [r0,r1) of a quantised [n×k] matrix into
// dst (kernels' widening loops, bitwise package quant's values): w16 holds bfloat16 or float16
// bits, w8 and scale an int8 matrix. The kernels check dt at Compile and the buffers' sizes
// before every run, so the slices here always fit.
func dequantRows(dst []float32, dt shapes.DType, w16 []uint16, w8 []int8, scale []float32, n, k, r0, r1 int) {
	switch dt {
	case shapes.BFloat16:
		kernels.BF16Matrix{N: n, K: k, Data: w16}.DequantizeRows(dst, r0, r1)
	case shapes.Float16:
		kernels.F16Matrix{N: n, K: k, Data: w16}.DequantizeRows(dst, r0, r1)
	case shapes.Int8:
		kernels.Int8Matrix{N: n, K: k, Data: w8, Scale: scale}.DequantizeRows(dst, r0, r1)
	}
}

// matVec sets y[j] = Σ_p W[j,p]·x[p] for the rows j in [lo,hi) of W, where x is row i of the
// kernel's x (for int8, its rounding q.q16[i]).
func (q *quantMatMulKernel) matVec(y, x []float32, i, lo, hi int) {
	switch q.dt {
	case shapes.BFloat16:
		kernels.MatVecTBF16(y, kernels.BF16Matrix{N: q.n, K: q.k, Data: q.w16}, x, lo, hi)
	case shapes.Float16:
		kernels.MatVecTF16(y, kernels.F16Matrix{N: q.n, K: q.k, Data: q.w16}, x, lo, hi)
	case shapes.Int8:
		kernels.MatVecTInt8Q16(y, kernels.Int8Matrix{N: q.n, K: q.k, Data: q.w8, Scale: q.scale}, q.q16[i], lo, hi)
	}
}

// rows computes the columns [lo,hi) of y (rows of W) for every row of x (the decode path).
func (q *quantMatMulKernel) rows(lo, hi int) {
	n, k := q.n, q.k
	if q.m == 1 {
		q.matVec(q.y, q.x, 0, lo, hi)
		return
	}
	for j0 := lo; j0 < hi; j0 += quantRowBlock {
		j1 := min(j0+quantRowBlock, hi)
		for i := 0; i < q.m; i++ {
			q.matVec(q.y[i*n:i*n+n], q.x[i*k:i*k+k], i, j0, j1)
		}
	}
}

// panels runs workers [lo,hi) of the prefill path: worker w owns the rows [w·N/W, (w+1)·N/W) of
// the weight and computes those columns of y, a dequantised panel at a time.
func (q *quantMatMulKernel) panels(lo, hi int) {
	n, k := q.n, q.k
	for w := lo; w < hi; w++ {
		buf := q.scratch[w]
		for j0, end := w*n/q.workers, (w+1)*n/q.workers; j0 < end; j0 += q.panel {
			j1 := min(j0+q.panel, end)
			p := buf[:(j1-j0)*k]
			q.dequantize(p, j0, j1)
			kernels.GemmNTStrided(q.y[j0:], n, q.x, p, q.m, j1-j0, k, false)
		}
	}
}

// quantGatherKernel writes the dequantised rows table[idx[i]] into y.
type quantGatherKernel struct {
	sized
	be         *Backend
	dt         shapes.DType
	rows, d, n int // table [rows, d], n indices
	t16        []uint16
	t8         []int8
	scale      []float32
	idx        []int64
	y          []float32
	fn         func(lo, hi int)
	par        parallel
}

func compileQuantGather(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.QuantGatherOp)
	if !ok {
		return nil, fmt.Errorf("op %T is not ops.QuantGatherOp", op)
	}
	if err := ops.CheckOutputs(o, in, out); err != nil {
		return nil, err
	}
	g := &quantGatherKernel{sized: sizesOf(in, out), be: be, dt: in[0].DType,
		rows: in[0].Dims[0], d: in[0].Dims[1], n: in[1].Size()}
	g.fn = g.run
	return g, nil
}

func (g *quantGatherKernel) Run(in, out []backends.Buffer) error {
	if err := g.check(in, out); err != nil {
		return err
	}
	var err error
	if g.dt == shapes.Int8 {
		if g.t8, err = data[int8](in, 0); err != nil {
			return err
		}
		if g.scale, err = data[float32](in, 2); err != nil {
			return err
		}
	} else if g.t16, err = data[uint16](in, 0); err != nil {
		return err
	}
	if g.idx, err = data[int64](in, 1); err != nil {
		return err
	}
	if g.y, err = data[float32](out, 0); err != nil {
		return err
	}
	if err := checkIndices("QuantGather", g.idx, g.rows); err != nil {
		return err
	}
	g.be.pool.parallelFor(&g.par, g.n, max(1, copyGrain/max(1, g.d)), g.fn)
	return nil
}

// run dequantises the rows of indices [lo,hi).
func (g *quantGatherKernel) run(lo, hi int) {
	d := g.d
	for i := lo; i < hi; i++ {
		r := int(g.idx[i])
		dequantRows(g.y[i*d:i*d+d], g.dt, g.t16, g.t8, g.scale, g.rows, d, r, r+1)
	}
}
