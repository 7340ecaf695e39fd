//go:build (linux || darwin) && (amd64 || arm64) && !android && !ios && !faketime

package kernels

import (
	"os"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// OpenBLAS is loaded at run time with purego (no cgo, nothing needed at build time). The Fortran
// entry points (sgemm_, sgemv_) are called rather than the CBLAS ones: every argument is a
// pointer, so purego.SyscallN can pass them without building a reflect call, and a call does no
// heap allocation.

var blasLib struct {
	once       sync.Once
	ok         bool
	name       string
	sgemm      uintptr
	sgemv      uintptr
	setThreads uintptr
	getThreads uintptr
}

// blasCandidates are tried in order once MAMBA2_BLAS asks for OpenBLAS; MAMBA2_BLAS=/path/to/lib
// puts a file first.
func blasCandidates() []string {
	if runtime.GOOS == "darwin" {
		return []string{
			"libopenblas.dylib",
			"/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
			"/usr/local/opt/openblas/lib/libopenblas.dylib",
		}
	}
	return []string{
		"libopenblas.so.0",
		"libopenblas.so",
		"/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
		"/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
		"/usr/lib64/libopenblas.so.0",
		"/usr/lib64/libopenblasp.so.0",
	}
}

func loadBLAS() {
	env := strings.TrimSpace(os.Getenv("MAMBA2_BLAS"))
	// Opt-in: in a whole model our GEMM ran prefill ~30% faster than OpenBLAS on 2 cores
	// (OpenBLAS's own threads, spinning after each call, compete with the worker pool).
	switch strings.ToLower(env) {
	case "", "off", "0", "no", "none", "false":
		return
	}
	names := blasCandidates()
	if env != "" && !isTruthy(env) {
		names = append([]string{env}, names...)
	}
	for _, name := range names {
		h, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_LOCAL)
		if err != nil {
			continue
		}
		sym := func(s string) uintptr {
			p, err := purego.Dlsym(h, s)
			if err != nil {
				return 0
			}
			return p
		}
		sgemm, sgemv, set, get := sym("sgemm_"), sym("sgemv_"), sym("openblas_set_num_threads"), sym("openblas_get_num_threads")
		if sgemm == 0 || sgemv == 0 || set == 0 {
			// Not OpenBLAS (for example the reference libblas): not worth calling.
			_ = purego.Dlclose(h)
			continue
		}
		blasLib.sgemm, blasLib.sgemv, blasLib.setThreads, blasLib.getThreads = sgemm, sgemv, set, get
		blasLib.name = "openblas"
		if cfg := sym("openblas_get_config"); cfg != 0 {
			r, _, _ := purego.SyscallN(cfg)
			if s := cString(r); s != "" {
				blasLib.name = s
			}
		}
		blasLib.ok = true
		return
	}
}

func isTruthy(s string) bool {
	switch strings.ToLower(s) {
	case "1", "on", "yes", "true", "auto":
		return true
	}
	return false
}

func cString(p uintptr) string {
	if p == 0 {
		return ""
	}
	var b []byte
	for i := uintptr(0); i < 256; i++ {
		c := *(*byte)(unsafe.Add(unsafe.Pointer(nil), p+i)) //nolint:govet // C memory, not Go's
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

func blasLoaded() bool {
	blasLib.once.Do(loadBLAS)
	return blasLib.ok
}

// fortranArgs holds the scalars passed by reference to sgemm_/sgemv_ and the argument list
// itself; pooled, so a call does no heap allocation.
//
// The matrices are passed as uintptr, which the compiler does not track, so they must not be
// on a goroutine stack (a stack can move before the C call). Storing their pointers in keep,
// a field of a heap object, makes escape analysis put them on the heap, which does not move;
// keep also holds them alive until the call returns.
type fortranArgs struct {
	ta, tb             [4]byte
	m, n, k            int32
	lda, ldb, ldc, inc int32
	alpha, beta        float32
	args               [15]uintptr
	keep               [3]unsafe.Pointer
}

var fortranPool freeList[fortranArgs]

func trans(t bool) [4]byte {
	if t {
		return [4]byte{'T'}
	}
	return [4]byte{'N'}
}

func addr[T any](p *T) uintptr { return uintptr(unsafe.Pointer(p)) }

// pin records the data pointers of the matrices in f.keep (see fortranArgs) and returns them.
func (f *fortranArgs) pin(a, b, c []float32) (pa, pb, pc uintptr) {
	f.keep = [3]unsafe.Pointer{unsafe.Pointer(unsafe.SliceData(a)), unsafe.Pointer(unsafe.SliceData(b)), unsafe.Pointer(unsafe.SliceData(c))}
	return uintptr(f.keep[0]), uintptr(f.keep[1]), uintptr(f.keep[2])
}

func (f *fortranArgs) release() {
	f.keep = [3]unsafe.Pointer{}
	fortranPool.put(f)
}

// sgemmRowMajor computes C = alpha·op(A)·op(B) + beta·C for row-major matrices through the
// column-major sgemm_: C (m×n row-major) is Cᵀ (n×m column-major) = op(B)ᵀ·op(A)ᵀ.
func sgemmRowMajor(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	f := fortranPool.get()
	f.ta, f.tb = trans(transB), trans(transA)
	f.m, f.n, f.k = int32(n), int32(m), int32(k)
	f.lda, f.ldb, f.ldc = int32(ldb), int32(lda), int32(ldc)
	f.alpha, f.beta = alpha, beta
	pa, pb, pc := f.pin(a, b, c)
	f.args = [15]uintptr{
		addr(&f.ta[0]), addr(&f.tb[0]), addr(&f.m), addr(&f.n), addr(&f.k), addr(&f.alpha),
		pb, addr(&f.lda), pa, addr(&f.ldb), addr(&f.beta), pc, addr(&f.ldc),
		1, 1, // hidden Fortran lengths of the two character arguments
	}
	purego.SyscallN(blasLib.sgemm, f.args[:]...)
	runtime.KeepAlive(f)
	f.release()
}

// sgemvRowMajor computes y = alpha·op(A)·x + beta·y for a row-major A [m×n] (lda ≥ n).
func sgemvRowMajor(transA bool, m, n int, alpha float32, a []float32, lda int, x []float32, beta float32, y []float32) {
	f := fortranPool.get()
	// Row-major A is column-major Aᵀ (n×m): op is flipped.
	f.ta = trans(!transA)
	f.m, f.n = int32(n), int32(m)
	f.lda, f.inc = int32(lda), 1
	f.alpha, f.beta = alpha, beta
	pa, px, py := f.pin(a, x, y)
	f.args = [15]uintptr{
		addr(&f.ta[0]), addr(&f.m), addr(&f.n), addr(&f.alpha), pa, addr(&f.lda),
		px, addr(&f.inc), addr(&f.beta), py, addr(&f.inc),
		1, // hidden Fortran length of the character argument
	}
	purego.SyscallN(blasLib.sgemv, f.args[:12]...)
	runtime.KeepAlive(f)
	f.release()
}

func blasSetThreads(n int) {
	if blasLoaded() {
		purego.SyscallN(blasLib.setThreads, uintptr(n))
	}
}

func blasThreads() int {
	if !blasLoaded() || blasLib.getThreads == 0 {
		return 0
	}
	r, _, _ := purego.SyscallN(blasLib.getThreads)
	return int(int32(r))
}
