package cuda

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

// cpuOnlyOps have a cpu kernel and, knowingly, no CUDA kernel yet: the quantized-weight ops
// (bfloat16, float16 and int8 weights for CPU decode). Compile refuses them with an error wrapping
// backends.ErrUnsupported that names the op (TestCompileCPUOnlyOps).
var cpuOnlyOps = []string{"QuantGather", "QuantMatMul"}

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
}

// TestCompileCPUOnlyOps: compiling an op without a CUDA kernel is an error wrapping
// backends.ErrUnsupported that names the op, before any device is touched (so it is checked here
// without a GPU).
func TestCompileCPUOnlyOps(t *testing.T) {
	f32 := func(d ...int) shapes.Shape { return shapes.Make(shapes.Float32, d...) }
	for _, c := range []struct {
		op      backends.Op
		in, out []shapes.Shape
	}{
		{ops.QuantMatMulOp{}, []shapes.Shape{f32(2, 8), shapes.Make(shapes.BFloat16, 3, 8)}, []shapes.Shape{f32(2, 3)}},
		{ops.QuantGatherOp{}, []shapes.Shape{shapes.Make(shapes.Int8, 5, 8), shapes.Make(shapes.Int64, 2), f32(5)}, []shapes.Shape{f32(2, 8)}},
	} {
		k, err := (&Backend{}).Compile(c.op, c.in, c.out)
		if err == nil || k != nil {
			t.Fatalf("Compile %s: kernel %v, error %v", c.op.Name(), k, err)
		}
		if !errors.Is(err, backends.ErrUnsupported) || !strings.Contains(err.Error(), c.op.Name()) {
			t.Errorf("Compile %s: %v (want an error naming the op and wrapping ErrUnsupported)", c.op.Name(), err)
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
