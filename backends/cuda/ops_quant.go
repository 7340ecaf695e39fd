package cuda

import (
	"fmt"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/quant"
	"github.com/mamba2go/mamba2/shapes"
)

// Quantized weights (ops.QuantMatMul, ops.QuantGather; kernels in quant.cu): the weight stays in
// its storage dtype (bfloat16, float16, or int8 with a float32 scale per row) on the device and is
// widened to float32 as kernels read it, so a decode step reads 2 or 1 bytes per weight instead
// of 4.
//
// QuantMatMul y [M, N] = x [M, K] · dequant(W [N, K])ᵀ takes one of three routes, fixed at Compile
// (with int8 weights, on x rounded to int16 per block into a scratch copy first, as the op
// defines):
//
//   - M ≤ quantMatVecRows (decoding): quant_matvec, which reads each row of W once, coalesced, for
//     all rows of x (memory-bound: the point of quantizing);
//   - more rows with cuBLAS (prefill): W is widened into a float32 scratch panel owned by the
//     kernel and multiplied with cublasSgemm, panel after panel (compute-bound: cuBLAS's GEMM is
//     worth the extra pass over W). A panel holds at most quantPanelBytes, so the scratch stays
//     small however large W is;
//   - more rows without cuBLAS: quant_gemm, a tiled GEMM widening W as it loads each tile.

func init() {
	register("QuantMatMul", compileQuantMatMul)
	register("QuantGather", compileQuantGather)
}

const quantCU = "quant.cu"

const (
	// quantMatVecRows is the most rows of x that take the mat-vec kernel (QMV_MAXM in quant.cu):
	// up to there every extra row is a few more registers and multiply-adds per weight loaded.
	quantMatVecRows = 8
	// quantMatVecThreads is the mat-vec kernel's block (QMV_THREADS): 8 groups of 32 threads,
	// one row of W each.
	quantMatVecThreads = 256
)

// quantPanelBytes bounds the float32 scratch of the cuBLAS route: a 768-wide weight goes in
// panels of 5461 rows, so only an LM head is split, into GEMMs still far too wide for the split
// to cost anything. A variable so that tests can make small weights span several panels.
var quantPanelBytes = 16 << 20

// quantSuffix names a quant.cu kernel variant by the storage dtype of the weight.
func quantSuffix(dt shapes.DType) (string, error) {
	switch dt {
	case shapes.BFloat16:
		return "bf16", nil
	case shapes.Float16:
		return "f16", nil
	case shapes.Int8:
		return "i8", nil
	}
	return "", fmt.Errorf("weight dtype %s (want bfloat16, float16 or int8): %w", dt, backends.ErrUnsupported)
}

// scaleArg adds the scale parameter of a quant.cu kernel: input i for int8, else a null pointer.
func scaleArg(a *args, dt shapes.DType, input int) *args {
	if dt == shapes.Int8 {
		return a.buf(inRef(input))
	}
	return a.i64(0)
}

func compileQuantMatMul(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.QuantMatMulOp)
	if !ok {
		return fmt.Errorf("op %T is not ops.QuantMatMulOp", op)
	}
	if err := ops.CheckOutputs(o, in, out); err != nil {
		return err
	}
	dt := in[1].DType
	sfx, err := quantSuffix(dt)
	if err != nil {
		return err
	}
	n, kk := in[1].Dims[0], in[1].Dims[1]
	m := in[0].Size() / kk
	x := inRef(0)
	if dt == shapes.Int8 && m > 0 && kk > 0 {
		// The op multiplies int8 weights with x rounded to int16 per block (quant.Int16Blocks):
		// round it into scratch first, then every route reads the rounded copy.
		idx, err := k.addScratch(m * kk * 4)
		if err != nil {
			return err
		}
		a := new(args).i64(m).i64(kk).buf(inRef(0)).buf(scratchRef(idx))
		if err := k.launch(quantCU, "quant_round_act", k.blocks((m*quant.ActBlocks(kk)+threads-1)/threads), threads, a); err != nil {
			return err
		}
		x = scratchRef(idx)
	}
	if m <= quantMatVecRows {
		a := new(args).i64(m).i64(n).i64(kk).buf(x).buf(inRef(1))
		a = scaleArg(a, dt, 2).buf(outRef(0))
		groups := (n + quantMatVecThreads/32 - 1) / (quantMatVecThreads / 32)
		return k.launch(quantCU, "quant_matvec_"+sfx, k.blocks(groups), quantMatVecThreads, a)
	}
	if k.be.blas == 0 {
		a := new(args).i64(m).i64(n).i64(kk).buf(x).buf(inRef(1))
		a = scaleArg(a, dt, 2).buf(outRef(0))
		tiles := func(x int) int { return max(1, min((x+15)/16, 65535)) }
		return k.launch3(quantCU, "quant_gemm_"+sfx, [3]int{tiles(n), tiles(m), 1}, [3]int{16, 16, 1}, a)
	}

	// Dequantize panels of rows of W into scratch, then y[:, j0:j0+rows] = x · panelᵀ with
	// cublasSgemm (row-major trick as in MatMul: column-major Cᵀ [rows, M] with ldc = N, starting
	// at column j0 of y).
	panel := min(n, max(1, quantPanelBytes/(4*kk)))
	idx, err := k.addScratch(panel * kk * 4)
	if err != nil {
		return err
	}
	blas := &k.be.l.blas
	for j0 := 0; j0 < n; j0 += panel {
		rows := min(panel, n-j0)
		a := new(args).i64(rows).i64(kk).i64(j0).buf(inRef(1))
		a = scaleArg(a, dt, 2).buf(scratchRef(idx))
		if err := k.launch(quantCU, "quant_dequant_"+sfx, k.blocks(rows), threads, a); err != nil {
			return err
		}
		g := &gemmStep{
			a: x, b: scratchRef(idx), c: ref{kind: refOut, i: 0, off: 4 * j0},
			mode: gemmSingle, fn: blas.cublasSgemm, esz: 4, batch: 1, cStride: m * n,
			m: rows, n: m, kk: kk, ldc: n,
			opFirst: cublasOpT, ldFirst: kk, // the panel [rows, K] row-major is Wᵀ column-major
			opSec: cublasOpN, ldSec: kk, // x [M, K] row-major is column-major [K, M]
			alpha32: 1, beta32: 0,
		}
		k.steps = append(k.steps, step{kind: stepGemm, gemm: g})
	}
	return nil
}

func compileQuantGather(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.QuantGatherOp)
	if !ok {
		return fmt.Errorf("op %T is not ops.QuantGatherOp", op)
	}
	if err := ops.CheckOutputs(o, in, out); err != nil {
		return err
	}
	dt := in[0].DType
	sfx, err := quantSuffix(dt)
	if err != nil {
		return err
	}
	rows, d, n := in[0].Dims[0], in[0].Dims[1], in[1].Size()
	if err := k.useErrRecord(func(k *kernel, pos int64) string {
		v, _ := k.readInt64(1, pos)
		return fmt.Sprintf("index %d (at position %d) is outside [0, %d), the rows of the %s table", v, pos, rows, dt)
	}); err != nil {
		return err
	}
	a := new(args).i64(n).i64(rows).i64(d).buf(inRef(0)).buf(inRef(1))
	a = scaleArg(a, dt, 2).buf(outRef(0)).buf(flagRef())
	return k.launch(quantCU, "quant_gather_"+sfx, k.grid(n*d, threads), threads, a)
}
