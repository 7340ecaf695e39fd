package backendtest

import (
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
)

func init() {
	caseTables = append(caseTables, nnCases)
	gradCaseTables = append(gradCaseTables, nnGradCases)
	errorCaseTables = append(errorCaseTables, nnErrorCases)
}

// outs returns the outputs of a multi-output op application.
func outs(op ops.Op, in ...*graph.Node) []*graph.Node {
	vals := make([]ops.Value, len(in))
	for i, n := range in {
		vals[i] = n
	}
	res := in[0].Builder().Apply(op, vals...)
	ns := make([]*graph.Node, len(res))
	for i, v := range res {
		ns[i] = v.(*graph.Node)
	}
	return ns
}

// bigLogits are large-magnitude values: a softmax that does not subtract the maximum overflows.
var bigLogits = []float64{1000, 999, 1001, -1000, 0, 0.5, 80, -80}

func nnCases() []Case {
	var cs []Case
	for _, sm := range []struct {
		name string
		in   In
		axis int
	}{
		{"last", In{Dims: dims(3, 5)}, -1},
		{"first", In{Dims: dims(3, 5)}, 0},
		{"middle", In{Dims: dims(2, 3, 4)}, 1},
		{"single", In{Dims: dims(4, 1)}, -1},
		{"vector", In{Dims: dims(9), Lo: -10, Hi: 10}, 0},
		{"big-values", In{Dims: dims(2, 4), Values: bigLogits}, 1},
		{"large", In{Dims: dims(300, 130)}, -1},
		{"large-strided", In{Dims: dims(130, 300)}, 0},
	} {
		axis := sm.axis
		cs = append(cs, Case{
			Name:  "Softmax/" + sm.name,
			In:    []In{sm.in},
			Build: func(in []*graph.Node) []*graph.Node { return nodes(ops.Softmax(in[0], axis)) },
			Ref: func(in []*Tensor) []*Tensor {
				return tensors(RefSoftmax(in[0], normAxis(axis, len(in[0].Dims))))
			},
		})
	}
	for _, ce := range []struct {
		name   string
		logits In
		tgt    In
		tol    float64
	}{
		{"rows", In{Dims: dims(4, 7)}, In{Dims: dims(4), Int: true, Ints: []int64{0, 6, 3, 3}}, 0},
		{"batched", In{Dims: dims(2, 3, 5)}, In{Dims: dims(2, 3), Int: true, IntMax: 5}, 0},
		{"big-values", In{Dims: dims(2, 4), Values: bigLogits}, In{Dims: dims(2), Int: true, Ints: []int64{3, 2}}, 0},
		{"one-class", In{Dims: dims(3, 1)}, In{Dims: dims(3), Int: true, Ints: []int64{0, 0, 0}}, 0},
		{"vocab", In{Dims: dims(8, 1000), Lo: -5, Hi: 5}, In{Dims: dims(8), Int: true, IntMax: 1000}, 10},
	} {
		cs = append(cs, Case{
			Name:  "CrossEntropy/" + ce.name,
			In:    []In{ce.logits, ce.tgt},
			Tol:   ce.tol,
			Build: func(in []*graph.Node) []*graph.Node { return nodes(ops.CrossEntropy(in[0], in[1])) },
			Ref:   func(in []*Tensor) []*Tensor { return tensors(RefCrossEntropy(in[0], in[1])) },
		})
	}
	for _, ce := range []struct {
		name   string
		logits []int
		tgt    In
	}{
		{"rows", dims(4, 7), In{Dims: dims(4), Int: true, Ints: []int64{0, 6, 3, 3}}},
		{"batched", dims(2, 3, 5), In{Dims: dims(2, 3), Int: true, IntMax: 5}},
		{"vocab", dims(8, 1000), In{Dims: dims(8), Int: true, IntMax: 1000}},
	} {
		g := In{Dims: ce.tgt.Dims}
		cs = append(cs, Case{
			Name: "CrossEntropyGrad/" + ce.name,
			In:   []In{{Dims: ce.logits}, ce.tgt, g},
			Build: func(in []*graph.Node) []*graph.Node {
				return nodes(apply1(ops.CrossEntropyGradOp{}, in[0], in[1], in[2]))
			},
			Ref: func(in []*Tensor) []*Tensor { return tensors(RefCrossEntropyGrad(in[0], in[1], in[2])) },
		})
	}
	for _, rn := range []struct {
		name string
		x    In
		eps  float64
		tol  float64
	}{
		{"rows", In{Dims: dims(3, 8)}, 1e-5, 0},
		{"batched", In{Dims: dims(2, 3, 16)}, 1e-6, 0},
		{"no-eps", In{Dims: dims(4, 5)}, 0, 0},
		{"eps-dominates", In{Dims: dims(3, 6), Lo: -1e-3, Hi: 1e-3}, 1e-2, 0},
		{"vector", In{Dims: dims(7)}, 1e-5, 0},
		{"large", In{Dims: dims(128, 512)}, 1e-5, 3},
	} {
		eps := rn.eps
		d := rn.x.Dims[len(rn.x.Dims)-1]
		w := In{Dims: dims(d), Lo: 0.5, Hi: 1.5}
		cs = append(cs,
			Case{
				Name:  "RMSNorm/" + rn.name,
				In:    []In{rn.x, w},
				Tol:   rn.tol,
				Build: func(in []*graph.Node) []*graph.Node { return nodes(ops.RMSNorm(in[0], in[1], eps)) },
				Ref:   func(in []*Tensor) []*Tensor { return tensors(RefRMSNorm(in[0], in[1], eps)) },
			},
			Case{
				Name: "RMSNormGrad/" + rn.name,
				In:   []In{rn.x, w, {Dims: rn.x.Dims}},
				Tol:  rn.tol * 10,
				Build: func(in []*graph.Node) []*graph.Node {
					return outs(ops.RMSNormGradOp{Eps: eps}, in...)
				},
				Ref: func(in []*Tensor) []*Tensor {
					dx, dw := RefRMSNormGrad(in[0], in[1], in[2], eps)
					return tensors(dx, dw)
				},
			})
	}
	for _, gn := range []struct {
		name   string
		dims   []int
		eps    float64
		groups int
		tol    float64
	}{
		{"whole", dims(3, 8), 1e-5, 1, 0},
		{"groups-0", dims(3, 8), 1e-5, 0, 0},
		{"groups-2", dims(3, 8), 1e-5, 2, 0},
		{"groups-4", dims(2, 3, 12), 1e-6, 4, 0},
		{"groups-per-channel", dims(2, 6), 1e-3, 6, 0},
		{"no-eps", dims(4, 6), 0, 1, 0},
		{"large", dims(128, 512), 1e-5, 1, 3},
		{"large-groups", dims(128, 512), 1e-5, 8, 3},
	} {
		eps, groups := gn.eps, gn.groups
		d := gn.dims[len(gn.dims)-1]
		in := []In{{Dims: gn.dims}, {Dims: gn.dims, Lo: -4, Hi: 4}, {Dims: dims(d), Lo: 0.5, Hi: 1.5}}
		cs = append(cs,
			Case{
				Name: "GatedRMSNorm/" + gn.name,
				In:   in,
				Tol:  gn.tol,
				Build: func(in []*graph.Node) []*graph.Node {
					return nodes(ops.GatedRMSNorm(in[0], in[1], in[2], eps, groups))
				},
				Ref: func(in []*Tensor) []*Tensor {
					return tensors(RefGatedRMSNorm(in[0], in[1], in[2], eps, groups))
				},
			},
			Case{
				Name: "GatedRMSNormGrad/" + gn.name,
				In:   append(in, In{Dims: gn.dims}),
				Tol:  gn.tol * 10,
				Build: func(in []*graph.Node) []*graph.Node {
					return outs(ops.GatedRMSNormGradOp{Eps: eps, Groups: groups}, in...)
				},
				Ref: func(in []*Tensor) []*Tensor {
					dy, dz, dw := RefGatedRMSNormGrad(in[0], in[1], in[2], in[3], eps, groups)
					return tensors(dy, dz, dw)
				},
			})
	}
	return cs
}

