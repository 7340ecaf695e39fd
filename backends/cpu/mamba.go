package cpu

import (
	"fmt"
	"math"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

// Kernels of the Mamba2 mixer: the depthwise causal convolution with carried state, the chunked
// selective state-space scan (SSD), its one-token step and their backward passes.

func init() {
	register("CausalConv1D", compileCausalConv1D)
	register("CausalConv1DGrad", compileCausalConv1DGrad)
	register("SSD", compileSSD)
	register("SSDGrad", compileSSDGrad)
	register("SSDStep", compileSSDStep)
}

// mambaGrain is roughly how many multiply-adds one goroutine should get for a split to pay.
const mambaGrain = 1 << 14

// mambaExp is e^v computed in float64 and rounded to the buffer type.
func mambaExp[T Float](v T) T { return T(math.Exp(float64(v))) }

// mambaBind points *dst at buffer i of bufs, checking the element count the kernel was compiled for.
func mambaBind[T Float](dst *[]T, bufs []backends.Buffer, i, want int, what string) error {
	d, err := data[T](bufs, i)
	if err != nil {
		return err
	}
	if len(d) != want {
		return fmt.Errorf("%s has %d elements, the kernel was compiled for %d", what, len(d), want)
	}
	*dst = d
	return nil
}

// mambaBindAll binds consecutive buffers of bufs to dsts (sizes and names alike).
func mambaBindAll[T Float](bufs []backends.Buffer, dsts []*[]T, sizes []int, names []string) error {
	for i, d := range dsts {
		if err := mambaBind(d, bufs, i, sizes[i], names[i]); err != nil {
			return err
		}
	}
	return nil
}

// ---- CausalConv1D ----

// causalConvKernel runs CausalConv1D, parallel over channel ranges.
type causalConvKernel[T Float] struct {
	be                    *Backend
	nb, nt, nc, nk        int
	hasLen                bool
	x, w, bias, st, y, ns []T
	wt                    []T // w transposed to [K, C] for the multi-token path, filled per Run
	lens                  []int64
	inDst, outDst         []*[]T
	inSize, outSize       []int
	fn                    func(lo, hi int)
	par                   parallel
}

var (
	convInNames      = []string{"x", "w", "bias", "state"}
	convOutNames     = []string{"y", "newState"}
	convGradInNames  = []string{"x", "w", "bias", "state", "gy", "gNewState"}
	convGradOutNames = []string{"dx", "dw", "dbias", "dstate"}
)

func compileCausalConv1D(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.CausalConv1DOp)
	if !ok || len(out) != 2 {
		return nil, fmt.Errorf("bad op or arity")
	}
	if _, err := o.Infer(in); err != nil {
		return nil, err
	}
	switch in[0].DType {
	case shapes.Float32:
		return newCausalConv[float32](be, in), nil
	case shapes.Float64:
		return newCausalConv[float64](be, in), nil
	}
	return nil, fmt.Errorf("dtype %s: %w", in[0].DType, backends.ErrUnsupported)
}

func newCausalConv[T Float](be *Backend, in []shapes.Shape) *causalConvKernel[T] {
	x, w := in[0].Dims, in[1].Dims
	k := &causalConvKernel[T]{be: be, nb: x[0], nt: x[1], nc: x[2], nk: w[1], hasLen: len(in) == 5}
	if k.nt > 1 {
		k.wt = make([]T, k.nc*k.nk)
	}
	bsz, ssz := k.nb*k.nt*k.nc, k.nb*k.nc*k.nk
	k.inDst = []*[]T{&k.x, &k.w, &k.bias, &k.st}
	k.inSize = []int{bsz, k.nc * k.nk, k.nc, ssz}
	k.outDst = []*[]T{&k.y, &k.ns}
	k.outSize = []int{bsz, ssz}
	k.fn = k.channels
	return k
}

// convLengths binds and validates the optional lengths input (index i) against T.
func convLengths(in []backends.Buffer, i, nb, nt int) ([]int64, error) {
	l, err := data[int64](in, i)
	if err != nil {
		return nil, err
	}
	if len(l) != nb {
		return nil, fmt.Errorf("lengths has %d elements, the kernel was compiled for %d", len(l), nb)
	}
	for b, v := range l {
		if v < 0 || v > int64(nt) {
			return nil, fmt.Errorf("lengths[%d] = %d is outside [0, %d]", b, v, nt)
		}
	}
	return l, nil
}

func (k *causalConvKernel[T]) Run(in, out []backends.Buffer) error {
	if err := mambaBindAll(in, k.inDst, k.inSize, convInNames); err != nil {
		return err
	}
	if err := mambaBindAll(out, k.outDst, k.outSize, convOutNames); err != nil {
		return err
	}
	if k.hasLen {
		l, err := convLengths(in, 4, k.nb, k.nt)
		if err != nil {
			return err
		}
		k.lens = l
	}
	if k.nt > 1 {
		// Tap-major weights let the time loop run over contiguous channels.
		for c := 0; c < k.nc; c++ {
			for j := 0; j < k.nk; j++ {
				k.wt[j*k.nc+c] = k.w[c*k.nk+j]
			}
		}
	}
	// One range of channels per thread for many tokens: the time loop makes nt·nk short calls
	// per range, so finer pieces cost more in calls than they win in balance.
	pieces := piecesPerThread
	if k.nt > 1 {
		pieces = 1
	}
	k.be.pool.parallelPieces(&k.par, k.nc, max(1, mambaGrain/max(1, k.nb*k.nt*k.nk)), pieces, k.fn)
	return nil
}

// InPlace lets a program keep the conv state in one buffer: channels reads every state value it
// needs before writing newState over it (see channels and step).
func (k *causalConvKernel[T]) InPlace(out int) int {
	if out == 1 {
		return 3
	}
	return -1
}

