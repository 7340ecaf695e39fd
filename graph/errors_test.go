package graph_test

import (
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

func f32(dims ...int) shapes.Shape { return shapes.Make(shapes.Float32, dims...) }
func f64(dims ...int) shapes.Shape { return shapes.Make(shapes.Float64, dims...) }

// requireErrContains fails unless err mentions every part.
func requireErrContains(t *testing.T, err error, parts ...string) {
	t.Helper()
	require.Error(t, err)
	for _, p := range parts {
		require.Containsf(t, err.Error(), p, "error %q should mention %q", err, p)
	}
}

// noPanic fails the test, instead of crashing it, when f panics.
func noPanic(t *testing.T, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("panic: %v", r)
		}
	}()
	f()
}

// TestInvalidGraphs: each invalid construction is reported by Err and by Compile, with what is
// wrong, and nothing panics.
func TestInvalidGraphs(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		build func(g *graph.Graph)
		want  []string // parts the error must contain
	}{
		{
			name: "shape mismatch",
			build: func(g *graph.Graph) {
				a := g.Input("a", f32(2, 3))
				b := g.Input("b", f32(4))
				g.Output("y", ops.Add(a, b))
			},
			// the op, the node, both shapes, and the caller's line
			want: []string{"Add", "node #2", "float32[2,3]", "float32[4]", `"a"`, `"b"`, "errors_test.go:"},
		},
		{
			name: "matmul inner dimensions",
			build: func(g *graph.Graph) {
				a := g.Input("a", f32(2, 3))
				w := g.Param("w", f32(4, 5))
				g.Output("y", ops.MatMul(a, w))
			},
			want: []string{"MatMul", "node #2", "float32[2,3]", "float32[4,5]", "K=3", "K=4"},
		},
		{
			name: "dtype mismatch",
			build: func(g *graph.Graph) {
				a := g.Input("a", f32(2, 3))
				b := g.Input("b", f64(2, 3))
				g.Output("y", ops.Mul(a, b))
			},
			want: []string{"Mul", "dtype", "float32[2,3]", "float64[2,3]"},
		},
		{
			name: "int64 into arithmetic",
			build: func(g *graph.Graph) {
				a := g.Input("ids", shapes.Make(shapes.Int64, 3))
				g.Output("y", ops.Exp(a))
			},
			want: []string{"Exp", "int64", "float"},
		},
		{
			name: "nodes of two graphs",
			build: func(g *graph.Graph) {
				other := graph.New()
				a := g.Input("a", f32(2))
				b := other.Input("b", f32(2))
				g.Output("y", ops.Add(a, b))
			},
			want: []string{"Add", "input 1", "another graph"},
		},
		{
			name: "output from another graph",
			build: func(g *graph.Graph) {
				other := graph.New()
				g.Input("a", f32(2))
				g.Output("y", other.Input("b", f32(2)))
			},
			want: []string{"Output", `"y"`, "another graph"},
		},
		{
			name: "nil input",
			build: func(g *graph.Graph) {
				a := g.Input("a", f32(2))
				g.Output("y", ops.Add(a, nil))
			},
			want: []string{"Add", "input 1"},
		},
		{
			name: "duplicate name",
			build: func(g *graph.Graph) {
				a := g.Input("x", f32(2))
				g.State("x", f32(2))
				g.Output("y", a)
			},
			want: []string{`"x"`, "already declared"},
		},
		{
			name: "param redeclared with another shape",
			build: func(g *graph.Graph) {
				g.Param("w", f32(2))
				g.Output("y", g.Param("w", f32(3)))
			},
			want: []string{`"w"`, "float32[2]", "float32[3]"},
		},
		{
			name: "invalid leaf shape",
			build: func(g *graph.Graph) {
				g.Output("y", g.Input("x", f32(2, 0)))
			},
			want: []string{`"x"`, "dimension 1 is 0"},
		},
		{
			name: "bad reshape",
			build: func(g *graph.Graph) {
				g.Output("y", ops.Reshape(g.Input("x", f32(2, 3)), 4, -1))
			},
			want: []string{"Reshape", "float32[2,3]"},
		},
		{
			name: "bad axis",
			build: func(g *graph.Graph) {
				g.Output("y", ops.Sum(g.Input("x", f32(2, 3)), 2))
			},
			want: []string{"Sum", "axis 2 out of range"},
		},
		{
			name: "state set with the wrong shape",
			build: func(g *graph.Graph) {
				g.State("s", f32(2, 3))
				g.SetState("s", g.Input("x", f32(3, 2)))
			},
			want: []string{`SetState("s")`, "float32[3,2]", "float32[2,3]"},
		},
		{
			name: "unknown state",
			build: func(g *graph.Graph) {
				g.SetState("nope", g.Input("x", f32(2)))
			},
			want: []string{`"nope"`, "no such state"},
		},
		{
			name: "grad of a non-scalar",
			build: func(g *graph.Graph) {
				x := g.Input("x", f64(2, 3))
				y := ops.Square(x)
				g.Output("g", graph.Grad(y, x)[0])
			},
			want: []string{"Grad", "Square", "float64[2,3]", "scalar"},
		},
		{
			name: "grad wrt another graph",
			build: func(g *graph.Graph) {
				x := g.Input("x", f64(2))
				other := graph.New().Input("z", f64(2))
				g.Output("g", graph.Grad(ops.Sum(x), other)[0])
			},
			want: []string{"Grad", "another graph"},
		},
		{
			name: "grad through a non-differentiable op",
			build: func(g *graph.Graph) {
				x := g.Input("x", f64(3))
				gr := g.Input("g", f64(3))
				v := g.Apply(ops.ClampGradOp{Min: -1, Max: 1}, x, gr)[0].(*graph.Node)
				g.Output("g", graph.Grad(ops.Sum(v), x)[0])
			},
			want: []string{"ClampGrad", "not differentiable"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noPanic(t, func() {
				g := graph.New()
				tc.build(g)
				requireErrContains(t, g.Err(), tc.want...)
				p, err := g.Compile(be, nil)
				require.Nil(t, p)
				require.Equal(t, g.Err(), err, "Compile returns the recorded error")
				t.Log(err)
			})
		})
	}
}

