package cuda

import (
	"fmt"
	"math"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	register("CausalConv1D", compileCausalConv1D)
	register("CausalConv1DGrad", compileCausalConv1DGrad)
	register("SSD", compileSSD)
	register("SSDStep", compileSSD)
	register("SSDGrad", compileSSDGrad)
}

const mambaCU = "mamba.cu"

// Limits of the SSD kernels (mamba.cu).
const (
	ssdMaxElems  = 32   // state elements per thread (SSD_MAXE)
	ssdMaxBlock  = 1024 // SSD_MAXB
	ssdMaxStateN = 256  // SSD_MAXN, for SSDGrad's shared accumulators
)

func lengthsMsg(input, T int) func(k *kernel, pos int64) string {
	return func(k *kernel, pos int64) string {
		v, _ := k.readInt64(input, pos)
		return fmt.Sprintf("lengths[%d] = %d is outside [0, %d]", pos, v, T)
	}
}

func compileCausalConv1D(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.CausalConv1DOp)
	if !ok || len(out) != 2 {
		return fmt.Errorf("bad op %T or arity", op)
	}
	if _, err := o.Infer(in); err != nil {
		return err
	}
	sfx, err := suffix(in[0].DType)
	if err != nil {
		return err
	}
	B, T, C, K := in[0].Dims[0], in[0].Dims[1], in[0].Dims[2], in[1].Dims[1]
	hasLen, lens := 0, inRef(0) // placeholder when there are no lengths
	if len(in) == 5 {
		hasLen, lens = 1, inRef(4)
		if err := k.useErrRecord(lengthsMsg(4, T)); err != nil {
			return err
		}
	}
	a := new(args).i64(B).i64(T).i64(C).i64(K).i64(hasLen).buf(inRef(0)).buf(inRef(1)).buf(inRef(2)).buf(inRef(3)).
		buf(lens).buf(outRef(0)).buf(flagRef())
	if err := k.launch(mambaCU, "conv_fwd_"+sfx, k.grid(B*T*C, threads), threads, a); err != nil {
		return err
	}
	a = new(args).i64(B).i64(T).i64(C).i64(K).i64(hasLen).buf(inRef(0)).buf(inRef(3)).buf(lens).buf(outRef(1))
	return k.launch(mambaCU, "conv_state_"+sfx, k.grid(B*C*K, threads), threads, a)
}

func compileCausalConv1DGrad(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.CausalConv1DGradOp)
	if !ok || len(out) != 4 {
		return fmt.Errorf("bad op %T or arity", op)
	}
	if _, err := o.Infer(in); err != nil {
		return err
	}
	sfx, err := suffix(in[0].DType)
	if err != nil {
		return err
	}
	B, T, C, K := in[0].Dims[0], in[0].Dims[1], in[0].Dims[2], in[1].Dims[1]
	hasLen, lens := 0, inRef(0)
	if len(in) == 7 {
		hasLen, lens = 1, inRef(6)
		if err := k.useErrRecord(lengthsMsg(6, T)); err != nil {
			return err
		}
	}
	// inputs: 0 x, 1 w, 2 bias, 3 state, 4 gy, 5 gNewState; outputs: 0 dx, 1 dw, 2 dbias, 3 dstate
	a := new(args).i64(B).i64(T).i64(C).i64(K).i64(hasLen).buf(inRef(1)).buf(inRef(4)).buf(inRef(5)).buf(lens).
		buf(outRef(0)).buf(flagRef())
	if err := k.launch(mambaCU, "conv_bwd_dx_"+sfx, k.grid(B*T*C, threads), threads, a); err != nil {
		return err
	}
	a = new(args).i64(B).i64(T).i64(C).i64(K).i64(hasLen).buf(inRef(1)).buf(inRef(4)).buf(inRef(5)).buf(lens).buf(outRef(3))
	if err := k.launch(mambaCU, "conv_bwd_dstate_"+sfx, k.grid(B*C*K, threads), threads, a); err != nil {
		return err
	}
	a = new(args).i64(B).i64(T).i64(C).i64(K).i64(hasLen).buf(inRef(0)).buf(inRef(3)).buf(inRef(4)).buf(lens).
		buf(outRef(1)).buf(outRef(2))
	return k.launch(mambaCU, "conv_bwd_dw_"+sfx, k.blocks(C*(K+1)), threads, a)
}