// channels computes y and newState for channels lo..hi of every row. newState is written after
// y and in increasing column order, so it may share memory with state.
func (k *causalConvKernel[T]) channels(lo, hi int) {
	nt, nc, nk := k.nt, k.nc, k.nk
	for b := 0; b < k.nb; b++ {
		valid := nt
		if k.hasLen {
			valid = int(k.lens[b])
		}
		xb, yb := k.x[b*nt*nc:(b+1)*nt*nc], k.y[b*nt*nc:(b+1)*nt*nc]
		sb, nsb := k.st[b*nc*nk:(b+1)*nc*nk], k.ns[b*nc*nk:(b+1)*nc*nk]
		if nt == 1 && valid == 1 && nk > 0 {
			k.step(xb, yb, sb, nsb, lo, hi)
			continue
		}
		for t := 0; t < valid; t++ {
			yr := yb[t*nc+lo : t*nc+hi]
			copy(yr, k.bias[lo:hi])
			for j := 0; j < nk; j++ {
				src := t + 1 + j - nk // time index into x; negative reads the state
				if src >= 0 {
					mambaMulAdd(yr, k.wt[j*nc+lo:j*nc+hi], xb[src*nc+lo:src*nc+hi])
				} else {
					col := nk + src
					for i := range yr {
						c := lo + i
						yr[i] += k.w[c*nk+j] * sb[c*nk+col]
					}
				}
			}
		}
		for t := valid; t < nt; t++ {
			clear(yb[t*nc+lo : t*nc+hi])
		}
		for c := lo; c < hi; c++ {
			for j := 0; j < nk; j++ {
				if m := valid + j; m >= nk {
					nsb[c*nk+j] = xb[(m-nk)*nc+c]
				} else {
					nsb[c*nk+j] = sb[c*nk+m]
				}
			}
		}
	}
}

// step is channels for one token (decoding), channel by channel: the same sums in the same
// order, without walking the state with a stride per tap.
func (k *causalConvKernel[T]) step(x, y, s, ns []T, lo, hi int) {
	nk := k.nk
	if nk == 4 {
		// Mamba2's width, unrolled: the general loop below spends most of its time on slice
		// headers and bounds checks for three multiply-adds. Same operations in the same order.
		w, bias := k.w[lo*4:hi*4], k.bias[lo:hi]
		s, ns, x, y = s[lo*4:hi*4], ns[lo*4:hi*4], x[lo:hi], y[lo:hi]
		for i := range y {
			wc, sc, nc := w[i*4:i*4+4:i*4+4], s[i*4:i*4+4:i*4+4], ns[i*4:i*4+4:i*4+4]
			s1, s2, s3, xv := sc[1], sc[2], sc[3], x[i]
			acc := bias[i]
			acc += wc[0] * s1
			acc += wc[1] * s2
			acc += wc[2] * s3
			y[i] = acc + wc[3]*xv
			nc[0], nc[1], nc[2], nc[3] = s1, s2, s3, xv
		}
		return
	}
	for c := lo; c < hi; c++ {
		w, sr, nr := k.w[c*nk:(c+1)*nk], s[c*nk:(c+1)*nk], ns[c*nk:(c+1)*nk]
		xv := x[c]
		acc := k.bias[c]
		for j, wv := range w[:nk-1] {
			acc += wv * sr[j+1]
		}
		y[c] = acc + w[nk-1]*xv
		for j := 0; j < nk-1; j++ {
			nr[j] = sr[j+1]
		}
		nr[nk-1] = xv
	}
}

// causalConvGradKernel runs CausalConv1DGrad, parallel over channel ranges (each range owns its
// rows of dw and dbias, so nothing is shared).
type causalConvGradKernel[T Float] struct {
	be                     *Backend
	nb, nt, nc, nk         int
	hasLen                 bool
	x, w, bias, st, gy, gs []T
	dx, dw, dbias, dst     []T
	lens                   []int64
	inDst, outDst          []*[]T
	inSize, outSize        []int
	fn                     func(lo, hi int)
	par                    parallel
}

func compileCausalConv1DGrad(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.CausalConv1DGradOp)
	if !ok || len(out) != 4 {
		return nil, fmt.Errorf("bad op or arity")
	}
	if _, err := o.Infer(in); err != nil {
		return nil, err
	}
	switch in[0].DType {
	case shapes.Float32:
		return newCausalConvGrad[float32](be, in), nil
	case shapes.Float64:
		return newCausalConvGrad[float64](be, in), nil
	}
	return nil, fmt.Errorf("dtype %s: %w", in[0].DType, backends.ErrUnsupported)
}

func newCausalConvGrad[T Float](be *Backend, in []shapes.Shape) *causalConvGradKernel[T] {
	x, w := in[0].Dims, in[1].Dims
	k := &causalConvGradKernel[T]{be: be, nb: x[0], nt: x[1], nc: x[2], nk: w[1], hasLen: len(in) == 7}
	bsz, ssz := k.nb*k.nt*k.nc, k.nb*k.nc*k.nk
	k.inDst = []*[]T{&k.x, &k.w, &k.bias, &k.st, &k.gy, &k.gs}
	k.inSize = []int{bsz, k.nc * k.nk, k.nc, ssz, bsz, ssz}
	k.outDst = []*[]T{&k.dx, &k.dw, &k.dbias, &k.dst}
	k.outSize = []int{bsz, k.nc * k.nk, k.nc, ssz}
	k.fn = k.channels
	return k
}

func (k *causalConvGradKernel[T]) Run(in, out []backends.Buffer) error {
	if err := mambaBindAll(in, k.inDst, k.inSize, convGradInNames); err != nil {
		return err
	}
	if err := mambaBindAll(out, k.outDst, k.outSize, convGradOutNames); err != nil {
		return err
	}
	if k.hasLen {
		l, err := convLengths(in, 6, k.nb, k.nt)
		if err != nil {
			return err
		}
		k.lens = l
	}
	k.be.pool.parallelFor(&k.par, k.nc, max(1, mambaGrain/max(1, 3*k.nb*k.nt*k.nk)), k.fn)
	return nil
}

