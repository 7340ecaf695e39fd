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

// Tests of the matrix-product SSD and the vectorised SSDStep at Mamba2-like sizes (full GEMM
// tiles, several row blocks per chunk, groups, strong and weak decay, padding tokens) against
// the per-token recurrence in float64.

type mfCase struct {
	b, t, h, p, g, n, chunk int
	aLo, aHi                float64 // range of A
	state, pad              bool    // random initial state; dt = 0 (with huge x) on some tokens
}

func mfInputs(c mfCase, seed uint64) [][]float64 {
	rng := rand.New(rand.NewPCG(seed, 9))
	u := func(n int, lo, hi float64) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = lo + (hi-lo)*rng.Float64()
		}
		return v
	}
	x := u(c.b*c.t*c.h*c.p, -1, 1)
	dt := u(c.b*c.t*c.h, 0.05, 0.8)
	if c.pad {
		for i := range dt {
			if rng.IntN(7) == 0 {
				dt[i] = 0
				for p := 0; p < c.p; p++ {
					x[i*c.p+p] = 1e30
				}
			}
		}
	}
	st := make([]float64, c.b*c.h*c.p*c.n)
	if c.state {
		st = u(len(st), -1, 1)
	}
	return [][]float64{x, dt, u(c.h, c.aLo, c.aHi), u(c.b*c.t*c.g*c.n, -1, 1), u(c.b*c.t*c.g*c.n, -1, 1),
		u(c.h, -1, 1), st}
}

// mfRef is the per-token recurrence.
func mfRef(c mfCase, v [][]float64) (y, s []float64) {
	x, dt, a, bm, cm, d := v[0], v[1], v[2], v[3], v[4], v[5]
	y = make([]float64, len(x))
	s = append([]float64(nil), v[6]...)
	for b := 0; b < c.b; b++ {
		for h := 0; h < c.h; h++ {
			g := h / (c.h / c.g)
			S := s[(b*c.h+h)*c.p*c.n:][:c.p*c.n]
			for t := 0; t < c.t; t++ {
				dtv := dt[(b*c.t+t)*c.h+h]
				decay := math.Exp(dtv * a[h])
				bo := ((b*c.t+t)*c.g + g) * c.n
				for p := 0; p < c.p; p++ {
					xv := x[((b*c.t+t)*c.h+h)*c.p+p]
					f := 0.0
					if dtv != 0 {
						f = dtv * xv
					}
					acc := 0.0
					for n := 0; n < c.n; n++ {
						S[p*c.n+n] = decay*S[p*c.n+n] + f*bm[bo+n]
						acc += S[p*c.n+n] * cm[bo+n]
					}
					y[((b*c.t+t)*c.h+h)*c.p+p] = acc + d[h]*xv
				}
			}
		}
	}
	return y, s
}

func mfRun(t *testing.T, dtype shapes.DType, threads int, op ops.Op, dims [][]int, v [][]float64) [][]float64 {
	t.Helper()
	be := cpu.New(threads)
	defer be.Close()
	in := make([]shapes.Shape, len(dims))
	for i, d := range dims {
		in[i] = shapes.Make(dtype, d...)
	}
	out, err := op.Infer(in)
	if err != nil {
		t.Fatal(err)
	}
	k, err := be.Compile(op, in, out)
	if err != nil {
		t.Fatal(err)
	}
	conv := func(f []float64) any {
		if dtype == shapes.Float64 {
			return f
		}
		r := make([]float32, len(f))
		for i, x := range f {
			r[i] = float32(x)
		}
		return r
	}
	var ib, ob []backends.Buffer
	for i, s := range in {
		b, _ := be.Alloc(s)
		if err := be.Write(b, conv(v[i])); err != nil {
			t.Fatal(err)
		}
		ib = append(ib, b)
	}
	for _, s := range out {
		b, _ := be.Alloc(s)
		ob = append(ob, b)
	}
	if err := k.Run(ib, ob); err != nil {
		t.Fatal(err)
	}
	res := make([][]float64, len(ob))
	for i, b := range ob {
		n := b.Shape().Size()
		res[i] = make([]float64, n)
		if dtype == shapes.Float64 {
			if err := be.Read(res[i], b); err != nil {
				t.Fatal(err)
			}
			continue
		}
		f := make([]float32, n)
		if err := be.Read(f, b); err != nil {
			t.Fatal(err)
		}
		for j, x := range f {
			res[i][j] = float64(x)
		}
	}
	return res
}

