package cuda

import (
	"fmt"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

func init() { register("Sum", compileSum) }

func compileSum(k *kernel, op backends.Op, in, out []shapes.Shape) error {
	o, ok := op.(ops.SumOp)
	if !ok {
		return fmt.Errorf("op %T is not ops.SumOp", op)
	}
	if err := wantArity(in, out, 1, 1); err != nil {
		return err
	}
	x := in[0]
	sfx, err := suffix(x.DType)
	if err != nil {
		return err
	}
	red := make([]bool, x.Rank())
	for _, a := range o.Axes {
		n, err := shapes.NormAxis(a, x.Rank())
		if err != nil {
			return err
		}
		red[n] = true
	}
	st := shapes.Strides(x.Dims)
	var kd, ks, rd, rs []int
	m, r := 1, 1
	for i, d := range x.Dims {
		if red[i] {
			rd, rs = append(rd, d), append(rs, st[i])
			r *= d
		} else {
			kd, ks = append(kd, d), append(ks, st[i])
			m *= d
		}
	}
	if m != out[0].Size() || out[0].DType != x.DType {
		return fmt.Errorf("input %s summed over %v gives %d elements, output is %s", x, o.Axes, m, out[0])
	}
	kd, kst := collapse(kd, ks)
	rd, rst := collapse(rd, rs)
	a := new(args).i64(m).i64(r).i64(len(kd)).dims(kd).dims(kst[0]).i64(len(rd)).dims(rd).dims(rst[0]).
		buf(inRef(0)).buf(outRef(0))
	if r <= 64 || (m >= 2048 && r <= 512) {
		return k.launch(reduceCU, "sum_thread_"+sfx, k.grid(m, threads), threads, a)
	}
	return k.launch(reduceCU, "sum_block_"+sfx, k.blocks(m), threads, a)
}

const reduceCU = "reduce.cu"
