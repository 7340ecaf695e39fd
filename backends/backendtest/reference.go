package backendtest

// Reference implementations. They are deliberately naive: float64 loops over multi-indices, written
// from the ops' documented semantics and sharing no code with any backend, so that a backend that
// agrees with them is right for a reason other than "it agrees with itself".

import (
	"math"
	"slices"
)

// Tensor is a host tensor for reference computations: float64 values in F, or int64 indices in I.
type Tensor struct {
	Dims []int
	F    []float64
	I    []int64
}

// NewTensor returns a zero float tensor.
func NewTensor(dims ...int) *Tensor {
	return &Tensor{Dims: slices.Clone(dims), F: make([]float64, size(dims))}
}

func size(dims []int) int {
	n := 1
	for _, d := range dims {
		n *= d
	}
	return n
}

// At returns the element at a multi-index.
func (t *Tensor) At(idx ...int) float64 { return t.F[ravel(idx, t.Dims)] }

// Set stores v at a multi-index.
func (t *Tensor) Set(v float64, idx ...int) { t.F[ravel(idx, t.Dims)] = v }

// unravel turns a flat row-major index into a multi-index.
func unravel(flat int, dims []int) []int {
	idx := make([]int, len(dims))
	for i := len(dims) - 1; i >= 0; i-- {
		idx[i] = flat % dims[i]
		flat /= dims[i]
	}
	return idx
}

// ravel turns a multi-index into a flat row-major index.
func ravel(idx, dims []int) int {
	flat := 0
	for i, d := range dims {
		flat = flat*d + idx[i]
	}
	return flat
}

// broadcastIndex maps a multi-index of the broadcast output to the flat index of an operand with
// dims in (trailing axes aligned, size-1 axes stretched).
func broadcastIndex(out []int, in []int) int {
	lead := len(out) - len(in)
	flat := 0
	for j, d := range in {
		i := out[lead+j]
		if d == 1 {
			i = 0
		}
		flat = flat*d + i
	}
	return flat
}

// broadcastDims is the numpy broadcast of two dimension lists (the caller knows they broadcast).
func broadcastDims(a, b []int) []int {
	n := max(len(a), len(b))
	out := make([]int, n)
	for i := range out {
		da, db := 1, 1
		if j := i - (n - len(a)); j >= 0 {
			da = a[j]
		}
		if j := i - (n - len(b)); j >= 0 {
			db = b[j]
		}
		out[i] = max(da, db)
	}
	return out
}

// RefBinary applies f element-wise with numpy broadcasting.
func RefBinary(a, b *Tensor, f func(x, y float64) float64) *Tensor {
	dims := broadcastDims(a.Dims, b.Dims)
	out := NewTensor(dims...)
	for k := range out.F {
		idx := unravel(k, dims)
		out.F[k] = f(a.F[broadcastIndex(idx, a.Dims)], b.F[broadcastIndex(idx, b.Dims)])
	}
	return out
}

// RefUnary applies f element-wise.
func RefUnary(a *Tensor, f func(x float64) float64) *Tensor {
	out := NewTensor(a.Dims...)
	for k, v := range a.F {
		out.F[k] = f(v)
	}
	return out
}

// Scalar reference functions, written from their definitions.
func refSigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
func refSiLU(x float64) float64    { return x / (1 + math.Exp(-x)) }
func refSoftplus(x float64) float64 {
	if x > 20 { // PyTorch's threshold: the identity above 20
		return x
	}
	return math.Log(1 + math.Exp(x))
}

// RefBroadcastTo stretches a to dims.
func RefBroadcastTo(a *Tensor, dims []int) *Tensor {
	out := NewTensor(dims...)
	for k := range out.F {
		out.F[k] = a.F[broadcastIndex(unravel(k, dims), a.Dims)]
	}
	return out
}