// mfClose compares with an error relative to max(1, |want|) and, for float32, to the largest
// |want| of the output (sums of many terms cancel).
func mfClose(t *testing.T, want, got []float64, tol float64, what string) {
	t.Helper()
	scale := 1.0
	for _, w := range want {
		scale = math.Max(scale, math.Abs(w))
	}
	for i := range want {
		e := math.Abs(got[i]-want[i]) / math.Max(1, math.Abs(want[i]))
		if tol > 1e-8 {
			e = math.Min(e, math.Abs(got[i]-want[i])/scale)
		}
		if !(e <= tol) {
			t.Fatalf("%s: element %d: got %v, want %v (error %.3g > %.1g)", what, i, got[i], want[i], e, tol)
		}
	}
}

func TestSSDMatrixFormMatchesRecurrence(t *testing.T) {
	// Strong decay: diagonal blocks factored; extreme: their decay range passes ssdMaxExp (one
	// exponential per entry); mixed sign: A slightly positive on some heads.
	strong, weak, extreme, mixed := [2]float64{-1.5, -0.2}, [2]float64{-0.05, -0.005}, [2]float64{-8, -4}, [2]float64{-0.01, 0.01}
	cases := []mfCase{
		{b: 1, t: 300, h: 3, p: 64, g: 1, n: 128, chunk: 256},
		{b: 1, t: 300, h: 3, p: 64, g: 1, n: 128, chunk: 256, state: true},
		{b: 2, t: 200, h: 6, p: 16, g: 3, n: 32, chunk: 128, state: true, pad: true},
		{b: 1, t: 130, h: 2, p: 20, g: 2, n: 24, chunk: 97, state: true},
		{b: 2, t: 70, h: 4, p: 8, g: 1, n: 16, chunk: 1000, pad: true},
		{b: 1, t: 5, h: 2, p: 64, g: 1, n: 128, chunk: 256, state: true},
	}
	for _, c := range cases {
		for _, ar := range [][2]float64{strong, weak, extreme, mixed} {
			c.aLo, c.aHi = ar[0], ar[1]
			name := fmt.Sprintf("%+v", c)
			v := mfInputs(c, uint64(c.t*7+c.h))
			wy, ws := mfRef(c, v)
			dims := [][]int{{c.b, c.t, c.h, c.p}, {c.b, c.t, c.h}, {c.h}, {c.b, c.t, c.g, c.n}, {c.b, c.t, c.g, c.n}, {c.h}, {c.b, c.h, c.p, c.n}}
			op := ops.SSDOp{ChunkSize: c.chunk}
			for _, threads := range []int{1, 3} {
				got := mfRun(t, shapes.Float64, threads, op, dims, v)
				mfClose(t, wy, got[0], 1e-10, name+" y float64")
				mfClose(t, ws, got[1], 1e-10, name+" state float64")
			}
			got := mfRun(t, shapes.Float32, 2, op, dims, v)
			mfClose(t, wy, got[0], 2e-5, name+" y float32")
			mfClose(t, ws, got[1], 2e-5, name+" state float32")
		}
	}
}

func TestSSDStepVectorMatchesRecurrence(t *testing.T) {
	for _, c := range []mfCase{
		{b: 2, t: 1, h: 4, p: 64, g: 2, n: 128, state: true},
		{b: 1, t: 1, h: 3, p: 5, g: 1, n: 37, state: true},
		{b: 1, t: 1, h: 2, p: 3, g: 1, n: 7, state: true},
	} {
		c.aLo, c.aHi = -1.5, -0.2
		v := mfInputs(c, 11)
		wy, ws := mfRef(c, v)
		dims := [][]int{{c.b, c.h, c.p}, {c.b, c.h}, {c.h}, {c.b, c.g, c.n}, {c.b, c.g, c.n}, {c.h}, {c.b, c.h, c.p, c.n}}
		name := fmt.Sprintf("%+v", c)
		got := mfRun(t, shapes.Float64, 2, ops.SSDStepOp{}, dims, v)
		mfClose(t, wy, got[0], 1e-12, name+" y float64")
		mfClose(t, ws, got[1], 1e-12, name+" state float64")
		got = mfRun(t, shapes.Float32, 2, ops.SSDStepOp{}, dims, v)
		mfClose(t, wy, got[0], 1e-5, name+" y float32")
		mfClose(t, ws, got[1], 1e-5, name+" state float32")
	}
}

type mfBench struct {
	name string
	op   ops.Op
	dims [][]int
}

