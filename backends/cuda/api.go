package cuda

import (
	"fmt"
	"unsafe"
)

// The NVIDIA libraries' entry points, resolved with dlsym. Every argument of the functions used
// is an integer or a pointer, so they are called through purego.SyscallN without reflection;
// floating-point scalars (cuBLAS alpha and beta) are passed by pointer.

// driverAPI holds the CUDA driver entry points.
type driverAPI struct {
	cuInit, cuDriverGetVersion, cuDeviceGetCount, cuDeviceGet, cuDeviceGetName  uintptr
	cuDeviceGetAttribute, cuDeviceTotalMem, cuDevicePrimaryCtxRetain            uintptr
	cuDevicePrimaryCtxRelease, cuCtxSetCurrent, cuCtxSynchronize                uintptr
	cuMemAlloc, cuMemFree, cuMemcpyHtoD, cuMemcpyDtoH, cuMemcpyDtoD, cuMemsetD8 uintptr
	cuModuleLoadData, cuModuleUnload, cuModuleGetFunction, cuLaunchKernel       uintptr
	cuGetErrorString, cuGetErrorName                                            uintptr
	cuFuncGetAttribute                                                          uintptr // optional
}

type symbol struct {
	p    *uintptr
	name string
}

func bindSymbols(h uintptr, lib string, syms []symbol) error {
	var missing []string
	for _, s := range syms {
		*s.p = dlsym(h, s.name)
		if *s.p == 0 {
			missing = append(missing, s.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s lacks %v (too old?)", lib, missing)
	}
	return nil
}

func (d *driverAPI) bind(h uintptr) error {
	d.cuFuncGetAttribute = dlsym(h, "cuFuncGetAttribute")
	return bindSymbols(h, "the CUDA driver", []symbol{
		{&d.cuInit, "cuInit"}, {&d.cuDriverGetVersion, "cuDriverGetVersion"},
		{&d.cuDeviceGetCount, "cuDeviceGetCount"}, {&d.cuDeviceGet, "cuDeviceGet"},
		{&d.cuDeviceGetName, "cuDeviceGetName"}, {&d.cuDeviceGetAttribute, "cuDeviceGetAttribute"},
		{&d.cuDeviceTotalMem, "cuDeviceTotalMem_v2"}, {&d.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"},
		{&d.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"}, {&d.cuCtxSetCurrent, "cuCtxSetCurrent"},
		{&d.cuCtxSynchronize, "cuCtxSynchronize"}, {&d.cuMemAlloc, "cuMemAlloc_v2"},
		{&d.cuMemFree, "cuMemFree_v2"}, {&d.cuMemcpyHtoD, "cuMemcpyHtoD_v2"},
		{&d.cuMemcpyDtoH, "cuMemcpyDtoH_v2"}, {&d.cuMemcpyDtoD, "cuMemcpyDtoD_v2"},
		{&d.cuMemsetD8, "cuMemsetD8_v2"}, {&d.cuModuleLoadData, "cuModuleLoadData"},
		{&d.cuModuleUnload, "cuModuleUnload"}, {&d.cuModuleGetFunction, "cuModuleGetFunction"},
		{&d.cuLaunchKernel, "cuLaunchKernel"}, {&d.cuGetErrorString, "cuGetErrorString"},
		{&d.cuGetErrorName, "cuGetErrorName"},
	})
}

// Driver result codes the backend treats specially.
const (
	cudaSuccess            = 0
	cudaErrorNoDevice      = 100
	cudaErrorInsufficient  = 35 // CUDA_ERROR_INSUFFICIENT_DRIVER
	cudaErrorStubLibrary   = 34 // CUDA_ERROR_STUB_LIBRARY: the toolkit's stub, not a driver
	cudaErrorNotPermitted  = 800
	cudaErrorSystemDriver  = 803 // CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
	cudaErrorCompatNotSupp = 804
)

// Device attributes (CUdevice_attribute).
const (
	attrMultiprocessors = 16
	attrCCMajor         = 75
	attrCCMinor         = 76
)

// Error is a failed call into a CUDA library.
type Error struct {
	Func string // the C function, "cuMemAlloc_v2"
	Code int    // its result code
	Name string // the code's name, "CUDA_ERROR_OUT_OF_MEMORY", when known
	Desc string // the library's description, when known
}

func (e *Error) Error() string {
	s := fmt.Sprintf("cuda: %s failed: ", e.Func)
	if e.Name != "" {
		s += e.Name
	} else {
		s += "error"
	}
	s += fmt.Sprintf(" (%d)", e.Code)
	if e.Desc != "" {
		s += ": " + e.Desc
	}
	return s
}

// check turns a driver result into an error.
func (d *driverAPI) check(fn string, r uintptr) error {
	code := int(int32(r))
	if code == cudaSuccess {
		return nil
	}
	e := &Error{Func: fn, Code: code}
	var p uintptr
	if d.cuGetErrorName != 0 && int32(ccall(d.cuGetErrorName, uintptr(code), uintptr(unsafe.Pointer(&p)))) == 0 {
		e.Name = cString(p)
	}
	p = 0
	if d.cuGetErrorString != 0 && int32(ccall(d.cuGetErrorString, uintptr(code), uintptr(unsafe.Pointer(&p)))) == 0 {
		e.Desc = cString(p)
	}
	return e
}

// code returns the result code of err when it is an *Error (else -1).
func code(err error) int {
	if e, ok := err.(*Error); ok {
		return e.Code
	}
	return -1
}

// Set-up calls (they may allocate; none is on a kernel's Run path).

func (d *driverAPI) init() error { return d.check("cuInit", ccall(d.cuInit, 0)) }

func (d *driverAPI) driverVersion() int {
	var v int32
	if int32(ccall(d.cuDriverGetVersion, uintptr(unsafe.Pointer(&v)))) != 0 {
		return 0
	}
	return int(v)
}

func (d *driverAPI) deviceCount() (int, error) {
	var n int32
	err := d.check("cuDeviceGetCount", ccall(d.cuDeviceGetCount, uintptr(unsafe.Pointer(&n))))
	return int(n), err
}

func (d *driverAPI) device(ordinal int) (int32, error) {
	var dev int32
	err := d.check("cuDeviceGet", ccall(d.cuDeviceGet, uintptr(unsafe.Pointer(&dev)), uintptr(ordinal)))
	return dev, err
}

func (d *driverAPI) attribute(dev int32, attr int) (int, error) {
	var v int32
	err := d.check("cuDeviceGetAttribute", ccall(d.cuDeviceGetAttribute, uintptr(unsafe.Pointer(&v)), uintptr(attr), uintptr(dev)))
	return int(v), err
}

func (d *driverAPI) deviceName(dev int32) string {
	buf := make([]byte, 256)
	if int32(ccall(d.cuDeviceGetName, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), uintptr(dev))) != 0 {
		return ""
	}
	for i, c := range buf {
		if c == 0 {
			return string(buf[:i])
		}
	}
	return string(buf)
}

func (d *driverAPI) totalMem(dev int32) int64 {
	var n uint64
	if int32(ccall(d.cuDeviceTotalMem, uintptr(unsafe.Pointer(&n)), uintptr(dev))) != 0 {
		return 0
	}
	return int64(n)
}

func (d *driverAPI) retainPrimary(dev int32) (uintptr, error) {
	var ctx uintptr
	err := d.check("cuDevicePrimaryCtxRetain", ccall(d.cuDevicePrimaryCtxRetain, uintptr(unsafe.Pointer(&ctx)), uintptr(dev)))
	return ctx, err
}

func (d *driverAPI) releasePrimary(dev int32) error {
	return d.check("cuDevicePrimaryCtxRelease_v2", ccall(d.cuDevicePrimaryCtxRelease, uintptr(dev)))
}

func (d *driverAPI) setCurrent(ctx uintptr) error {
	return d.check("cuCtxSetCurrent", ccall(d.cuCtxSetCurrent, ctx))
}

func (d *driverAPI) synchronize() error {
	return d.check("cuCtxSynchronize", ccall(d.cuCtxSynchronize))
}

func (d *driverAPI) memAlloc(bytes int) (uint64, error) {
	var p uint64
	err := d.check("cuMemAlloc_v2", ccall(d.cuMemAlloc, uintptr(unsafe.Pointer(&p)), uintptr(bytes)))
	return p, err
}

func (d *driverAPI) memFree(p uint64) error {
	return d.check("cuMemFree_v2", ccall(d.cuMemFree, uintptr(p)))
}

func (d *driverAPI) memsetD8(p uint64, v byte, bytes int) error {
	return d.check("cuMemsetD8_v2", ccall(d.cuMemsetD8, uintptr(p), uintptr(v), uintptr(bytes)))
}

// htod copies bytes from host memory at src (Go memory without pointers, kept alive by the caller).
func (d *driverAPI) htod(dst uint64, src unsafe.Pointer, bytes int) error {
	return d.check("cuMemcpyHtoD_v2", ccall(d.cuMemcpyHtoD, uintptr(dst), uintptr(src), uintptr(bytes)))
}

func (d *driverAPI) dtoh(dst unsafe.Pointer, src uint64, bytes int) error {
	return d.check("cuMemcpyDtoH_v2", ccall(d.cuMemcpyDtoH, uintptr(dst), uintptr(src), uintptr(bytes)))
}

func (d *driverAPI) dtod(dst, src uint64, bytes int) error {
	return d.check("cuMemcpyDtoD_v2", ccall(d.cuMemcpyDtoD, uintptr(dst), uintptr(src), uintptr(bytes)))
}

func (d *driverAPI) moduleLoad(image []byte) (uintptr, error) {
	var m uintptr
	err := d.check("cuModuleLoadData", ccall(d.cuModuleLoadData, uintptr(unsafe.Pointer(&m)), uintptr(unsafe.Pointer(&image[0]))))
	return m, err
}

func (d *driverAPI) moduleUnload(m uintptr) error {
	return d.check("cuModuleUnload", ccall(d.cuModuleUnload, m))
}

func (d *driverAPI) moduleFunction(m uintptr, name string) (uintptr, error) {
	var f uintptr
	cname := append([]byte(name), 0)
	err := d.check("cuModuleGetFunction("+name+")", ccall(d.cuModuleGetFunction, uintptr(unsafe.Pointer(&f)), m, uintptr(unsafe.Pointer(&cname[0]))))
	return f, err
}

// maxThreads returns how many threads per block function f can be launched with (0 when unknown):
// fewer than the device's limit when it needs many registers.
func (d *driverAPI) maxThreads(f uintptr) int {
	if d.cuFuncGetAttribute == 0 {
		return 0
	}
	var v int32
	if int32(ccall(d.cuFuncGetAttribute, uintptr(unsafe.Pointer(&v)), 0, f)) != 0 { // CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
		return 0
	}
	return int(v)
}

// nvrtcAPI holds the NVRTC entry points.
type nvrtcAPI struct {
	nvrtcVersion, nvrtcCreateProgram, nvrtcDestroyProgram, nvrtcCompileProgram uintptr
	nvrtcGetPTXSize, nvrtcGetPTX, nvrtcGetProgramLogSize, nvrtcGetProgramLog   uintptr
	nvrtcGetErrorString                                                        uintptr
	nvrtcGetCUBINSize, nvrtcGetCUBIN                                           uintptr // optional (CUDA ≥ 11.1)
}

func (n *nvrtcAPI) bind(h uintptr) error {
	err := bindSymbols(h, "NVRTC", []symbol{
		{&n.nvrtcVersion, "nvrtcVersion"}, {&n.nvrtcCreateProgram, "nvrtcCreateProgram"},
		{&n.nvrtcDestroyProgram, "nvrtcDestroyProgram"}, {&n.nvrtcCompileProgram, "nvrtcCompileProgram"},
		{&n.nvrtcGetPTXSize, "nvrtcGetPTXSize"}, {&n.nvrtcGetPTX, "nvrtcGetPTX"},
		{&n.nvrtcGetProgramLogSize, "nvrtcGetProgramLogSize"}, {&n.nvrtcGetProgramLog, "nvrtcGetProgramLog"},
		{&n.nvrtcGetErrorString, "nvrtcGetErrorString"},
	})
	n.nvrtcGetCUBINSize = dlsym(h, "nvrtcGetCUBINSize")
	n.nvrtcGetCUBIN = dlsym(h, "nvrtcGetCUBIN")
	return err
}

func (n *nvrtcAPI) check(fn string, r uintptr) error {
	c := int(int32(r))
	if c == 0 {
		return nil
	}
	return &Error{Func: fn, Code: c, Desc: cString(ccall(n.nvrtcGetErrorString, uintptr(c)))}
}

func (n *nvrtcAPI) version() (int, int) {
	var major, minor int32
	if int32(ccall(n.nvrtcVersion, uintptr(unsafe.Pointer(&major)), uintptr(unsafe.Pointer(&minor)))) != 0 {
		return 0, 0
	}
	return int(major), int(minor)
}

// cublasAPI holds the cuBLAS entry points.
type cublasAPI struct {
	cublasCreate, cublasDestroy, cublasGetVersion      uintptr
	cublasSgemm, cublasDgemm, cublasSgemv, cublasDgemv uintptr
	cublasSgemmBatched, cublasDgemmBatched             uintptr
}

func (c *cublasAPI) bind(h uintptr) error {
	return bindSymbols(h, "cuBLAS", []symbol{
		{&c.cublasCreate, "cublasCreate_v2"}, {&c.cublasDestroy, "cublasDestroy_v2"},
		{&c.cublasGetVersion, "cublasGetVersion_v2"},
		{&c.cublasSgemm, "cublasSgemm_v2"}, {&c.cublasDgemm, "cublasDgemm_v2"},
		{&c.cublasSgemv, "cublasSgemv_v2"}, {&c.cublasDgemv, "cublasDgemv_v2"},
		{&c.cublasSgemmBatched, "cublasSgemmBatched"}, {&c.cublasDgemmBatched, "cublasDgemmBatched"},
	})
}

var cublasStatusNames = map[int]string{
	1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED", 7: "CUBLAS_STATUS_INVALID_VALUE",
	8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED",
	14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED", 16: "CUBLAS_STATUS_LICENSE_ERROR",
}

func cublasCheck(fn string, r uintptr) error {
	c := int(int32(r))
	if c == 0 {
		return nil
	}
	return &Error{Func: fn, Code: c, Name: cublasStatusNames[c]}
}
