package cuda

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mamba2go/mamba2/backends/cpu"
)

// TestKernelsCoverCPUOps fails when the cpu backend has a kernel this backend lacks: adding an op
// means adding its CUDA kernel.
func TestKernelsCoverCPUOps(t *testing.T) {
	var missing []string
	for _, op := range cpu.Ops() {
		if _, ok := compilers[op]; !ok {
			missing = append(missing, op)
		}
	}
	if len(missing) > 0 {
		t.Errorf("ops with a cpu kernel but no cuda kernel: %v", missing)
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
