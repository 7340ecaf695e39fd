package ops

import (
	"github.com/mamba2go/mamba2/shapes"
)

// ---- CausalConv1D ----

// CausalConv1DOp is Mamba2's depthwise causal convolution with a carried state. Inputs: x [B,T,C],
// w [C,K], bias [C], state [B,C,K] (the last K raw inputs seen so far, oldest first) and optionally
// lengths (int64 [B], the number of valid tokens of each right-padded row, 0 ≤ lengths[b] ≤ T,
// checked by the kernel at run time). Outputs: y [B,T,C] and newState [B,C,K].
//
// With u the concatenation over time of the state's K columns and x,
//
//	y[b,t,c] = bias[c] + Σ_{k<K} w[c,k]·u[b, t+1+k, c]
//
// so tap K−1 multiplies the current token and the oldest state column only shifts out. newState
// holds the last K columns of u (of u cut after lengths[b] tokens of x when lengths is given); y is
// zero at padded positions. There is no activation inside. Kernels must allow newState to share
// memory with state (a program may update its cache in place).
type CausalConv1DOp struct{}

// Name is "CausalConv1D".
func (CausalConv1DOp) Name() string { return "CausalConv1D" }

// NumOutputs is 2 (y, newState).
func (CausalConv1DOp) NumOutputs() int { return 2 }

// checkConv validates x, w, bias, state and the optional lengths of a causal convolution.
func checkConv(x, w, bias, state shapes.Shape, lengths *shapes.Shape) error {
	if err := sameFloat([]shapes.Shape{x, w, bias, state}); err != nil {
		return err
	}
	if x.Rank() != 3 {
		_, err := fail("x %s must be [batch, time, channels]", x)
		return err
	}
	b, c := x.Dims[0], x.Dims[2]
	if w.Rank() != 2 || w.Dims[0] != c {
		_, err := fail("weight %s must be [%d, kernel] for x %s", w, c, x)
		return err
	}
	k := w.Dims[1]
	if bias.Rank() != 1 || bias.Dims[0] != c {
		_, err := fail("bias %s must be [%d] for x %s", bias, c, x)
		return err
	}
	if !shapes.EqualDims(state.Dims, []int{b, c, k}) {
		_, err := fail("state %s must be [%d,%d,%d] (batch, channels, kernel) for x %s and weight %s",
			state, b, c, k, x, w)
		return err
	}
	if lengths != nil {
		if lengths.DType != shapes.Int64 || !shapes.EqualDims(lengths.Dims, []int{b}) {
			_, err := fail("lengths %s must be int64[%d] for x %s", *lengths, b, x)
			return err
		}
	}
	return nil
}

// Infer returns x's and state's shapes.
func (op CausalConv1DOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if len(in) != 4 && len(in) != 5 {
		return fail("takes 4 inputs (x, w, bias, state) or 5 (with lengths), got %d", len(in))
	}
	var lengths *shapes.Shape
	if len(in) == 5 {
		lengths = &in[4]
	}
	if err := checkConv(in[0], in[1], in[2], in[3], lengths); err != nil {
		return nil, err
	}
	return []shapes.Shape{in[0].Clone(), in[3].Clone()}, nil
}

// VJP runs CausalConv1DGradOp; a missing output gradient counts as zero and lengths get none.
func (op CausalConv1DOp) VJP(in, out, gout []Value) ([]Value, error) {
	gy, gs := gout[0], gout[1]
	if gy == nil {
		gy = ZerosLike(out[0])
	}
	if gs == nil {
		gs = ZerosLike(out[1])
	}
	args := []Value{in[0], in[1], in[2], in[3], gy, gs}
	if len(in) == 5 {
		args = append(args, in[4])
	}
	g := apply(CausalConv1DGradOp{}, args...)
	res := []Value{g[0], g[1], g[2], g[3]}
	if len(in) == 5 {
		res = append(res, nil)
	}
	return res, nil
}

// CausalConv1D applies the depthwise causal convolution to x [B,T,C] with weight [C,K], bias [C]
// and state [B,C,K]; it returns y [B,T,C] and the new state (the last K raw inputs, oldest first).
func CausalConv1D[V Value](x, w, bias, state V) (y, newState V) {
	r := apply(CausalConv1DOp{}, x, w, bias, state)
	return r[0], r[1]
}

// CausalConv1DLen is CausalConv1D for right-padded rows: row b has lengths[b] (int64 [B]) valid
// tokens, its new state is taken after them and its outputs past them are zero.
func CausalConv1DLen[V Value](x, w, bias, state, lengths V) (y, newState V) {
	r := apply(CausalConv1DOp{}, x, w, bias, state, lengths)
	return r[0], r[1]
}

// CausalConv1DGradOp is CausalConv1D's backward: inputs x, w, bias, state, gy [B,T,C],
// gNewState [B,C,K] and optionally lengths; outputs dx, dw, dbias and dstate.
type CausalConv1DGradOp struct{}

