package cpu

import (
	"fmt"
	"math"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/cpu/kernels"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	register("Softmax", compileSoftmax)
	register("CrossEntropy", compileCrossEntropy)
	register("CrossEntropyGrad", compileCrossEntropy)
	register("RMSNorm", compileRMSNorm)
	register("RMSNormGrad", compileRMSNorm)
	register("GatedRMSNorm", compileRMSNorm)
	register("GatedRMSNormGrad", compileRMSNorm)
}

// rowGrain is roughly how many elements of row-wise normalisation work make a goroutine pay.
const rowGrain = 1 << 14

// ---- Softmax ----

// softmaxKernel normalises lines of n elements with stride inner: line l starts at
// (l/inner)·n·inner + l%inner.
type softmaxKernel[T Float] struct {
	be             *Backend
	lines, n, step int
	size           int
	x, y           []T
	fn             func(lo, hi int)
	par            parallel
}

func compileSoftmax(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	o, ok := op.(ops.SoftmaxOp)
	if !ok || len(in) != 1 || len(out) != 1 {
		return nil, fmt.Errorf("bad op or arity")
	}
	ax, err := shapes.NormAxis(o.Axis, in[0].Rank())
	if err != nil {
		return nil, err
	}
	outer, n, inner := axisSplit(in[0].Dims, ax)
	switch in[0].DType {
	case shapes.Float32:
		k := &softmaxKernel[float32]{be: be, lines: outer * inner, n: n, step: inner, size: in[0].Size()}
		k.fn = k.run
		return k, nil
	case shapes.Float64:
		k := &softmaxKernel[float64]{be: be, lines: outer * inner, n: n, step: inner, size: in[0].Size()}
		k.fn = k.run
		return k, nil
	}
	return nil, fmt.Errorf("dtype %s: %w", in[0].DType, backends.ErrUnsupported)
}

func (k *softmaxKernel[T]) Run(in, out []backends.Buffer) error {
	var err error
	if k.x, err = data[T](in, 0); err != nil {
		return err
	}
	if k.y, err = data[T](out, 0); err != nil {
		return err
	}
	if err := checkLen("softmax input", len(k.x), k.size); err != nil {
		return err
	}
	if err := checkLen("softmax output", len(k.y), k.size); err != nil {
		return err
	}
	k.be.pool.parallelFor(&k.par, k.lines, max(1, rowGrain/max(1, k.n)), k.fn)
	return nil
}

func (k *softmaxKernel[T]) run(lo, hi int) {
	n, s := k.n, k.step
	for l := lo; l < hi; l++ {
		base := (l/s)*n*s + l%s
		m := math.Inf(-1)
		for i := 0; i < n; i++ {
			m = math.Max(m, float64(k.x[base+i*s]))
		}
		var sum float64
		for i := 0; i < n; i++ {
			e := math.Exp(float64(k.x[base+i*s]) - m)
			sum += e
			k.y[base+i*s] = T(e)
		}
		inv := 1 / sum
		for i := 0; i < n; i++ {
			k.y[base+i*s] = T(float64(k.y[base+i*s]) * inv)
		}
	}
}

// ---- CrossEntropy and CrossEntropyGrad ----

// crossEntropyKernel computes the loss per row (grad false) or the logits' gradient (grad true).
type crossEntropyKernel[T Float] struct {
	be        *Backend
	grad      bool
	rows, v   int
	logits, g []T
	targets   []int64
	y         []T
	fn        func(lo, hi int)
	par       parallel
}

func compileCrossEntropy(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	grad := false
	switch op.(type) {
	case ops.CrossEntropyOp:
		if len(in) != 2 {
			return nil, fmt.Errorf("bad arity")
		}
	case ops.CrossEntropyGradOp:
		grad = true
		if len(in) != 3 {
			return nil, fmt.Errorf("bad arity")
		}
	default:
		return nil, fmt.Errorf("bad op %T", op)
	}
	if len(out) != 1 || in[0].Rank() < 1 || in[1].DType != shapes.Int64 {
		return nil, fmt.Errorf("logits %s, targets %s", in[0], in[1])
	}
	v := in[0].Dims[in[0].Rank()-1]
	rows := in[1].Size()
	if rows*v != in[0].Size() {
		return nil, fmt.Errorf("targets %s do not match logits %s", in[1], in[0])
	}
	switch in[0].DType {
	case shapes.Float32:
		k := &crossEntropyKernel[float32]{be: be, grad: grad, rows: rows, v: v}
		k.fn = k.run
		return k, nil
	case shapes.Float64:
		k := &crossEntropyKernel[float64]{be: be, grad: grad, rows: rows, v: v}
		k.fn = k.run
		return k, nil
	}
	return nil, fmt.Errorf("dtype %s: %w", in[0].DType, backends.ErrUnsupported)
}

