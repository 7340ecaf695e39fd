// Package backendtest is the backend-independent compliance suite: forward checks of every op
// against plain reference implementations, and gradient checks of every differentiable op against
// central finite differences. Any backend runs it from its own tests:
//
//	func TestCompliance(t *testing.T) { backendtest.Run(t, myBackend) }
package backendtest

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/shapes"
)

// Arg is one input of a gradient-check case.
type Arg struct {
	Dims []int
	// Int64 marks an index input (token ids, targets); it is not differentiated. Its values come
	// from Ints, or are drawn uniformly from [0, IntMax).
	Int64  bool
	Ints   []int64
	IntMax int
	// Values, when set, fixes a float input; otherwise it is drawn from N(0,1)·Scale + Offset.
	Values        []float64
	Scale, Offset float64
	// NoGrad excludes a float input from the check (e.g. a quantity that must stay positive).
	NoGrad bool
}

// GradCase describes a function of float64 inputs whose gradient is checked.
type GradCase struct {
	Name string
	Args []Arg
	// Build returns the function's outputs. The checked loss is Σ_k Σ outputs[k]·R_k for fixed
	// random R_k, so every output element gets a distinct upstream gradient.
	Build func(in []*graph.Node) []*graph.Node
}

// GradResult reports, per checked input, the norm-wise relative error
// ‖analytic − numeric‖ / max(‖analytic‖, ‖numeric‖, 1e-12).
type GradResult struct {
	RelErr []float64
	Max    float64
}

// CheckGrad compares graph.Grad with central differences (step h) for every float input of c.
func CheckGrad(be backends.Backend, c GradCase, seed uint64, h float64) (GradResult, error) {
	rng := rand.New(rand.NewPCG(seed, 77))
	vals := make([][]float64, len(c.Args))
	ints := make([][]int64, len(c.Args))
	for i, a := range c.Args {
		n := shapes.Make(shapes.Float64, a.Dims...).Size()
		switch {
		case a.Int64:
			ints[i] = a.Ints
			if ints[i] == nil {
				ints[i] = make([]int64, n)
				for j := range ints[i] {
					ints[i][j] = int64(rng.IntN(max(1, a.IntMax)))
				}
			}
		case a.Values != nil:
			vals[i] = append([]float64(nil), a.Values...)
		default:
			sc := a.Scale
			if sc == 0 {
				sc = 1
			}
			vals[i] = make([]float64, n)
			for j := range vals[i] {
				vals[i][j] = rng.NormFloat64()*sc + a.Offset
			}
		}
	}

	g := graph.New()
	in := make([]*graph.Node, len(c.Args))
	var wrt []*graph.Node
	var wrtIdx []int
	for i, a := range c.Args {
		name := fmt.Sprintf("in%d", i)
		if a.Int64 {
			in[i] = g.Input(name, shapes.Make(shapes.Int64, a.Dims...))
			continue
		}
		in[i] = g.Input(name, shapes.Make(shapes.Float64, a.Dims...))
		if !a.NoGrad {
			wrt = append(wrt, in[i])
			wrtIdx = append(wrtIdx, i)
		}
	}
	outs := c.Build(in)
	if err := g.Err(); err != nil {
		return GradResult{}, err
	}
	var loss *graph.Node
	var rs [][]float64
	for k, o := range outs {
		r := make([]float64, o.Shape().Size())
		for j := range r {
			r[j] = rng.NormFloat64()
		}
		rs = append(rs, r)
		rn := g.Input(fmt.Sprintf("r%d", k), o.Shape())
		term := sumAll(mul(o, rn))
		if loss == nil {
			loss = term
		} else {
			loss = add(loss, term)
		}
	}
	grads := graph.Grad(loss, wrt...)
	g.Output("loss", loss)
	for i, gr := range grads {
		g.Output(fmt.Sprintf("grad%d", i), gr)
	}
	p, err := g.Compile(be, nil)
	if err != nil {
		return GradResult{}, err
	}
	defer p.Close()
	feed := func() error {
		for i, a := range c.Args {
			var err error
			if a.Int64 {
				err = p.SetInput(fmt.Sprintf("in%d", i), ints[i])
			} else {
				err = p.SetInput(fmt.Sprintf("in%d", i), vals[i])
			}
			if err != nil {
				return err
			}
		}
		for k, r := range rs {
			if err := p.SetInput(fmt.Sprintf("r%d", k), r); err != nil {
				return err
			}
		}
		return nil
	}
	lossAt := func() (float64, error) {
		if err := feed(); err != nil {
			return 0, err
		}
		if err := p.Run(); err != nil {
			return 0, err
		}
		l := make([]float64, 1)
		err := p.ReadOutput("loss", l)
		return l[0], err
	}
	if _, err := lossAt(); err != nil {
		return GradResult{}, err
	}
	analytic := make([][]float64, len(wrt))
	for i := range wrt {
		analytic[i] = make([]float64, wrt[i].Shape().Size())
		if err := p.ReadOutput(fmt.Sprintf("grad%d", i), analytic[i]); err != nil {
			return GradResult{}, err
		}
	}
	var res GradResult
	for wi, ai := range wrtIdx {
		v := vals[ai]
		var dn, na, nn float64
		for j := range v {
			orig := v[j]
			v[j] = orig + h
			lp, err := lossAt()
			if err != nil {
				return res, err
			}
			v[j] = orig - h
			lm, err := lossAt()
			if err != nil {
				return res, err
			}
			v[j] = orig
			num := (lp - lm) / (2 * h)
			an := analytic[wi][j]
			dn += (an - num) * (an - num)
			na += an * an
			nn += num * num
		}
		rel := math.Sqrt(dn) / math.Max(math.Max(math.Sqrt(na), math.Sqrt(nn)), 1e-12)
		if math.IsNaN(rel) {
			rel = math.Inf(1)
		}
		res.RelErr = append(res.RelErr, rel)
		res.Max = math.Max(res.Max, rel)
	}
	return res, nil
}
