//go:build linux && (amd64 || arm64) && !android && !faketime

package cuda

import (
	"unsafe"

	"github.com/ebitengine/purego"
)

// platformNote is empty where the backend can load the NVIDIA libraries.
const platformNote = ""

// dlopen loads a shared library (a bare soname is searched the usual way).
func dlopen(name string) (uintptr, error) {
	return purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_LOCAL)
}

// dlsym returns a symbol's address, or 0 when the library lacks it.
func dlsym(h uintptr, name string) uintptr {
	p, err := purego.Dlsym(h, name)
	if err != nil {
		return 0
	}
	return p
}

// ccall calls the C function fn. It is for set-up paths: the variadic slice costs an allocation.
// Like purego.SyscallN it is marked uintptrescapes, so &x converted to uintptr in the call
// expression keeps x alive (on the heap) until the call returns.
//
//go:uintptrescapes
func ccall(fn uintptr, args ...uintptr) uintptr {
	r, _, _ := purego.SyscallN(fn, args...)
	return r
}

// callv calls fn with the first n words of a heap-allocated argument array: the hot path (kernel
// launches, cuBLAS calls), which does not allocate.
func callv(fn uintptr, a *[15]uintptr, n int) uintptr {
	r, _, _ := purego.SyscallN(fn, a[:n]...)
	return r
}

// cString copies a NUL-terminated C string (at most 4096 bytes).
func cString(p uintptr) string {
	if p == 0 {
		return ""
	}
	var b []byte
	for i := uintptr(0); i < 4096; i++ {
		c := *(*byte)(unsafe.Add(unsafe.Pointer(nil), p+i)) // C memory, not Go's
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}
