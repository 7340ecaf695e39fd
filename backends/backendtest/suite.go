package backendtest

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/quant"
	"github.com/mamba2go/mamba2/shapes"
)

// Options adjusts the suites for a backend. The zero value is what the cpu backend must meet.
type Options struct {
	// Tol32 and Tol64 bound the forward error |got − want| / max(|want|, 1) per element, for
	// float32 and float64 runs (defaults 1e-5 and 1e-12; a case may scale them).
	Tol32, Tol64 float64
	// GradTol bounds the norm-wise relative error of CheckGrad (default 1e-6).
	GradTol float64
	// Skip lists op names the backend does not implement yet: their cases are skipped when
	// Compile reports backends.ErrUnsupported, instead of failing.
	Skip []string
}

func (o Options) withDefaults() Options {
	if o.Tol32 == 0 {
		o.Tol32 = 1e-5
	}
	if o.Tol64 == 0 {
		o.Tol64 = 1e-12
	}
	if o.GradTol == 0 {
		o.GradTol = 1e-6
	}
	return o
}

func options(opts []Options) Options {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	return o.withDefaults()
}

// In describes one input of a forward case.
type In struct {
	Dims []int
	// Int marks an int64 index input; its values are Ints, or uniform in [0, IntMax).
	Int    bool
	Ints   []int64
	IntMax int
	// Values fixes a float input; otherwise it is uniform in [Lo, Hi) (default [-2, 2)).
	Values []float64
	Lo, Hi float64
	// DType, when set, fixes the input's dtype instead of the run's float dtype: Float32, or a
	// storage dtype. BFloat16 and Float16 values are drawn as above and rounded to the dtype (the
	// reference sees the rounded values); Int8 values are integers uniform in [-127, 127].
	DType shapes.DType
}

// Case is one forward check: Build applies the op under test to graph inputs (of the run's float
// dtype), Ref computes the same outputs from the same values in float64.
type Case struct {
	// Name is "Op/variant"; the part before the slash is the op the case covers.
	Name  string
	In    []In
	Build func(in []*graph.Node) []*graph.Node
	Ref   func(in []*Tensor) []*Tensor
	// Tol scales the tolerances for this case (0 means 1).
	Tol float64
	// Only64 runs the case in float64 only.
	Only64 bool
	// Only32 runs the case in float32 only (ops that compute in float32 alone).
	Only32 bool
}

// Op is the name of the op the case covers (the part of Name before the first slash).
func (c Case) Op() string {
	op, _, _ := strings.Cut(c.Name, "/")
	return op
}

// Cases returns the forward cases, in table order.
func Cases() []Case {
	var all []Case
	for _, f := range caseTables {
		all = append(all, f()...)
	}
	return all
}

// caseTables lists the functions producing each group of cases; adding an op is adding entries.
var caseTables = []func() []Case{elementwiseCases, shapeCases, matmulCases}

// CoveredOps lists, sorted, the op names that have forward cases.
func CoveredOps() []string {
	seen := map[string]bool{}
	for _, c := range Cases() {
		seen[c.Op()] = true
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Run checks every forward case in float32 and float64 against its reference, then the backend's
// error behaviour. opts may hold one Options.
func Run(t *testing.T, be backends.Backend, opts ...Options) {
	o := options(opts)
	for _, c := range Cases() {
		for _, dt := range []shapes.DType{shapes.Float32, shapes.Float64} {
			if dt == shapes.Float32 && c.Only64 || dt == shapes.Float64 && c.Only32 {
				continue
			}
			t.Run(c.Name+"/"+dt.String(), func(t *testing.T) {
				noPanic(t, func() { runCase(t, be, c, dt, o) })
			})
		}
	}
	for _, e := range errorCases() {
		t.Run("errors/"+e.name, func(t *testing.T) {
			noPanic(t, func() { e.run(t, be, o) })
		})
	}
}

// noPanic runs f and turns a panic into a test failure.
func noPanic(t *testing.T, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("panic: %v", r)
		}
	}()
	f()
}

