package cpu_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

// mbKernel is a compiled kernel with host-filled input buffers and allocated outputs.
type mbKernel struct {
	k       backends.Kernel
	in, out []backends.Buffer
}

// mbCompile compiles op for float64 inputs of the given dims (int64 where ints[i] != nil), fills
// the inputs from rng (dt-like inputs listed in positive get values in [0.05, 0.8], A-like ones
// in negative get [−1.5, −0.2]) and allocates the outputs.
func mbCompile(t testing.TB, be backends.Backend, op ops.Op, dims [][]int, ints map[int][]int64, positive, negative []int, seed uint64) *mbKernel {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	in := make([]shapes.Shape, len(dims))
	for i, d := range dims {
		in[i] = shapes.Make(shapes.Float64, d...)
		if ints[i] != nil {
			in[i] = shapes.Make(shapes.Int64, d...)
		}
	}
	out, err := op.Infer(in)
	if err != nil {
		t.Fatal(err)
	}
	k, err := be.Compile(op, in, out)
	if err != nil {
		t.Fatal(err)
	}
	r := &mbKernel{k: k}
	for i, s := range in {
		b, err := be.Alloc(s)
		if err != nil {
			t.Fatal(err)
		}
		if ints[i] != nil {
			err = be.Write(b, ints[i])
		} else {
			lo, hi := -1.0, 1.0
			for _, p := range positive {
				if p == i {
					lo, hi = 0.05, 0.8
				}
			}
			for _, p := range negative {
				if p == i {
					lo, hi = -1.5, -0.2
				}
			}
			v := make([]float64, s.Size())
			for j := range v {
				v[j] = lo + (hi-lo)*rng.Float64()
			}
			err = be.Write(b, v)
		}
		if err != nil {
			t.Fatal(err)
		}
		r.in = append(r.in, b)
	}
	for _, s := range out {
		b, err := be.Alloc(s)
		if err != nil {
			t.Fatal(err)
		}
		r.out = append(r.out, b)
	}
	return r
}

func (r *mbKernel) results(t testing.TB, be backends.Backend) [][]float64 {
	t.Helper()
	if err := r.k.Run(r.in, r.out); err != nil {
		t.Fatal(err)
	}
	res := make([][]float64, len(r.out))
	for i, b := range r.out {
		res[i] = make([]float64, b.Shape().Size())
		if err := be.Read(res[i], b); err != nil {
			t.Fatal(err)
		}
	}
	return res
}

type mbKernelCase struct {
	name     string
	op       ops.Op
	dims     [][]int
	ints     map[int][]int64
	pos, neg []int
}

func mbKernelCases() []mbKernelCase {
	ssd := func(b, tt, h, p, g, n int) [][]int {
		return [][]int{{b, tt, h, p}, {b, tt, h}, {h}, {b, tt, g, n}, {b, tt, g, n}, {h}, {b, h, p, n}}
	}
	ssdGrad := func(b, tt, h, p, g, n int) [][]int {
		return append(ssd(b, tt, h, p, g, n), []int{b, tt, h, p}, []int{b, h, p, n})
	}
	return []mbKernelCase{
		{name: "CausalConv1D", op: ops.CausalConv1DOp{}, dims: [][]int{{3, 9, 37}, {37, 4}, {37}, {3, 37, 4}}},
		{name: "CausalConv1D/lengths", op: ops.CausalConv1DOp{}, dims: [][]int{{3, 9, 37}, {37, 4}, {37}, {3, 37, 4}, {3}},
			ints: map[int][]int64{4: {9, 2, 0}}},
		{name: "CausalConv1DGrad", op: ops.CausalConv1DGradOp{},
			dims: [][]int{{3, 9, 37}, {37, 4}, {37}, {3, 37, 4}, {3, 9, 37}, {3, 37, 4}}},
		{name: "CausalConv1DGrad/lengths", op: ops.CausalConv1DGradOp{},
			dims: [][]int{{3, 9, 37}, {37, 4}, {37}, {3, 37, 4}, {3, 9, 37}, {3, 37, 4}, {3}},
			ints: map[int][]int64{6: {3, 9, 1}}},
		{name: "SSD", op: ops.SSDOp{ChunkSize: 5}, dims: ssd(2, 13, 6, 3, 2, 4), pos: []int{1}, neg: []int{2}},
		{name: "SSDStep", op: ops.SSDStepOp{}, dims: [][]int{{2, 6, 3}, {2, 6}, {6}, {2, 2, 4}, {2, 2, 4}, {6}, {2, 6, 3, 4}},
			pos: []int{1}, neg: []int{2}},
		{name: "SSDGrad/G=1", op: ops.SSDGradOp{}, dims: ssdGrad(1, 13, 6, 3, 1, 4), pos: []int{1}, neg: []int{2}},
		{name: "SSDGrad/G=2", op: ops.SSDGradOp{}, dims: ssdGrad(2, 13, 6, 3, 2, 4), pos: []int{1}, neg: []int{2}},
	}
}

