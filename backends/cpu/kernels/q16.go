package kernels

import (
	"fmt"

	"github.com/mamba2go/mamba2/quant"
)

// Products of int8 weights with activations rounded to int16 per block of quant.ActBlock
// (quant.Int16Blocks). On CPUs with AVX-512 VNNI, the weights are widened to int16 in registers
// and VPMADDWD and VPDPWSSD multiply them with the activations and sum the products exactly in
// int32 (see dotQ16P4); the float32 path had to widen every weight to a float first, which held
// it to about three weights per cycle, below the memory's speed. The rounding of the activations
// (1.5e-5 of a block's largest value) is far below that of the weights.

var cpuVNNI = cpuAVX512 && detectVNNI()

// Q16Vector is a vector of K activations rounded to int16 per block of quant.ActBlock, prepared
// for MatVecTInt8Q16. Make one with NewQ16Vector and fill it with Quantize, which reuses its
// memory. Q and Scale are there to read: the products use a copy laid out for the kernel, which
// only Quantize writes.
type Q16Vector struct {
	K     int
	Q     []int16   // the rounded values: x[p] ≈ Scale[p/quant.ActBlock]·Q[p]
	Scale []float32 // one per block (NaN for a block that held an Inf or NaN)
	deq   []float32 // Scale·Q: the float32 activations for CPUs without VNNI

	// The whole blocks of Q and Scale as dotQ16P4 reads them (with AVX-512 VNNI): for each 64
	// values, the 32 at even positions then the 32 at odd ones, and sixteen scales, the first
	// block's eight times then the second's; a last single block as it is, with its one scale.
	xp []int16
	sp []float32
}

// NewQ16Vector returns a Q16Vector for k activations (k ≥ 0), all zero.
func NewQ16Vector(k int) *Q16Vector {
	checkDims("NewQ16Vector", k)
	v := &Q16Vector{K: k, Q: make([]int16, k), Scale: make([]float32, quant.ActBlocks(k)), deq: make([]float32, k)}
	if useQ16P4(k) {
		main := k / quant.ActBlock * quant.ActBlock
		v.xp, v.sp = make([]int16, main), make([]float32, main/4+1)
	}
	return v
}

// useQ16P4 reports whether products with k activations run dotQ16P4.
func useQ16P4(k int) bool { return cpuVNNI && gemmLevel == AVX512 && k >= quant.ActBlock }

// Quantize rounds x (K values) into v with quant.Int16Blocks.
func (v *Q16Vector) Quantize(x []float32) {
	need("Q16Vector.Quantize", "x", len(x), v.K)
	if v.K == 0 {
		return
	}
	roundQ16(x[:v.K], v.Q, v.Scale, v.deq)
	if v.xp != nil {
		v.pack()
	}
}

// pack lays Q and Scale out for dotQ16P4 in xp and sp.
func (v *Q16Vector) pack() {
	const b = quant.ActBlock
	main := len(v.xp)
	c := 0
	for ; c+2*b <= main; c += 2 * b {
		q, xp := v.Q[c:c+2*b], v.xp[c:c+2*b]
		for j := 0; j < b; j++ {
			xp[j], xp[b+j] = q[2*j], q[2*j+1]
		}
		sp := v.sp[c/4 : c/4+16]
		s0, s1 := v.Scale[c/b], v.Scale[c/b+1]
		for j := 0; j < 8; j++ {
			sp[j], sp[8+j] = s0, s1
		}
	}
	if c < main { // one block left
		copy(v.xp[c:main], v.Q[c:main])
		v.sp[c/4] = v.Scale[c/b]
	}
}

// RoundInt16Rows writes into dst the values quant.RoundInt16Blocks makes of src (rows of k,
// rounded to int16 per block of quant.ActBlock and back), bitwise, with AVX-512 assembly where
// the CPU has it: the x of an int8 product with many rows. dst may be src.
func RoundInt16Rows(dst, src []float32, k int) {
	const fn = "RoundInt16Rows"
	checkDims(fn, k)
	need(fn, "dst", len(dst), len(src))
	if k == 0 || len(src)%k != 0 {
		panic(fmt.Sprintf("kernels: %s: %d values are not whole rows of %d", fn, len(src), k))
	}
	var scale [64]float32 // a row in pieces of up to 64 blocks: no allocation
	const piece = len(scale) * quant.ActBlock
	for r := 0; r < len(src); r += k {
		for lo := r; lo < r+k; lo += piece {
			hi := min(lo+piece, r+k)
			roundQ16(src[lo:hi], nil, scale[:quant.ActBlocks(hi-lo)], dst[lo:hi])
		}
	}
}

// roundQ16 rounds x as quant.Int16Blocks does (blocks from x[0]), writing q (nil: skipped),
// scale (one per block) and deq = scale·q (nil: skipped): whole blocks with q16RoundAVX512 on
// AVX-512 CPUs, a last partial block (or everything elsewhere) with package quant.
func roundQ16(x []float32, q []int16, scale, deq []float32) {
	main := 0
	if gemmLevel == AVX512 {
		main = len(x) / quant.ActBlock * quant.ActBlock
	}
	if main > 0 {
		var qp *int16
		if q != nil {
			qp = &q[0]
		}
		var dp *float32
		if deq != nil {
			dp = &deq[0]
		}
		q16RoundAVX512(main/quant.ActBlock, &x[0], qp, &scale[0], dp)
	}
	var tmp [quant.ActBlock]int16
	for lo := main; lo < len(x); lo += quant.ActBlock {
		hi := min(lo+quant.ActBlock, len(x))
		b := lo / quant.ActBlock
		qb := tmp[:hi-lo]
		if q != nil {
			qb = q[lo:hi]
		}
		must("roundQ16", quant.Int16Blocks(qb, scale[b:b+1], x[lo:hi], hi-lo))
		if deq != nil {
			for p, v := range qb {
				deq[lo+p] = scale[b] * float32(v)
			}
		}
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
	if !useQ16P4(k) || x.xp == nil {
		MatVecTInt8(y, w, x.deq, lo, hi)
		return
	}
	main := len(x.xp)
	var out [4]float32
	j := lo
	for ; j+4 <= hi; j += 4 {
		dotQ16P4(main, &w.Data[j*k], k, &x.xp[0], &x.sp[0], &out)
		y4, s4 := y[j:j+4:j+4], w.Scale[j:j+4:j+4]
		for r, s := range out {
			if main < k { // rows of whole blocks (the usual case) make no call per row
				s += q16Tail(w.Data[(j+r)*k:(j+r+1)*k], x, main)
			}
			y4[r] = s4[r] * s
		}
	}
	for ; j < hi; j++ { // alone, with the same bits as in a group: ldw = 0 computes it four times
		row := w.Data[j*k : j*k+k]
		dotQ16P4(main, &row[0], 0, &x.xp[0], &x.sp[0], &out)
		y[j] = w.Scale[j] * (out[0] + q16Tail(row, x, main))
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
