package ops_test

import (
	"fmt"
	"testing"

	"github.com/mamba2go/mamba2/backends/backendtest"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
)

func TestGradCausalConv1D(t *testing.T) {
	const nb, nc = 2, 3
	for _, nk := range []int{2, 3, 4, 5} {
		for _, nt := range []int{nk - 1, nk + 2} {
			args := []backendtest.Arg{
				{Dims: []int{nb, nt, nc}}, {Dims: []int{nc, nk}}, {Dims: []int{nc}}, {Dims: []int{nb, nc, nk}},
			}
			checkGrad(t, backendtest.GradCase{
				Name: fmt.Sprintf("CausalConv1D/K=%d/T=%d", nk, nt),
				Args: args,
				Build: func(in []*graph.Node) []*graph.Node {
					y, s := ops.CausalConv1D(in[0], in[1], in[2], in[3])
					return []*graph.Node{y, s}
				},
			})
			// Only one output used: the other's gradient is missing (nil) in the VJP.
			checkGrad(t, backendtest.GradCase{
				Name: fmt.Sprintf("CausalConv1D/K=%d/T=%d/y-only", nk, nt),
				Args: args,
				Build: func(in []*graph.Node) []*graph.Node {
					y, _ := ops.CausalConv1D(in[0], in[1], in[2], in[3])
					return []*graph.Node{ops.SiLU(y)}
				},
			})
			checkGrad(t, backendtest.GradCase{
				Name: fmt.Sprintf("CausalConv1D/K=%d/T=%d/state-only", nk, nt),
				Args: args,
				Build: func(in []*graph.Node) []*graph.Node {
					_, s := ops.CausalConv1D(in[0], in[1], in[2], in[3])
					return []*graph.Node{s}
				},
			})
			// Right-padded rows: lengths T, 1 and 0 (plus one more row).
			lens := []int64{int64(nt), 1, 0}
			largs := []backendtest.Arg{
				{Dims: []int{3, nt, nc}}, {Dims: []int{nc, nk}}, {Dims: []int{nc}}, {Dims: []int{3, nc, nk}},
				{Dims: []int{3}, Int64: true, Ints: lens},
			}
			checkGrad(t, backendtest.GradCase{
				Name: fmt.Sprintf("CausalConv1D/K=%d/T=%d/lengths", nk, nt),
				Args: largs,
				Build: func(in []*graph.Node) []*graph.Node {
					y, s := ops.CausalConv1DLen(in[0], in[1], in[2], in[3], in[4])
					return []*graph.Node{y, s}
				},
			})
		}
	}
}

// mbSSDArgs are gradient-check inputs for SSD with dt ≈ 0.5 > 0 and A ≈ −1 < 0.
func mbSSDArgs(b, tt, h, p, g, n int, step bool) []backendtest.Arg {
	bt := []int{b, tt}
	if step {
		bt = []int{b}
	}
	with := func(d ...int) []int { return append(append([]int(nil), bt...), d...) }
	return []backendtest.Arg{
		{Dims: with(h, p)},
		{Dims: with(h), Offset: 0.5, Scale: 0.1},
		{Dims: []int{h}, Offset: -1, Scale: 0.2},
		{Dims: with(g, n)},
		{Dims: with(g, n)},
		{Dims: []int{h}},
		{Dims: []int{b, h, p, n}, Scale: 0.5},
	}
}

func TestGradSSD(t *testing.T) {
	for _, g := range []int{1, 2} {
		for _, chunk := range []int{1, 3, 8} {
			// T = 10 is not a multiple of 3 or 8.
			checkGrad(t, backendtest.GradCase{
				Name: fmt.Sprintf("SSD/G=%d/chunk=%d", g, chunk),
				Args: mbSSDArgs(2, 10, 4, 2, g, 3, false),
				Build: func(in []*graph.Node) []*graph.Node {
					y, s := ops.SSD(in[0], in[1], in[2], in[3], in[4], in[5], in[6], chunk)
					return []*graph.Node{y, s}
				},
			})
		}
	}
	// dt from Softplus inside the graph; only y used.
	checkGrad(t, backendtest.GradCase{
		Name: "SSD/softplus-dt/y-only",
		Args: mbSSDArgs(2, 5, 4, 2, 2, 3, false),
		Build: func(in []*graph.Node) []*graph.Node {
			y, _ := ops.SSD(in[0], ops.Softplus(in[1]), in[2], in[3], in[4], in[5], in[6], 2)
			return []*graph.Node{y}
		},
	})
	// Only the final state used; a single row, so the backward splits a group's heads.
	checkGrad(t, backendtest.GradCase{
		Name: "SSD/state-only/batch=1",
		Args: mbSSDArgs(1, 6, 4, 2, 1, 3, false),
		Build: func(in []*graph.Node) []*graph.Node {
			_, s := ops.SSD(in[0], in[1], in[2], in[3], in[4], in[5], in[6], 4)
			return []*graph.Node{s}
		},
	})
	// Longer than the backward's checkpoint segments (⌈√T⌉ = 5 tokens).
	checkGrad(t, backendtest.GradCase{
		Name: "SSD/T=23",
		Args: mbSSDArgs(1, 23, 2, 2, 1, 2, false),
		Build: func(in []*graph.Node) []*graph.Node {
			y, s := ops.SSD(in[0], in[1], in[2], in[3], in[4], in[5], in[6], 8)
			return []*graph.Node{y, s}
		},
	})
}

func TestGradSSDStep(t *testing.T) {
	for _, g := range []int{1, 2} {
		checkGrad(t, backendtest.GradCase{
			Name: fmt.Sprintf("SSDStep/G=%d", g),
			Args: mbSSDArgs(2, 1, 4, 2, g, 3, true),
			Build: func(in []*graph.Node) []*graph.Node {
				y, s := ops.SSDStep(in[0], in[1], in[2], in[3], in[4], in[5], in[6])
				return []*graph.Node{y, s}
			},
		})
	}
	checkGrad(t, backendtest.GradCase{
		Name: "SSDStep/two-steps",
		Args: mbSSDArgs(2, 1, 4, 2, 2, 3, true),
		Build: func(in []*graph.Node) []*graph.Node {
			y1, s1 := ops.SSDStep(in[0], in[1], in[2], in[3], in[4], in[5], in[6])
			y2, s2 := ops.SSDStep(y1, in[1], in[2], in[4], in[3], in[5], s1)
			return []*graph.Node{y2, s2}
		},
	})
}
