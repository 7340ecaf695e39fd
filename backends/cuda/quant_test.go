package cuda_test

import (
	"fmt"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/backends/cuda"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/quant"
	"github.com/mamba2go/mamba2/shapes"
)

// runKernel compiles op for the shapes of in and out on b, uploads in, runs it twice (a kernel
// must overwrite its outputs) and returns the first output as float32.
func runKernel(t *testing.T, b backends.Backend, op backends.Op, in []shapes.Shape, data []any, out shapes.Shape) []float32 {
	t.Helper()
	k, err := b.Compile(op, in, []shapes.Shape{out})
	if err != nil {
		t.Fatalf("%s: Compile: %v", b.Name(), err)
	}
	if c, ok := k.(io.Closer); ok {
		defer c.Close()
	}
	var bufs []backends.Buffer
	for i, s := range in {
		buf, err := b.Alloc(s)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Free(buf)
		if err := b.Write(buf, data[i]); err != nil {
			t.Fatalf("%s: Write %s: %v", b.Name(), s, err)
		}
		bufs = append(bufs, buf)
	}
	y, err := b.Alloc(out)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free(y)
	for r := 0; r < 2; r++ {
		if err := k.Run(bufs, []backends.Buffer{y}); err != nil {
			t.Fatalf("%s: Run: %v", b.Name(), err)
		}
	}
	got := make([]float32, out.Size())
	if err := b.Read(got, y); err != nil {
		t.Fatal(err)
	}
	return got
}

// quantized returns w [n, k] in format f as the inputs QuantMatMul takes after x (shapes, host
// data) and its dequantized float64 values.
func quantized(t *testing.T, f quant.Format, w []float32, n, k int) ([]shapes.Shape, []any, []float64) {
	t.Helper()
	data, scale, err := f.Quantize(w, k)
	if err != nil {
		t.Fatal(err)
	}
	deq := make([]float32, len(w))
	switch d := data.(type) {
	case []uint16:
		if f == quant.BF16 {
			err = quant.DequantizeBF16(deq, d)
		} else {
			err = quant.DequantizeF16(deq, d)
		}
	case []int8:
		err = quant.DequantizeInt8Rows(deq, d, scale, k)
	}
	if err != nil {
		t.Fatal(err)
	}
	w64 := make([]float64, len(deq))
	for i, v := range deq {
		w64[i] = float64(v)
	}
	in := []shapes.Shape{shapes.Make(f.DType(), n, k)}
	vals := []any{data}
	if scale != nil {
		in = append(in, shapes.Make(shapes.Float32, n))
		vals = append(vals, scale)
	}
	return in, vals, w64
}

// TestQuantMatMulPathsMatchCPU compares QuantMatMul with the cpu backend on every route: the
// mat-vec kernel up to 8 rows of x (K a whole number of 16-byte loads or not), then dequantized
// panels and cuBLAS (or the built-in quantized GEMM without cuBLAS), with the panel bound lowered
// so that W spans several panels, the last one partial.
func TestQuantMatMulPathsMatchCPU(t *testing.T) {
	be := device(t)
	ref := cpu.New(1)
	defer ref.Close()
	defer cuda.SetQuantPanelBytes(cuda.SetQuantPanelBytes(4 * 40 * 10)) // K=40: 10 rows, K=64: 6
	for _, f := range []quant.Format{quant.BF16, quant.F16, quant.Int8} {
		for _, m := range []int{1, 3, 8, 9, 40} {
			for _, kn := range [][2]int{{7, 37}, {40, 37}, {64, 13}, {64, 1}, {48, 5}} {
				k, n := kn[0], kn[1]
				t.Run(fmt.Sprintf("QuantMatMul/%s/m%d-k%d-n%d", f, m, k, n), func(t *testing.T) {
					x := make([]float32, m*k)
					for i := range x {
						x[i] = float32(math.Sin(0.7 + float64(i)*0.37))
					}
					w := make([]float32, n*k)
					for i := range w {
						w[i] = float32(1.5 * math.Cos(0.3+float64(i)*0.91))
					}
					wIn, wData, w64 := quantized(t, f, w, n, k)
					in := append([]shapes.Shape{shapes.Make(shapes.Float32, m, k)}, wIn...)
					data := append([]any{x}, wData...)
					out := shapes.Make(shapes.Float32, m, n)
					got := runKernel(t, be, ops.QuantMatMulOp{}, in, data, out)
					want := runKernel(t, ref, ops.QuantMatMulOp{}, in, data, out)
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							// Two float32 sums of K products, in different orders: each within
							// about K·2⁻²⁴·Σ|x·w| of the exact value.
							var abs float64
							for p := 0; p < k; p++ {
								abs += math.Abs(float64(x[i*k+p]) * w64[j*k+p])
							}
							tol := float64(2*k+2) * math.Ldexp(abs, -24)
							g, c := float64(got[i*n+j]), float64(want[i*n+j])
							if !(math.Abs(g-c) <= tol) {
								t.Fatalf("y[%d,%d]: cuda %v, cpu %v (tolerance %.2g)", i, j, g, c, tol)
							}
						}
					}
				})
			}
		}
	}
}

