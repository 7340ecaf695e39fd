package cpu_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/quant"
	"github.com/mamba2go/mamba2/shapes"
)

// quantKernel compiles a QuantMatMul of x [m, k] by a weight [n, k] in format f (F32: a float32
// MatMul with W transposed, the product the quantized one replaces) and returns it with filled
// buffers.
func quantKernel(tb testing.TB, be backends.Backend, f quant.Format, m, n, k int) (backends.Kernel, []backends.Buffer, []backends.Buffer) {
	tb.Helper()
	r := rand.New(rand.NewPCG(uint64(n), uint64(k)))
	w := make([]float32, n*k)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.05)
	}
	x := make([]float32, m*k)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	data, scale, err := f.Quantize(w, k)
	if err != nil {
		tb.Fatal(err)
	}
	var op backends.Op = ops.QuantMatMulOp{}
	if f == quant.F32 {
		op = ops.MatMulOp{TransB: true}
	}
	in := []shapes.Shape{shapes.Make(shapes.Float32, m, k), shapes.Make(f.DType(), n, k)}
	host := []any{x, data}
	if scale != nil {
		in = append(in, shapes.Make(shapes.Float32, n))
		host = append(host, scale)
	}
	out := []shapes.Shape{shapes.Make(shapes.Float32, m, n)}
	kern, err := be.Compile(op, in, out)
	if err != nil {
		tb.Fatal(err)
	}
	ib := make([]backends.Buffer, len(in))
	for i, s := range in {
		if ib[i], err = be.Alloc(s); err != nil {
			tb.Fatal(err)
		}
		if err := be.Write(ib[i], host[i]); err != nil {
			tb.Fatal(err)
		}
	}
	ob, err := be.Alloc(out[0])
	if err != nil {
		tb.Fatal(err)
	}
	return kern, ib, []backends.Buffer{ob}
}

// TestQuantDoesNotAllocate: QuantMatMul (the mat-vec and the panel paths) and QuantGather
// allocate nothing per Run: the panels' scratch is allocated at Compile. As for the Mamba
// kernels, a kernel passes when one of three measurements is clean (a preempted worker of the
// GEMM may take a fresh packing buffer from package kernels' pool).
func TestQuantDoesNotAllocate(t *testing.T) {
	if mfRace {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	be := cpu.New(2)
	defer be.Close()
	clean := func(name string, k backends.Kernel, in, out []backends.Buffer) {
		t.Helper()
		if err := k.Run(in, out); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var a float64
		for try := 0; try < 3 && (try == 0 || a != 0); try++ {
			a = testing.AllocsPerRun(5, func() { _ = k.Run(in, out) })
		}
		if a != 0 {
			t.Errorf("%s: %v allocations per Run", name, a)
		}
	}
	for _, f := range []quant.Format{quant.BF16, quant.F16, quant.Int8} {
		for _, m := range []int{1, 3, 40} {
			k, in, out := quantKernel(t, be, f, m, 700, 96)
			clean(fmt.Sprintf("QuantMatMul %v m=%d", f, m), k, in, out)
		}
		// QuantGather reads the same weight as a table.
		_, win, _ := quantKernel(t, be, f, 1, 700, 96)
		idx, err := be.Alloc(shapes.Make(shapes.Int64, 9))
		if err != nil {
			t.Fatal(err)
		}
		if err := be.Write(idx, []int64{0, 699, 5, 5, 100, 2, 3, 650, 1}); err != nil {
			t.Fatal(err)
		}
		in := append([]backends.Buffer{win[1], idx}, win[2:]...)
		shp := make([]shapes.Shape, len(in))
		for i, b := range in {
			shp[i] = b.Shape()
		}
		outS := []shapes.Shape{shapes.Make(shapes.Float32, 9, 96)}
		kern, err := be.Compile(ops.QuantGatherOp{}, shp, outS)
		if err != nil {
			t.Fatal(err)
		}
		y, err := be.Alloc(outS[0])
		if err != nil {
			t.Fatal(err)
		}
		clean(fmt.Sprintf("QuantGather %v", f), kern, in, []backends.Buffer{y})
	}
}

// BenchmarkQuantMatMul compares the decode product (M = 1: Mamba2-130m's in_proj and its
// vocabulary projection) and a prefill product (M = 512) with float32 weights (a MatMul with W
// transposed) and with bfloat16, float16 and int8 weights, on the default thread count. The
// bytes per second are those of the weights: decode is bound by them.
//
//	GOEXPERIMENT=simd go test -run XXX -bench QuantMatMul -benchtime=200ms ./backends/cpu/
func BenchmarkQuantMatMul(b *testing.B) {
	be := cpu.New(0)
	defer be.Close()
	for _, s := range []struct{ m, n, k int }{{1, 3352, 768}, {1, 50280, 768}, {512, 3352, 768}} {
		for _, f := range []quant.Format{quant.F32, quant.BF16, quant.F16, quant.Int8} {
			b.Run(fmt.Sprintf("m=%d/%dx%d/%v", s.m, s.n, s.k, f), func(b *testing.B) {
				k, in, out := quantKernel(b, be, f, s.m, s.n, s.k)
				bytes := s.n * s.k * f.DType().Size()
				if f == quant.Int8 {
					bytes += 4 * s.n
				}
				b.SetBytes(int64(bytes))
				for b.Loop() {
					if err := k.Run(in, out); err != nil {
						b.Fatal(err)
					}
				}
				if s.m > 1 {
					b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				}
			})
		}
	}
}