func (k *crossEntropyKernel[T]) Run(in, out []backends.Buffer) error {
	var err error
	if k.logits, err = data[T](in, 0); err != nil {
		return err
	}
	if k.targets, err = data[int64](in, 1); err != nil {
		return err
	}
	if k.y, err = data[T](out, 0); err != nil {
		return err
	}
	if err := checkLen("cross-entropy logits", len(k.logits), k.rows*k.v); err != nil {
		return err
	}
	if err := checkLen("cross-entropy targets", len(k.targets), k.rows); err != nil {
		return err
	}
	want := k.rows
	if k.grad {
		if k.g, err = data[T](in, 2); err != nil {
			return err
		}
		if err := checkLen("cross-entropy gradient", len(k.g), k.rows); err != nil {
			return err
		}
		want = k.rows * k.v
	}
	if err := checkLen("cross-entropy output", len(k.y), want); err != nil {
		return err
	}
	for i, t := range k.targets {
		if t < 0 || t >= int64(k.v) {
			return fmt.Errorf("cross-entropy: target %d (at position %d) is outside [0, %d)", t, i, k.v)
		}
	}
	k.be.pool.parallelFor(&k.par, k.rows, max(1, rowGrain/max(1, k.v)), k.fn)
	return nil
}

func (k *crossEntropyKernel[T]) run(lo, hi int) {
	v := k.v
	for r := lo; r < hi; r++ {
		x := k.logits[r*v : r*v+v]
		t := int(k.targets[r])
		m := math.Inf(-1)
		for _, xv := range x {
			m = math.Max(m, float64(xv))
		}
		var sum float64
		for _, xv := range x {
			sum += math.Exp(float64(xv) - m)
		}
		if !k.grad {
			k.y[r] = T(math.Log(sum) + m - float64(x[t]))
			continue
		}
		g := float64(k.g[r])
		scale := g / sum
		dy := k.y[r*v : r*v+v]
		for j, xv := range x {
			dy[j] = T(math.Exp(float64(xv)-m) * scale)
		}
		dy[t] = T(float64(dy[t]) - g)
	}
}

// ---- RMSNorm, GatedRMSNorm and their gradients ----

// maxNormBlocks bounds the row blocks a norm gradient splits into; each block owns a float64
// partial sum of dweight, and the partials are added in block order, so results do not depend on
// the number of threads.
const maxNormBlocks = 16

// normKernel runs RMSNorm (gated false) or GatedRMSNorm (gated true), forward or backward. Rows
// of d features are normalised in groups of dg contiguous features.
type normKernel[T Float] struct {
	be          *Backend
	gated, grad bool
	eps         float64
	rows, d, dg int
	blocks      int // row blocks of the backward pass
	blockRows   int
	partial     []float64 // [blocks][d] partial dweight sums
	minBlocks   int       // parallelFor grain in blocks
	x, z, w, g  []T       // x is y for the gated norm
	out0, out1  []T       // forward: out0 = result; backward: dx (dy), dz (gated)
	dw          []T
	fn          func(lo, hi int)
	par         parallel
}