// ssdLayout picks Q, the threads sharing one head_dim row of the state (each owning at most
// ssdMaxElems of its N elements), and the block size, a power of two ≥ P·Q.
func ssdLayout(P, N int) (q, block int, err error) {
	q = (N + ssdMaxElems - 1) / ssdMaxElems
	for pow2(P*q*2) <= 256 && q*2 <= N {
		q *= 2
	}
	block = pow2(P * q)
	if block > ssdMaxBlock {
		return 0, 0, fmt.Errorf("head_dim %d × state %d needs %d threads per head, the SSD kernels take at most %d: %w",
			P, N, block, ssdMaxBlock, backends.ErrUnsupported)
	}
	return q, block, nil
}

func pow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

func compileSSD(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	var d ops.SSDDims
	var err error
	switch o := op.(type) {
	case ops.SSDOp:
		if _, err := o.Infer(in); err != nil {
			return err
		}
		d, err = ops.CheckSSD(in, false)
	case ops.SSDStepOp:
		d, err = ops.CheckSSD(in, true)
	default:
		return fmt.Errorf("op %T is not an SSD op", op)
	}
	if err != nil {
		return err
	}
	if len(out) != 2 {
		return fmt.Errorf("%d outputs, want 2", len(out))
	}
	sfx, err := suffix(in[0].DType)
	if err != nil {
		return err
	}
	q, block, err := ssdLayout(d.P, d.N)
	if err != nil {
		return err
	}
	a := new(args).i64(d.B).i64(d.T).i64(d.H).i64(d.P).i64(d.G).i64(d.N).i64(q)
	for i := 0; i < 7; i++ {
		a.buf(inRef(i))
	}
	a.buf(outRef(0)).buf(outRef(1))
	return k.launch(mambaCU, "ssd_fwd_"+sfx, k.blocks(d.B*d.H), block, a)
}

func compileSSDGrad(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.SSDGradOp)
	if !ok || len(out) != 7 {
		return fmt.Errorf("bad op %T or arity", op)
	}
	if _, err := o.Infer(in); err != nil {
		return err
	}
	d, err := ops.CheckSSD(in[:7], false)
	if err != nil {
		return err
	}
	sfx, err := suffix(in[0].DType)
	if err != nil {
		return err
	}
	if d.N > ssdMaxStateN {
		return fmt.Errorf("state size %d, SSDGrad takes at most %d: %w", d.N, ssdMaxStateN, backends.ErrUnsupported)
	}
	q, block, err := ssdLayout(d.P, d.N)
	if err != nil {
		return err
	}
	esz := in[0].DType.Size()
	segLen := max(1, int(math.Ceil(math.Sqrt(float64(d.T)))))
	nseg := (d.T + segLen - 1) / segLen
	items, pn := d.B*d.H, d.P*d.N
	ckpt, err := k.addScratch(items * nseg * pn * esz)
	if err != nil {
		return err
	}
	seg, err := k.addScratch(items * (segLen + 1) * pn * esz)
	if err != nil {
		return err
	}
	pdA, err := k.addScratch(items * esz)
	if err != nil {
		return err
	}
	pdD, err := k.addScratch(items * esz)
	if err != nil {
		return err
	}
	// outputs: 0 dx, 1 ddt, 2 dA, 3 dB, 4 dC, 5 dD, 6 dstate; dB and dC accumulate atomically.
	k.memset(outRef(3), out[3].Size()*esz)
	k.memset(outRef(4), out[4].Size()*esz)
	a := new(args).i64(d.B).i64(d.T).i64(d.H).i64(d.P).i64(d.G).i64(d.N).i64(q).i64(segLen).i64(nseg)
	for i := 0; i < 9; i++ {
		a.buf(inRef(i))
	}
	a.buf(outRef(0)).buf(outRef(1)).buf(outRef(3)).buf(outRef(4)).buf(outRef(6)).
		buf(scratchRef(ckpt)).buf(scratchRef(seg)).buf(scratchRef(pdA)).buf(scratchRef(pdD))
	if err := k.launch(mambaCU, "ssd_bwd_"+sfx, k.blocks(items), block, a); err != nil {
		return err
	}
	a = new(args).i64(d.B).i64(d.H).buf(scratchRef(pdA)).buf(scratchRef(pdD)).buf(outRef(2)).buf(outRef(5))
	return k.launch(mambaCU, "ssd_bwd_final_"+sfx, k.grid(d.H, threads), threads, a)
}
