package cuda

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"unsafe"
)

// The kernels are CUDA C in kernels/*.cu, embedded in the binary. Each file is one module: the
// shared prelude (kernels/prelude.cuh) is prepended and the result compiled with NVRTC for the
// device's architecture the first time a kernel of that file is needed, once per backend. A
// compiled image is cached on disk (under os.UserCacheDir()/mamba2-cuda, keyed by the source,
// the architecture and the NVRTC version; $MAMBA2_CUDA_CACHE=off disables it, a path moves it).
//
// Without NVRTC the backend can still run from PTX shipped in ptx/: files named after the
// module (elementwise.ptx, …) whose first line records the SHA-256 of the source they were made
// from, so stale PTX is never loaded. TestWritePTX (go test ./backends/cuda -run TestWritePTX
// -args -write-ptx=ptx, on a machine with NVRTC) regenerates them for compute_70.

//go:embed kernels/*.cu kernels/*.cuh
var kernelFS embed.FS

//go:embed ptx
var ptxFS embed.FS

// EnvCache overrides the compiled-kernel cache directory ("off" disables the cache).
const EnvCache = "MAMBA2_CUDA_CACHE"

// ptxArch is the virtual architecture of the shipped PTX (runs on sm_70 and newer by JIT).
const ptxArch = "compute_70"

const ptxHashPrefix = "// mamba2-source-sha256: "

// moduleFiles lists the .cu files.
func moduleFiles() []string {
	ents, _ := fs.ReadDir(kernelFS, "kernels")
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".cu") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

// moduleSource returns the full source of a module: the prelude, then the file.
func moduleSource(file string) (string, error) {
	pre, err := kernelFS.ReadFile("kernels/prelude.cuh")
	if err != nil {
		return "", err
	}
	body, err := kernelFS.ReadFile("kernels/" + file)
	if err != nil {
		return "", fmt.Errorf("no kernel source %s", file)
	}
	return string(pre) + "\n#line 1 \"" + file + "\"\n" + string(body), nil
}

func sourceHash(src string) string {
	h := sha256.Sum256([]byte(src))
	return hex.EncodeToString(h[:])
}

// embeddedPTX returns the shipped PTX for a module when it matches the source.
func embeddedPTX(file string) ([]byte, bool) {
	src, err := moduleSource(file)
	if err != nil {
		return nil, false
	}
	data, err := ptxFS.ReadFile("ptx/" + strings.TrimSuffix(file, ".cu") + ".ptx")
	if err != nil {
		return nil, false
	}
	first, _, _ := strings.Cut(string(data), "\n")
	if strings.TrimSpace(strings.TrimPrefix(first, ptxHashPrefix)) != sourceHash(src) {
		return nil, false
	}
	return data, true
}

// missingPTX lists the modules without matching embedded PTX.
func missingPTX() []string {
	var missing []string
	for _, f := range moduleFiles() {
		if _, ok := embeddedPTX(f); !ok {
			missing = append(missing, f)
		}
	}
	return missing
}

// module is a loaded CUDA module and the functions looked up in it.
type module struct {
	h     uintptr
	err   error
	funcs map[string]uintptr
	limit map[uintptr]int // threads per block each function can launch with (0: unknown)
}

// function returns kernel name of file, compiling and loading the module on first use, and the
// most threads per block it can be launched with (0 when unknown).
func (b *Backend) function(file, name string) (uintptr, int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, 0, errClosed
	}
	m := b.modules[file]
	if m == nil {
		m = &module{funcs: map[string]uintptr{}, limit: map[uintptr]int{}}
		b.modules[file] = m
		m.h, m.err = b.loadModule(file)
	}
	if m.err != nil {
		return 0, 0, m.err
	}
	if f, ok := m.funcs[name]; ok {
		return f, m.limit[f], nil
	}
	if err := b.enter(); err != nil {
		return 0, 0, err
	}
	defer b.exit()
	f, err := b.drv.moduleFunction(m.h, name)
	if err != nil {
		return 0, 0, fmt.Errorf("kernel %s in %s: %w", name, file, err)
	}
	m.funcs[name] = f
	m.limit[f] = b.drv.maxThreads(f)
	return f, m.limit[f], nil
}