// Name is "CausalConv1DGrad".
func (CausalConv1DGradOp) Name() string { return "CausalConv1DGrad" }

// NumOutputs is 4 (dx, dw, dbias, dstate).
func (CausalConv1DGradOp) NumOutputs() int { return 4 }

// Infer returns the shapes of x, w, bias and state.
func (op CausalConv1DGradOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if len(in) != 6 && len(in) != 7 {
		return fail("takes 6 inputs (x, w, bias, state, gy, gNewState) or 7 (with lengths), got %d", len(in))
	}
	var lengths *shapes.Shape
	if len(in) == 7 {
		lengths = &in[6]
	}
	if err := checkConv(in[0], in[1], in[2], in[3], lengths); err != nil {
		return nil, err
	}
	if !in[4].Equal(in[0]) {
		return fail("output gradient %s differs from x %s", in[4], in[0])
	}
	if !in[5].Equal(in[3]) {
		return fail("state gradient %s differs from state %s", in[5], in[3])
	}
	return []shapes.Shape{in[0].Clone(), in[1].Clone(), in[2].Clone(), in[3].Clone()}, nil
}

// VJP: backward ops are not differentiated again.
func (op CausalConv1DGradOp) VJP(in, out, gout []Value) ([]Value, error) { return nil, ErrNoGradient }

// ---- SSD ----

// SSDDims are the sizes of a selective state-space scan: batch, time (1 for a step), heads, head
// dimension, groups and state size.
type SSDDims struct{ B, T, H, P, G, N int }

// CheckSSD validates the seven inputs of SSD (step false: x [B,T,H,P], dt [B,T,H], A [H],
// B [B,T,G,N], C [B,T,G,N], D [H], state [B,H,P,N]) or of SSDStep (step true: the same without
// the time axis) and returns the sizes.
func CheckSSD(in []shapes.Shape, step bool) (SSDDims, error) {
	var d SSDDims
	if err := wantInputs(in, 7); err != nil {
		return d, err
	}
	if err := sameFloat(in); err != nil {
		return d, err
	}
	x, dt, a, bm, cm, dd, st := in[0], in[1], in[2], in[3], in[4], in[5], in[6]
	var bt []int // the leading [B] or [B, T] axes every per-token input shares
	if step {
		if x.Rank() != 3 {
			_, err := fail("x %s must be [batch, heads, head_dim]", x)
			return d, err
		}
		d = SSDDims{B: x.Dims[0], T: 1, H: x.Dims[1], P: x.Dims[2]}
		bt = x.Dims[:1]
	} else {
		if x.Rank() != 4 {
			_, err := fail("x %s must be [batch, time, heads, head_dim]", x)
			return d, err
		}
		d = SSDDims{B: x.Dims[0], T: x.Dims[1], H: x.Dims[2], P: x.Dims[3]}
		bt = x.Dims[:2]
	}
	if !shapes.EqualDims(dt.Dims, append(append([]int(nil), bt...), d.H)) {
		_, err := fail("dt %s must be %s for x %s", dt, shapes.DimsString(append(append([]int(nil), bt...), d.H)), x)
		return d, err
	}
	if a.Rank() != 1 || a.Dims[0] != d.H {
		_, err := fail("A %s must be [%d] (one per head) for x %s", a, d.H, x)
		return d, err
	}
	if dd.Rank() != 1 || dd.Dims[0] != d.H {
		_, err := fail("D %s must be [%d] (one per head) for x %s", dd, d.H, x)
		return d, err
	}
	if bm.Rank() != len(bt)+2 || !shapes.EqualDims(bm.Dims[:len(bt)], bt) {
		_, err := fail("B %s must be %s + [groups, state] for x %s", bm, shapes.DimsString(bt), x)
		return d, err
	}
	d.G, d.N = bm.Dims[len(bt)], bm.Dims[len(bt)+1]
	if !shapes.EqualDims(cm.Dims, bm.Dims) {
		_, err := fail("C %s must have B's shape %s", cm, bm)
		return d, err
	}
	if d.H%d.G != 0 {
		_, err := fail("%d heads are not divisible by %d groups (B %s, x %s)", d.H, d.G, bm, x)
		return d, err
	}
	if !shapes.EqualDims(st.Dims, []int{d.B, d.H, d.P, d.N}) {
		_, err := fail("state %s must be [%d,%d,%d,%d] (batch, heads, head_dim, state)", st, d.B, d.H, d.P, d.N)
		return d, err
	}
	return d, nil
}

// SSDOp is Mamba2's selective state-space scan over T tokens, computed in chunks of ChunkSize
// tokens (state-space duality). Inputs: x [B,T,H,P], dt [B,T,H] (already softplus'd and clamped),
// A [H] (negative), B [B,T,G,N], C [B,T,G,N], D [H] and the initial state [B,H,P,N]. Outputs:
// y [B,T,H,P] and the final state [B,H,P,N]. Head h uses group h/(H/G); per token
//
//	S_t = exp(dt_t·A_h)·S_{t−1} + dt_t·x_t ⊗ B_t,   y_t = S_t·C_t + D_h·x_t.
//
// A token with dt = 0 neither decays nor updates the state (how callers mask padding). Kernels
// must allow newState to share memory with state.
type SSDOp struct{ ChunkSize int }