// mfBenchCases are SSD (512 tokens) and SSDStep at the mamba2-130m layer shape, and a G = 2 SSD.
func mfBenchCases() []mfBench {
	const nb, tt, h, p, g, n = 1, 512, 24, 64, 1, 128
	return []mfBench{
		{"SSD/T=512", ops.SSDOp{ChunkSize: 256}, [][]int{{nb, tt, h, p}, {nb, tt, h}, {h}, {nb, tt, g, n}, {nb, tt, g, n}, {h}, {nb, h, p, n}}},
		{"SSDStep", ops.SSDStepOp{}, [][]int{{nb, h, p}, {nb, h}, {h}, {nb, g, n}, {nb, g, n}, {h}, {nb, h, p, n}}},
		{"SSDGrad/T=512", ops.SSDGradOp{}, [][]int{{nb, tt, h, p}, {nb, tt, h}, {h}, {nb, tt, g, n}, {nb, tt, g, n}, {h}, {nb, h, p, n},
			{nb, tt, h, p}, {nb, h, p, n}}},
		{"SSD/G=2/T=100", ops.SSDOp{ChunkSize: 64}, [][]int{{2, 100, 4, 8}, {2, 100, 4}, {4}, {2, 100, 2, 16}, {2, 100, 2, 16}, {4}, {2, 4, 8, 16}}},
	}
}

