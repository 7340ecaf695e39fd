package cuda

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

// cpuOnlyOps would list ops that have a cpu kernel and, knowingly, no CUDA kernel yet; Compile
// refuses such an op with an error wrapping backends.ErrUnsupported that names it
// (TestCompileUnknownOp). Every cpu op has a CUDA kernel today.
var cpuOnlyOps []string

// TestKernelsCoverCPUOps fails when the cpu backend has a kernel this backend lacks: adding an op
// means adding its CUDA kernel (or, knowingly, listing it in cpuOnlyOps).
func TestKernelsCoverCPUOps(t *testing.T) {
	var missing []string
	for _, op := range cpu.Ops() {
		if _, ok := compilers[op]; !ok && !slices.Contains(cpuOnlyOps, op) {
			missing = append(missing, op)
		}
	}
	if len(missing) > 0 {
		t.Errorf("ops with a cpu kernel but no cuda kernel: %v", missing)
	}
	for _, op := range cpuOnlyOps {
		if _, ok := compilers[op]; ok {
			t.Errorf("%s has a cuda kernel now: take it off cpuOnlyOps", op)
		}
		if !slices.Contains(cpu.Ops(), op) {
			t.Errorf("cpuOnlyOps lists %s, which the cpu backend does not have", op)
		}
	}
	for _, op := range []string{"QuantMatMul", "QuantGather"} {
		if !slices.Contains(Ops(), op) {
			t.Errorf("no cuda kernel for %s", op)
		}
	}
}

// noKernelOp is an op no backend has a kernel for.
type noKernelOp struct{}

func (noKernelOp) Name() string { return "NoKernelOp" }

// TestCompileUnknownOp: compiling an op without a CUDA kernel is an error wrapping
// backends.ErrUnsupported that names the op, before any device is touched (so it is checked here
// without a GPU).
func TestCompileUnknownOp(t *testing.T) {
	f32 := shapes.Make(shapes.Float32, 2)
	k, err := (&Backend{}).Compile(noKernelOp{}, []shapes.Shape{f32}, []shapes.Shape{f32})
	if err == nil || k != nil {
		t.Fatalf("Compile NoKernelOp: kernel %v, error %v", k, err)
	}
	if !errors.Is(err, backends.ErrUnsupported) || !strings.Contains(err.Error(), "NoKernelOp") {
		t.Errorf("Compile NoKernelOp: %v (want an error naming the op and wrapping ErrUnsupported)", err)
	}
}

// TestCompileQuantBadShapes: the quantized kernels check their shapes with the op's own rule
// before touching the device, and the error names the op and the dtype at fault.
func TestCompileQuantBadShapes(t *testing.T) {
	f32 := func(d ...int) shapes.Shape { return shapes.Make(shapes.Float32, d...) }
	bf := func(d ...int) shapes.Shape { return shapes.Make(shapes.BFloat16, d...) }
	for _, c := range []struct {
		op      backends.Op
		in, out []shapes.Shape
		want    string
	}{
		{ops.QuantMatMulOp{}, []shapes.Shape{f32(2, 8), f32(3, 8)}, []shapes.Shape{f32(2, 3)}, "float32"},
		{ops.QuantMatMulOp{}, []shapes.Shape{f32(2, 8), shapes.Make(shapes.Int8, 3, 8)}, []shapes.Shape{f32(2, 3)}, "int8"},
		{ops.QuantMatMulOp{}, []shapes.Shape{f32(2, 8), bf(3, 8)}, []shapes.Shape{f32(2, 4)}, "float32[2,3]"},
		{ops.QuantGatherOp{}, []shapes.Shape{shapes.Make(shapes.Float16, 5, 8), f32(2)}, []shapes.Shape{f32(2, 8)}, "int64"},
	} {
		k, err := (&Backend{}).Compile(c.op, c.in, c.out)
		if err == nil || k != nil {
			t.Fatalf("Compile %s %v → %v: kernel %v, error %v", c.op.Name(), c.in, c.out, k, err)
		}
		if msg := err.Error(); !strings.Contains(msg, c.op.Name()) || !strings.Contains(msg, c.want) {
			t.Errorf("Compile %s %v → %v: %v (want the op and %q named)", c.op.Name(), c.in, c.out, err, c.want)
		}
	}
	for _, dt := range []shapes.DType{shapes.Float32, shapes.Int64} {
		if _, err := quantSuffix(dt); err == nil || !errors.Is(err, backends.ErrUnsupported) || !strings.Contains(err.Error(), dt.String()) {
			t.Errorf("quantSuffix(%s): %v", dt, err)
		}
	}
}

