package graph_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

// blockDims sizes the Mamba-like test block: a batch of B rows of width D, expanded to H.
type blockDims struct{ B, D, H int }

// small fits in a few microseconds; large makes every kernel split across the worker pool
// (B·H = 65536 elements is above the element-wise split threshold, and each MatMul row is
// D·H ≥ 4096 multiply-adds).
var (
	smallBlock = blockDims{B: 4, D: 16, H: 32}
	largeBlock = blockDims{B: 128, D: 128, H: 512}
)

// buildBlock returns a graph of a gated, stateful block:
//
//	h = SiLU(x·W1) · Sigmoid(x·Wg)
//	s' = decay·s + h              (state "s", [B,H])
//	y = Sum((s'·W2)ᵀ… ) per row   (output "y", [B])
func buildBlock(dt shapes.DType, d blockDims) *graph.Graph {
	g := graph.New()
	x := g.Input("x", shapes.Make(dt, d.B, d.D))
	w1 := g.Param("w1", shapes.Make(dt, d.D, d.H))
	wg := g.Param("wg", shapes.Make(dt, d.D, d.H))
	w2 := g.Param("w2", shapes.Make(dt, d.H, d.D))
	decay := g.Param("decay", shapes.Make(dt, d.H))
	s := g.State("s", shapes.Make(dt, d.B, d.H))
	h := ops.Mul(ops.SiLU(ops.MatMul(x, w1)), ops.Sigmoid(ops.MatMul(x, wg)))
	s2 := ops.Add(ops.Mul(s, decay), h)
	g.SetState("s", s2)
	y := ops.Sum(ops.Mul(ops.MatMul(s2, w2), x), -1)
	g.Output("y", y)
	return g
}

func randSlice(rng *rand.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = (rng.Float64()*2 - 1) * scale
	}
	return v
}

func toF32(v []float64) []float32 {
	r := make([]float32, len(v))
	for i, x := range v {
		r[i] = float32(x)
	}
	return r
}

// blockWeights uploads random weights for buildBlock.
func blockWeights(t testing.TB, be backends.Backend, dt shapes.DType, d blockDims) *graph.Weights {
	rng := rand.New(rand.NewPCG(1, 2))
	w := graph.NewWeights(be)
	for _, p := range []struct {
		name string
		dims []int
		lo   float64
	}{{"w1", []int{d.D, d.H}, 0}, {"wg", []int{d.D, d.H}, 0}, {"w2", []int{d.H, d.D}, 0}, {"decay", []int{d.H}, 0.5}} {
		s := shapes.Make(dt, p.dims...)
		v := randSlice(rng, s.Size(), 1/math.Sqrt(float64(p.dims[0])))
		for i := range v {
			v[i] = math.Abs(v[i])*0.4 + p.lo
		}
		var data any = v
		if dt == shapes.Float32 {
			data = toF32(v)
		}
		require.NoError(t, w.Set(p.name, s, data))
	}
	return w
}

func blockInput(seed uint64, dt shapes.DType, d blockDims) any {
	v := randSlice(rand.New(rand.NewPCG(seed, 3)), d.B*d.D, 1)
	if dt == shapes.Float32 {
		return toF32(v)
	}
	return v
}

func compileBlock(t testing.TB, be backends.Backend, dt shapes.DType, d blockDims) *graph.Program {
	p, err := buildBlock(dt, d).Compile(be, blockWeights(t, be, dt, d))
	require.NoError(t, err)
	return p
}

// TestRunDoesNotAllocate: after a warm-up run, Program.Run performs no heap allocation, including
// runs whose kernels split work across the worker pool.
func TestRunDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	for _, tc := range []struct {
		name    string
		threads int
		d       blockDims
	}{
		{"serial", 1, smallBlock},
		{"pool-small", 3, smallBlock},
		{"pool-split", 3, largeBlock},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := cpu.New(tc.threads)
			defer be.Close()
			for _, dt := range []shapes.DType{shapes.Float32, shapes.Float64} {
				p := compileBlock(t, be, dt, tc.d)
				require.NoError(t, p.SetInput("x", blockInput(1, dt, tc.d)))
				require.NoError(t, p.Run()) // warm-up
				allocs := testing.AllocsPerRun(10, func() {
					if err := p.Run(); err != nil {
						t.Fatal(err)
					}
				})
				require.Zerof(t, allocs, "%s: Program.Run allocated %.1f times per run", dt, allocs)
				require.NoError(t, p.Close())
			}
		})
	}
}