func seedOf(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// makeInputs draws a case's input values, rounded to dt.
func makeInputs(c Case, dt shapes.DType) []*Tensor {
	rng := rand.New(rand.NewPCG(seedOf(c.Name), 1))
	res := make([]*Tensor, len(c.In))
	for i, in := range c.In {
		n := size(in.Dims)
		t := &Tensor{Dims: slices.Clone(in.Dims)}
		switch {
		case in.Int:
			t.I = slices.Clone(in.Ints)
			if t.I == nil {
				t.I = make([]int64, n)
				for j := range t.I {
					t.I[j] = int64(rng.IntN(max(1, in.IntMax)))
				}
			}
		case in.Values != nil:
			t.F = slices.Clone(in.Values)
		case in.DType == shapes.Int8:
			t.F = make([]float64, n)
			for j := range t.F {
				t.F[j] = float64(rng.IntN(255) - 127)
			}
		default:
			lo, hi := in.Lo, in.Hi
			if lo == 0 && hi == 0 {
				lo, hi = -2, 2
			}
			t.F = make([]float64, n)
			for j := range t.F {
				t.F[j] = lo + (hi-lo)*rng.Float64()
			}
		}
		for j, v := range t.F {
			t.F[j] = roundTo(v, inputDType(in, dt))
		}
		res[i] = t
	}
	return res
}

// inputDType is the dtype of input in for a run in float dtype dt.
func inputDType(in In, dt shapes.DType) shapes.DType {
	switch {
	case in.Int:
		return shapes.Int64
	case in.DType != shapes.InvalidDType:
		return in.DType
	}
	return dt
}

// roundTo returns v rounded to the nearest value of dtype dt (v itself for float64, int64 and
// int8, whose values are drawn exact).
func roundTo(v float64, dt shapes.DType) float64 {
	switch dt {
	case shapes.Float32:
		return float64(float32(v))
	case shapes.BFloat16:
		return float64(quant.BF16ToFloat32(quant.ToBF16(float32(v))))
	case shapes.Float16:
		return float64(quant.F16ToFloat32(quant.ToF16(float32(v))))
	}
	return v
}

// hostData converts a reference tensor to the host slice fed to an input of dtype dt.
func hostData(t *Tensor, dt shapes.DType) any {
	if t.I != nil || dt == shapes.Int64 {
		return t.I
	}
	switch dt {
	case shapes.Float32:
		d := make([]float32, len(t.F))
		for i, v := range t.F {
			d[i] = float32(v)
		}
		return d
	case shapes.BFloat16, shapes.Float16:
		d := make([]uint16, len(t.F))
		for i, v := range t.F {
			if dt == shapes.BFloat16 {
				d[i] = quant.ToBF16(float32(v))
			} else {
				d[i] = quant.ToF16(float32(v))
			}
		}
		return d
	case shapes.Int8:
		d := make([]int8, len(t.F))
		for i, v := range t.F {
			d[i] = int8(v)
		}
		return d
	}
	return slices.Clone(t.F)
}

// toFloat64 converts a host slice read from an output to float64.
func toFloat64(data any) []float64 {
	switch d := data.(type) {
	case []float32:
		r := make([]float64, len(d))
		for i, v := range d {
			r[i] = float64(v)
		}
		return r
	case []float64:
		return d
	case []int64:
		r := make([]float64, len(d))
		for i, v := range d {
			r[i] = float64(v)
		}
		return r
	}
	return nil
}

// buildCase compiles c for dtype dt; it returns the program and the graph's output shapes.
func buildCase(be backends.Backend, c Case, dt shapes.DType) (*graph.Program, []shapes.Shape, error) {
	g := graph.New()
	nodes := make([]*graph.Node, len(c.In))
	for i, in := range c.In {
		nodes[i] = g.Input(fmt.Sprintf("in%d", i), shapes.Make(inputDType(in, dt), in.Dims...))
	}
	outs := c.Build(nodes)
	var oshapes []shapes.Shape
	for i, o := range outs {
		g.Output(fmt.Sprintf("out%d", i), o)
		oshapes = append(oshapes, o.Shape())
	}
	if err := g.Err(); err != nil {
		return nil, nil, fmt.Errorf("building: %w", err)
	}
	p, err := g.Compile(be, nil)
	return p, oshapes, err
}

func runCase(t *testing.T, be backends.Backend, c Case, dt shapes.DType, o Options) {
	p, oshapes, err := buildCase(be, c, dt)
	if err != nil {
		if errors.Is(err, backends.ErrUnsupported) && slices.Contains(o.Skip, c.Op()) {
			t.Skipf("skipped: %v", err)
		}
		t.Fatalf("compile: %v", err)
	}
	defer p.Close()
	inputs := makeInputs(c, dt)
	want := c.Ref(inputs)
	if len(want) != len(oshapes) {
		t.Fatalf("reference returned %d outputs, the graph has %d", len(want), len(oshapes))
	}
	tol := o.Tol64
	if dt == shapes.Float32 {
		tol = o.Tol32
	}
	if c.Tol > 0 {
		tol *= c.Tol
	}
	// Run twice: a kernel must overwrite its outputs, not accumulate into them.
	for run := 0; run < 2; run++ {
		for i, in := range inputs {
			if err := p.SetInput(fmt.Sprintf("in%d", i), hostData(in, inputDType(c.In[i], dt))); err != nil {
				t.Fatalf("SetInput: %v", err)
			}
		}
		if err := p.Run(); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		for k, s := range oshapes {
			if !shapes.EqualDims(s.Dims, want[k].Dims) {
				t.Fatalf("output %d has dims %v, reference %v", k, s.Dims, want[k].Dims)
			}
			data := graph.NewHostSlice(s)
			if err := p.ReadOutput(fmt.Sprintf("out%d", k), data); err != nil {
				t.Fatalf("read output %d: %v", k, err)
			}
			got := toFloat64(data)
			ref := want[k].F
			if s.DType == shapes.Int64 {
				ref = toFloat64(want[k].I)
			}
			msg, worst := compareWorst(got, ref, s.Dims, tol)
			if msg != "" {
				t.Fatalf("run %d, output %d %s: %s", run, k, s, msg)
			}
			if run == 0 {
				t.Logf("output %d %s: worst error %.2e (tolerance %.1e)", k, s, worst, tol)
			}
		}
	}
}

// compare checks |got − want| ≤ tol·max(|want|, 1) per element (NaN must match NaN, infinities
// must match exactly) and describes the first failures.
func compare(got, want []float64, dims []int, tol float64) string {
	msg, _ := compareWorst(got, want, dims, tol)
	return msg
}

// compareWorst is compare that also returns the worst finite error.
func compareWorst(got, want []float64, dims []int, tol float64) (string, float64) {
	if len(got) != len(want) {
		return fmt.Sprintf("%d elements, reference has %d", len(got), len(want)), math.Inf(1)
	}
	var bad []string
	nbad, worst := 0, 0.0
	for i := range got {
		g, w := got[i], want[i]
		ok := false
		switch {
		case math.IsNaN(w) || math.IsNaN(g):
			ok = math.IsNaN(w) && math.IsNaN(g)
		case math.IsInf(w, 0) || math.IsInf(g, 0):
			ok = g == w
		default:
			e := math.Abs(g-w) / math.Max(math.Abs(w), 1)
			worst = math.Max(worst, e)
			ok = e <= tol
		}
		if !ok {
			nbad++
			if len(bad) < 5 {
				bad = append(bad, fmt.Sprintf("at %v got %.10g want %.10g", unravel(i, dims), g, w))
			}
		}
	}
	if nbad == 0 {
		return "", worst
	}
	return fmt.Sprintf("%d of %d elements off (tolerance %.1e, worst finite error %.2e): %s",
		nbad, len(got), tol, worst, strings.Join(bad, "; ")), worst
}
