package cuda_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mamba2go/mamba2/backends/cuda"
)

// envEmulated marks a child test process that runs against the emulator.
const envEmulated = "MAMBA2_CUDA_EMULATED"

// TestEmulator builds testdata/fakecuda (a CPU emulator of the CUDA driver API, NVRTC and cuBLAS:
// kernels are compiled by g++ against a shim and run block by block with fibers for threads) and
// runs this package's GPU tests in child processes against it: the compliance suite, the gradient
// checks, the golden parity and the residency tests, once with the cuBLAS path and once with the
// built-in GEMM; plus TestUnavailable with a missing driver. It needs g++; without it, it skips.
//
// What the emulator cannot show: real-GPU timing, races between warps that the emulator's
// barrier-only thread switching hides, and NVRTC dialect differences (the sources are also
// kept NVRTC-clean by hand: no headers, no host code).
func TestEmulator(t *testing.T) {
	if os.Getenv(envEmulated) != "" {
		t.Skip("already inside an emulated run")
	}
	if testing.Short() {
		t.Skip("-short: the emulator builds kernels with g++ (tens of seconds)")
	}
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skip("g++ not found: cannot build the CUDA emulator")
	}
	lib, cache := buildEmulator(t, gxx)
	runs := []struct {
		name, pattern string
		env           []string
		wantRun       bool
	}{
		{"cublas", "^(TestCompliance|TestGrad|TestGoldenParity|TestRunDoesNotAllocate|TestHostTransfersDoNotAllocate|TestStepLoopDoesNotAllocate|TestConcurrentPrograms|TestMatMulPathsMatchCPU|TestQuantMatMulPathsMatchCPU|TestQuantWidening|TestStorageWriteRange|TestResidentState)$", nil, true},
		{"builtin-gemm", "^(TestCompliance|TestGrad|TestGoldenParity|TestMatMulPathsMatchCPU|TestQuantMatMulPathsMatchCPU)$/^(MatMul|QuantMatMul|tiny|groups|\\[)", []string{cuda.EnvLibCUBLAS + "=off"}, true},
		{"no-driver", "^TestUnavailable$", []string{cuda.EnvLibCUDA + "=/nonexistent/libcuda.so.1"}, false},
		{"no-nvrtc", "^TestUnavailable$", []string{cuda.EnvLibNVRTC + "=off"}, false},
	}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			args := []string{"-test.run", r.pattern, "-test.count=1", "-test.v"}
			if d, ok := t.Deadline(); ok {
				args = append(args, "-test.timeout", time.Until(d).Round(time.Second).String())
			}
			cmd := exec.Command(os.Args[0], args...)
			cmd.Env = append(os.Environ(), envEmulated+"=1",
				cuda.EnvLibCUDA+"="+lib, cuda.EnvLibNVRTC+"="+lib, cuda.EnvLibCUBLAS+"="+lib,
				cuda.EnvCache+"=off", "FAKECUDA_CACHE="+cache)
			cmd.Env = append(cmd.Env, r.env...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			pass, fail, skip, skips := summarize(out.String())
			t.Logf("child %s: %d passed, %d failed, %d skipped in %s", r.pattern, pass, fail, skip, time.Since(start).Round(time.Millisecond))
			if err != nil || fail > 0 {
				t.Errorf("emulated run failed (%v):\n%s", err, failures(out.String()))
			}
			if r.wantRun && (pass == 0 || strings.Contains(skips, "no CUDA device")) {
				t.Errorf("the tests did not run against the emulator:\n%s", tail(out.String(), 4000))
			}
			if testing.Verbose() {
				t.Logf("child output (tail):\n%s", tail(out.String(), 3000))
			}
		})
	}
}

// buildEmulator compiles libfakecuda.so once per source version into a cache under the temp dir.
func buildEmulator(t *testing.T, gxx string) (lib, cache string) {
	t.Helper()
	src, err := filepath.Abs(filepath.Join("testdata", "fakecuda"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, f := range []string{"fakecuda.cpp", "shim.h"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	h.Write([]byte(src))
	key := hex.EncodeToString(h.Sum(nil))[:16]
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("mamba2-fakecuda-%d", os.Getuid()))
	cache = filepath.Join(dir, "modules")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	lib = filepath.Join(dir, "libfakecuda-"+key+".so")
	if _, err := os.Stat(lib); err == nil {
		return lib, cache
	}
	tmp := fmt.Sprintf("%s.%d.tmp", lib, os.Getpid())
	cmd := exec.Command(gxx, "-std=c++17", "-O1", "-shared", "-fPIC",
		`-DSHIM_PATH="`+filepath.Join(src, "shim.h")+`"`, filepath.Join(src, "fakecuda.cpp"), "-o", tmp, "-ldl")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the emulator: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, lib); err != nil {
		t.Fatal(err)
	}
	return lib, cache
}

var resultRE = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)

// summarize counts leaf results in `go test -v` output and collects the skip messages.
func summarize(out string) (pass, fail, skip int, skips string) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var sb strings.Builder
	for sc.Scan() {
		line := sc.Text()
		if m := resultRE.FindStringSubmatch(line); m != nil {
			switch m[1] {
			case "PASS":
				pass++
			case "FAIL":
				fail++
			case "SKIP":
				skip++
			}
		}
		if strings.Contains(line, "no CUDA device") || strings.Contains(line, "skipped") {
			sb.WriteString(line + "\n")
		}
	}
	return pass, fail, skip, sb.String()
}

// failures extracts the failing tests' output.
func failures(out string) string {
	var sb strings.Builder
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.Contains(l, "--- FAIL") || strings.Contains(l, "panic") || strings.Contains(l, "fakecuda:") {
			lo := max(0, i-12)
			sb.WriteString(strings.Join(lines[lo:i+1], "\n") + "\n…\n")
			if sb.Len() > 20000 {
				break
			}
		}
	}
	if sb.Len() == 0 {
		return tail(out, 4000)
	}
	return sb.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
