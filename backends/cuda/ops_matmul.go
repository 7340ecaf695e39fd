package cuda

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() { register("MatMul", compileMatMul) }

const matmulCU = "matmul.cu"

// MatMul runs on cuBLAS when it is available, else on the built-in tiled kernel (matmul.cu).
//
// cuBLAS is column-major; a row-major C [M,N] = op(A)·op(B) is the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ,
// and a row-major matrix read as column-major is its transpose, so the call passes B first, A
// second, swaps M and N, and keeps each operand's transpose flag. Batches are folded into M when
// B is shared and A is contiguous (the projections), a single row is a GEMV (decoding), and other
// batches go through cublas?gemmBatched with per-batch pointer arrays kept in device memory
// (rebuilt only when the buffers change).

type gemmMode uint8

const (
	gemmSingle gemmMode = iota
	gemmVector
	gemmBatched
)

const (
	cublasOpN = 0
	cublasOpT = 1
)

type gemmStep struct {
	a, b, c          ref // the row-major operands of C = op(A)·op(B)
	mode             gemmMode
	fn               uintptr
	opFirst, opSec   uintptr // transpose flags of the first (B) and second (A) cuBLAS operands
	m, n, kk         int     // cuBLAS (column-major) dimensions: m = N, n = M·fold, k = K
	ldFirst, ldSec   int
	ldc              int
	esz              int
	alpha32, beta32  float32
	alpha64, beta64  float64
	f64              bool
	batch            int
	aOff, bOff       []int // per batch, element offsets into A and B
	cStride          int
	ptrs             int // scratch index of the device pointer arrays [3][batch]
	host             []uint64
	lastA, lastB, lc uint64
	call             [15]uintptr
	pin              runtime.Pinner
}

func compileMatMul(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.MatMulOp)
	if !ok {
		return fmt.Errorf("op %T is not ops.MatMulOp", op)
	}
	if err := wantArity(in, out, 2, 1); err != nil {
		return err
	}
	dt := out[0].DType
	if in[0].DType != dt || in[1].DType != dt {
		return fmt.Errorf("dtypes %s, %s → %s", in[0].DType, in[1].DType, dt)
	}
	sfx, err := suffix(dt)
	if err != nil {
		return err
	}
	batchDims, m, kk, n, err := o.MatMulDims(in[0].Dims, in[1].Dims)
	if err != nil {
		return err
	}
	batch := 1
	for _, d := range batchDims {
		batch *= d
	}
	if out[0].Size() != batch*m*n {
		return fmt.Errorf("output %s, want %d elements", out[0], batch*m*n)
	}
	ad, bd := in[0].Dims[:in[0].Rank()-2], in[1].Dims[:in[1].Rank()-2]
	sa := matStrides(batchDims, ad, m*kk)
	sb := matStrides(batchDims, bd, kk*n)
	if k.be.blas == 0 {
		bdc, sts := collapse(batchDims, sa, sb)
		ta, tb := 0, 0
		if o.TransA {
			ta = 1
		}
		if o.TransB {
			tb = 1
		}
		a := new(args).i64(batch).i64(m).i64(n).i64(kk).i64(ta).i64(tb).i64(len(bdc)).dims(bdc).dims(sts[0]).dims(sts[1]).
			buf(inRef(0)).buf(inRef(1)).buf(outRef(0))
		tiles := func(x int) int { return max(1, min((x+15)/16, 65535)) }
		return k.launch3(matmulCU, "gemm_"+sfx, [3]int{tiles(n), tiles(m), max(1, min(batch, 65535))}, [3]int{16, 16, 1}, a)
	}

	g := &gemmStep{a: inRef(0), b: inRef(1), c: outRef(0), esz: dt.Size(), f64: dt == shapes.Float64, batch: batch, cStride: m * n}
	g.alpha32, g.beta32, g.alpha64, g.beta64 = 1, 0, 1, 0
	g.aOff, g.bOff = make([]int, batch), make([]int, batch)
	sharedB, contigA := true, true
	for i := 0; i < batch; i++ {
		g.aOff[i] = offsetOf(i, batchDims, sa)
		g.bOff[i] = offsetOf(i, batchDims, sb)
		sharedB = sharedB && g.bOff[i] == 0
		contigA = contigA && g.aOff[i] == i*m*kk
	}
	fold := 1
	if batch > 1 && sharedB && contigA && !o.TransA {
		fold = batch
	}
	g.m, g.n, g.kk, g.ldc = n, m*fold, kk, n
	g.opFirst, g.ldFirst = cublasOpN, n
	if o.TransB {
		g.opFirst, g.ldFirst = cublasOpT, kk
	}
	g.opSec, g.ldSec = cublasOpN, kk
	if o.TransA {
		g.opSec, g.ldSec = cublasOpT, m
	}
	blas := &k.be.l.blas
	switch {
	case batch == fold && m*fold == 1:
		g.mode = gemmVector
		g.fn = pick(g.f64, blas.cublasDgemv, blas.cublasSgemv)
	case batch == fold:
		g.mode = gemmSingle
		g.fn = pick(g.f64, blas.cublasDgemm, blas.cublasSgemm)
	default:
		g.mode = gemmBatched
		g.fn = pick(g.f64, blas.cublasDgemmBatched, blas.cublasSgemmBatched)
		idx, err := k.addScratch(3 * batch * 8)
		if err != nil {
			return err
		}
		g.ptrs = idx
		g.host = make([]uint64, 3*batch)
	}
	k.steps = append(k.steps, step{kind: stepGemm, gemm: g})
	return nil
}