// TestFirstErrorWins: later mistakes do not replace the first one.
func TestFirstErrorWins(t *testing.T) {
	g := graph.New()
	a := g.Input("a", f32(2))
	b := g.Input("b", f32(3))
	bad := ops.Add(a, b)
	ops.MatMul(bad, bad) // a second error, reported nowhere
	require.ErrorContains(t, g.Err(), "Add")
	require.NotContains(t, g.Err().Error(), "MatMul")
}

func TestUnknownBackend(t *testing.T) {
	be, err := backends.New("nope")
	require.Nil(t, be)
	require.ErrorIs(t, err, backends.ErrUnknownBackend)
	requireErrContains(t, err, `"nope"`, "cpu")

	t.Setenv(backends.EnvBackend, "nope-from-env")
	_, err = backends.New("")
	requireErrContains(t, err, `"nope-from-env"`, "registered", "cpu")
}

// TestCompileErrors covers problems found at Compile rather than while building.
func TestCompileErrors(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	mlp := func() *graph.Graph {
		g := graph.New()
		x := g.Input("x", f32(2, 3))
		w := g.Param("w", f32(3, 4))
		b := g.Param("b", f32(4))
		g.Output("y", ops.Add(ops.MatMul(x, w), b))
		return g
	}
	weights := func(names ...string) *graph.Weights {
		w := graph.NewWeights(be)
		for _, n := range names {
			switch n {
			case "w":
				require.NoError(t, w.Set("w", f32(3, 4), make([]float32, 12)))
			case "b":
				require.NoError(t, w.Set("b", f32(4), make([]float32, 4)))
			case "b-wrong-shape":
				require.NoError(t, w.Set("b", f32(5), make([]float32, 5)))
			case "b-wrong-dtype":
				require.NoError(t, w.Set("b", f64(4), make([]float64, 4)))
			}
		}
		return w
	}
	for _, tc := range []struct {
		name string
		w    *graph.Weights
		want []string
	}{
		{"no weights", nil, []string{`param "w"`, "float32[3,4]", "no weights"}},
		{"missing param", weights("w"), []string{`param "b"`, "missing"}},
		{"misshaped param", weights("w", "b-wrong-shape"), []string{`param "b"`, "float32[5]", "float32[4]"}},
		{"param of another dtype", weights("w", "b-wrong-dtype"), []string{`param "b"`, "float64[4]", "float32[4]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noPanic(t, func() {
				p, err := mlp().Compile(be, tc.w)
				require.Nil(t, p)
				requireErrContains(t, err, tc.want...)
				t.Log(err)
			})
		})
	}
	t.Run("nil backend", func(t *testing.T) {
		_, err := mlp().Compile(nil, weights("w", "b"))
		requireErrContains(t, err, "nil backend")
	})
	t.Run("nothing to compute", func(t *testing.T) {
		g := graph.New()
		g.Input("x", f32(2))
		_, err := g.Compile(be, nil)
		requireErrContains(t, err, "no outputs")
	})
	t.Run("op without kernel", func(t *testing.T) {
		g := graph.New()
		x := g.Input("x", f32(2))
		g.Output("y", g.Apply(noKernelOp{}, x)[0].(*graph.Node))
		_, err := g.Compile(be, nil)
		require.ErrorIs(t, err, backends.ErrUnsupported)
		requireErrContains(t, err, "NoKernelForThisOp", "cpu")
	})
	t.Run("ok", func(t *testing.T) {
		p, err := mlp().Compile(be, weights("w", "b"))
		require.NoError(t, err)
		require.NoError(t, p.Close())
	})
}