func compileRMSNorm(be *Backend, op backends.Op, in, out []shapes.Shape) (backends.Kernel, error) {
	var eps float64
	groups, nin, nout := 1, 2, 1
	gated, grad := false, false
	switch o := op.(type) {
	case ops.RMSNormOp:
		eps = o.Eps
	case ops.RMSNormGradOp:
		eps, grad, nin, nout = o.Eps, true, 3, 2
	case ops.GatedRMSNormOp:
		eps, groups, gated, nin = o.Eps, o.Groups, true, 3
	case ops.GatedRMSNormGradOp:
		eps, groups, gated, grad, nin, nout = o.Eps, o.Groups, true, true, 4, 3
	default:
		return nil, fmt.Errorf("bad op %T", op)
	}
	if len(in) != nin || len(out) != nout || in[0].Rank() < 1 {
		return nil, fmt.Errorf("bad arity or input %v", in)
	}
	d := in[0].Dims[in[0].Rank()-1]
	groups = max(groups, 1)
	if d%groups != 0 {
		return nil, fmt.Errorf("feature size %d is not divisible by %d groups", d, groups)
	}
	switch in[0].DType {
	case shapes.Float32:
		return newNorm[float32](be, gated, grad, eps, in[0].Size()/d, d, d/groups), nil
	case shapes.Float64:
		return newNorm[float64](be, gated, grad, eps, in[0].Size()/d, d, d/groups), nil
	}
	return nil, fmt.Errorf("dtype %s: %w", in[0].DType, backends.ErrUnsupported)
}

func newNorm[T Float](be *Backend, gated, grad bool, eps float64, rows, d, dg int) *normKernel[T] {
	k := &normKernel[T]{be: be, gated: gated, grad: grad, eps: eps, rows: rows, d: d, dg: dg}
	if grad {
		k.blocks = min(rows, maxNormBlocks)
		k.blockRows = (rows + k.blocks - 1) / k.blocks
		k.blocks = (rows + k.blockRows - 1) / k.blockRows
		k.partial = make([]float64, k.blocks*d)
		k.minBlocks = max(1, (rowGrain*k.blocks)/max(1, rows*d))
		k.fn = k.backward
	} else {
		k.fn = k.forward
	}
	return k
}

func (k *normKernel[T]) Run(in, out []backends.Buffer) error {
	n := k.rows * k.d
	var err error
	if k.x, err = data[T](in, 0); err != nil {
		return err
	}
	if err := checkLen("norm input", len(k.x), n); err != nil {
		return err
	}
	wi := 1
	if k.gated {
		if k.z, err = data[T](in, 1); err != nil {
			return err
		}
		if err := checkLen("norm gate", len(k.z), n); err != nil {
			return err
		}
		wi = 2
	}
	if k.w, err = data[T](in, wi); err != nil {
		return err
	}
	if err := checkLen("norm weight", len(k.w), k.d); err != nil {
		return err
	}
	if k.out0, err = data[T](out, 0); err != nil {
		return err
	}
	if err := checkLen("norm output", len(k.out0), n); err != nil {
		return err
	}
	if !k.grad {
		k.be.pool.parallelFor(&k.par, k.rows, max(1, rowGrain/max(1, k.d)), k.fn)
		return nil
	}
	if k.g, err = data[T](in, wi+1); err != nil {
		return err
	}
	if err := checkLen("norm gradient", len(k.g), n); err != nil {
		return err
	}
	di := 1
	if k.gated {
		if k.out1, err = data[T](out, 1); err != nil {
			return err
		}
		if err := checkLen("norm gate gradient", len(k.out1), n); err != nil {
			return err
		}
		di = 2
	}
	if k.dw, err = data[T](out, di); err != nil {
		return err
	}
	if err := checkLen("norm weight gradient", len(k.dw), k.d); err != nil {
		return err
	}
	k.be.pool.parallelFor(&k.par, k.blocks, k.minBlocks, k.fn)
	for j := range k.dw {
		var s float64
		for b := 0; b < k.blocks; b++ {
			s += k.partial[b*k.d+j]
		}
		k.dw[j] = T(s)
	}
	return nil
}

