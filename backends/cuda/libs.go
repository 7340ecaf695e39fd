package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Environment variables that steer library loading (mostly for tests and unusual installs).
const (
	// EnvLibCUDA names the driver library to load instead of searching for libcuda.so.1.
	EnvLibCUDA = "MAMBA2_CUDA_LIBCUDA"
	// EnvLibNVRTC names the NVRTC library; "off" disables run-time compilation (embedded PTX only).
	EnvLibNVRTC = "MAMBA2_CUDA_NVRTC"
	// EnvLibCUBLAS names the cuBLAS library; "off" makes MatMul use the backend's own GEMM kernel.
	EnvLibCUBLAS = "MAMBA2_CUDA_CUBLAS"
	// EnvDevice is the ordinal of the device to use (default 0).
	EnvDevice = "MAMBA2_CUDA_DEVICE"
)

// library is one dlopen'ed shared object.
type library struct {
	path  string   // what dlopen accepted
	tried []string // what was tried, in order, when nothing loaded
	err   error    // why nothing loaded (nil when path is set)
	h     uintptr
}

func (l *library) ok() bool { return l != nil && l.h != 0 }

// openFirst tries candidates in order and keeps the first that loads.
func openFirst(what string, candidates []string) *library {
	l := &library{}
	var msgs []string
	for _, c := range candidates {
		h, err := dlopen(c)
		if err == nil && h != 0 {
			l.path, l.h = c, h
			return l
		}
		l.tried = append(l.tried, c)
		if err != nil && len(msgs) < 3 {
			msgs = append(msgs, err.Error())
		}
	}
	if platformNote != "" {
		l.err = errors.New(platformNote)
		return l
	}
	l.err = fmt.Errorf("%s not found (tried %s)", what, strings.Join(l.tried, ", "))
	return l
}

// globLibs returns the files matching patterns, newest version first, without duplicates.
func globLibs(patterns ...string) []string {
	seen := map[string]bool{}
	var res []string
	for _, p := range patterns {
		m, _ := filepath.Glob(p)
		sort.Sort(sort.Reverse(sort.StringSlice(m)))
		for _, f := range m {
			if !seen[f] {
				seen[f] = true
				res = append(res, f)
			}
		}
	}
	return res
}

// envOverride returns the override for a library: ("", false) when unset, (path, false) for a
// path and ("", true) when it is turned off.
func envOverride(name string) (string, bool) {
	v := strings.TrimSpace(os.Getenv(name))
	switch strings.ToLower(v) {
	case "off", "0", "no", "none", "false":
		return "", true
	}
	return v, false
}

func driverCandidates() []string {
	if p, _ := envOverride(EnvLibCUDA); p != "" {
		return []string{p}
	}
	c := []string{"libcuda.so.1", "libcuda.so"}
	return append(c, globLibs(
		"/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib/aarch64-linux-gnu/libcuda.so.1",
		"/usr/lib64/libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib/wsl/lib/libcuda.so.1",
	)...)
}

// toolkitGlobs lists where CUDA toolkit and pip-installed NVIDIA libraries usually live.
func toolkitGlobs(sub, lib string) []string {
	return []string{
		"/usr/local/cuda/lib64/" + lib + ".so*",
		"/usr/local/cuda-*/lib64/" + lib + ".so*",
		"/usr/local/cuda*/targets/*/lib/" + lib + ".so*",
		"/usr/lib/x86_64-linux-gnu/" + lib + ".so*",
		"/usr/lib/aarch64-linux-gnu/" + lib + ".so*",
		"/usr/lib64/" + lib + ".so*",
		"/opt/conda/lib/" + lib + ".so*",
		"/usr/local/lib/python3*/dist-packages/nvidia/" + sub + "/lib/" + lib + ".so*",
		"/usr/local/lib/python3*/site-packages/nvidia/" + sub + "/lib/" + lib + ".so*",
		"/usr/lib/python3/dist-packages/nvidia/" + sub + "/lib/" + lib + ".so*",
		os.Getenv("HOME") + "/.local/lib/python3*/site-packages/nvidia/" + sub + "/lib/" + lib + ".so*",
	}
}