// channels computes the gradients for channels lo..hi. With u the state columns followed by x,
// y[t] reads u[t+1+j] through tap j and newState[j] is u[valid+j].
func (k *causalConvGradKernel[T]) channels(lo, hi int) {
	nt, nc, nk := k.nt, k.nc, k.nk
	dw, dbias := k.dw[lo*nk:hi*nk], k.dbias[lo:hi]
	clear(dw)
	clear(dbias)
	for b := 0; b < k.nb; b++ {
		valid := nt
		if k.hasLen {
			valid = int(k.lens[b])
		}
		xb, gyb, dxb := k.x[b*nt*nc:(b+1)*nt*nc], k.gy[b*nt*nc:(b+1)*nt*nc], k.dx[b*nt*nc:(b+1)*nt*nc]
		sb, gsb, dsb := k.st[b*nc*nk:(b+1)*nc*nk], k.gs[b*nc*nk:(b+1)*nc*nk], k.dst[b*nc*nk:(b+1)*nc*nk]
		// dbias and dw: Σ_t gy[t]·(1, u[t+1+j]).
		for t := 0; t < valid; t++ {
			gr := gyb[t*nc+lo : t*nc+hi]
			for i, g := range gr {
				dbias[i] += g
			}
			for j := 0; j < nk; j++ {
				src := t + 1 + j - nk
				if src >= 0 {
					xr := xb[src*nc+lo : src*nc+hi]
					for i, g := range gr {
						dw[i*nk+j] += g * xr[i]
					}
				} else {
					col := nk + src
					for i, g := range gr {
						dw[i*nk+j] += g * sb[(lo+i)*nk+col]
					}
				}
			}
		}
		// dx[s] = Σ_j w[j]·gy[s+nk−1−j] (outputs before valid) + gNewState[nk+s−valid].
		for s := 0; s < nt; s++ {
			dr := dxb[s*nc+lo : s*nc+hi]
			clear(dr)
			if s >= valid {
				continue
			}
			for j := 0; j < nk; j++ {
				t := s + nk - 1 - j
				if t >= valid {
					continue
				}
				gr := gyb[t*nc+lo : t*nc+hi]
				for i, g := range gr {
					dr[i] += k.w[(lo+i)*nk+j] * g
				}
			}
			if col := nk + s - valid; col >= 0 {
				for i := range dr {
					dr[i] += gsb[(lo+i)*nk+col]
				}
			}
		}
		// dstate[col] = Σ_{j<col} w[j]·gy[col−1−j] + gNewState[col−valid].
		for c := lo; c < hi; c++ {
			for col := 0; col < nk; col++ {
				var acc T
				for j := 0; j < col; j++ {
					if t := col - 1 - j; t < valid {
						acc += k.w[c*nk+j] * gyb[t*nc+c]
					}
				}
				if col >= valid {
					acc += gsb[c*nk+col-valid]
				}
				dsb[c*nk+col] = acc
			}
		}
	}
}

// ---- SSD (chunked scan) ----

var (
	ssdInNames      = []string{"x", "dt", "A", "B", "C", "D", "state"}
	ssdOutNames     = []string{"y", "newState"}
	ssdGradInNames  = []string{"x", "dt", "A", "B", "C", "D", "state", "gy", "gNewState"}
	ssdGradOutNames = []string{"dx", "ddt", "dA", "dB", "dC", "dD", "dstate"}
)

// ssdSizes returns the element counts of SSD's inputs x, dt, A, B, C, D, state.
func ssdSizes(d ops.SSDDims) []int {
	return []int{d.B * d.T * d.H * d.P, d.B * d.T * d.H, d.H, d.B * d.T * d.G * d.N, d.B * d.T * d.G * d.N,
		d.H, d.B * d.H * d.P * d.N}
}

const (
	// ssdBlock is the row block of the intra-chunk product: block r multiplies its rows of the
	// decay-masked C·Bᵀ by the first (r+1)·ssdBlock rows of dt·x, skipping the zero upper part.
	ssdBlock = 64
	// ssdMaxExp bounds the exponents of the factored decays exp(cs_i − ref)·exp(ref − cs_j)
	// when one factor may exceed 1 (float32 overflows near e^88).
	ssdMaxExp = 40
	// ssdTile is the row tile of a diagonal block whose decay range is too large to factor.
	ssdTile = 16
)

// ssdKernel runs SSD by state-space duality, with matrix products. With cs the cumulative sum
// of dt·A inside a chunk (n ≤ q tokens) and S [P×N] the state entering it (the initial state for
// the first chunk), per head
//
//	Y  = diag(exp(cs))·C·Sᵀ + (C·Bᵀ ∘ L)·(dt ∘ X) + D·X,  L_ij = exp(cs_i − cs_j) for j ≤ i, else 0
//	S ← exp(cs_last)·S + (w ∘ dt ∘ X)ᵀ·B,              w_j = exp(cs_last − cs_j)
//
// with X [n×P], B and C [n×N] the chunk's rows. Phase one computes the lower block triangle of
// C·Bᵀ per batch row, group, chunk and row block (shared by the heads of the group); phase two,
// parallel over batch × heads, walks the chunks in order with three products per chunk (C·Sᵀ,
// the masked C·Bᵀ times dt·X by row blocks of ssdBlock, and the state update) through package
// kernels. The decay mask of a row block [r0,r1) factors as exp(cs_i − cs_r0)·exp(cs_r0 − cs_j):
// both factors are at most 1 left of the diagonal block, so only O(q) exponentials are needed
// per block; the diagonal block is factored too when its decay range is below ssdMaxExp, else
// split into row tiles of ssdTile treated the same way, and a tile whose range is still too
// large takes one exponential per entry. Decay factors below 2^−60 (float32) are flushed to
// zero (see mambaDecay); for float32 the exponentials are vectorised when built with
// GOEXPERIMENT=simd. With more than one group the B and C rows are first gathered per group,
// so that every product reads contiguous rows.
type ssdKernel[T Float] struct {
	be                              *Backend
	d                               ops.SSDDims
	q, nc, nrb, hpg                 int
	x, dt, a, bm, cm, dd, st, y, ns []T
	cb                              []T // [B, G, nc, q·q]: C·Bᵀ of each chunk (row stride n), lower block triangle
	gb, gc                          []T // [B, G, T, N]: B and C by group (G > 1 only)
	slots                           chan *ssdScratch[T]
	scratch                         []*ssdScratch[T] // the slots' structs; their memory is borrowed per Run
	mem                             []T              // borrowed for a Run: cb, gb, gc and the slots' slices
	inDst, outDst                   []*[]T
	inSize, outSize                 []int
	gatherFn, cbFn, headFn          func(lo, hi int)
	par                             parallel
}