// sigmoid64 is the logistic function in float64.
func sigmoid64(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// gatedSiLUGeneric sets dst[j] = x[j]·z[j]·σ(z[j]) through float64.
func gatedSiLUGeneric[T Float](dst, x, z []T) {
	z = z[:len(x)]
	for j, xv := range x {
		zv := float64(z[j])
		dst[j] = T(float64(xv) * zv * sigmoid64(zv))
	}
}

// forward normalises rows lo..hi.
func (k *normKernel[T]) forward(lo, hi int) {
	d, dg := k.d, k.dg
	for r := lo; r < hi; r++ {
		x := k.x[r*d : r*d+d]
		y := k.out0[r*d : r*d+d]
		if k.gated {
			// y holds h = x·silu(z) until it is normalised.
			z := k.z[r*d : r*d+d]
			if x32, ok := any(x).([]float32); ok {
				gatedSiLU32(any(y).([]float32), x32, any(z).([]float32))
			} else {
				gatedSiLUGeneric(y, x, z)
			}
			x = y
		}
		if x32, ok := any(x).([]float32); ok {
			k.normRow32(any(y).([]float32), x32, any(k.w).([]float32))
			continue
		}
		for g0 := 0; g0 < d; g0 += dg {
			var ss float64
			for _, v := range x[g0 : g0+dg] {
				ss += float64(v) * float64(v)
			}
			inv := 1 / math.Sqrt(ss/float64(dg)+k.eps)
			for j := g0; j < g0+dg; j++ {
				y[j] = T(float64(x[j]) * inv * float64(k.w[j]))
			}
		}
	}
}

// normRow32 normalises one float32 row group by group with the vector kernels, as Hugging Face
// does in float32 (mean of squares, rsqrt, times weight); the float64 loops cost a tenth of
// prefill. y may be x.
func (k *normKernel[T]) normRow32(y, x, w []float32) {
	dg := k.dg
	for g0 := 0; g0 < len(x); g0 += dg {
		xg := x[g0 : g0+dg]
		ss := float64(kernels.Dot(xg, xg))
		inv := float32(1 / math.Sqrt(ss/float64(dg)+k.eps))
		mulScaled32(y[g0:g0+dg], xg, w[g0:g0+dg], inv)
	}
}

// backward handles row blocks lo..hi: dx (or dy, dz) per row and the blocks' dweight partials.
//
// With h the normalised input (x, or y·silu(z)), r = 1/sqrt(mean(h²)+eps) over a group of n
// features and ĥ = h·r: dh = r·(g·w − ĥ·Σ(g·w·ĥ)/n), dweight = Σ_rows g·ĥ; for the gated norm
// dy = dh·silu(z) and dz = dh·y·σ(z)·(1 + z·(1−σ(z))).
func (k *normKernel[T]) backward(lo, hi int) {
	d, dg := k.d, k.dg
	for b := lo; b < hi; b++ {
		part := k.partial[b*d : b*d+d]
		clear(part)
		for r := b * k.blockRows; r < min((b+1)*k.blockRows, k.rows); r++ {
			x := k.x[r*d : r*d+d]
			g := k.g[r*d : r*d+d]
			dx := k.out0[r*d : r*d+d]
			var z, dz []T
			h := x
			if k.gated {
				// dx holds h and dz holds σ(z) until the gradients overwrite them.
				z, dz = k.z[r*d:r*d+d], k.out1[r*d:r*d+d]
				for j, xv := range x {
					zv := float64(z[j])
					s := sigmoid64(zv)
					dz[j] = T(s)
					dx[j] = T(float64(xv) * zv * s)
				}
				h = dx
			}
			for g0 := 0; g0 < d; g0 += dg {
				var ss, dot float64
				for j := g0; j < g0+dg; j++ {
					hv := float64(h[j])
					ss += hv * hv
					dot += float64(g[j]) * float64(k.w[j]) * hv
				}
				inv := 1 / math.Sqrt(ss/float64(dg)+k.eps)
				c := dot * inv * inv / float64(dg) // Σ(g·w·ĥ)/n divided by r once more
				for j := g0; j < g0+dg; j++ {
					hv, gv := float64(h[j]), float64(g[j])
					part[j] += gv * hv * inv
					dh := inv * (gv*float64(k.w[j]) - hv*c)
					if !k.gated {
						dx[j] = T(dh)
						continue
					}
					s, zv, yv := float64(dz[j]), float64(z[j]), float64(x[j])
					dx[j] = T(dh * zv * s)
					dz[j] = T(dh * yv * s * (1 + zv*(1-s)))
				}
			}
		}
	}
}
