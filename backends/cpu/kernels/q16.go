package kernels

import (
	"fmt"

	"github.com/mamba2go/mamba2/quant"
)

// Products of int8 weights with activations rounded to int16 per block of quant.ActBlock
// (quant.Int16Blocks). On CPUs with AVX-512 VNNI, VPMOVSXBW and VPDPWSSD multiply 32 weights
// with 32 activations in two instructions and sum them exactly in int32; the float32 path had to
// widen every weight to a float first, which held it to about three weights per cycle, below
// the memory's speed. The rounding of the activations (1.5e-5 of a block's largest value) is far
// below that of the weights.

var cpuVNNI = cpuAVX512 && detectVNNI()

// Q16Vector is a vector of K activations rounded to int16 per block of quant.ActBlock, prepared
// for MatVecTInt8Q16. Make one with NewQ16Vector and fill it with Quantize, which reuses its
// memory.
type Q16Vector struct {
	K     int
	Q     []int16   // the rounded values: x[p] ≈ Scale[p/quant.ActBlock]·Q[p]
	Scale []float32 // one per block (NaN for a block that held an Inf or NaN)
	deq   []float32 // Scale·Q: the float32 activations for CPUs without VNNI
}

// NewQ16Vector returns a Q16Vector for k activations (k ≥ 0), all zero.
func NewQ16Vector(k int) *Q16Vector {
	checkDims("NewQ16Vector", k)
	return &Q16Vector{K: k, Q: make([]int16, k), Scale: make([]float32, quant.ActBlocks(k)), deq: make([]float32, k)}
}

// Quantize rounds x (K values) into v with quant.Int16Blocks.
func (v *Q16Vector) Quantize(x []float32) {
	need("Q16Vector.Quantize", "x", len(x), v.K)
	if v.K == 0 {
		return
	}
	must("Q16Vector.Quantize", quant.Int16Blocks(v.Q, v.Scale, x[:v.K], v.K))
	for p, q := range v.Q {
		v.deq[p] = v.Scale[p/quant.ActBlock] * float32(q)
	}
}

// Dequantized returns the float32 values the rounded activations stand for, Scale·Q (K values;
// valid until the next Quantize): quant.RoundInt16Blocks of the x given to Quantize.
func (v *Q16Vector) Dequantized() []float32 { return v.deq[:v.K] }

// MatVecTInt8Q16 sets y[j] = w.Scale[j]·Σ_p w.Data[j,p]·x.Scale[p/32]·x.Q[p] for the rows j in
// [lo,hi): the product of int8 weights with activations rounded by x.Quantize. With AVX-512 VNNI
// each block's sum is exact in int32 before it is scaled; elsewhere the weights are widened and
// multiplied with x.Dequantized() in float32 (MatVecTInt8), which differs only by float32
// rounding.
func MatVecTInt8Q16(y []float32, w Int8Matrix, x *Q16Vector, lo, hi int) {
	const fn = "MatVecTInt8Q16"
	w.check(fn, y, x.deq, lo, hi)
	if x.K != w.K {
		panic(fmt.Sprintf("kernels: %s: x has K=%d, w has K=%d", fn, x.K, w.K))
	}
	k := w.K
	if !cpuVNNI || gemmLevel != AVX512 || k < quant.ActBlock {
		MatVecTInt8(y, w, x.deq, lo, hi)
		return
	}
	main := k / quant.ActBlock * quant.ActBlock
	var out [4]float32
	j := lo
	for ; j+4 <= hi; j += 4 {
		dotQ16VNNI4(main, &w.Data[j*k], k, &x.Q[0], &x.Scale[0], &out)
		for r, s := range out {
			y[j+r] = w.Scale[j+r] * (s + q16Tail(w.Data[(j+r)*k:(j+r+1)*k], x, main))
		}
	}
	for ; j < hi; j++ {
		row := w.Data[j*k : j*k+k]
		y[j] = w.Scale[j] * (dotQ16VNNI(main, &row[0], &x.Q[0], &x.Scale[0]) + q16Tail(row, x, main))
	}
}

// q16Tail is the last, partial block's Σ row[p]·x.Q[p]·x.Scale[block] (p ≥ main).
func q16Tail(row []int8, x *Q16Vector, main int) float32 {
	if main == len(row) {
		return 0
	}
	var sum int32
	for p := main; p < len(row); p++ {
		sum += int32(row[p]) * int32(x.Q[p])
	}
	return x.Scale[main/quant.ActBlock] * float32(sum)
}