func (b *Backend) loadModule(file string) (uintptr, error) {
	var image []byte
	if b.l.haveNVRTC() {
		src, err := moduleSource(file)
		if err != nil {
			return 0, err
		}
		image, err = b.compileCached(file, src)
		if err != nil {
			return 0, err
		}
	} else {
		ptx, ok := embeddedPTX(file)
		if !ok {
			return 0, fmt.Errorf("%w: no NVRTC and no embedded PTX for %s", ErrUnavailable, file)
		}
		image = append(append([]byte(nil), ptx...), 0)
	}
	if err := b.enter(); err != nil {
		return 0, err
	}
	defer b.exit()
	h, err := b.drv.moduleLoad(image)
	if err != nil {
		return 0, fmt.Errorf("loading module %s: %w", file, err)
	}
	return h, nil
}

// cacheDir returns the compiled-kernel cache directory, or "" when caching is off.
func cacheDir() string {
	v := strings.TrimSpace(os.Getenv(EnvCache))
	switch strings.ToLower(v) {
	case "off", "0", "no", "none", "false":
		return ""
	case "":
		d, err := os.UserCacheDir()
		if err != nil {
			return ""
		}
		return filepath.Join(d, "mamba2-cuda")
	}
	return v
}

// compileCached compiles src with NVRTC for the device, through the disk cache.
func (b *Backend) compileCached(file, src string) ([]byte, error) {
	major, minor := b.l.rtc.version()
	key := sourceHash(fmt.Sprintf("%s\x00sm_%d\x00nvrtc %d.%d\x00%s", src, b.info.CC, major, minor, b.l.nvrtc.path))
	dir := cacheDir()
	name := ""
	if dir != "" {
		name = filepath.Join(dir, strings.TrimSuffix(file, ".cu")+"-"+key[:24]+".bin")
		if data, err := os.ReadFile(name); err == nil && len(data) > 0 {
			return data, nil
		}
	}
	image, err := b.nvrtcCompile(file, src)
	if err != nil {
		return nil, err
	}
	if name != "" {
		if os.MkdirAll(dir, 0o755) == nil {
			tmp := fmt.Sprintf("%s.%d.tmp", name, os.Getpid())
			if os.WriteFile(tmp, image, 0o644) == nil {
				os.Rename(tmp, name)
			}
		}
	}
	return image, nil
}

// nvrtcCompile compiles for the device: a cubin for sm_XY when NVRTC can make one, else PTX for
// compute_XY; when this NVRTC does not know the device's architecture, PTX for the newest virtual
// architecture it accepts (the driver JIT-compiles it).
func (b *Backend) nvrtcCompile(file, src string) ([]byte, error) {
	rtc := &b.l.rtc
	cubin := rtc.nvrtcGetCUBIN != 0 && rtc.nvrtcGetCUBINSize != 0
	var archs []string
	if cubin {
		archs = append(archs, fmt.Sprintf("sm_%d", b.info.CC))
	}
	archs = append(archs, fmt.Sprintf("compute_%d", b.info.CC))
	for _, cc := range []int{90, 80, 75, 70} {
		if cc < b.info.CC {
			archs = append(archs, fmt.Sprintf("compute_%d", cc))
		}
	}
	var errs []error
	for _, arch := range archs {
		img, log, err := nvrtcOnce(rtc, file, src, arch)
		if err == nil {
			return img, nil
		}
		if log != "" {
			// A compile error in the source is not fixed by another architecture.
			return nil, fmt.Errorf("compiling %s for %s: %w\n%s", file, arch, err, log)
		}
		errs = append(errs, fmt.Errorf("%s: %w", arch, err))
	}
	return nil, fmt.Errorf("compiling %s: %w", file, errors.Join(errs...))
}

// cstrings holds NUL-terminated copies of Go strings and an array of pointers to them, pinned
// while C reads them.
type cstrings struct {
	bufs [][]byte
	ptrs []uintptr
	pin  runtime.Pinner
}