// TestLaunchedKernelsExist checks, without a GPU, that every kernel the Go side launches is
// defined in the .cu file it names (both variants come from one macro: `void name_##S(`).
func TestLaunchedKernelsExist(t *testing.T) {
	files, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	constRE := regexp.MustCompile(`(\w+CU) += "(\w+\.cu)"`)
	launchRE := regexp.MustCompile(`launch3?\((\w+CU), "(\w+?)_"\+`)
	type use struct{ cnst, base, where string }
	var uses []use
	for _, f := range files {
		if !strings.HasSuffix(f.Name(), ".go") || strings.HasSuffix(f.Name(), "_test.go") {
			continue
		}
		src, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range constRE.FindAllStringSubmatch(string(src), -1) {
			consts[m[1]] = m[2]
		}
		for _, m := range launchRE.FindAllStringSubmatch(string(src), -1) {
			uses = append(uses, use{m[1], m[2], f.Name()})
		}
	}
	if len(uses) < 20 {
		t.Fatalf("found only %d launches; the pattern is stale", len(uses))
	}
	for _, u := range uses {
		file, ok := consts[u.cnst]
		if !ok {
			t.Errorf("%s: unknown module constant %s", u.where, u.cnst)
			continue
		}
		src, err := kernelFS.ReadFile("kernels/" + file)
		if err != nil {
			t.Errorf("%s: %v", u.where, err)
			continue
		}
		if !strings.Contains(string(src), "void "+u.base+"_##S(") {
			t.Errorf("%s launches %s_* but %s does not define it", u.where, u.base, file)
		}
	}
	if !slices.Contains(moduleFiles(), "mamba.cu") {
		t.Errorf("module list %v", moduleFiles())
	}
}

// TestCollapse checks the axis merging used by the strided kernels.
func TestCollapse(t *testing.T) {
	d, st := collapse([]int{2, 3, 4}, []int{12, 4, 1}, []int{0, 1, 0})
	if !slices.Equal(d, []int{2, 3, 4}) || !slices.Equal(st[0], []int{12, 4, 1}) || !slices.Equal(st[1], []int{0, 1, 0}) {
		t.Errorf("no merge expected: %v %v", d, st)
	}
	d, st = collapse([]int{2, 1, 3, 4}, []int{12, 12, 4, 1}, []int{0, 0, 0, 0})
	if !slices.Equal(d, []int{24}) || !slices.Equal(st[0], []int{1}) || !slices.Equal(st[1], []int{0}) {
		t.Errorf("full merge expected: %v %v", d, st)
	}
	if d, _ := collapse([]int{1, 1}, []int{1, 1}); len(d) != 0 {
		t.Errorf("all-ones dims should vanish: %v", d)
	}
	if got := matStrides([]int{2, 3}, []int{3}, 20); !slices.Equal(got, []int{0, 20}) {
		t.Errorf("matStrides = %v", got)
	}
	if q, b, err := ssdLayout(64, 128); err != nil || q != 4 || b != 256 {
		t.Errorf("ssdLayout(64,128) = %d, %d, %v", q, b, err)
	}
	if _, _, err := ssdLayout(1024, 1024); err == nil {
		t.Errorf("ssdLayout(1024,1024) should be unsupported")
	}
}

// TestHostBytesStorageDTypes checks, without a GPU, the host slices that Write, Read and
// WriteRange accept for the storage dtypes of quantized weights, and that a mismatch names the
// slice type the tensor wants.
func TestHostBytesStorageDTypes(t *testing.T) {
	for _, c := range []struct {
		s       shapes.Shape
		host    any
		wantErr string // "" when accepted
	}{
		{shapes.Make(shapes.BFloat16, 2, 3), make([]uint16, 6), ""},
		{shapes.Make(shapes.Float16, 6), make([]uint16, 6), ""},
		{shapes.Make(shapes.Int8, 4), make([]int8, 4), ""},
		{shapes.Make(shapes.BFloat16, 2, 3), make([]float32, 6), "[]uint16 (bfloat16 bits) of 6"},
		{shapes.Make(shapes.Float16, 6), make([]uint16, 5), "[]uint16 (float16 bits) of 6"},
		{shapes.Make(shapes.Int8, 4), make([]int8, 3), "want a []int8 of 4"},
		{shapes.Make(shapes.Int8, 4), make([]uint16, 4), "want a []int8 of 4"},
		{shapes.Make(shapes.Float32, 4), make([]uint16, 4), "host data []uint16 of 4"},
		{shapes.Make(shapes.Int8, 4), "no", "want a []int8 of 4"},
	} {
		_, err := hostBytes(c.host, c.s)
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%T for %s: %v", c.host, c.s, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%T for %s: error %v, want one saying %q", c.host, c.s, err, c.wantErr)
		}
	}
}

// TestQuantConstantsMatchKernels: the Go side launches quant_matvec for up to quantMatVecRows
// rows of x with blocks of quantMatVecThreads; the kernel's arrays are sized by QMV_MAXM and
// QMV_THREADS, so the two must agree.
func TestQuantConstantsMatchKernels(t *testing.T) {
	src, err := kernelFS.ReadFile("kernels/quant.cu")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"QMV_MAXM": quantMatVecRows, "QMV_THREADS": quantMatVecThreads} {
		m := regexp.MustCompile(`#define ` + name + ` (\d+)`).FindSubmatch(src)
		if m == nil {
			t.Errorf("quant.cu does not #define %s", name)
		} else if string(m[1]) != strconv.Itoa(want) {
			t.Errorf("quant.cu defines %s %s, the Go side uses %d", name, m[1], want)
		}
	}
}