// ssdScratch is one worker's memory for a chunk of one head.
type ssdScratch[T Float] struct {
	cs, u, v []T // [q]
	e        []T // [q]: exp(cs), then exp(cs_last − cs)
	u2, v2   []T // [ssdTile], [q]: the same for the row tiles of a diagonal block
	xd, yc   []T // [q×P]: dt·x (then w·dt·x), the chunk's output
	m        []T // [ssdBlock×q]: one row block of the decay-masked C·Bᵀ
}

func compileSSD(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.SSDOp)
	if !ok || len(out) != 2 {
		return nil, fmt.Errorf("bad op or arity")
	}
	if _, err := o.Infer(in); err != nil {
		return nil, err
	}
	d, _ := ops.CheckSSD(in, false)
	switch in[0].DType {
	case shapes.Float32:
		return newSSD[float32](be, d, o.ChunkSize), nil
	case shapes.Float64:
		return newSSD[float64](be, d, o.ChunkSize), nil
	}
	return nil, fmt.Errorf("dtype %s: %w", in[0].DType, backends.ErrUnsupported)
}

func newSSD[T Float](be *Backend, d ops.SSDDims, chunk int) *ssdKernel[T] {
	q := max(1, min(chunk, d.T))
	k := &ssdKernel[T]{be: be, d: d, q: q, nc: (d.T + q - 1) / q, nrb: (q + ssdBlock - 1) / ssdBlock, hpg: d.H / d.G}
	threads := be.pool.threads
	k.slots = make(chan *ssdScratch[T], threads)
	k.scratch = make([]*ssdScratch[T], threads)
	for i := range k.scratch {
		k.scratch[i] = &ssdScratch[T]{}
	}
	k.inDst = []*[]T{&k.x, &k.dt, &k.a, &k.bm, &k.cm, &k.dd, &k.st}
	k.inSize = ssdSizes(d)
	k.outDst = []*[]T{&k.y, &k.ns}
	k.outSize = []int{k.inSize[0], k.inSize[6]}
	k.gatherFn = k.gather
	k.cbFn = k.chunkCB
	k.headFn = k.heads
	return k
}

func (k *ssdKernel[T]) Run(in, out []backends.Buffer) error {
	if err := mambaBindAll(in, k.inDst, k.inSize, ssdInNames); err != nil {
		return err
	}
	if err := mambaBindAll(out, k.outDst, k.outSize, ssdOutNames); err != nil {
		return err
	}
	d := k.d
	if d.T == 0 {
		copy(k.ns, k.st)
		return nil
	}
	k.borrowScratch()
	if d.G > 1 {
		k.be.pool.parallelFor(&k.par, d.B*d.T, max(1, mambaGrain/max(1, d.G*d.N)), k.gatherFn)
	}
	k.be.pool.parallelFor(&k.par, d.B*d.G*k.nc*k.nrb, max(1, mambaGrain/max(1, k.q*min(k.q, ssdBlock)*d.N)), k.cbFn)
	perHead := d.T * (k.q*d.P + 4*d.P*d.N)
	k.be.pool.parallelFor(&k.par, d.B*d.H, max(1, mambaGrain/max(1, perHead)), k.headFn)
	k.returnScratch()
	return nil
}

// borrowScratch takes one slice from the backend's arena and lays out cb, gb, gc and every
// worker slot in it.
func (k *ssdKernel[T]) borrowScratch() {
	d, q := k.d, k.q
	ncb := d.B * d.G * k.nc * q * q
	ng := 0
	if d.G > 1 {
		ng = d.B * d.G * d.T * d.N
	}
	slot := 5*q + ssdTile + 2*q*d.P + min(q, ssdBlock)*q
	k.mem = borrow[T](&k.be.arena, ncb+2*ng+len(k.scratch)*slot)
	next := func(n int) []T {
		s := k.mem[:n:n]
		k.mem = k.mem[n:]
		return s
	}
	all := k.mem
	k.cb = next(ncb)
	if ng > 0 {
		k.gb, k.gc = next(ng), next(ng)
	}
	for _, sc := range k.scratch {
		sc.cs, sc.e, sc.u, sc.v, sc.u2, sc.v2 = next(q), next(q), next(q), next(q), next(ssdTile), next(q)
		sc.xd, sc.yc, sc.m = next(q*d.P), next(q*d.P), next(min(q, ssdBlock)*q)
		k.slots <- sc
	}
	k.mem = all
}

// returnScratch empties the slots and gives the memory back.
func (k *ssdKernel[T]) returnScratch() {
	for range k.scratch {
		<-k.slots
	}
	giveBack(&k.be.arena, k.mem)
	k.mem, k.cb, k.gb, k.gc = nil, nil, nil, nil
}