func nnGradCases() []GradCase {
	return []GradCase{
		unaryGrad("Softmax/last", func(x *graph.Node) *graph.Node { return ops.Softmax(x, -1) }, Arg{Dims: dims(3, 5)}),
		unaryGrad("Softmax/first", func(x *graph.Node) *graph.Node { return ops.Softmax(x, 0) }, Arg{Dims: dims(3, 5)}),
		{
			Name: "CrossEntropy",
			Args: []Arg{{Dims: dims(2, 3, 5), Scale: 2}, {Dims: dims(2, 3), Int64: true, IntMax: 5}},
			Build: func(in []*graph.Node) []*graph.Node {
				return nodes(ops.CrossEntropy(in[0], in[1]))
			},
		},
		{
			Name: "RMSNorm",
			Args: []Arg{{Dims: dims(3, 6)}, {Dims: dims(6), Offset: 1, Scale: 0.3}},
			Build: func(in []*graph.Node) []*graph.Node {
				return nodes(ops.RMSNorm(in[0], in[1], 1e-5))
			},
		},
		{
			Name: "GatedRMSNorm/whole",
			Args: []Arg{{Dims: dims(3, 6)}, {Dims: dims(3, 6)}, {Dims: dims(6), Offset: 1, Scale: 0.3}},
			Build: func(in []*graph.Node) []*graph.Node {
				return nodes(ops.GatedRMSNorm(in[0], in[1], in[2], 1e-5, 1))
			},
		},
		{
			Name: "GatedRMSNorm/groups",
			Args: []Arg{{Dims: dims(2, 2, 8)}, {Dims: dims(2, 2, 8)}, {Dims: dims(8), Offset: 1, Scale: 0.3}},
			Build: func(in []*graph.Node) []*graph.Node {
				return nodes(ops.GatedRMSNorm(in[0], in[1], in[2], 1e-5, 4))
			},
		},
	}
}

func nnErrorCases() []errorCase {
	ce := func(logits, tgt *graph.Node) *graph.Node { return ops.CrossEntropy(logits, tgt) }
	ceGrad := func(logits, tgt *graph.Node) *graph.Node {
		g := ops.Sum(logits, -1) // any float of the targets' shape
		return apply1(ops.CrossEntropyGradOp{}, logits, tgt, g)
	}
	return []errorCase{
		{"cross-entropy-target-out-of-range", func(t *testing.T, be backends.Backend, o Options) {
			wantErr(t, "target = classes", runIndexed(t, be, dims(2, 4), []int64{0, 4}, dims(2), ce))
			wantErr(t, "negative target", runIndexed(t, be, dims(2, 4), []int64{-1, 0}, dims(2), ce))
			wantErr(t, "gradient: target = classes", runIndexed(t, be, dims(2, 4), []int64{4, 0}, dims(2), ceGrad))
			if err := runIndexed(t, be, dims(2, 4), []int64{3, 0}, dims(2), ce); err != nil {
				t.Errorf("valid targets: %v", err)
			}
		}},
	}
}
