package graph

import (
	"errors"
	"fmt"

	"github.com/mamba2go/mamba2/ops"
)

// Grad returns the gradients of the scalar loss with respect to each node in wrt, as new nodes of
// the same graph (reverse-mode autodiff: every op's VJP rule is applied in reverse creation order).
// A node the loss does not depend on gets a zero gradient. Errors are recorded in the graph.
func Grad(loss *Node, wrt ...*Node) []*Node {
	if loss == nil {
		return nil
	}
	g := loss.g
	res := make([]*Node, len(wrt))
	fail := func(err error) []*Node {
		g.setErr(err)
		for i := range res {
			res[i] = g.placeholder(loss.shape)
			if wrt[i] != nil && wrt[i].g == g {
				res[i] = g.placeholder(wrt[i].shape)
			}
		}
		return res
	}
	if g.err != nil {
		return fail(g.err)
	}
	if loss.shape.Size() != 1 || !loss.shape.DType.IsFloat() {
		return fail(fmt.Errorf("graph: Grad: loss %s must be a float scalar (size 1)", loss))
	}
	for i, w := range wrt {
		if !g.owns(w) {
			return fail(fmt.Errorf("graph: Grad: wrt[%d] belongs to another graph", i))
		}
	}

	// Only nodes that depend on some wrt node need gradients.
	needs := make([]bool, len(g.nodes))
	for _, w := range wrt {
		needs[w.id] = true
	}
	for _, app := range g.apps {
		if app.id > loss.appID() {
			break
		}
		for _, in := range app.inputs {
			if needs[in.id] {
				for _, o := range app.outputs {
					needs[o.id] = true
				}
				break
			}
		}
	}

	grads := map[*Node]*Node{loss: ops.Full(loss, 1, loss.shape.Dims...)}
	for ai := loss.appID(); ai >= 0; ai-- {
		app := g.apps[ai]
		gout := make([]ops.Value, len(app.outputs))
		any := false
		for i, o := range app.outputs {
			if gr, ok := grads[o]; ok && needs[o.id] {
				gout[i] = gr
				any = true
			}
		}
		if !any {
			continue
		}
		needIn := false
		for _, in := range app.inputs {
			needIn = needIn || needs[in.id]
		}
		if !needIn {
			continue
		}
		in := make([]ops.Value, len(app.inputs))
		for i, n := range app.inputs {
			in[i] = n
		}
		out := make([]ops.Value, len(app.outputs))
		for i, n := range app.outputs {
			out[i] = n
		}
		gin, err := app.op.VJP(in, out, gout)
		if err == nil && len(gin) != len(in) {
			err = fmt.Errorf("VJP returned %d gradients for %d inputs", len(gin), len(in))
		}
		if err != nil {
			if errors.Is(err, ops.ErrNoGradient) {
				err = fmt.Errorf("%w (it is not differentiable)", err)
			}
			return fail(fmt.Errorf("graph: Grad through op %s at node %s: %w", app.op.Name(), app.outputs[0], err))
		}
		if g.err != nil {
			return fail(g.err)
		}
		for i, gv := range gin {
			n := app.inputs[i]
			if gv == nil || !needs[n.id] {
				continue
			}
			gn := gv.(*Node)
			if !gn.shape.Equal(n.shape) {
				return fail(fmt.Errorf("graph: Grad: VJP of %s gives input %d a gradient %s, want %s",
					app.op.Name(), i, gn.shape, n.shape))
			}
			if prev, ok := grads[n]; ok {
				grads[n] = ops.Add(prev, gn)
			} else {
				grads[n] = gn
			}
		}
	}
	for i, w := range wrt {
		if gr, ok := grads[w]; ok {
			res[i] = gr
		} else {
			res[i] = ops.ZerosLike(w)
		}
	}
	return res
}

// appID is the index of the application producing n, or -1 for a leaf.
func (n *Node) appID() int {
	if n.app == nil {
		return -1
	}
	return n.app.id
}