// RefReshape returns a's elements with other dimensions.
func RefReshape(a *Tensor, dims []int) *Tensor {
	return &Tensor{Dims: slices.Clone(dims), F: slices.Clone(a.F), I: slices.Clone(a.I)}
}

// RefSum adds over axes (non-negative), keeping them as 1 when keep is set.
func RefSum(a *Tensor, axes []int, keep bool) *Tensor {
	red := make([]bool, len(a.Dims))
	for _, ax := range axes {
		red[ax] = true
	}
	var kept, outDims []int
	for i, d := range a.Dims {
		if red[i] {
			kept = append(kept, 1)
			if keep {
				outDims = append(outDims, 1)
			}
		} else {
			kept = append(kept, d)
			outDims = append(outDims, d)
		}
	}
	out := NewTensor(outDims...)
	for k, v := range a.F {
		idx := unravel(k, a.Dims)
		for i := range idx {
			if red[i] {
				idx[i] = 0
			}
		}
		out.F[ravel(idx, kept)] += v
	}
	return out
}

// RefMatMul multiplies the last two axes of a and b (transposed when asked) with broadcast batch
// axes.
func RefMatMul(a, b *Tensor, transA, transB bool) *Tensor {
	ra, rb := len(a.Dims), len(b.Dims)
	m, k := a.Dims[ra-2], a.Dims[ra-1]
	if transA {
		m, k = k, m
	}
	n := b.Dims[rb-1]
	if transB {
		n = b.Dims[rb-2]
	}
	batch := broadcastDims(a.Dims[:ra-2], b.Dims[:rb-2])
	out := NewTensor(append(slices.Clone(batch), m, n)...)
	aIdx := make([]int, ra)
	bIdx := make([]int, rb)
	for bi := 0; bi < size(batch); bi++ {
		bidx := unravel(bi, batch)
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				var s float64
				for p := 0; p < k; p++ {
					fillBatch(aIdx, bidx, a.Dims)
					fillBatch(bIdx, bidx, b.Dims)
					if transA {
						aIdx[ra-2], aIdx[ra-1] = p, i
					} else {
						aIdx[ra-2], aIdx[ra-1] = i, p
					}
					if transB {
						bIdx[rb-2], bIdx[rb-1] = j, p
					} else {
						bIdx[rb-2], bIdx[rb-1] = p, j
					}
					s += a.F[ravel(aIdx, a.Dims)] * b.F[ravel(bIdx, b.Dims)]
				}
				out.Set(s, append(slices.Clone(bidx), i, j)...)
			}
		}
	}
	return out
}

// fillBatch writes the operand's batch multi-index (broadcast from the output's) into idx.
func fillBatch(idx, batch, dims []int) {
	nb := len(dims) - 2
	lead := len(batch) - nb
	for j := 0; j < nb; j++ {
		if dims[j] == 1 {
			idx[j] = 0
		} else {
			idx[j] = batch[lead+j]
		}
	}
}

// RefFill returns a constant tensor.
func RefFill(dims []int, v float64) *Tensor {
	out := NewTensor(dims...)
	for i := range out.F {
		out.F[i] = v
	}
	return out
}

// normAxis turns a possibly negative axis into a non-negative one.
func normAxis(axis, rank int) int {
	if axis < 0 {
		return axis + rank
	}
	return axis
}

// remap builds a tensor of dims whose element k is a's element src(multi-index of k), or zero
// where src returns -1. It moves float values or int64 indices alike (layout ops take both).
func remap(a *Tensor, dims []int, src func(idx []int) int) *Tensor {
	out := &Tensor{Dims: slices.Clone(dims)}
	n := size(dims)
	if a.I != nil {
		out.I = make([]int64, n)
	} else {
		out.F = make([]float64, n)
	}
	for k := 0; k < n; k++ {
		j := src(unravel(k, dims))
		if j < 0 {
			continue
		}
		if a.I != nil {
			out.I[k] = a.I[j]
		} else {
			out.F[k] = a.F[j]
		}
	}
	return out
}