// BenchmarkProgramRun re-runs a compiled stateful block; it must report 0 allocs/op.
func BenchmarkProgramRun(b *testing.B) {
	for _, bc := range []struct {
		name string
		d    blockDims
	}{{"small", smallBlock}, {"large", largeBlock}} {
		for _, dt := range []shapes.DType{shapes.Float32, shapes.Float64} {
			b.Run(fmt.Sprintf("%s/%s", bc.name, dt), func(b *testing.B) {
				be, err := backends.New("cpu")
				require.NoError(b, err)
				p := compileBlock(b, be, dt, bc.d)
				defer p.Close()
				require.NoError(b, p.SetInput("x", blockInput(1, dt, bc.d)))
				require.NoError(b, p.Run())
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if err := p.Run(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// runBlock feeds inputs[i] on run i and returns the outputs and the final state.
func runBlock(p *graph.Program, inputs []any, d blockDims) ([][]float64, []float64, error) {
	var outs [][]float64
	for _, in := range inputs {
		if err := p.SetInput("x", in); err != nil {
			return nil, nil, err
		}
		if err := p.Run(); err != nil {
			return nil, nil, err
		}
		y := make([]float64, d.B)
		if err := p.ReadOutput("y", y); err != nil {
			return nil, nil, err
		}
		outs = append(outs, y)
	}
	s := make([]float64, d.B*d.H)
	buf, err := p.StateBuffer("s")
	if err != nil {
		return nil, nil, err
	}
	if err := p.Backend().Read(s, buf); err != nil {
		return nil, nil, err
	}
	return outs, s, nil
}

// TestConcurrentPrograms: programs compiled from one graph share one Weights, each keeps its own
// state, and running them in goroutines gives exactly what running them one after another gives.
// Run it with -race.
func TestConcurrentPrograms(t *testing.T) {
	const programs, runs = 4, 5
	d := blockDims{B: 8, D: 24, H: 40}
	dt := shapes.Float64
	be := cpu.New(3)
	defer be.Close()
	g := buildBlock(dt, d)
	w := blockWeights(t, be, dt, d)
	inputs := make([][]any, programs)
	for i := range inputs {
		for r := 0; r < runs; r++ {
			inputs[i] = append(inputs[i], blockInput(uint64(100*i+r), dt, d))
		}
	}
	compile := func() []*graph.Program {
		ps := make([]*graph.Program, programs)
		for i := range ps {
			p, err := g.Compile(be, w)
			require.NoError(t, err)
			ps[i] = p
		}
		return ps
	}

	seq := compile()
	wantOut := make([][][]float64, programs)
	wantState := make([][]float64, programs)
	for i, p := range seq {
		var err error
		wantOut[i], wantState[i], err = runBlock(p, inputs[i], d)
		require.NoError(t, err)
		require.NoError(t, p.Close())
	}

	conc := compile()
	gotOut := make([][][]float64, programs)
	gotState := make([][]float64, programs)
	errs := make([]error, programs)
	var wg sync.WaitGroup
	for i, p := range conc {
		wg.Go(func() { gotOut[i], gotState[i], errs[i] = runBlock(p, inputs[i], d) })
	}
	wg.Wait()
	for i := range conc {
		require.NoError(t, errs[i])
		require.Equal(t, wantOut[i], gotOut[i], "program %d outputs", i)
		require.Equal(t, wantState[i], gotState[i], "program %d state", i)
		require.NoError(t, conc[i].Close())
	}
	// Different inputs must give different states: the programs really were independent.
	require.NotEqual(t, gotState[0], gotState[1])
}

// TestStateAccumulates: state = state + x adds up across runs, starting from zeros.
func TestStateAccumulates(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	s := shapes.Make(shapes.Float64, 2, 3)
	g := graph.New()
	acc := g.State("acc", s)
	x := g.Input("x", s)
	sum := ops.Add(acc, x)
	g.SetState("acc", sum)
	g.Output("sum", sum)
	p, err := g.Compile(be, nil)
	require.NoError(t, err)
	defer p.Close()
	require.Equal(t, []graph.Spec{{Name: "acc", Shape: s}}, p.States())

	read := func(buf backends.Buffer) []float64 {
		v := make([]float64, 6)
		require.NoError(t, be.Read(v, buf))
		return v
	}
	want := make([]float64, 6)
	for run := 1; run <= 4; run++ {
		x := []float64{1, 2, 3, 4, 5, float64(run)}
		for i := range want {
			want[i] += x[i]
		}
		require.NoError(t, p.SetInput("x", x))
		require.NoError(t, p.Run())
		out := make([]float64, 6)
		require.NoError(t, p.ReadOutput("sum", out))
		require.Equal(t, want, out, "run %d output", run)
		buf, err := p.StateBuffer("acc")
		require.NoError(t, err)
		require.Equal(t, want, read(buf), "run %d state", run)
	}

	// BindState swaps in an external buffer: the program continues from its contents and writes
	// there; the previous buffer is left alone.
	own, err := p.StateBuffer("acc")
	require.NoError(t, err)
	before := read(own)
	ext, err := be.Alloc(s)
	require.NoError(t, err)
	require.NoError(t, be.Write(ext, []float64{10, 20, 30, 40, 50, 60}))
	require.NoError(t, p.BindState("acc", ext))
	cur, err := p.StateBuffer("acc")
	require.NoError(t, err)
	require.Same(t, ext, cur)
	require.NoError(t, p.SetInput("x", []float64{1, 1, 1, 1, 1, 1}))
	require.NoError(t, p.Run())
	require.Equal(t, []float64{11, 21, 31, 41, 51, 61}, read(ext))
	require.Equal(t, before, read(own), "the unbound buffer must not change")
	require.NoError(t, p.Run())
	require.Equal(t, []float64{12, 22, 32, 42, 52, 62}, read(ext))

	// Two programs bound to one buffer share the state.
	q, err := g.Compile(be, nil)
	require.NoError(t, err)
	defer q.Close()
	require.NoError(t, q.BindState("acc", ext))
	require.NoError(t, q.SetInput("x", []float64{0, 0, 0, 0, 0, 100}))
	require.NoError(t, q.Run())
	require.Equal(t, []float64{12, 22, 32, 42, 52, 162}, read(ext))
	// Closing a program does not free a bound buffer.
	require.NoError(t, q.Close())
	require.Equal(t, []float64{12, 22, 32, 42, 52, 162}, read(ext))
}

// TestStateNeverSetKeepsValue: a state read but never written keeps its value across runs.
func TestStateNeverSetKeepsValue(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	s := shapes.Make(shapes.Float32, 3)
	g := graph.New()
	bias := g.State("bias", s)
	x := g.Input("x", s)
	g.Output("y", ops.Add(x, bias))
	p, err := g.Compile(be, nil)
	require.NoError(t, err)
	defer p.Close()
	buf, err := p.StateBuffer("bias")
	require.NoError(t, err)
	require.NoError(t, be.Write(buf, []float32{1, 2, 3}))
	for range 3 {
		require.NoError(t, p.SetInput("x", []float32{1, 1, 1}))
		require.NoError(t, p.Run())
		y := make([]float32, 3)
		require.NoError(t, p.ReadOutput("y", y))
		require.Equal(t, []float32{2, 3, 4}, y)
	}
}

// TestStateSwap: states written from each other's start-of-run values (a ← b, b ← a) swap: every
// write-back must use the values computed in this run, not a state already overwritten.
func TestStateSwap(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	s := shapes.Make(shapes.Float64, 2)
	g := graph.New()
	a := g.State("a", s)
	b := g.State("b", s)
	g.SetState("a", b)
	g.SetState("b", a)
	p, err := g.Compile(be, nil)
	require.NoError(t, err)
	defer p.Close()
	ab, _ := p.StateBuffer("a")
	bb, _ := p.StateBuffer("b")
	require.NoError(t, be.Write(ab, []float64{1, 2}))
	require.NoError(t, be.Write(bb, []float64{3, 4}))
	require.NoError(t, p.Run())
	got := make([]float64, 2)
	require.NoError(t, be.Read(got, ab))
	require.Equal(t, []float64{3, 4}, got, "a after the swap")
	require.NoError(t, be.Read(got, bb))
	require.Equal(t, []float64{1, 2}, got, "b after the swap")
}