// TestMambaFloat32DoesNotAllocate: the float32 paths (GEMMs, vector loops) allocate nothing per
// Run. AllocsPerRun runs with GOMAXPROCS=1, where a worker preempted inside a GEMM makes another
// one take (and size) a fresh packing buffer from package kernels' sync.Pool; so the shapes
// keep a Run short, and a kernel passes when one of three measurements is clean.
func TestMambaFloat32DoesNotAllocate(t *testing.T) {
	if mfRace {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	be := cpu.New(2)
	defer be.Close()
	for _, bc := range []mfBench{
		{"SSD", ops.SSDOp{ChunkSize: 96}, [][]int{{1, 160, 4, 64}, {1, 160, 4}, {4}, {1, 160, 1, 128}, {1, 160, 1, 128}, {4}, {1, 4, 64, 128}}},
		mfBenchCases()[1], // SSDStep
		mfBenchCases()[3], // SSD, G = 2
		{"SSDGrad", ops.SSDGradOp{}, [][]int{{1, 16, 2, 64}, {1, 16, 2}, {2}, {1, 16, 1, 128}, {1, 16, 1, 128}, {2}, {1, 2, 64, 128},
			{1, 16, 2, 64}, {1, 2, 64, 128}}},
	} {
		k, ib, ob := mfBenchKernel(t, be, bc)
		_ = k.Run(ib, ob)
		var a float64
		for try := 0; try < 3; try++ {
			if a = testing.AllocsPerRun(5, func() { _ = k.Run(ib, ob) }); a == 0 {
				break
			}
		}
		if a != 0 {
			t.Errorf("%s: %v allocations per Run", bc.name, a)
		}
	}
}

func mfBenchKernel(tb testing.TB, be backends.Backend, bc mfBench) (backends.Kernel, []backends.Buffer, []backends.Buffer) {
	in := make([]shapes.Shape, len(bc.dims))
	for i, d := range bc.dims {
		in[i] = shapes.Make(shapes.Float32, d...)
	}
	out, _ := bc.op.Infer(in)
	k, err := be.Compile(bc.op, in, out)
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var ib, ob []backends.Buffer
	for i, s := range in {
		buf, _ := be.Alloc(s)
		v := make([]float32, s.Size())
		for j := range v {
			switch i {
			case 1:
				v[j] = 0.01 + 0.1*rng.Float32()
			case 2:
				v[j] = -1 - 15*rng.Float32()
			default:
				v[j] = 2*rng.Float32() - 1
			}
		}
		_ = be.Write(buf, v)
		ib = append(ib, buf)
	}
	for _, s := range out {
		buf, _ := be.Alloc(s)
		ob = append(ob, buf)
	}
	return k, ib, ob
}

// BenchmarkSSDFloat32 times the float32 SSD kernels (see mfBenchCases).
func BenchmarkSSDFloat32(b *testing.B) {
	be := cpu.New(0)
	defer be.Close()
	for _, bc := range mfBenchCases() {
		k, ib, ob := mfBenchKernel(b, be, bc)
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if err := k.Run(ib, ob); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCausalConvStepMatchesDefinition checks the one-token path of CausalConv1D (decoding),
// with and without lengths, against the definition, bit for bit in float64.
func TestCausalConvStepMatchesDefinition(t *testing.T) {
	for _, nk := range []int{2, 3, 4, 5} { // 4, Mamba2's, has a path of its own
		t.Run(fmt.Sprint("width", nk), func(t *testing.T) { testCausalConvStep(t, nk) })
	}
}

func testCausalConvStep(t *testing.T, nk int) {
	const nb, nc = 2, 37
	rng := rand.New(rand.NewPCG(3, uint64(nk)))
	u := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = 2*rng.Float64() - 1
		}
		return v
	}
	x, w, bias, st := u(nb*nc), u(nc*nk), u(nc), u(nb*nc*nk)
	for _, lens := range [][]int64{nil, {1, 0}} {
		wantY, wantS := make([]float64, nb*nc), make([]float64, nb*nc*nk)
		for b := 0; b < nb; b++ {
			for c := 0; c < nc; c++ {
				s := st[(b*nc+c)*nk : (b*nc+c+1)*nk]
				if lens != nil && lens[b] == 0 {
					copy(wantS[(b*nc+c)*nk:], s)
					continue
				}
				acc := bias[c]
				for j := 0; j < nk-1; j++ {
					acc += w[c*nk+j] * s[j+1]
				}
				wantY[b*nc+c] = acc + w[c*nk+nk-1]*x[b*nc+c]
				copy(wantS[(b*nc+c)*nk:], s[1:])
				wantS[(b*nc+c)*nk+nk-1] = x[b*nc+c]
			}
		}
		be := cpu.New(2)
		in := []shapes.Shape{shapes.Make(shapes.Float64, nb, 1, nc), shapes.Make(shapes.Float64, nc, nk),
			shapes.Make(shapes.Float64, nc), shapes.Make(shapes.Float64, nb, nc, nk)}
		vals := []any{x, w, bias, st}
		if lens != nil {
			in = append(in, shapes.Make(shapes.Int64, nb))
			vals = append(vals, lens)
		}
		op := ops.CausalConv1DOp{}
		out, err := op.Infer(in)
		if err != nil {
			t.Fatal(err)
		}
		k, err := be.Compile(op, in, out)
		if err != nil {
			t.Fatal(err)
		}
		var ib, ob []backends.Buffer
		for i, s := range in {
			buf, _ := be.Alloc(s)
			if err := be.Write(buf, vals[i]); err != nil {
				t.Fatal(err)
			}
			ib = append(ib, buf)
		}
		for _, s := range out {
			buf, _ := be.Alloc(s)
			ob = append(ob, buf)
		}
		ob[1] = ib[3] // in place, as a decoding cache does
		if err := k.Run(ib, ob); err != nil {
			t.Fatal(err)
		}
		gotY, gotS := make([]float64, nb*nc), make([]float64, nb*nc*nk)
		_ = be.Read(gotY, ob[0])
		_ = be.Read(gotS, ob[1])
		be.Close()
		for i := range wantY {
			if gotY[i] != wantY[i] {
				t.Fatalf("lens %v: y[%d] = %v, want %v", lens, i, gotY[i], wantY[i])
			}
		}
		for i := range wantS {
			if gotS[i] != wantS[i] {
				t.Fatalf("lens %v: state[%d] = %v, want %v", lens, i, gotS[i], wantS[i])
			}
		}
	}
}

// TestSSDGradFloat32MatchesFloat64 runs SSDGrad's vectorised float32 rows (full vectors and
// tails) against the float64 kernel.
func TestSSDGradFloat32MatchesFloat64(t *testing.T) {
	for _, c := range []mfCase{
		{b: 1, t: 20, h: 2, p: 64, g: 1, n: 128, state: true},
		{b: 2, t: 9, h: 4, p: 5, g: 2, n: 37, state: true},
	} {
		c.aLo, c.aHi = -1.5, -0.2
		v := mfInputs(c, 21)
		gv := mfInputs(mfCase{b: c.b, t: c.t, h: c.h, p: c.p, g: c.g, n: c.n, aLo: -1, aHi: -1, state: true}, 22)
		v = append(v, gv[0], gv[6]) // gy, gNewState
		ssd := [][]int{{c.b, c.t, c.h, c.p}, {c.b, c.t, c.h}, {c.h}, {c.b, c.t, c.g, c.n}, {c.b, c.t, c.g, c.n}, {c.h}, {c.b, c.h, c.p, c.n}}
		dims := append(ssd, []int{c.b, c.t, c.h, c.p}, []int{c.b, c.h, c.p, c.n})
		want := mfRun(t, shapes.Float64, 2, ops.SSDGradOp{}, dims, v)
		got := mfRun(t, shapes.Float32, 2, ops.SSDGradOp{}, dims, v)
		for i := range want {
			mfClose(t, want[i], got[i], 1e-4, fmt.Sprintf("%+v output %d", c, i))
		}
	}
}