// RefTranspose permutes axes: output axis i is input axis perm[i].
func RefTranspose(a *Tensor, perm []int) *Tensor {
	dims := make([]int, len(perm))
	for i, p := range perm {
		dims[i] = a.Dims[p]
	}
	return remap(a, dims, func(idx []int) int {
		in := make([]int, len(idx))
		for i, p := range perm {
			in[p] = idx[i]
		}
		return ravel(in, a.Dims)
	})
}

// RefSlice keeps [start, end) of axis (non-negative).
func RefSlice(a *Tensor, axis, start, end int) *Tensor {
	dims := slices.Clone(a.Dims)
	dims[axis] = end - start
	return remap(a, dims, func(idx []int) int {
		idx[axis] += start
		return ravel(idx, a.Dims)
	})
}

// RefPad adds before zeros in front of and after zeros behind axis (non-negative).
func RefPad(a *Tensor, axis, before, after int) *Tensor {
	dims := slices.Clone(a.Dims)
	dims[axis] += before + after
	return remap(a, dims, func(idx []int) int {
		i := idx[axis] - before
		if i < 0 || i >= a.Dims[axis] {
			return -1
		}
		idx[axis] = i
		return ravel(idx, a.Dims)
	})
}

// RefConcat joins parts along axis (non-negative).
func RefConcat(axis int, parts ...*Tensor) *Tensor {
	dims := slices.Clone(parts[0].Dims)
	dims[axis] = 0
	for _, p := range parts {
		dims[axis] += p.Dims[axis]
	}
	out := &Tensor{Dims: dims}
	n := size(dims)
	if parts[0].I != nil {
		out.I = make([]int64, n)
	} else {
		out.F = make([]float64, n)
	}
	for k := 0; k < n; k++ {
		idx := unravel(k, dims)
		i := idx[axis]
		for _, p := range parts {
			if i < p.Dims[axis] {
				idx[axis] = i
				j := ravel(idx, p.Dims)
				if p.I != nil {
					out.I[k] = p.I[j]
				} else {
					out.F[k] = p.F[j]
				}
				break
			}
			i -= p.Dims[axis]
		}
	}
	return out
}

// RefGather returns table[indices]: table [V, D], indices [...] → [..., D].
func RefGather(table, indices *Tensor) *Tensor {
	d := table.Dims[1]
	out := NewTensor(append(slices.Clone(indices.Dims), d)...)
	for i, row := range indices.I {
		for j := 0; j < d; j++ {
			out.F[i*d+j] = table.At(int(row), j)
		}
	}
	return out
}

// RefScatterAdd returns [rows, D] zeros where row indices[i] accumulates g[i].
func RefScatterAdd(indices, g *Tensor, rows int) *Tensor {
	d := g.Dims[len(g.Dims)-1]
	out := NewTensor(rows, d)
	for i, row := range indices.I {
		for j := 0; j < d; j++ {
			out.F[int(row)*d+j] += g.F[i*d+j]
		}
	}
	return out
}

// lines calls f with the flat indices of every line along axis (the other indices fixed).
func lines(dims []int, axis int, f func(line []int)) {
	stride := 1
	for _, d := range dims[axis+1:] {
		stride *= d
	}
	line := make([]int, dims[axis])
	for k := 0; k < size(dims); k++ {
		if unravel(k, dims)[axis] != 0 {
			continue
		}
		for j := range line {
			line[j] = k + j*stride
		}
		f(line)
	}
}

// logSumExp is log Σ exp(v) with the maximum taken out (exact identity, no overflow).
func logSumExp(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	var s float64
	for _, x := range v {
		s += math.Exp(x - m)
	}
	return m + math.Log(s)
}

// RefSoftmax normalises exp(a) along axis (non-negative).
func RefSoftmax(a *Tensor, axis int) *Tensor {
	out := NewTensor(a.Dims...)
	lines(a.Dims, axis, func(line []int) {
		v := make([]float64, len(line))
		for j, k := range line {
			v[j] = a.F[k]
		}
		lse := logSumExp(v)
		for j, k := range line {
			out.F[k] = math.Exp(v[j] - lse)
		}
	})
	return out
}