// gather copies the B and C rows of (b, t) items lo..hi (item = b·T + t) into gb and gc.
func (k *ssdKernel[T]) gather(lo, hi int) {
	d := k.d
	for it := lo; it < hi; it++ {
		b, t := it/d.T, it%d.T
		for g := 0; g < d.G; g++ {
			src := (it*d.G + g) * d.N
			dst := ((b*d.G+g)*d.T + t) * d.N
			copy(k.gb[dst:dst+d.N], k.bm[src:src+d.N])
			copy(k.gc[dst:dst+d.N], k.cm[src:src+d.N])
		}
	}
}

// rows returns the B and C rows [t0, t0+n) of batch row b, group g: [n×N] each, contiguous.
func (k *ssdKernel[T]) rows(b, g, t0, n int) (bc, cc []T) {
	d := k.d
	if d.G == 1 {
		o := (b*d.T + t0) * d.N
		return k.bm[o : o+n*d.N], k.cm[o : o+n*d.N]
	}
	o := ((b*d.G+g)*d.T + t0) * d.N
	return k.gb[o : o+n*d.N], k.gc[o : o+n*d.N]
}

// chunkCB fills C·Bᵀ for items lo..hi (item = ((b·G + g)·nc + chunk)·nrb + row block): the
// block's rows, columns up to its end.
func (k *ssdKernel[T]) chunkCB(lo, hi int) {
	d, q := k.d, k.q
	for it := lo; it < hi; it++ {
		r := it % k.nrb
		bgc := it / k.nrb
		c := bgc % k.nc
		bg := bgc / k.nc
		b, g := bg/d.G, bg%d.G
		t0 := c * q
		n := min(q, d.T-t0)
		r0 := r * ssdBlock
		if r0 >= n {
			continue
		}
		r1 := min(r0+ssdBlock, n)
		bc, cc := k.rows(b, g, t0, n)
		mmNTBlock(k.cb[bgc*q*q:bgc*q*q+n*n], cc, bc, n, n, d.N, r0, r1, 0, r1)
	}
}

// heads runs the chunk recurrence for items lo..hi (item = b·H + h). The state lives in newState,
// which is first copied from state (so the two may share memory).
func (k *ssdKernel[T]) heads(lo, hi int) {
	sc := <-k.slots
	d, q := k.d, k.q
	pn := d.P * d.N
	for it := lo; it < hi; it++ {
		b, h := it/d.H, it%d.H
		S := k.ns[it*pn : (it+1)*pn]
		copy(S, k.st[it*pn:(it+1)*pn])
		for c := 0; c < k.nc; c++ {
			k.chunk(sc, S, b, h, c, c*q, min(q, d.T-c*q))
		}
	}
	k.slots <- sc
}

// chunk computes y for tokens t0..t0+n of row b, head h (chunk c) and advances S past them.
func (k *ssdKernel[T]) chunk(sc *ssdScratch[T], S []T, b, h, c, t0, n int) {
	d := k.d
	nT, nH, nP, nN := d.T, d.H, d.P, d.N
	g := h / k.hpg
	av, dv := k.a[h], k.dd[h]
	cs := sc.cs[:n]
	var acc T
	for i := range cs {
		acc += k.dt[(b*nT+t0+i)*nH+h] * av
		cs[i] = acc
	}
	// xd = dt ∘ X (zero rows for dt = 0: such tokens must not touch anything).
	xd := sc.xd[:n*nP]
	for j := 0; j < n; j++ {
		row := xd[j*nP : (j+1)*nP]
		if dtv := k.dt[(b*nT+t0+j)*nH+h]; dtv != 0 {
			mambaScaleTo(row, k.x[((b*nT+t0+j)*nH+h)*nP:], dtv)
		} else {
			clear(row)
		}
	}
	bc, cc := k.rows(b, g, t0, n)
	// Inter-chunk part: the entering state read through C, decayed to each token.
	yc := sc.yc[:n*nP]
	if c == 0 && mambaAllZero(S) {
		clear(yc)
	} else {
		mmNT(yc, cc, S, n, nP, nN, false)
		e := sc.e[:n]
		mambaExpAffine(e, cs, 0, 1)
		for i, v := range e {
			if v != 1 {
				mambaScale(yc[i*nP:(i+1)*nP], v)
			}
		}
	}
	// Intra-chunk part, by row blocks.
	cb := k.cb[((b*d.G+g)*k.nc+c)*k.q*k.q:][:n*n]
	for r0 := 0; r0 < n; r0 += ssdBlock {
		r1 := min(r0+ssdBlock, n)
		m := k.maskBlock(sc, cb, cs, n, r0, r1)
		mmNN(yc[r0*nP:r1*nP], m, xd[:r1*nP], r1-r0, nP, r1, true)
	}
	for i := 0; i < n; i++ {
		xo := ((b*nT+t0+i)*nH + h) * nP
		mambaAddScaled(k.y[xo:xo+nP], yc[i*nP:(i+1)*nP], k.x[xo:xo+nP], dv)
	}
	// Pass the state to the next chunk.
	last := cs[n-1]
	w := sc.e[:n]
	mambaExpAffine(w, cs, last, -1)
	for j, v := range w {
		if v != 1 {
			mambaScale(xd[j*nP:(j+1)*nP], v)
		}
	}
	if e := mambaDecay(last); e != 1 {
		mambaScale(S, e)
	}
	mmTN(S, xd, bc, nP, nN, n, true)
}

// maskBlock returns rows [r0,r1) of C·Bᵀ ∘ L (see ssdKernel), columns [0,r1), in sc.m.
func (k *ssdKernel[T]) maskBlock(sc *ssdScratch[T], cb, cs []T, n, r0, r1 int) []T {
	m := sc.m[:(r1-r0)*r1]
	ssdMaskRows(m, r1, r0, cb, n, cs, r0, r1, 0, sc.u, sc.v, sc.u2, sc.v2)
	return m
}