func newCStrings(ss ...string) *cstrings {
	c := &cstrings{}
	for _, s := range ss {
		b := append([]byte(s), 0)
		c.bufs = append(c.bufs, b)
		c.pin.Pin(&b[0])
		c.ptrs = append(c.ptrs, uintptr(unsafe.Pointer(&b[0])))
	}
	if len(c.ptrs) == 0 {
		c.ptrs = make([]uintptr, 1)
	}
	c.pin.Pin(&c.ptrs[0])
	return c
}

func (c *cstrings) ptr(i int) uintptr { return c.ptrs[i] }
func (c *cstrings) array() uintptr    { return uintptr(unsafe.Pointer(&c.ptrs[0])) }
func (c *cstrings) free()             { c.pin.Unpin() }

// nvrtcOnce runs one NVRTC compilation; on a compile error it returns the program log.
func nvrtcOnce(rtc *nvrtcAPI, file, src, arch string) (image []byte, log string, err error) {
	strs := newCStrings(src, file)
	defer strs.free()
	opts := newCStrings("--gpu-architecture="+arch, "--std=c++14", "-default-device", "--fmad=true")
	defer opts.free()
	var prog uintptr
	if err := rtc.check("nvrtcCreateProgram", ccall(rtc.nvrtcCreateProgram, uintptr(unsafe.Pointer(&prog)),
		strs.ptr(0), strs.ptr(1), 0, 0, 0)); err != nil {
		return nil, "", err
	}
	defer ccall(rtc.nvrtcDestroyProgram, uintptr(unsafe.Pointer(&prog)))
	cerr := rtc.check("nvrtcCompileProgram", ccall(rtc.nvrtcCompileProgram, prog, uintptr(len(opts.bufs)), opts.array()))
	if cerr != nil {
		var n uintptr
		if ccall(rtc.nvrtcGetProgramLogSize, prog, uintptr(unsafe.Pointer(&n))) == 0 && n > 1 {
			buf := make([]byte, n)
			if ccall(rtc.nvrtcGetProgramLog, prog, uintptr(unsafe.Pointer(&buf[0]))) == 0 {
				log = strings.TrimRight(string(buf), "\x00\n ")
			}
		}
		if code(cerr) != 6 { // NVRTC_ERROR_COMPILATION: anything else is an option problem
			log = ""
		}
		return nil, log, cerr
	}
	sizeFn, getFn, what := rtc.nvrtcGetPTXSize, rtc.nvrtcGetPTX, "PTX"
	if strings.HasPrefix(arch, "sm_") {
		sizeFn, getFn, what = rtc.nvrtcGetCUBINSize, rtc.nvrtcGetCUBIN, "CUBIN"
	}
	var n uintptr
	if err := rtc.check("nvrtcGet"+what+"Size", ccall(sizeFn, prog, uintptr(unsafe.Pointer(&n)))); err != nil {
		return nil, "", err
	}
	image = make([]byte, n+1) // PTX is NUL-terminated text; the extra byte is harmless for a cubin
	if err := rtc.check("nvrtcGet"+what, ccall(getFn, prog, uintptr(unsafe.Pointer(&image[0])))); err != nil {
		return nil, "", err
	}
	return image, "", nil
}

// WritePTX compiles every module to PTX for ptxArch with NVRTC and writes dir/<module>.ptx,
// each headed by the hash of its source; the result belongs in backends/cuda/ptx.
func WritePTX(dir string) ([]string, error) {
	l := loadLibs()
	if !l.haveNVRTC() {
		return nil, fmt.Errorf("%w: NVRTC is needed to write PTX", ErrUnavailable)
	}
	var written []string
	for _, f := range moduleFiles() {
		src, err := moduleSource(f)
		if err != nil {
			return written, err
		}
		img, log, err := nvrtcOnce(&l.rtc, f, src, ptxArch)
		if err != nil {
			return written, fmt.Errorf("%s: %w\n%s", f, err, log)
		}
		text := strings.TrimRight(string(img), "\x00")
		name := path.Join(dir, strings.TrimSuffix(f, ".cu")+".ptx")
		if err := os.WriteFile(name, []byte(ptxHashPrefix+sourceHash(src)+"\n"+text), 0o644); err != nil {
			return written, err
		}
		written = append(written, name)
	}
	return written, nil
}