func pick(f64 bool, d, s uintptr) uintptr {
	if f64 {
		return d
	}
	return s
}

// matStrides returns per batch axis of batch the stride, in elements, between the matrices of an
// operand whose leading dimensions are lead (0 where it broadcasts).
func matStrides(batch, lead []int, matSize int) []int {
	st := make([]int, len(batch))
	s := matSize
	for j := len(lead) - 1; j >= 0; j-- {
		i := j + len(batch) - len(lead)
		if lead[j] != 1 {
			st[i] = s
		}
		s *= lead[j]
	}
	return st
}

// offsetOf maps a linear index over dims to Σ index_k·st_k.
func offsetOf(i int, dims, st []int) int {
	off := 0
	for k := len(dims) - 1; k >= 0; k-- {
		off += (i % dims[k]) * st[k]
		i /= dims[k]
	}
	return off
}

func (g *gemmStep) alphaBeta() (uintptr, uintptr) {
	if g.f64 {
		g.pin.Pin(&g.alpha64)
		g.pin.Pin(&g.beta64)
		return uintptr(unsafe.Pointer(&g.alpha64)), uintptr(unsafe.Pointer(&g.beta64))
	}
	g.pin.Pin(&g.alpha32)
	g.pin.Pin(&g.beta32)
	return uintptr(unsafe.Pointer(&g.alpha32)), uintptr(unsafe.Pointer(&g.beta32))
}

// run issues the cuBLAS call; the kernel's thread is bound to the context.
func (g *gemmStep) run(k *kernel) error {
	A, B, C := k.resolve(g.a), k.resolve(g.b), k.resolve(g.c)
	be := k.be
	c := &g.call
	if g.mode == gemmBatched && (A != g.lastA || B != g.lastB || C != g.lc) {
		esz := uint64(g.esz)
		for i := 0; i < g.batch; i++ {
			g.host[i] = B + uint64(g.bOff[i])*esz
			g.host[g.batch+i] = A + uint64(g.aOff[i])*esz
			g.host[2*g.batch+i] = C + uint64(i*g.cStride)*esz
		}
		g.pin.Pin(&g.host[0])
		c[0], c[1], c[2] = uintptr(k.scratch[g.ptrs]), uintptr(unsafe.Pointer(&g.host[0])), uintptr(len(g.host)*8)
		r := callv(be.drv.cuMemcpyHtoD, c, 3)
		g.pin.Unpin()
		if r != 0 {
			return be.drv.check("cuMemcpyHtoD_v2", r)
		}
		g.lastA, g.lastB, g.lc = A, B, C
	}
	be.blasMu.Lock()
	defer be.blasMu.Unlock()
	alpha, beta := g.alphaBeta()
	c[0] = be.blas
	var r uintptr
	var name string
	switch g.mode {
	case gemmVector:
		// y[N] = op(B)ᵀ·a: B as stored is column-major N×K (not transposed) or K×N (transposed).
		rows, cols := g.m, g.kk
		if g.opFirst == cublasOpT {
			rows, cols = g.kk, g.m
		}
		c[1], c[2], c[3], c[4] = g.opFirst, uintptr(rows), uintptr(cols), alpha
		c[5], c[6], c[7], c[8] = uintptr(B), uintptr(g.ldFirst), uintptr(A), 1
		c[9], c[10], c[11] = beta, uintptr(C), 1
		r, name = callv(g.fn, c, 12), "cublas?gemv_v2"
	case gemmSingle:
		c[1], c[2], c[3], c[4], c[5], c[6] = g.opFirst, g.opSec, uintptr(g.m), uintptr(g.n), uintptr(g.kk), alpha
		c[7], c[8], c[9], c[10] = uintptr(B), uintptr(g.ldFirst), uintptr(A), uintptr(g.ldSec)
		c[11], c[12], c[13] = beta, uintptr(C), uintptr(g.ldc)
		r, name = callv(g.fn, c, 14), "cublas?gemm_v2"
	case gemmBatched:
		p := k.scratch[g.ptrs]
		nb := uint64(g.batch * 8)
		c[1], c[2], c[3], c[4], c[5], c[6] = g.opFirst, g.opSec, uintptr(g.m), uintptr(g.n), uintptr(g.kk), alpha
		c[7], c[8], c[9], c[10] = uintptr(p), uintptr(g.ldFirst), uintptr(p+nb), uintptr(g.ldSec)
		c[11], c[12], c[13], c[14] = beta, uintptr(p+2*nb), uintptr(g.ldc), uintptr(g.batch)
		r, name = callv(g.fn, c, 15), "cublas?gemmBatched"
	}
	g.pin.Unpin()
	return cublasCheck(name, r)
}