// ssdSafe reports whether exp(a)·exp(b) may stand for exp(a + b) for a in [aLo,aHi] and b in
// [bLo,bHi]: when both factors are at most 1 (an underflow then means a negligible true value)
// or when neither can under- or overflow.
func ssdSafe[T Float](aLo, aHi, bLo, bHi T) bool {
	return (aHi <= 0 && bHi <= 0) ||
		(aLo >= -ssdMaxExp && aHi <= ssdMaxExp && bLo >= -ssdMaxExp && bHi <= ssdMaxExp)
}

// ssdMaskRows fills rows [r0,r1) of M (row i at m[(i−mr0)·w:]), columns [c0,r1): C·Bᵀ (cb, row
// stride n) times exp(cs_i − cs_j) for j ≤ i, zero right of the diagonal. Left of the diagonal
// block the decay factors through ref = cs_r0 as u_i·v_j = exp(cs_i − ref)·exp(ref − cs_j); the
// diagonal block too when its range allows. Otherwise the diagonal block is split into row
// tiles of ssdTile (u2, v2 their scratch) and, at that size, takes one exponential per entry.
func ssdMaskRows[T Float](m []T, w, mr0 int, cb []T, n int, cs []T, r0, r1, c0 int, u, v, u2, v2 []T) {
	ref := cs[r0]
	aLo, aHi := T(0), T(0)
	for _, c := range cs[r0:r1] {
		aLo, aHi = min(aLo, c-ref), max(aHi, c-ref)
	}
	u = u[:r1-r0]
	haveU := false
	fillU := func() {
		if !haveU {
			mambaExpAffine(u, cs[r0:r1], -ref, 1)
			haveU = true
		}
	}
	// perEntry sets rows [r0,r1), columns [j0, min(j1, i+1)) one exponential at a time.
	perEntry := func(j0, j1 int) {
		for i := r0; i < r1; i++ {
			if e := min(j1, i+1); j0 < e {
				mambaMulExp(m[(i-mr0)*w+j0:(i-mr0)*w+e], cb[i*n+j0:], cs[j0:], cs[i])
			}
		}
	}
	if c0 < r0 {
		bLo, bHi := ref-cs[c0], ref-cs[c0]
		for _, c := range cs[c0:r0] {
			bLo, bHi = min(bLo, ref-c), max(bHi, ref-c)
		}
		if ssdSafe(aLo, aHi, bLo, bHi) {
			fillU()
			mambaExpAffine(v[c0:r0], cs[c0:r0], ref, -1)
			for i := r0; i < r1; i++ {
				mambaMulScaled(m[(i-mr0)*w+c0:(i-mr0)*w+r0], cb[i*n+c0:], v[c0:], u[i-r0])
			}
		} else {
			perEntry(c0, r0)
		}
	}
	bLo, bHi := T(0), T(0)
	for _, c := range cs[r0:r1] {
		bLo, bHi = min(bLo, ref-c), max(bHi, ref-c)
	}
	switch {
	case ssdSafe(aLo, aHi, bLo, bHi):
		fillU()
		mambaExpAffine(v[r0:r1], cs[r0:r1], ref, -1)
		for i := r0; i < r1; i++ {
			mambaMulScaled(m[(i-mr0)*w+r0:(i-mr0)*w+i+1], cb[i*n+r0:], v[r0:], u[i-r0])
		}
	case r1-r0 > ssdTile && u2 != nil:
		for s0 := r0; s0 < r1; s0 += ssdTile {
			ssdMaskRows(m, w, mr0, cb, n, cs, s0, min(s0+ssdTile, r1), r0, u2, v2, nil, nil)
		}
	default:
		perEntry(r0, r1)
	}
	for i := r0; i < r1; i++ {
		clear(m[(i-mr0)*w+i+1 : (i-mr0)*w+r1])
	}
}

// ---- SSDStep ----

// ssdStepKernel advances the recurrence by one token, parallel over batch × heads, in one fused
// pass per state row (vectorised for float32, see mambaStepHead). It updates element-wise, so
// newState may share memory with state.
type ssdStepKernel[T Float] struct {
	be                              *Backend
	d                               ops.SSDDims
	hpg                             int
	x, dt, a, bm, cm, dd, st, y, ns []T
	inDst, outDst                   []*[]T
	inSize, outSize                 []int
	fn                              func(lo, hi int)
	par                             parallel
}

func compileSSDStep(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.SSDStepOp)
	if !ok || len(out) != 2 {
		return nil, fmt.Errorf("bad op or arity")
	}
	if _, err := o.Infer(in); err != nil {
		return nil, err
	}
	d, _ := ops.CheckSSD(in, true)
	switch in[0].DType {
	case shapes.Float32:
		return newSSDStep[float32](be, d), nil
	case shapes.Float64:
		return newSSDStep[float64](be, d), nil
	}
	return nil, fmt.Errorf("dtype %s: %w", in[0].DType, backends.ErrUnsupported)
}

func newSSDStep[T Float](be *Backend, d ops.SSDDims) *ssdStepKernel[T] {
	k := &ssdStepKernel[T]{be: be, d: d, hpg: d.H / d.G}
	k.inDst = []*[]T{&k.x, &k.dt, &k.a, &k.bm, &k.cm, &k.dd, &k.st}
	k.inSize = ssdSizes(d)
	k.outDst = []*[]T{&k.y, &k.ns}
	k.outSize = []int{k.inSize[0], k.inSize[6]}
	k.fn = k.heads
	return k
}

func (k *ssdStepKernel[T]) Run(in, out []backends.Buffer) error {
	if err := mambaBindAll(in, k.inDst, k.inSize, ssdInNames); err != nil {
		return err
	}
	if err := mambaBindAll(out, k.outDst, k.outSize, ssdOutNames); err != nil {
		return err
	}
	d := k.d
	k.be.pool.parallelFor(&k.par, d.B*d.H, max(1, mambaGrain/max(1, 3*d.P*d.N)), k.fn)
	return nil
}

// InPlace lets a program keep the SSM state in one buffer: each state element is read once,
// just before the element at the same index of the new state is written.
func (k *ssdStepKernel[T]) InPlace(out int) int {
	if out == 1 {
		return 6
	}
	return -1
}