// Name is "SSD".
func (SSDOp) Name() string { return "SSD" }

// NumOutputs is 2 (y, newState).
func (SSDOp) NumOutputs() int { return 2 }

// Infer returns x's and state's shapes.
func (op SSDOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if op.ChunkSize < 1 {
		return fail("chunk size %d must be at least 1", op.ChunkSize)
	}
	if _, err := CheckSSD(in, false); err != nil {
		return nil, err
	}
	return []shapes.Shape{in[0].Clone(), in[6].Clone()}, nil
}

// VJP runs SSDGradOp; a missing output gradient counts as zero.
func (op SSDOp) VJP(in, out, gout []Value) ([]Value, error) {
	gy, gs := gout[0], gout[1]
	if gy == nil {
		gy = ZerosLike(out[0])
	}
	if gs == nil {
		gs = ZerosLike(out[1])
	}
	g := apply(SSDGradOp{}, in[0], in[1], in[2], in[3], in[4], in[5], in[6], gy, gs)
	return g[:7], nil
}

// SSD runs the chunked selective scan (see SSDOp) and returns y [B,T,H,P] and the final state.
func SSD[V Value](x, dt, A, B, C, D, state V, chunkSize int) (y, newState V) {
	r := apply(SSDOp{ChunkSize: chunkSize}, x, dt, A, B, C, D, state)
	return r[0], r[1]
}

// SSDGradOp is SSD's backward: inputs x, dt, A, B, C, D, state, gy [B,T,H,P] and
// gNewState [B,H,P,N]; outputs the gradients of the seven inputs.
type SSDGradOp struct{}

// Name is "SSDGrad".
func (SSDGradOp) Name() string { return "SSDGrad" }

// NumOutputs is 7 (dx, ddt, dA, dB, dC, dD, dstate).
func (SSDGradOp) NumOutputs() int { return 7 }

// Infer returns the shapes of the seven forward inputs.
func (op SSDGradOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if err := wantInputs(in, 9); err != nil {
		return nil, err
	}
	if _, err := CheckSSD(in[:7], false); err != nil {
		return nil, err
	}
	if !in[7].Equal(in[0]) {
		return fail("output gradient %s differs from x %s", in[7], in[0])
	}
	if !in[8].Equal(in[6]) {
		return fail("state gradient %s differs from state %s", in[8], in[6])
	}
	res := make([]shapes.Shape, 7)
	for i := range res {
		res[i] = in[i].Clone()
	}
	return res, nil
}

// VJP: backward ops are not differentiated again.
func (op SSDGradOp) VJP(in, out, gout []Value) ([]Value, error) { return nil, ErrNoGradient }

// SSDStepOp is one token of SSD (decoding): x [B,H,P], dt [B,H], A [H], B [B,G,N], C [B,G,N],
// D [H] and state [B,H,P,N] give y [B,H,P] and the new state, with SSD's formulas. Kernels must
// allow newState to share memory with state.
type SSDStepOp struct{}

// Name is "SSDStep".
func (SSDStepOp) Name() string { return "SSDStep" }

// NumOutputs is 2 (y, newState).
func (SSDStepOp) NumOutputs() int { return 2 }

// Infer returns x's and state's shapes.
func (op SSDStepOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	if _, err := CheckSSD(in, true); err != nil {
		return nil, err
	}
	return []shapes.Shape{in[0].Clone(), in[6].Clone()}, nil
}

// VJP views the step as an SSD over one token and runs SSDGradOp.
func (op SSDStepOp) VJP(in, out, gout []Value) ([]Value, error) {
	gy, gs := gout[0], gout[1]
	if gy == nil {
		gy = ZerosLike(out[0])
	}
	if gs == nil {
		gs = ZerosLike(out[1])
	}
	withT := func(v Value) Value {
		d := v.Shape().Dims
		return Reshape(v, append([]int{d[0], 1}, d[1:]...)...)
	}
	g := apply(SSDGradOp{}, withT(in[0]), withT(in[1]), in[2], withT(in[3]), withT(in[4]), in[5], in[6],
		withT(gy), gs)
	res := make([]Value, 7)
	for i, gi := range g[:7] {
		res[i] = Reshape(gi, in[i].Shape().Dims...)
	}
	return res, nil
}

// SSDStep advances the scan by one token (see SSDStepOp) and returns y [B,H,P] and the new state.
func SSDStep[V Value](x, dt, A, B, C, D, state V) (y, newState V) {
	r := apply(SSDStepOp{}, x, dt, A, B, C, D, state)
	return r[0], r[1]
}