// RefCrossEntropy returns logsumexp(logits) − logits[target] per position: logits [..., V],
// targets [...].
func RefCrossEntropy(logits, targets *Tensor) *Tensor {
	v := logits.Dims[len(logits.Dims)-1]
	out := NewTensor(targets.Dims...)
	for i, t := range targets.I {
		row := logits.F[i*v : (i+1)*v]
		out.F[i] = logSumExp(row) - row[t]
	}
	return out
}

// RefCrossEntropyGrad returns (softmax(logits) − onehot(target))·g, shaped like logits.
func RefCrossEntropyGrad(logits, targets, g *Tensor) *Tensor {
	v := logits.Dims[len(logits.Dims)-1]
	out := NewTensor(logits.Dims...)
	for i, t := range targets.I {
		row := logits.F[i*v : (i+1)*v]
		lse := logSumExp(row)
		for j, x := range row {
			p := math.Exp(x - lse)
			if j == int(t) {
				p--
			}
			out.F[i*v+j] = p * g.F[i]
		}
	}
	return out
}

// RefRMSNorm returns x / sqrt(mean(x², last axis) + eps) · w.
func RefRMSNorm(x, w *Tensor, eps float64) *Tensor {
	d := w.Dims[0]
	out := NewTensor(x.Dims...)
	for r := 0; r < len(x.F)/d; r++ {
		row := x.F[r*d : (r+1)*d]
		var ss float64
		for _, v := range row {
			ss += v * v
		}
		inv := 1 / math.Sqrt(ss/float64(d)+eps)
		for i, v := range row {
			out.F[r*d+i] = v * inv * w.F[i]
		}
	}
	return out
}

// RefRMSNormGrad returns dx and dw of Σ g·RMSNorm(x, w). With r = (mean(x²)+eps)^(-1/2):
// dx_j = r·g_j·w_j − r³·x_j/D · Σ_i g_i·w_i·x_i and dw_i = Σ_rows g_i·x_i·r.
func RefRMSNormGrad(x, w, g *Tensor, eps float64) (dx, dw *Tensor) {
	d := w.Dims[0]
	dx, dw = NewTensor(x.Dims...), NewTensor(d)
	for r := 0; r < len(x.F)/d; r++ {
		xs, gs := x.F[r*d:(r+1)*d], g.F[r*d:(r+1)*d]
		var ss, dot float64
		for i, v := range xs {
			ss += v * v
			dot += gs[i] * w.F[i] * v
		}
		inv := 1 / math.Sqrt(ss/float64(d)+eps)
		for j, v := range xs {
			dx.F[r*d+j] = inv*gs[j]*w.F[j] - inv*inv*inv*v/float64(d)*dot
			dw.F[j] += gs[j] * v * inv
		}
	}
	return dx, dw
}

// refSiLUGrad is d/dz z·σ(z) = σ(z)·(1 + z·(1 − σ(z))).
func refSiLUGrad(z float64) float64 {
	s := refSigmoid(z)
	return s * (1 + z*(1-s))
}

// RefGatedRMSNorm returns rmsnorm(y·silu(z))·w, normalising each of groups contiguous groups of
// the last axis separately (groups ≤ 1: the whole axis).
func RefGatedRMSNorm(y, z, w *Tensor, eps float64, groups int) *Tensor {
	d := w.Dims[0]
	groups = max(groups, 1)
	gs := d / groups
	out := NewTensor(y.Dims...)
	for r := 0; r < len(y.F)/d; r++ {
		for grp := 0; grp < groups; grp++ {
			lo := r*d + grp*gs
			var ss float64
			for i := lo; i < lo+gs; i++ {
				h := y.F[i] * refSiLU(z.F[i])
				ss += h * h
			}
			inv := 1 / math.Sqrt(ss/float64(gs)+eps)
			for i := lo; i < lo+gs; i++ {
				out.F[i] = y.F[i] * refSiLU(z.F[i]) * inv * w.F[i-r*d]
			}
		}
	}
	return out
}