func (k *ssdStepKernel[T]) heads(lo, hi int) {
	d := k.d
	nP, nN := d.P, d.N
	pn := nP * nN
	for it := lo; it < hi; it++ {
		b, h := it/d.H, it%d.H
		g := h / k.hpg
		dtv := k.dt[it]
		decay := mambaExp(dtv * k.a[h])
		xi, yi := k.x[it*nP:(it+1)*nP], k.y[it*nP:(it+1)*nP]
		bo := (b*d.G + g) * nN
		bv, cv := k.bm[bo:bo+nN], k.cm[bo:bo+nN]
		S, O := k.st[it*pn:(it+1)*pn], k.ns[it*pn:(it+1)*pn]
		mambaStepHead(O, S, xi, yi, bv, cv, decay, dtv, k.dd[h])
	}
}

// ---- SSDGrad ----

// ssdGradScratch is one worker's memory: state checkpoints at segment starts, the recomputed
// states of one segment, and the running state adjoint.
type ssdGradScratch[T Float] struct {
	ckpt, seg, gm []T
}

// ssdGradKernel runs SSDGrad as the exact reverse of the token recurrence. Per head it walks
// forward once storing the state at the start of every segment of ⌈√T⌉ tokens, then walks the
// segments backwards, recomputing each one's per-token states, and propagates the state adjoint
// G (starting from gNewState):
//
//	G += gy_t ⊗ C_t;  dC_t += Sᵀ_t·gy_t;  dx_t = D·gy_t + dt_t·G·B_t;  dB_t += dt_t·Gᵀ·x_t
//	ddt_t = xᵀ_t·G·B_t + A·a_t·⟨G, S_{t−1}⟩;  dA += dt_t·a_t·⟨G, S_{t−1}⟩;  G ← a_t·G
//
// with a_t = exp(dt_t·A). Work items are (batch row, group, part of the group's heads): the heads
// of one item add into the same dB/dC rows, and items of one group write separate partial sums
// (reduced afterwards) only when there are too few groups to keep the workers busy. dA and dD
// are summed per (row, head) and reduced at the end, so results do not depend on the schedule.
type ssdGradKernel[T Float] struct {
	be                       *Backend
	d                        ops.SSDDims
	hpg, parts, perPart      int
	segLen, nseg             int
	x, dt, a, bm, cm, dd, st []T
	gy, gs                   []T
	dx, ddt, dA, dB, dC      []T
	dD, dst                  []T
	pdB, pdC                 []T // [B, G, parts, T, N] when parts > 1
	pdA, pdD                 []T // [B·H]
	slots                    chan *ssdGradScratch[T]
	inDst, outDst            []*[]T
	inSize, outSize          []int
	fn, reduceFn             func(lo, hi int)
	par                      parallel
}

func compileSSDGrad(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.SSDGradOp)
	if !ok || len(out) != 7 {
		return nil, fmt.Errorf("bad op or arity")
	}
	if _, err := o.Infer(in); err != nil {
		return nil, err
	}
	d, _ := ops.CheckSSD(in[:7], false)
	switch in[0].DType {
	case shapes.Float32:
		return newSSDGrad[float32](be, d), nil
	case shapes.Float64:
		return newSSDGrad[float64](be, d), nil
	}
	return nil, fmt.Errorf("dtype %s: %w", in[0].DType, backends.ErrUnsupported)
}

func newSSDGrad[T Float](be *Backend, d ops.SSDDims) *ssdGradKernel[T] {
	k := &ssdGradKernel[T]{be: be, d: d, hpg: d.H / d.G}
	threads := be.pool.threads
	k.parts = min(k.hpg, max(1, (threads+d.B*d.G-1)/(d.B*d.G)))
	k.perPart = (k.hpg + k.parts - 1) / k.parts
	k.parts = (k.hpg + k.perPart - 1) / k.perPart
	k.segLen = max(1, int(math.Ceil(math.Sqrt(float64(d.T)))))
	k.nseg = (d.T + k.segLen - 1) / k.segLen
	if k.parts > 1 {
		k.pdB = make([]T, d.B*d.G*k.parts*d.T*d.N)
		k.pdC = make([]T, len(k.pdB))
	}
	k.pdA = make([]T, d.B*d.H)
	k.pdD = make([]T, d.B*d.H)
	pn := d.P * d.N
	k.slots = make(chan *ssdGradScratch[T], threads)
	for i := 0; i < threads; i++ {
		k.slots <- &ssdGradScratch[T]{
			ckpt: make([]T, k.nseg*pn),
			seg:  make([]T, (k.segLen+1)*pn),
			gm:   make([]T, pn),
		}
	}
	sizes := ssdSizes(d)
	k.inDst = []*[]T{&k.x, &k.dt, &k.a, &k.bm, &k.cm, &k.dd, &k.st, &k.gy, &k.gs}
	k.inSize = append(append([]int(nil), sizes...), sizes[0], sizes[6])
	k.outDst = []*[]T{&k.dx, &k.ddt, &k.dA, &k.dB, &k.dC, &k.dD, &k.dst}
	k.outSize = sizes
	k.fn = k.items
	k.reduceFn = k.reduceBC
	return k
}

func (k *ssdGradKernel[T]) Run(in, out []backends.Buffer) error {
	if err := mambaBindAll(in, k.inDst, k.inSize, ssdGradInNames); err != nil {
		return err
	}
	if err := mambaBindAll(out, k.outDst, k.outSize, ssdGradOutNames); err != nil {
		return err
	}
	d := k.d
	k.be.pool.parallelFor(&k.par, d.B*d.G*k.parts, 1, k.fn)
	if k.parts > 1 {
		k.be.pool.parallelFor(&k.par, d.B*d.G, max(1, mambaGrain/max(1, k.parts*d.T*d.N)), k.reduceFn)
	}
	for h := 0; h < d.H; h++ {
		var sa, sd T
		for b := 0; b < d.B; b++ {
			sa += k.pdA[b*d.H+h]
			sd += k.pdD[b*d.H+h]
		}
		k.dA[h], k.dD[h] = sa, sd
	}
	return nil
}