// TestQuantWidening gathers every bfloat16 and float16 bit pattern (subnormals, infinities and
// NaN payloads included) and every int8 value under several scales, and wants package quant's
// float32 values bit for bit.
func TestQuantWidening(t *testing.T) {
	be := device(t)
	const rows, d = 1024, 64
	idx := make([]int64, rows)
	for i := range idx {
		idx[i] = int64(rows - 1 - i) // reversed: the output row is not the table row
	}
	idxShape := shapes.Make(shapes.Int64, rows)
	out := shapes.Make(shapes.Float32, rows, d)
	for _, c := range []struct {
		dt    shapes.DType
		widen func(uint16) float32
	}{{shapes.BFloat16, quant.BF16ToFloat32}, {shapes.Float16, quant.F16ToFloat32}} {
		table := make([]uint16, rows*d)
		for i := range table {
			table[i] = uint16(i)
		}
		in := []shapes.Shape{shapes.Make(c.dt, rows, d), idxShape}
		got := runKernel(t, be, ops.QuantGatherOp{}, in, []any{table, idx}, out)
		bad := 0
		for i := 0; i < rows; i++ {
			for j := 0; j < d; j++ {
				h := table[int(idx[i])*d+j]
				want := c.widen(h)
				if g := got[i*d+j]; math.Float32bits(g) != math.Float32bits(want) {
					if bad++; bad <= 5 {
						t.Errorf("%s bits %#04x: got %v (%#08x), want %v (%#08x)", c.dt, h, g, math.Float32bits(g), want, math.Float32bits(want))
					}
				}
			}
		}
		if bad > 5 {
			t.Errorf("%s: %d values wrong in all", c.dt, bad)
		}
	}

	scales := []float32{0, 1, 0.01, 3.5e-3, 1e-30}
	table := make([]int8, len(scales)*256)
	for i := range table {
		table[i] = int8(i)
	}
	ids := []int64{4, 2, 0, 3, 1, 2}
	in := []shapes.Shape{shapes.Make(shapes.Int8, len(scales), 256), shapes.Make(shapes.Int64, len(ids)), shapes.Make(shapes.Float32, len(scales))}
	got := runKernel(t, be, ops.QuantGatherOp{}, in, []any{table, ids, scales}, shapes.Make(shapes.Float32, len(ids), 256))
	for i, r := range ids {
		for j := 0; j < 256; j++ {
			want := scales[r] * float32(table[int(r)*256+j])
			if g := got[i*256+j]; math.Float32bits(g) != math.Float32bits(want) {
				t.Fatalf("int8 row %d column %d: got %v, want %v", r, j, g, want)
			}
		}
	}
}

// TestStorageWriteRange fills bfloat16 and int8 buffers in pieces, as the model loader does
// through backends.RangeWriter, and reads them back: the offsets are in elements of 2 and 1 bytes.
func TestStorageWriteRange(t *testing.T) {
	be := device(t)
	for _, c := range []struct {
		s            shapes.Shape
		first, piece any // the whole buffer, then a piece written at offset 3
		want         any
	}{
		{shapes.Make(shapes.BFloat16, 9), []uint16{1, 2, 3, 4, 5, 6, 7, 8, 9}, []uint16{0xffff, 0x8000, 0x7f80},
			[]uint16{1, 2, 3, 0xffff, 0x8000, 0x7f80, 7, 8, 9}},
		{shapes.Make(shapes.Int8, 9), []int8{1, 2, 3, 4, 5, 6, 7, 8, 9}, []int8{-128, -1, 127},
			[]int8{1, 2, 3, -128, -1, 127, 7, 8, 9}},
	} {
		buf, err := be.Alloc(c.s)
		if err != nil {
			t.Fatal(err)
		}
		if err := be.WriteRange(buf, 0, c.first); err != nil {
			t.Fatalf("%s: WriteRange at 0: %v", c.s, err)
		}
		if err := be.WriteRange(buf, 3, c.piece); err != nil {
			t.Fatalf("%s: WriteRange at 3: %v", c.s, err)
		}
		var got any = make([]int8, 9)
		if _, ok := c.want.([]uint16); ok {
			got = make([]uint16, 9)
		}
		if err := be.Read(got, buf); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: read back %v, want %v", c.s, got, c.want)
		}
		if err := be.WriteRange(buf, 7, c.piece); err == nil || !strings.Contains(err.Error(), "[7, 10)") {
			t.Errorf("%s: WriteRange past the end: %v", c.s, err)
		}
		if err := be.WriteRange(buf, 0, []float32{1}); err == nil || !strings.Contains(err.Error(), c.s.DType.String()) {
			t.Errorf("%s: WriteRange of []float32: %v (want an error naming %s)", c.s, err, c.s.DType)
		}
		be.Free(buf)
	}
}