// RefGatedRMSNormGrad returns dy, dz and dw of Σ g·GatedRMSNorm(y, z, w). With h = y·silu(z) and
// r per group of size n: dh_j = r·g_j·w_j − r³·h_j/n · Σ_i g_i·w_i·h_i, dy = dh·silu(z),
// dz = dh·y·silu'(z) and dw_i = Σ_rows g_i·h_i·r.
func RefGatedRMSNormGrad(y, z, w, g *Tensor, eps float64, groups int) (dy, dz, dw *Tensor) {
	d := w.Dims[0]
	groups = max(groups, 1)
	gs := d / groups
	dy, dz, dw = NewTensor(y.Dims...), NewTensor(z.Dims...), NewTensor(d)
	for r := 0; r < len(y.F)/d; r++ {
		for grp := 0; grp < groups; grp++ {
			lo := r*d + grp*gs
			var ss, dot float64
			for i := lo; i < lo+gs; i++ {
				h := y.F[i] * refSiLU(z.F[i])
				ss += h * h
				dot += g.F[i] * w.F[i-r*d] * h
			}
			inv := 1 / math.Sqrt(ss/float64(gs)+eps)
			for i := lo; i < lo+gs; i++ {
				c := i - r*d
				h := y.F[i] * refSiLU(z.F[i])
				dh := inv*g.F[i]*w.F[c] - inv*inv*inv*h/float64(gs)*dot
				dy.F[i] = dh * refSiLU(z.F[i])
				dz.F[i] = dh * y.F[i] * refSiLUGrad(z.F[i])
				dw.F[c] += g.F[i] * h * inv
			}
		}
	}
	return dy, dz, dw
}

// convU returns u[i] for one (b, c) of a causal convolution: the K state columns, then x over
// time (x [B,T,C], state [B,C,K]).
func convU(x, state *Tensor, b, c, i int) float64 {
	k := state.Dims[2]
	if i < k {
		return state.At(b, c, i)
	}
	return x.At(b, i-k, c)
}

// convLen is the number of valid tokens of row b (T when lengths is nil).
func convLen(x, lengths *Tensor, b int) int {
	if lengths == nil {
		return x.Dims[1]
	}
	return int(lengths.I[b])
}

// RefCausalConv1D is the depthwise causal convolution of CausalConv1DOp: with u the state's K
// columns followed by x, y[b,t,c] = bias[c] + Σ_k w[c,k]·u[t+1+k] for t < lengths[b] (zero after),
// and the new state is u[L .. L+K−1] with L = lengths[b] (T when lengths is nil).
func RefCausalConv1D(x, w, bias, state, lengths *Tensor) (y, newState *Tensor) {
	bs, ts, cs, ks := x.Dims[0], x.Dims[1], x.Dims[2], w.Dims[1]
	y, newState = NewTensor(bs, ts, cs), NewTensor(bs, cs, ks)
	for b := 0; b < bs; b++ {
		l := convLen(x, lengths, b)
		for c := 0; c < cs; c++ {
			for t := 0; t < l; t++ {
				s := bias.F[c]
				for k := 0; k < ks; k++ {
					s += w.At(c, k) * convU(x, state, b, c, t+1+k)
				}
				y.Set(s, b, t, c)
			}
			for j := 0; j < ks; j++ {
				newState.Set(convU(x, state, b, c, l+j), b, c, j)
			}
		}
	}
	return y, newState
}