// TestMambaKernelsThreadIndependent runs every Mamba kernel with 1, 2, 3 and 8 workers: the
// work splits differ (the SSD backward switches to per-part partial sums) but results agree.
func TestMambaKernelsThreadIndependent(t *testing.T) {
	for _, c := range mbKernelCases() {
		t.Run(c.name, func(t *testing.T) {
			var ref [][]float64
			for _, threads := range []int{1, 2, 3, 8} {
				be := cpu.New(threads)
				got := mbCompile(t, be, c.op, c.dims, c.ints, c.pos, c.neg, 42).results(t, be)
				be.Close()
				if ref == nil {
					ref = got
					continue
				}
				for i := range ref {
					for j := range ref[i] {
						if d := math.Abs(got[i][j] - ref[i][j]); !(d <= 1e-12*math.Max(1, math.Abs(ref[i][j]))) {
							t.Fatalf("threads=%d output %d element %d: %v, with 1 thread %v", threads, i, j, got[i][j], ref[i][j])
						}
					}
				}
			}
		})
	}
}

// TestMambaKernelsDoNotAllocate: Run allocates nothing (scratch is sized at compile time).
func TestMambaKernelsDoNotAllocate(t *testing.T) {
	be := cpu.New(2)
	defer be.Close()
	for _, c := range mbKernelCases() {
		r := mbCompile(t, be, c.op, c.dims, c.ints, c.pos, c.neg, 1)
		r.results(t, be) // warm up
		allocs := testing.AllocsPerRun(20, func() {
			if err := r.k.Run(r.in, r.out); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per Run", c.name, allocs)
		}
	}
}

// TestMambaKernelsRejectBadBuffers: wrong buffer sizes or dtypes are errors, not panics.
func TestMambaKernelsRejectBadBuffers(t *testing.T) {
	be := cpu.New(2)
	defer be.Close()
	for _, c := range mbKernelCases() {
		r := mbCompile(t, be, c.op, c.dims, c.ints, c.pos, c.neg, 1)
		small, _ := be.Alloc(shapes.Make(shapes.Float64, 1))
		f32, _ := be.Alloc(shapes.Make(shapes.Float32, r.in[0].Shape().Dims...))
		for i, bad := range []backends.Buffer{small, f32} {
			in := append([]backends.Buffer(nil), r.in...)
			in[0] = bad
			if err := r.k.Run(in, r.out); err == nil {
				t.Errorf("%s: bad buffer %d accepted", c.name, i)
			}
		}
		if err := r.k.Run(r.in[:len(r.in)-1], r.out); err == nil {
			t.Errorf("%s: missing input accepted", c.name)
		}
	}
}

func BenchmarkSSD(b *testing.B) {
	be := cpu.New(0)
	defer be.Close()
	for _, bc := range []struct {
		op   ops.Op
		t, q int
	}{{ops.SSDOp{ChunkSize: 256}, 512, 256}, {ops.SSDGradOp{}, 512, 0}} {
		const nb, h, p, g, n = 1, 24, 64, 1, 128
		dims := [][]int{{nb, bc.t, h, p}, {nb, bc.t, h}, {h}, {nb, bc.t, g, n}, {nb, bc.t, g, n}, {h}, {nb, h, p, n}}
		if bc.q == 0 {
			dims = append(dims, []int{nb, bc.t, h, p}, []int{nb, h, p, n})
		}
		r := mbCompile(b, be, bc.op, dims, nil, []int{1}, []int{2}, 1)
		b.Run(fmt.Sprintf("%s/T=%d", bc.op.Name(), bc.t), func(b *testing.B) {
			for b.Loop() {
				if err := r.k.Run(r.in, r.out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMambaKernelsStateInPlace: newState may be the state buffer itself (an in-place cache update).
func TestMambaKernelsStateInPlace(t *testing.T) {
	be := cpu.New(2)
	defer be.Close()
	stateIndex := map[string]int{"CausalConv1D": 3, "CausalConv1D/lengths": 3, "SSD": 6, "SSDStep": 6}
	for _, c := range mbKernelCases() {
		si, ok := stateIndex[c.name]
		if !ok {
			continue
		}
		r := mbCompile(t, be, c.op, c.dims, c.ints, c.pos, c.neg, 5)
		want := r.results(t, be)
		st, err := be.Alloc(r.in[si].Shape())
		if err != nil {
			t.Fatal(err)
		}
		if err := be.Copy(st, r.in[si]); err != nil {
			t.Fatal(err)
		}
		in := append([]backends.Buffer(nil), r.in...)
		in[si] = st
		out := []backends.Buffer{r.out[0], st}
		if err := r.k.Run(in, out); err != nil {
			t.Fatal(err)
		}
		for i, b := range out {
			got := make([]float64, b.Shape().Size())
			if err := be.Read(got, b); err != nil {
				t.Fatal(err)
			}
			for j := range got {
				if got[j] != want[i][j] {
					t.Fatalf("%s: output %d element %d in place: %v, want %v", c.name, i, j, got[j], want[i][j])
				}
			}
		}
	}
}