// noKernelOp is a valid op that no backend implements.
type noKernelOp struct{}

func (noKernelOp) Name() string { return "NoKernelForThisOp" }
func (noKernelOp) Infer(in []shapes.Shape) ([]shapes.Shape, error) {
	return []shapes.Shape{in[0]}, nil
}
func (noKernelOp) VJP(in, out, gout []ops.Value) ([]ops.Value, error) { return nil, ops.ErrNoGradient }

// TestProgramErrors covers misuse of a compiled program.
func TestProgramErrors(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	g := graph.New()
	x := g.Input("x", f32(2, 3))
	s := g.State("s", f32(2, 3))
	g.SetState("s", ops.Add(s, x))
	g.Output("y", ops.Sum(x, 1))
	p, err := g.Compile(be, nil)
	require.NoError(t, err)
	defer p.Close()

	noPanic(t, func() {
		requireErrContains(t, p.SetInput("x", make([]float32, 5)), `input "x"`, "float32[2,3]", "5")
		requireErrContains(t, p.SetInput("x", make([]float64, 6)), `input "x"`, "float64")
		requireErrContains(t, p.SetInput("x", []int{1, 2, 3, 4, 5, 6}), `input "x"`)
		requireErrContains(t, p.SetInput("x", nil), `input "x"`)
		requireErrContains(t, p.SetInput("nope", make([]float32, 6)), `no input "nope"`, "x")

		requireErrContains(t, p.ReadOutput("y", make([]float32, 3)), `output "y"`, "float32[2]")
		requireErrContains(t, p.ReadOutput("y", make([]float64, 2)), `output "y"`)
		requireErrContains(t, p.ReadOutput("nope", make([]float32, 2)), `no output "nope"`, "y")

		wrong, err := be.Alloc(f32(3, 2))
		require.NoError(t, err)
		requireErrContains(t, p.BindState("s", wrong), `state "s"`, "float32[3,2]", "float32[2,3]")
		wrongType, err := be.Alloc(f64(2, 3))
		require.NoError(t, err)
		requireErrContains(t, p.BindState("s", wrongType), `state "s"`, "float64[2,3]", "float32[2,3]")
		requireErrContains(t, p.BindState("s", nil), `state "s"`, "nil")
		requireErrContains(t, p.BindState("nope", wrong), `no state "nope"`, "s")
		_, err = p.StateBuffer("nope")
		requireErrContains(t, err, `"nope"`)

		// A state buffer freed behind the program's back: Run reports it.
		ext, err := be.Alloc(f32(2, 3))
		require.NoError(t, err)
		require.NoError(t, p.BindState("s", ext))
		require.NoError(t, be.Free(ext))
		require.NoError(t, p.SetInput("x", make([]float32, 6)))
		requireErrContains(t, p.Run(), "Free")

		_, err = p.RunDense(nil)
		require.Error(t, err)
	})

	q, err := g.Compile(be, nil)
	require.NoError(t, err)
	require.NoError(t, q.Close())
	require.NoError(t, q.Close(), "Close twice is fine")
	requireErrContains(t, q.Run(), "closed")
}