// RefCausalConv1DGrad returns dx, dw, dbias and dstate of Σ gy·y + Σ gs·newState for
// RefCausalConv1D: the gradient reaching u[i] is Σ_{t<L, t+1+k=i} gy[t]·w[k] plus gs[i−L] for
// L ≤ i < L+K; dx and dstate are its x and state parts.
func RefCausalConv1DGrad(x, w, bias, state, gy, gs, lengths *Tensor) (dx, dw, dbias, dstate *Tensor) {
	bs, ts, cs, ks := x.Dims[0], x.Dims[1], x.Dims[2], w.Dims[1]
	dx, dw, dbias, dstate = NewTensor(x.Dims...), NewTensor(w.Dims...), NewTensor(cs), NewTensor(state.Dims...)
	du := make([]float64, ks+ts)
	for b := 0; b < bs; b++ {
		l := convLen(x, lengths, b)
		for c := 0; c < cs; c++ {
			clear(du)
			for t := 0; t < l; t++ {
				g := gy.At(b, t, c)
				dbias.F[c] += g
				for k := 0; k < ks; k++ {
					du[t+1+k] += g * w.At(c, k)
					dw.F[c*ks+k] += g * convU(x, state, b, c, t+1+k)
				}
			}
			for j := 0; j < ks; j++ {
				du[l+j] += gs.At(b, c, j)
			}
			for i, v := range du {
				if i < ks {
					dstate.Set(v, b, c, i)
				} else {
					dx.Set(v, b, i-ks, c)
				}
			}
		}
	}
	return dx, dw, dbias, dstate
}

// RefSSD is the selective scan as a per-token recurrence (no chunking): for each row b and head h
// (group g = h/(H/G)),
//
//	S_t = exp(dt_t·A_h)·S_{t−1} + dt_t·x_t ⊗ B_t,   y_t = S_t·C_t + D_h·x_t.
//
// x [B,T,H,P], dt [B,T,H], A [H], B and C [B,T,G,N], D [H], state [B,H,P,N]. It returns y and the
// final state.
func RefSSD(x, dt, a, bm, cm, d, state *Tensor) (y, final *Tensor) {
	bs, ts, hs, ps := x.Dims[0], x.Dims[1], x.Dims[2], x.Dims[3]
	gs, ns := bm.Dims[2], bm.Dims[3]
	y, final = NewTensor(x.Dims...), NewTensor(state.Dims...)
	s := make([]float64, ps*ns)
	for b := 0; b < bs; b++ {
		for h := 0; h < hs; h++ {
			g := h / (hs / gs)
			for p := 0; p < ps; p++ {
				for n := 0; n < ns; n++ {
					s[p*ns+n] = state.At(b, h, p, n)
				}
			}
			for t := 0; t < ts; t++ {
				step := dt.At(b, t, h)
				decay := math.Exp(step * a.F[h])
				for p := 0; p < ps; p++ {
					xv := x.At(b, t, h, p)
					out := d.F[h] * xv
					for n := 0; n < ns; n++ {
						s[p*ns+n] = decay*s[p*ns+n] + step*xv*bm.At(b, t, g, n)
						out += s[p*ns+n] * cm.At(b, t, g, n)
					}
					y.Set(out, b, t, h, p)
				}
			}
			for p := 0; p < ps; p++ {
				for n := 0; n < ns; n++ {
					final.Set(s[p*ns+n], b, h, p, n)
				}
			}
		}
	}
	return y, final
}

// RefSSDStep is one token of RefSSD: x [B,H,P], dt [B,H], B and C [B,G,N].
func RefSSDStep(x, dt, a, bm, cm, d, state *Tensor) (y, final *Tensor) {
	withT := func(t *Tensor) *Tensor {
		return RefReshape(t, append([]int{t.Dims[0], 1}, t.Dims[1:]...))
	}
	y, final = RefSSD(withT(x), withT(dt), a, withT(bm), withT(cm), d, state)
	return RefReshape(y, x.Dims), final
}

