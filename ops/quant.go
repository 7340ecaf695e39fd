package ops

import (
	"fmt"

	"github.com/mamba2go/mamba2/shapes"
)

// Quantized weights. Decode is bound by the bandwidth of reading the weights, so a model may keep
// them in a storage dtype (shapes.BFloat16, shapes.Float16, or shapes.Int8 with one float32 scale
// per row) and read them with these two ops, which widen to float32 as they go: the activations
// and the results stay float32. They are for inference only: they have no gradient.

// quantWeight checks a quantized [rows, cols] weight w (named what) and its scale (nil when
// absent), returning rows and cols.
func quantWeight(op, what string, w shapes.Shape, scale *shapes.Shape) (rows, cols int, err error) {
	switch {
	case w.DType.IsFloat():
		return 0, 0, fmt.Errorf("%s %s is %s: %s reads bfloat16, float16 or int8 weights (float ones take the plain op)",
			what, w, w.DType, op)
	case !w.DType.IsStorage():
		return 0, 0, fmt.Errorf("%s %s must be bfloat16, float16 or int8", what, w)
	case w.Rank() != 2:
		return 0, 0, fmt.Errorf("%s %s must be a matrix [rows, cols]", what, w)
	}
	rows, cols = w.Dims[0], w.Dims[1]
	switch {
	case w.DType == shapes.Int8 && scale == nil:
		return 0, 0, fmt.Errorf("int8 %s %s needs a float32 scale [%d] (one per row)", what, w, rows)
	case w.DType != shapes.Int8 && scale != nil:
		return 0, 0, fmt.Errorf("%s %s is %s and takes no scale, got scale %s", what, w, w.DType, *scale)
	case scale != nil && (scale.DType != shapes.Float32 || !shapes.EqualDims(scale.Dims, []int{rows})):
		return 0, 0, fmt.Errorf("scale %s of int8 %s %s must be float32 [%d] (one per row)", *scale, what, w, rows)
	}
	return rows, cols, nil
}

// optScale returns in[i], or nil when there are only i inputs.
func optScale(in []shapes.Shape, i int) *shapes.Shape {
	if len(in) > i {
		return &in[i]
	}
	return nil
}

// noQuantGradient is the VJP of the quantized ops: w is the quantized input.
func noQuantGradient(op string, w Value) ([]Value, error) {
	return nil, fmt.Errorf("%w: %s reads %s weights, which are for inference only; load the weights as float32 to train",
		ErrNoGradient, op, w.Shape().DType)
}

// QuantMatMulOp multiplies float32 activations x [..., K] by a quantized weight w [N, K] in the
// Hugging Face [out_features, in_features] layout: y [..., N] = x·dequant(w)ᵀ, accumulated in
// float32. For int8 weights a third input scale [N] (float32) gives each row's scale:
// dequant(w)[j, p] = scale[j]·w[j, p], and x is first rounded to int16 per block of 32 values
// along K (quant.Int16Blocks; quant.RoundInt16Blocks gives the values multiplied) so that
// backends can multiply integers; that rounding is about 1.5e-5 of each block's largest value,
// far below the weights' own. bfloat16 and float16 weights take no scale and use x as it is.
type QuantMatMulOp struct{}

// Name is "QuantMatMul".
func (QuantMatMulOp) Name() string { return "QuantMatMul" }

// Infer returns float32 [x's leading dims..., N].
func (QuantMatMulOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if len(in) != 2 && len(in) != 3 {
		return fail("takes x, w and (for int8 weights) scale: got %d inputs", len(in))
	}
	n, k, err := quantWeight("QuantMatMul", "weight w", in[1], optScale(in, 2))
	if err != nil {
		return nil, err
	}
	x := in[0]
	if x.DType != shapes.Float32 || x.Rank() < 1 {
		return fail("x %s must be float32 [..., K] (quantized products compute in float32)", x)
	}
	if kx := x.Dims[x.Rank()-1]; kx != k {
		return fail("x %s has K=%d but weight w %s [N, K] has K=%d", x, kx, in[1], k)
	}
	dims := append(append([]int(nil), x.Dims[:x.Rank()-1]...), n)
	return one(shapes.Make(shapes.Float32, dims...))
}

// VJP: quantized weights are for inference; there is no gradient (ErrNoGradient).
func (QuantMatMulOp) VJP(in, out, gout []Value) ([]Value, error) {
	return noQuantGradient("QuantMatMul", in[1])
}

// QuantMatMul returns x·dequant(w)ᵀ for float32 x [..., K] and a bfloat16, float16 or int8 weight
// w [N, K]; an int8 w needs its per-row scale [N] as the third argument, the others take none.
func QuantMatMul[V Value](x, w V, scale ...V) V {
	return apply1(QuantMatMulOp{}, append([]V{x, w}, scale...)...)
}

// QuantGatherOp looks rows up in a quantized table: inputs table [V, D] (bfloat16, float16 or
// int8), indices (int64, any dimensions [...]) and, for an int8 table, scale [V] (float32). The
// output [..., D] is float32: the dequantized rows table[indices[...]]. An index outside [0, V)
// is a run-time error of the kernel, as for Gather.
type QuantGatherOp struct{}

// Name is "QuantGather".
func (QuantGatherOp) Name() string { return "QuantGather" }

// Infer returns float32 [indices..., D].
func (QuantGatherOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if len(in) != 2 && len(in) != 3 {
		return fail("takes table, indices and (for int8 tables) scale: got %d inputs", len(in))
	}
	_, d, err := quantWeight("QuantGather", "table", in[0], optScale(in, 2))
	if err != nil {
		return nil, err
	}
	if idx := in[1]; idx.DType != shapes.Int64 {
		return fail("indices %s must be int64 (table %s)", idx, in[0])
	}
	return one(shapes.Make(shapes.Float32, append(append([]int(nil), in[1].Dims...), d)...))
}

// VJP: quantized weights are for inference; there is no gradient (ErrNoGradient).
func (QuantGatherOp) VJP(in, out, gout []Value) ([]Value, error) {
	return noQuantGradient("QuantGather", in[0])
}

// QuantGather returns the float32 rows table[indices] of a bfloat16, float16 or int8 table
// [V, D] for int64 indices [...]: shape [..., D]. An int8 table needs its per-row scale [V].
func QuantGather[V Value](table, indices V, scale ...V) V {
	return apply1(QuantGatherOp{}, append([]V{table, indices}, scale...)...)
}
