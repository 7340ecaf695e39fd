package ops

import (
	"github.com/mamba2go/mamba2/shapes"
)

// MatMulOp multiplies the last two axes of A [..., M, K] and B [..., K, N] (after the optional
// transposes). Leading (batch) axes broadcast, so B may be a plain matrix shared by every batch.
type MatMulOp struct{ TransA, TransB bool }

// Name is "MatMul".
func (MatMulOp) Name() string { return "MatMul" }

// MatMulDims returns M, K, N of a product with these shapes and transposes, and the broadcast
// batch dimensions.
func (op MatMulOp) MatMulDims(a, b []int) (batch []int, m, k, n int, err error) {
	if len(a) < 2 || len(b) < 2 {
		_, err = fail("needs rank ≥ 2 operands, got %s and %s", shapes.DimsString(a), shapes.DimsString(b))
		return
	}
	m, k = a[len(a)-2], a[len(a)-1]
	if op.TransA {
		m, k = k, m
	}
	kb, n := b[len(b)-2], b[len(b)-1]
	if op.TransB {
		kb, n = n, kb
	}
	if k != kb {
		_, err = fail("inner dimensions differ: A %s (transA=%v) has K=%d, B %s (transB=%v) has K=%d",
			shapes.DimsString(a), op.TransA, k, shapes.DimsString(b), op.TransB, kb)
		return
	}
	batch, err = shapes.Broadcast(a[:len(a)-2], b[:len(b)-2])
	return
}

// Infer returns [batch..., M, N].
func (op MatMulOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 2); err != nil {
		return nil, err
	}
	if err := sameFloat(in); err != nil {
		return nil, err
	}
	batch, m, _, n, err := op.MatMulDims(in[0].Dims, in[1].Dims)
	if err != nil {
		return nil, err
	}
	return one(shapes.Make(in[0].DType, append(batch, m, n)...))
}

// VJP: dA = g·Bᵀ and dB = Aᵀ·g, adjusted for the transposes and summed over broadcast batches.
func (op MatMulOp) VJP(in, out, gout []Value) ([]Value, error) {
	a, b, g := in[0], in[1], gout[0]
	var ga, gb Value
	switch {
	case !op.TransA && !op.TransB:
		ga = MatMulT(g, b, false, true)
		gb = MatMulT(a, g, true, false)
	case op.TransA && !op.TransB:
		ga = MatMulT(b, g, false, true)
		gb = MatMulT(a, g, false, false)
	case !op.TransA && op.TransB:
		ga = MatMulT(g, b, false, false)
		gb = MatMulT(g, a, true, false)
	default:
		ga = MatMulT(b, g, true, true)
		gb = MatMulT(g, a, true, true)
	}
	return []Value{SumTo(ga, a.Shape().Dims), SumTo(gb, b.Shape().Dims)}, nil
}

// MatMul returns a·b over the last two axes.
func MatMul[V Value](a, b V) V { return apply1(MatMulOp{}, a, b) }

// MatMulT returns op(a)·op(b) where op transposes the last two axes when asked.
func MatMulT[V Value](a, b V, transA, transB bool) V {
	return apply1(MatMulOp{TransA: transA, TransB: transB}, a, b)
}