// RefSSDGrad returns the gradients of Σ gy·y + Σ gs·final for RefSSD with respect to its seven
// inputs (dx, ddt, dA, dB, dC, dD, dstate), by running the recurrence backwards: with G = dL/dS_t
// (starting from gs) and a_t = exp(dt_t·A_h), per token from the last
//
//	G += gy_t ⊗ C_t;  dC_t += S_tᵀ·gy_t;  dD_h += gy_t·x_t;  dx_t += D_h·gy_t
//	da = Σ G⊙S_{t−1};  ddt_t += da·a_t·A_h + Σ G⊙(x_t⊗B_t);  dA_h += da·a_t·dt_t
//	dx_t += dt_t·G·B_t;  dB_t += dt_t·Gᵀ·x_t;  G = a_t·G
//
// and dstate is the final G.
func RefSSDGrad(x, dt, a, bm, cm, d, state, gy, gs *Tensor) []*Tensor {
	bs, ts, hs, ps := x.Dims[0], x.Dims[1], x.Dims[2], x.Dims[3]
	ngr, ns := bm.Dims[2], bm.Dims[3]
	dx, ddt, da, dB := NewTensor(x.Dims...), NewTensor(dt.Dims...), NewTensor(a.Dims...), NewTensor(bm.Dims...)
	dC, dD, dS := NewTensor(cm.Dims...), NewTensor(d.Dims...), NewTensor(state.Dims...)
	for b := 0; b < bs; b++ {
		for h := 0; h < hs; h++ {
			g := h / (hs / ngr)
			// Forward, keeping every state: S[t+1] is the state after token t.
			S := make([][]float64, ts+1)
			S[0] = make([]float64, ps*ns)
			for p := 0; p < ps; p++ {
				for n := 0; n < ns; n++ {
					S[0][p*ns+n] = state.At(b, h, p, n)
				}
			}
			for t := 0; t < ts; t++ {
				S[t+1] = make([]float64, ps*ns)
				step := dt.At(b, t, h)
				decay := math.Exp(step * a.F[h])
				for p := 0; p < ps; p++ {
					for n := 0; n < ns; n++ {
						S[t+1][p*ns+n] = decay*S[t][p*ns+n] + step*x.At(b, t, h, p)*bm.At(b, t, g, n)
					}
				}
			}
			G := make([]float64, ps*ns)
			for p := 0; p < ps; p++ {
				for n := 0; n < ns; n++ {
					G[p*ns+n] = gs.At(b, h, p, n)
				}
			}
			for t := ts - 1; t >= 0; t-- {
				step := dt.At(b, t, h)
				decay := math.Exp(step * a.F[h])
				var dDecay, dStep float64
				for p := 0; p < ps; p++ {
					gyv, xv := gy.At(b, t, h, p), x.At(b, t, h, p)
					dD.F[h] += gyv * xv
					dx.F[ravel([]int{b, t, h, p}, x.Dims)] += d.F[h] * gyv
					for n := 0; n < ns; n++ {
						G[p*ns+n] += gyv * cm.At(b, t, g, n)
						dC.F[ravel([]int{b, t, g, n}, cm.Dims)] += S[t+1][p*ns+n] * gyv
					}
					for n := 0; n < ns; n++ {
						gv, bv := G[p*ns+n], bm.At(b, t, g, n)
						dDecay += gv * S[t][p*ns+n]
						dStep += gv * xv * bv
						dx.F[ravel([]int{b, t, h, p}, x.Dims)] += step * gv * bv
						dB.F[ravel([]int{b, t, g, n}, bm.Dims)] += step * gv * xv
					}
				}
				ddt.F[ravel([]int{b, t, h}, dt.Dims)] += dStep + dDecay*decay*a.F[h]
				da.F[h] += dDecay * decay * step
				for i := range G {
					G[i] *= decay
				}
			}
			for p := 0; p < ps; p++ {
				for n := 0; n < ns; n++ {
					dS.Set(G[p*ns+n], b, h, p, n)
				}
			}
		}
	}
	return []*Tensor{dx, ddt, da, dB, dC, dD, dS}
}
