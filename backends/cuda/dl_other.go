//go:build !(linux && (amd64 || arm64) && !android && !faketime)

package cuda

import (
	"errors"
	"runtime"
)

// platformNote says why the libraries are never loaded on this platform.
const platformNote = "the CUDA backend is built for linux/amd64 and linux/arm64 only (this is " + runtime.GOOS + "/" + runtime.GOARCH + ")"

func dlopen(name string) (uintptr, error) { return 0, errors.New(platformNote) }

func dlsym(h uintptr, name string) uintptr { return 0 }

func ccall(fn uintptr, args ...uintptr) uintptr { return ^uintptr(0) }

func callv(fn uintptr, a *[15]uintptr, n int) uintptr { return ^uintptr(0) }

func cString(p uintptr) string { return "" }