// advance writes into dst the state after token t of row b, head h (group g), from src.
func (k *ssdGradKernel[T]) advance(dst, src []T, b, h, g, t int) {
	d := k.d
	nN := d.N
	dtv := k.dt[(b*d.T+t)*d.H+h]
	decay := mambaExp(dtv * k.a[h])
	xt := k.x[((b*d.T+t)*d.H+h)*d.P:][:d.P]
	bt := k.bm[((b*d.T+t)*d.G+g)*nN:][:nN]
	for p, xv := range xt {
		mambaAdvanceRow(dst[p*nN:(p+1)*nN], src[p*nN:(p+1)*nN], bt, decay, dtv*xv)
	}
}

// items processes work items lo..hi (item = (b·G + g)·parts + part).
func (k *ssdGradKernel[T]) items(lo, hi int) {
	sc := <-k.slots
	d := k.d
	nT, nN := d.T, d.N
	for it := lo; it < hi; it++ {
		part := it % k.parts
		bg := it / k.parts
		b, g := bg/d.G, bg%d.G
		// Where this item's dB/dC rows go: the outputs, or its partial sums.
		tgtB, tgtC, base, stride := k.dB, k.dC, (b*nT*d.G+g)*nN, d.G*nN
		if k.parts > 1 {
			tgtB, tgtC, base, stride = k.pdB, k.pdC, it*nT*nN, nN
		}
		for t := 0; t < nT; t++ {
			clear(tgtB[base+t*stride : base+t*stride+nN])
			clear(tgtC[base+t*stride : base+t*stride+nN])
		}
		h0 := g*k.hpg + part*k.perPart
		for h := h0; h < min(h0+k.perPart, (g+1)*k.hpg); h++ {
			k.head(sc, b, h, g, tgtB, tgtC, base, stride)
		}
	}
	k.slots <- sc
}

// head back-propagates through the recurrence of row b, head h.
func (k *ssdGradKernel[T]) head(sc *ssdGradScratch[T], b, h, g int, tgtB, tgtC []T, base, stride int) {
	d := k.d
	nT, nH, nP, nN := d.T, d.H, d.P, d.N
	pn := nP * nN
	bh := b*nH + h
	ckpt, seg, gm := sc.ckpt, sc.seg, sc.gm
	copy(ckpt[:pn], k.st[bh*pn:(bh+1)*pn])
	for s := 0; s+1 < k.nseg; s++ {
		cur := ckpt[s*pn : (s+1)*pn]
		for t := s * k.segLen; t < (s+1)*k.segLen; t++ {
			k.advance(ckpt[(s+1)*pn:(s+2)*pn], cur, b, h, g, t)
			cur = ckpt[(s+1)*pn : (s+2)*pn]
		}
	}
	copy(gm, k.gs[bh*pn:(bh+1)*pn])
	av, dv := k.a[h], k.dd[h]
	var dAacc, dDacc T
	for s := k.nseg - 1; s >= 0; s-- {
		t0 := s * k.segLen
		n := min(k.segLen, nT-t0)
		copy(seg[:pn], ckpt[s*pn:(s+1)*pn])
		for i := 0; i < n; i++ {
			k.advance(seg[(i+1)*pn:(i+2)*pn], seg[i*pn:(i+1)*pn], b, h, g, t0+i)
		}
		for i := n - 1; i >= 0; i-- {
			t := t0 + i
			st, sp := seg[(i+1)*pn:(i+2)*pn], seg[i*pn:(i+1)*pn]
			xo := ((b*nT+t)*nH + h) * nP
			xt, gyt, dxt := k.x[xo:xo+nP], k.gy[xo:xo+nP], k.dx[xo:xo+nP]
			bo := ((b*nT+t)*d.G + g) * nN
			bt, ct := k.bm[bo:bo+nN], k.cm[bo:bo+nN]
			to := base + t*stride
			dBt, dCt := tgtB[to:to+nN], tgtC[to:to+nN]
			dtv := k.dt[(b*nT+t)*nH+h]
			decay := mambaExp(dtv * av)
			var gx, gsum T
			for p, xv := range xt {
				gp := gyt[p]
				dDacc += gp * xv
				v, gs := mambaGradRow(gm[p*nN:(p+1)*nN], st[p*nN:(p+1)*nN], sp[p*nN:(p+1)*nN], ct, bt, dCt, dBt,
					gp, dtv*xv, decay)
				gsum += gs
				dxt[p] = dv*gp + dtv*v
				gx += xv * v
			}
			k.ddt[(b*nT+t)*nH+h] = gx + av*decay*gsum
			dAacc += dtv * decay * gsum
		}
	}
	copy(k.dst[bh*pn:(bh+1)*pn], gm)
	k.pdA[bh], k.pdD[bh] = dAacc, dDacc
}

// reduceBC sums the partial dB/dC of items lo..hi (item = b·G + g) into the outputs.
func (k *ssdGradKernel[T]) reduceBC(lo, hi int) {
	d := k.d
	nT, nN := d.T, d.N
	for bg := lo; bg < hi; bg++ {
		b, g := bg/d.G, bg%d.G
		for t := 0; t < nT; t++ {
			o := ((b*nT+t)*d.G + g) * nN
			ob, oc := k.dB[o:o+nN], k.dC[o:o+nN]
			clear(ob)
			clear(oc)
			for part := 0; part < k.parts; part++ {
				p := ((bg*k.parts+part)*nT + t) * nN
				pb, pc := k.pdB[p:p+nN], k.pdC[p:p+nN]
				for m := range ob {
					ob[m] += pb[m]
					oc[m] += pc[m]
				}
			}
		}
	}
}
