package cuda

import (
	"fmt"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	register("Softmax", compileSoftmax)
	register("CrossEntropy", compileCrossEntropy)
	register("CrossEntropyGrad", compileCrossEntropy)
	register("RMSNorm", compileNorm)
	register("RMSNormGrad", compileNorm)
	register("GatedRMSNorm", compileNorm)
	register("GatedRMSNormGrad", compileNorm)
}

const nnCU = "nn.cu"

func compileSoftmax(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.SoftmaxOp)
	if !ok {
		return fmt.Errorf("op %T is not ops.SoftmaxOp", op)
	}
	if err := wantArity(in, out, 1, 1); err != nil {
		return err
	}
	if !in[0].Equal(out[0]) {
		return fmt.Errorf("input %s, output %s", in[0], out[0])
	}
	sfx, err := suffix(in[0].DType)
	if err != nil {
		return err
	}
	ax, err := shapes.NormAxis(o.Axis, in[0].Rank())
	if err != nil {
		return err
	}
	outer, n, inner := axisSplit(in[0].Dims, ax)
	lines := outer * inner
	a := new(args).i64(lines).i64(n).i64(inner).buf(inRef(0)).buf(outRef(0))
	return k.launch(nnCU, "softmax_"+sfx, k.blocks(lines), threads, a)
}

func compileCrossEntropy(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	grad := 0
	switch op.(type) {
	case ops.CrossEntropyOp:
		if err := wantArity(in, out, 2, 1); err != nil {
			return err
		}
	case ops.CrossEntropyGradOp:
		if err := wantArity(in, out, 3, 1); err != nil {
			return err
		}
		grad = 1
	default:
		return fmt.Errorf("op %T is not a cross-entropy op", op)
	}
	logits, targets := in[0], in[1]
	if logits.Rank() < 1 || targets.DType != shapes.Int64 {
		return fmt.Errorf("logits %s, targets %s", logits, targets)
	}
	v := logits.Dims[logits.Rank()-1]
	rows := targets.Size()
	if rows*v != logits.Size() {
		return fmt.Errorf("targets %s do not match logits %s", targets, logits)
	}
	sfx, err := suffix(logits.DType)
	if err != nil {
		return err
	}
	g := inRef(0) // unused placeholder for the loss
	if grad == 1 {
		g = inRef(2)
	}
	if err := k.useErrRecord(func(k *kernel, pos int64) string {
		t, _ := k.readInt64(1, pos)
		return fmt.Sprintf("target %d (at position %d) is outside [0, %d)", t, pos, v)
	}); err != nil {
		return err
	}
	a := new(args).i64(rows).i64(v).i64(grad).buf(inRef(0)).buf(inRef(1)).buf(g).buf(outRef(0)).buf(flagRef())
	return k.launch(nnCU, "cross_entropy_"+sfx, k.blocks(rows), threads, a)
}

func compileNorm(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	var eps float64
	groups, nin, nout := 1, 2, 1
	gated, grad := 0, false
	switch o := op.(type) {
	case ops.RMSNormOp:
		eps = o.Eps
	case ops.RMSNormGradOp:
		eps, grad, nin, nout = o.Eps, true, 3, 2
	case ops.GatedRMSNormOp:
		eps, groups, gated, nin = o.Eps, o.Groups, 1, 3
	case ops.GatedRMSNormGradOp:
		eps, groups, gated, grad, nin, nout = o.Eps, o.Groups, 1, true, 4, 3
	default:
		return fmt.Errorf("op %T is not a norm op", op)
	}
	if err := wantArity(in, out, nin, nout); err != nil {
		return err
	}
	x := in[0]
	if x.Rank() < 1 {
		return fmt.Errorf("input %s has no feature axis", x)
	}
	sfx, err := suffix(x.DType)
	if err != nil {
		return err
	}
	d := x.Dims[x.Rank()-1]
	groups = max(groups, 1)
	if d%groups != 0 {
		return fmt.Errorf("feature size %d is not divisible by %d groups", d, groups)
	}
	dg, rows := d/groups, x.Size()/d
	z, wi := inRef(0), 1 // z is unused by the plain norm
	if gated == 1 {
		z, wi = inRef(1), 2
	}
	if !grad {
		a := new(args).i64(rows).i64(d).i64(dg).i64(gated).f64(eps).buf(inRef(0)).buf(z).buf(inRef(wi)).buf(outRef(0))
		return k.launch(nnCU, "norm_fwd_"+sfx, k.blocks(rows*groups), threads, a)
	}
	invs, err := k.addScratch(rows * groups * 8)
	if err != nil {
		return err
	}
	rpc := max(32, (rows+255)/256)
	chunks := (rows + rpc - 1) / rpc
	partial, err := k.addScratch(chunks * d * 8)
	if err != nil {
		return err
	}
	dz, dw := outRef(0), outRef(1) // dz unused by the plain norm
	if gated == 1 {
		dz, dw = outRef(1), outRef(2)
	}
	a := new(args).i64(rows).i64(d).i64(dg).i64(gated).f64(eps).buf(inRef(0)).buf(z).buf(inRef(wi)).buf(inRef(wi + 1)).
		buf(outRef(0)).buf(dz).buf(scratchRef(invs))
	if err := k.launch(nnCU, "norm_bwd_"+sfx, k.blocks(rows*groups), threads, a); err != nil {
		return err
	}
	a = new(args).i64(rows).i64(d).i64(dg).i64(gated).i64(rpc).buf(inRef(0)).buf(z).buf(inRef(wi + 1)).
		buf(scratchRef(invs)).buf(scratchRef(partial))
	gx := max(1, min((d+threads-1)/threads, 64))
	if err := k.launch3(nnCU, "norm_dw_part_"+sfx, [3]int{gx, chunks, 1}, [3]int{threads, 1, 1}, a); err != nil {
		return err
	}
	a = new(args).i64(d).i64(chunks).buf(scratchRef(partial)).buf(dw)
	return k.launch(nnCU, "norm_dw_sum_"+sfx, k.grid(d, threads), threads, a)
}
