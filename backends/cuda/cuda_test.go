package cuda_test

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/backendtest"
	"github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/backends/cuda"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/models/mamba2"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/quant"
	"github.com/mamba2go/mamba2/safetensors"
	"github.com/mamba2go/mamba2/shapes"
	"gorgonia.org/tensor"
)

// These tests run against a real GPU when one is present and skip, saying why, when not.
// TestEmulator (emulator_test.go) runs them again in a child process against a CPU emulator of
// the CUDA APIs, so that the backend is exercised on any machine with g++.

var (
	devOnce sync.Once
	dev     *cuda.Backend
	devErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if dev != nil {
		if err := dev.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "closing the cuda backend:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// device returns the shared backend or skips the test when there is no usable GPU.
func device(t *testing.T) *cuda.Backend {
	t.Helper()
	devOnce.Do(func() {
		dev, devErr = cuda.New()
		if devErr == nil {
			fmt.Fprintln(os.Stderr, "cuda backend:", dev.Info())
		}
	})
	if devErr != nil {
		if errors.Is(devErr, cuda.ErrUnavailable) {
			t.Skipf("no CUDA device: %v", devErr)
		}
		t.Fatalf("cuda.New: %v", devErr)
	}
	return dev
}

// TestUnavailable: on a machine without a usable driver, backends.New("cuda") fails with an
// error wrapping cuda.ErrUnavailable that says what is missing, and nothing panics.
func TestUnavailable(t *testing.T) {
	b, err := backends.New("cuda")
	if err == nil {
		b.Close()
		t.Skip("a CUDA device is present: nothing is unavailable")
	}
	t.Logf("backends.New(\"cuda\"): %v", err)
	if !errors.Is(err, cuda.ErrUnavailable) {
		t.Fatalf("error does not wrap cuda.ErrUnavailable: %v", err)
	}
	msg := err.Error()
	found := false
	for _, w := range []string{"libcuda.so.1 not found", "no CUDA device", "driver", "NVRTC", "linux/amd64"} {
		found = found || strings.Contains(msg, w)
	}
	if !found {
		t.Errorf("the error does not say what is missing: %v", err)
	}
	if _, err := cuda.New(); !errors.Is(err, cuda.ErrUnavailable) {
		t.Errorf("cuda.New: %v", err)
	}
	t.Logf("libraries:\n%s", cuda.Libraries())
}

func TestRegistered(t *testing.T) {
	found := false
	for _, n := range backends.Names() {
		found = found || n == "cuda"
	}
	if !found {
		t.Fatalf("cuda not registered: %v", backends.Names())
	}
}

// Tolerances against the float64 references: kernels that sum in a different order than the CPU
// backend (cuBLAS, the SSD recurrence, atomics) get a little more room in float32. No op is
// skipped: every op has a CUDA kernel, the quantized ones included.
var suiteOptions = backendtest.Options{Tol32: 2e-5, Tol64: 1e-11}

func TestCompliance(t *testing.T) {
	be := device(t)
	backendtest.Run(t, be, suiteOptions)
}

func TestGrad(t *testing.T) {
	be := device(t)
	backendtest.RunGrad(t, be, backendtest.Options{GradTol: 1e-6})
}

// TestLibraries logs what was found (scripts/gpu-check.sh greps it into its report).
func TestLibraries(t *testing.T) {
	t.Logf("libraries:\n%s", cuda.Libraries())
	if b := device(t); b != nil {
		t.Logf("device: %s", b.Info())
	}
}

// TestRunDoesNotAllocate: a compiled kernel's Run issues its launches without heap allocation.
func TestRunDoesNotAllocate(t *testing.T) {
	be := device(t)
	s := shapes.Make(shapes.Float32, 3, 4)
	k, err := be.Compile(ops.Binary{Kind: ops.AddKind}, []shapes.Shape{s, shapes.Make(shapes.Float32, 4)}, []shapes.Shape{s})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := be.Alloc(s)
	y, _ := be.Alloc(shapes.Make(shapes.Float32, 4))
	z, _ := be.Alloc(s)
	defer be.Free(x)
	defer be.Free(y)
	defer be.Free(z)
	in, out := []backends.Buffer{x, y}, []backends.Buffer{z}
	if err := k.Run(in, out); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(20, func() { k.Run(in, out) }); n > 0 {
		t.Errorf("Run allocates %v times", n)
	}
}

// TestResidentState: a state bound to a device buffer is read and written on the device across
// runs (a running sum), and only the requested output crosses to the host.
func TestResidentState(t *testing.T) {
	be := device(t)
	s := shapes.Make(shapes.Float64, 5)
	g := graph.New()
	st := g.State("acc", s)
	x := g.Input("x", s)
	next := ops.Add(st, x)
	g.SetState("acc", next)
	g.Output("y", ops.Scale(next, 2))
	p, err := g.Compile(be, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := 1; i <= 3; i++ {
		if err := p.SetInput("x", []float64{1, 2, 3, 4, 5}); err != nil {
			t.Fatal(err)
		}
		if err := p.Run(); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]float64, 5)
	if err := p.ReadOutput("y", got); err != nil {
		t.Fatal(err)
	}
	for j, v := range got {
		if want := 2 * 3 * float64(j+1); v != want {
			t.Fatalf("y = %v, want 6·(1..5)", got)
		}
	}
}

// ---- Golden parity on the Hugging Face Mamba2 cases ----

const parityTol = 1e-3

func caseDir(name string) string { return filepath.Join("..", "..", "testdata", "hf-mamba2", name) }

func maxDiff(a *tensor.Dense, b []float32) (float64, error) {
	if a == nil {
		return 0, errors.New("nil result")
	}
	d, ok := a.Data().([]float32)
	if !ok {
		return 0, fmt.Errorf("result holds %T", a.Data())
	}
	if len(d) != len(b) {
		return 0, fmt.Errorf("%d values, want %d", len(d), len(b))
	}
	m := 0.0
	for i := range d {
		m = math.Max(m, math.Abs(float64(d[i])-float64(b[i])))
	}
	return m, nil
}

func TestGoldenParity(t *testing.T) {
	be := device(t)
	cpuBe := cpu.New(0)
	defer cpuBe.Close()
	testQuantizedParity(t, be, cpuBe)
	for _, name := range []string{"tiny", "groups"} {
		t.Run(name, func(t *testing.T) {
			f, err := safetensors.Open(filepath.Join(caseDir(name), "case.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			idsData, idsShape, err := f.Int64("input_ids")
			if err != nil {
				t.Fatal(err)
			}
			B, T := idsShape[0], idsShape[1]
			load := func(b backends.Backend) *mamba2.Model {
				m, err := mamba2.Load(b, caseDir(name), mamba2.Options{DType: shapes.Float32})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close() })
				return m
			}
			mg, mc := load(be), load(cpuBe)
			full := func(m *mamba2.Model) *tensor.Dense {
				s, err := m.NewSession(B)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				res, err := s.Feed(tensor.New(tensor.WithShape(B, T), tensor.WithBacking(append([]int64(nil), idsData...))))
				if err != nil {
					t.Fatal(err)
				}
				return res.Logits
			}
			lg, lc := full(mg), full(mc)
			want, _, err := f.Float32("logits_full")
			if err != nil {
				t.Fatal(err)
			}
			dg, err := maxDiff(lg, want)
			if err != nil {
				t.Fatal(err)
			}
			dc, err := maxDiff(lg, lc.Data().([]float32))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("full forward logits: max |cuda − golden| %.2e, max |cuda − cpu| %.2e", dg, dc)
			if dg > parityTol || dc > parityTol {
				t.Errorf("logits differ beyond %.0e", parityTol)
			}

			// Prefill then one step at a time: the cache lives on the device between calls.
			P, _, _ := f.Int64("trace_prefill_len")
			K, _, _ := f.Int64("trace_num_steps")
			steps, stepShape, err := f.Float32("logits_step")
			if err != nil {
				t.Fatal(err)
			}
			rows := func(lo, hi int) [][]int { return tokenRows(idsData, B, T, lo, hi) }
			s, err := mg.NewSession(B)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.FeedTokens(rows(0, int(P[0]))); err != nil {
				t.Fatal(err)
			}
			V := stepShape[2]
			worst := 0.0
			for i := 0; i < int(K[0]); i++ {
				res, err := s.FeedTokens(rows(int(P[0])+i, int(P[0])+i+1))
				if err != nil {
					t.Fatal(err)
				}
				d, err := maxDiff(res.Logits, steps[i*B*V:(i+1)*B*V])
				if err != nil {
					t.Fatal(err)
				}
				worst = math.Max(worst, d)
			}
			t.Logf("prefill %d + %d steps: max |cuda − golden| %.2e", P[0], K[0], worst)
			if worst > parityTol {
				t.Errorf("step logits differ beyond %.0e", parityTol)
			}
		})
	}
}

// TestGoldenParity's quantized cases: the tiny model with its large matrices in bfloat16,
// float16 or int8 (QuantGather for the embeddings, QuantMatMul with many rows of x for the full
// forward and the prefill, with one row per sequence for the steps), against the cpu backend
// loading the same checkpoint with the same format.
func testQuantizedParity(t *testing.T, be backends.Backend, cpuBe backends.Backend) {
	const name = "tiny"
	f, err := safetensors.Open(filepath.Join(caseDir(name), "case.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	idsData, idsShape, err := f.Int64("input_ids")
	if err != nil {
		t.Fatal(err)
	}
	B, T := idsShape[0], idsShape[1]
	for _, format := range []quant.Format{quant.BF16, quant.F16, quant.Int8} {
		t.Run(name+"-"+format.String(), func(t *testing.T) {
			load := func(b backends.Backend) *mamba2.Model {
				m, err := mamba2.Load(b, caseDir(name), mamba2.Options{Weights: format})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close() })
				if m.WeightFormat() != format {
					t.Fatalf("loaded with weights %s, want %s", m.WeightFormat(), format)
				}
				return m
			}
			mg, mc := load(be), load(cpuBe)
			full := func(m *mamba2.Model) []float32 {
				s, err := m.NewSession(B)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				res, err := s.Feed(tensor.New(tensor.WithShape(B, T), tensor.WithBacking(append([]int64(nil), idsData...))))
				if err != nil {
					t.Fatal(err)
				}
				return append([]float32(nil), res.Logits.Data().([]float32)...)
			}
			lc := full(mc)
			d, err := maxDiff(tensor.New(tensor.WithShape(len(lc)), tensor.WithBacking(full(mg))), lc)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("full forward logits (%d tokens): max |cuda − cpu| %.2e", B*T, d)
			if !(d <= parityTol) {
				t.Errorf("logits differ beyond %.0e", parityTol)
			}

			// Prefill then one token at a time, both backends in step.
			P, K := T/2, T-T/2
			rows := func(lo, hi int) [][]int { return tokenRows(idsData, B, T, lo, hi) }
			sg, err := mg.NewSession(B)
			if err != nil {
				t.Fatal(err)
			}
			defer sg.Close()
			sc, err := mc.NewSession(B)
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			worst := 0.0
			for i := -1; i < K; i++ {
				lo, hi := P+i, P+i+1
				if i < 0 {
					lo, hi = 0, P
				}
				rg, err := sg.FeedTokens(rows(lo, hi))
				if err != nil {
					t.Fatal(err)
				}
				rc, err := sc.FeedTokens(rows(lo, hi))
				if err != nil {
					t.Fatal(err)
				}
				d, err := maxDiff(rg.Logits, rc.Logits.Data().([]float32))
				if err != nil {
					t.Fatal(err)
				}
				worst = math.Max(worst, d)
			}
			t.Logf("prefill %d + %d steps: max |cuda − cpu| %.2e", P, K, worst)
			if !(worst <= parityTol) {
				t.Errorf("prefill and step logits differ beyond %.0e", parityTol)
			}
		})
	}
}

var writePTX = flag.String("write-ptx", "", "TestWritePTX: directory to write the modules' PTX into (backends/cuda/ptx to ship them)")

// TestWritePTX regenerates the shipped PTX (only with -args -write-ptx=DIR, on a machine with NVRTC).
func TestWritePTX(t *testing.T) {
	if *writePTX == "" {
		t.Skip("run with -args -write-ptx=ptx to regenerate ptx/")
	}
	if err := os.MkdirAll(*writePTX, 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := cuda.WritePTX(*writePTX)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %v", files)
}

// TestHostTransfersDoNotAllocate: Write and Read, the per-step host crossings of a decode loop,
// do not allocate.
func TestHostTransfersDoNotAllocate(t *testing.T) {
	be := device(t)
	buf, err := be.Alloc(shapes.Make(shapes.Float32, 16))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Free(buf)
	var host any = make([]float32, 16)
	if n := testing.AllocsPerRun(20, func() {
		be.Write(buf, host)
		be.Read(host, buf)
	}); n > 0 {
		t.Errorf("Write+Read allocate %v times", n)
	}
}

// TestCompareFiles compares the float tensors of two safetensors files named by
// $MAMBA2_CUDA_COMPARE_A and $MAMBA2_CUDA_COMPARE_B (scripts/gpu-check.sh: `mamba2 logits` on
// cuda against cpu): every tensor of A must be in B and agree within 1e-3 (absolute).
func TestCompareFiles(t *testing.T) {
	pa, pb := os.Getenv("MAMBA2_CUDA_COMPARE_A"), os.Getenv("MAMBA2_CUDA_COMPARE_B")
	if pa == "" || pb == "" {
		t.Skip("set MAMBA2_CUDA_COMPARE_A and MAMBA2_CUDA_COMPARE_B to compare two files")
	}
	fa, err := safetensors.Open(pa)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := safetensors.Open(pb)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range fa.Names() {
		info, _ := fa.Info(name)
		if !safetensors.IsFloat(info.DType) {
			continue
		}
		a, sa, err := fa.Float64(name)
		if err != nil {
			t.Fatal(err)
		}
		b, sb, err := fb.Float64(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fmt.Sprint(sa) != fmt.Sprint(sb) {
			t.Errorf("%s: shapes %v and %v", name, sa, sb)
			continue
		}
		worst := 0.0
		for i := range a {
			worst = math.Max(worst, math.Abs(a[i]-b[i]))
		}
		t.Logf("%s %v: max |a − b| = %.3e", name, sa, worst)
		if !(worst <= parityTol) {
			t.Errorf("%s differs by %.3e (> %.0e)", name, worst, parityTol)
		}
	}
}

// TestStepLoopDoesNotAllocate: the decode path (upload tokens, run, read logits) stays
// allocation-free across garbage collections, with float32 and with quantized weights.
func TestStepLoopDoesNotAllocate(t *testing.T) {
	be := device(t)
	for _, format := range []quant.Format{quant.F32, quant.BF16, quant.Int8} {
		t.Run(format.String(), func(t *testing.T) {
			m, err := mamba2.Load(be, caseDir("tiny"), mamba2.Options{DType: shapes.Float32, Weights: format})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			s, err := m.NewSession(2)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			tokens := []int64{3, 5}
			logits := make([]float32, 2*m.Config.VocabSize)
			step := func() {
				if err := s.Step(tokens, logits); err != nil {
					t.Fatal(err)
				}
			}
			step()
			var total float64
			for i := 0; i < 3; i++ {
				runtime.GC()
				total += testing.AllocsPerRun(10, step)
			}
			if total > 0 {
				t.Errorf("Session.Step allocates (%v per step over three GC cycles)", total/3)
			}
		})
	}
}

// TestConcurrentPrograms runs programs on the same backend from several goroutines at once: each
// binds the context to its own thread, and cuBLAS calls are serialised.
func TestConcurrentPrograms(t *testing.T) {
	be := device(t)
	const workers, runs = 4, 10
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			errs <- func() error {
				g := graph.New()
				a := g.Input("a", shapes.Make(shapes.Float64, 3, 4))
				b := g.Input("b", shapes.Make(shapes.Float64, 4, 2))
				g.Output("y", ops.Softmax(ops.AddConst(ops.MatMul(a, b), float64(w)), -1))
				p, err := g.Compile(be, nil)
				if err != nil {
					return err
				}
				defer p.Close()
				av := make([]float64, 12)
				bv := make([]float64, 8)
				for i := range av {
					av[i] = float64(i%5) * 0.25
				}
				for i := range bv {
					bv[i] = float64(i%3) - 1
				}
				got := make([]float64, 6)
				for r := 0; r < runs; r++ {
					if err := p.SetInput("a", av); err != nil {
						return err
					}
					if err := p.SetInput("b", bv); err != nil {
						return err
					}
					if err := p.Run(); err != nil {
						return err
					}
					if err := p.ReadOutput("y", got); err != nil {
						return err
					}
					for i := 0; i < 3; i++ {
						var z [2]float64
						for j := 0; j < 2; j++ {
							for k := 0; k < 4; k++ {
								z[j] += av[i*4+k] * bv[k*2+j]
							}
						}
						e := 1 / (1 + math.Exp(z[1]-z[0]))
						if math.Abs(got[i*2]-e) > 1e-12 || math.Abs(got[i*2+1]-(1-e)) > 1e-12 {
							return fmt.Errorf("worker %d run %d row %d: got %v, want [%v %v]", w, r, i, got[i*2:i*2+2], e, 1-e)
						}
					}
				}
				return nil
			}()
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestMatMulPathsMatchCPU compares MatMul with the cpu backend over shapes that take each route:
// one GEMM, batches folded into M, GEMV for one row, batched GEMM with broadcasting, with every
// combination of transposes.
func TestMatMulPathsMatchCPU(t *testing.T) {
	be := device(t)
	ref := cpu.New(1)
	defer ref.Close()
	shapesAB := [][2][]int{
		{{1, 7}, {7, 9}},          // GEMV
		{{1, 1, 6}, {6, 5}},       // GEMV with a unit batch
		{{4, 3, 6}, {6, 5}},       // folded batch
		{{4, 3, 6}, {4, 6, 5}},    // batched
		{{2, 1, 3, 6}, {3, 6, 5}}, // batched, broadcast both ways
		{{5, 6}, {2, 6, 4}},       // shared A
	}
	for _, ab := range shapesAB {
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				a, b := append([]int(nil), ab[0]...), append([]int(nil), ab[1]...)
				if ta {
					a[len(a)-1], a[len(a)-2] = a[len(a)-2], a[len(a)-1]
				}
				if tb {
					b[len(b)-1], b[len(b)-2] = b[len(b)-2], b[len(b)-1]
				}
				name := fmt.Sprintf("%v%v-ta=%v-tb=%v", a, b, ta, tb)
				t.Run(name, func(t *testing.T) {
					run := func(x backends.Backend) []float64 {
						g := graph.New()
						na := g.Input("a", shapes.Make(shapes.Float64, a...))
						nb := g.Input("b", shapes.Make(shapes.Float64, b...))
						y := ops.MatMulT(na, nb, ta, tb)
						g.Output("y", y)
						p, err := g.Compile(x, nil)
						if err != nil {
							t.Fatal(err)
						}
						defer p.Close()
						fill := func(dims []int, seed float64) []float64 {
							n := 1
							for _, d := range dims {
								n *= d
							}
							v := make([]float64, n)
							for i := range v {
								v[i] = math.Sin(seed + float64(i)*0.37)
							}
							return v
						}
						if err := p.SetInput("a", fill(a, 1)); err != nil {
							t.Fatal(err)
						}
						if err := p.SetInput("b", fill(b, 2)); err != nil {
							t.Fatal(err)
						}
						if err := p.Run(); err != nil {
							t.Fatal(err)
						}
						out := make([]float64, y.Shape().Size())
						if err := p.ReadOutput("y", out); err != nil {
							t.Fatal(err)
						}
						return out
					}
					got, want := run(be), run(ref)
					for i := range want {
						if math.Abs(got[i]-want[i]) > 1e-12 {
							t.Fatalf("element %d: cuda %v, cpu %v", i, got[i], want[i])
						}
					}
				})
			}
		}
	}
}

// tokenRows returns columns [lo,hi) of a row-major [B, T] batch of token ids, one slice per row:
// the argument FeedTokens takes.
func tokenRows(ids []int64, B, T, lo, hi int) [][]int {
	r := make([][]int, B)
	for b := range r {
		for t := lo; t < hi; t++ {
			r[b] = append(r[b], int(ids[b*T+t]))
		}
	}
	return r
}