func nvrtcCandidates() (c []string, off bool) {
	p, off := envOverride(EnvLibNVRTC)
	if off {
		return nil, true
	}
	if p != "" {
		return []string{p}, false
	}
	c = []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"}
	for _, f := range globLibs(toolkitGlobs("cuda_nvrtc", "libnvrtc")...) {
		if !strings.Contains(filepath.Base(f), "builtins") && !strings.Contains(filepath.Base(f), "alt") {
			c = append(c, f)
		}
	}
	return c, false
}

func cublasCandidates() (c []string, off bool) {
	p, off := envOverride(EnvLibCUBLAS)
	if off {
		return nil, true
	}
	if p != "" {
		return []string{p}, false
	}
	c = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"}
	for _, f := range globLibs(toolkitGlobs("cublas", "libcublas")...) {
		if !strings.Contains(filepath.Base(f), "Lt") {
			c = append(c, f)
		}
	}
	return c, false
}

// libSet is what one process loaded. Libraries stay loaded for the life of the process.
type libSet struct {
	cuda, nvrtc, cublas    *library
	nvrtcOff, cublasOff    bool
	drv                    driverAPI
	rtc                    nvrtcAPI
	blas                   cublasAPI
	drvErr, rtcErr, blaErr error // missing symbols
}

var (
	libsOnce sync.Once
	libs     libSet
)

func loadLibs() *libSet {
	libsOnce.Do(func() {
		libs.cuda = openFirst("libcuda.so.1", driverCandidates())
		if libs.cuda.ok() {
			libs.drvErr = libs.drv.bind(libs.cuda.h)
		}
		c, off := nvrtcCandidates()
		libs.nvrtcOff = off
		if !off {
			libs.nvrtc = openFirst("libnvrtc.so", c)
			if libs.nvrtc.ok() {
				libs.rtcErr = libs.rtc.bind(libs.nvrtc.h)
			}
		}
		c, off = cublasCandidates()
		libs.cublasOff = off
		if !off {
			libs.cublas = openFirst("libcublas.so", c)
			if libs.cublas.ok() {
				libs.blaErr = libs.blas.bind(libs.cublas.h)
			}
		}
	})
	return &libs
}

// haveNVRTC reports whether kernels can be compiled at run time.
func (l *libSet) haveNVRTC() bool { return l.nvrtc.ok() && l.rtcErr == nil }

// haveCUBLAS reports whether cuBLAS can be called.
func (l *libSet) haveCUBLAS() bool { return l.cublas.ok() && l.blaErr == nil }

// Libraries describes, without touching any device, which NVIDIA libraries this process found:
// one line per library with the file loaded or why none was. It is what scripts/gpu-check.sh
// reports.
func Libraries() string {
	l := loadLibs()
	var sb strings.Builder
	line := func(name string, lib *library, off bool, symErr error, role string) {
		switch {
		case off:
			fmt.Fprintf(&sb, "%-8s off (disabled by environment): %s\n", name, role)
		case lib.ok() && symErr != nil:
			fmt.Fprintf(&sb, "%-8s %s loaded but unusable: %v\n", name, lib.path, symErr)
		case lib.ok():
			fmt.Fprintf(&sb, "%-8s %s\n", name, lib.path)
		default:
			fmt.Fprintf(&sb, "%-8s not found: %v (%s)\n", name, lib.err, role)
		}
	}
	line("driver", l.cuda, false, l.drvErr, "required")
	line("nvrtc", l.nvrtc, l.nvrtcOff, l.rtcErr, "needed to compile kernels unless embedded PTX matches")
	line("cublas", l.cublas, l.cublasOff, l.blaErr, "optional: MatMul falls back to the built-in GEMM kernel")
	return sb.String()
}
