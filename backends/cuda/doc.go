// Package cuda is the NVIDIA GPU backend. It registers itself as "cuda" with package backends;
// import it for its side effect:
//
//	import _ "github.com/mamba2go/mamba2/backends/cuda"
//	be, err := backends.New("cuda") // errors.Is(err, cuda.ErrUnavailable) on a machine without a GPU
//
// # No cgo, no toolkit at build time
//
// The CUDA driver (libcuda.so.1), NVRTC (libnvrtc.so.*) and cuBLAS (libcublas.so.*) are opened at
// run time with purego (dlopen/dlsym) and called through purego.SyscallN; nothing from CUDA is
// needed to build, and `go build ./...` and `go test ./...` work on any machine, with or without
// cgo. Every entry point used takes only integers and pointers (cuBLAS's alpha and beta go by
// pointer), so no reflection is involved. Libraries are searched under their usual sonames, then
// in the usual install places (/usr/local/cuda*/lib64, the distribution's lib directories, pip's
// nvidia/*/lib); $MAMBA2_CUDA_LIBCUDA, $MAMBA2_CUDA_NVRTC and $MAMBA2_CUDA_CUBLAS name files
// explicitly ("off" disables NVRTC or cuBLAS). Libraries() reports what a process found.
//
// # Availability and errors
//
// New returns an error wrapping ErrUnavailable, never a panic, when the machine cannot run the
// backend, and says what is missing: "libcuda.so.1 not found: no NVIDIA driver on this machine",
// "no CUDA device", the toolkit's stub driver instead of a real one, a non-Linux platform, or no
// way to get kernels (no NVRTC and no matching embedded PTX). cuBLAS is optional: without it
// MatMul runs on the backend's own tiled GEMM kernel.
//
// After New, every method returns errors rather than panicking. Failed CUDA calls become *Error
// (the C function, the result code and its name and description). Kernels do not trap on bad
// data: the ones that read indices (Gather, ScatterAdd, CrossEntropy and its gradient,
// CausalConv1D with lengths) count invalid ones in a small device-side error record and skip
// them; Run reads the record back and returns an error naming the first bad position and value,
// as the cpu backend does. That read waits for the GPU, so these kernels synchronise; all others
// are asynchronous, and a fault inside one (which would be a bug in this package) surfaces at the
// next synchronising call. Ops or shapes the kernels cannot take (more than 8 axes left after
// merging, an SSD head needing more than 1024 threads) fail in Compile with errors wrapping
// backends.ErrUnsupported.
//
// # Threading
//
// CUDA binds a context to an OS thread. The backend uses the device's primary context and, on
// every entry (Alloc, Write, Read, Copy, Compile, Kernel.Run, …), locks the calling goroutine to its
// OS thread with runtime.LockOSThread and makes the context current there (cuCtxSetCurrent, a
// thread-local store in the driver) before any driver call, unlocking on return. This was chosen
// over a dedicated device goroutine fed closures through a channel: it costs no goroutine
// hand-off per kernel (a decode step launches hundreds), allocates nothing, and lets independent
// goroutines use the backend at once; all work goes to the legacy default stream, so the device
// still executes it in issue order. The cuBLAS handle is guarded by a mutex (a handle must not be
// used by two threads at once).
//
// Memory passed to C follows the cgo pointer rules: argument arrays that hold addresses of Go
// memory (kernelParams, NVRTC option arrays, cuBLAS alpha/beta, host slices being copied) are
// heap-allocated and pinned with runtime.Pinner for the duration of the call.
//
// # Memory residency
//
// A Buffer is device memory from cuMemAlloc, zero-filled at Alloc, and stays on the device until
// Free or Close. Weights are uploaded once (Write) and never move; intermediate buffers, and the
// conv and SSM state a cache binds to a program, are read and written in place by kernels across
// runs and steps. Only Write (inputs) and Read (requested outputs) cross to the host, and both are
// synchronous copies ordered after the kernels queued before them. Kernels own small device
// scratch areas (SSDGrad's state checkpoints, norm-gradient partial sums, batched-GEMM pointer
// arrays, error records, QuantMatMul's float32 panels of a quantized weight, at most 16 MiB each,
// and for int8 weights its x rounded to int16 per block, as large as x)
// allocated at Compile; they are freed by the kernel's Close method (which the Backend interface
// does not require) or by the backend's Close.
//
// # Kernels
//
// Every op the cpu backend has is implemented here with the same semantics (a test keeps the two
// lists equal). The kernels are CUDA C in kernels/*.cu (embedded with go:embed), one module per
// file plus a shared prelude, in float32 and float64 variants (layout kernels in 4- and 8-byte
// element variants, which also move int64; the quantized-weight kernels of quant.cu in bfloat16,
// float16 and int8 variants, which widen the weight to float32 as they read it). A module is
// compiled with NVRTC for the device's architecture (a cubin for sm_XY, else PTX for compute_XY,
// else PTX for an older virtual architecture the driver JIT-compiles) the first time a kernel
// from it is needed, once per backend, and the compiled image is cached on disk under
// os.UserCacheDir()/mamba2-cuda ($MAMBA2_CUDA_CACHE moves it or turns it off). Without NVRTC,
// PTX shipped in ptx/ is used when its recorded source hash matches (see TestWritePTX).
//
// Element-wise ops take broadcasting strides as kernel arguments (axes merged first); sums,
// softmax, cross-entropy and the norms reduce in double with one block per row; transcendental
// functions are evaluated in double and rounded once. MatMul goes to cuBLAS with the row-major
// trick (row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ): shared-weight batches are folded into one
// GEMM, single rows become GEMV (decoding), other batches use gemmBatched. QuantMatMul reads a
// bfloat16, float16 or int8 weight in place for up to 8 rows of x (decoding: a mat-vec kernel,
// each weight row read once with 16-byte loads, float32 sums) and, for more rows, widens it panel
// by panel into float32 scratch for cublasSgemm (without cuBLAS, a tiled GEMM kernel widens it
// tile by tile); QuantGather widens the gathered rows. The SSD scan is the straightforward
// recurrence (one block per batch row and head, each thread keeping up to 32 state elements in
// registers, tokens in order); SSDStep is the same kernel over one token; the chunk size is
// accepted and ignored (the result is the same). SSDGrad reverses the recurrence
// exactly with √T-spaced state checkpoints, like the cpu backend; its dB/dC sums use atomics,
// so their last bits vary between runs.
//
// # Testing without a GPU
//
// The tests run the backend compliance suite (package backendtest), the gradient checks, the
// golden Hugging Face parity cases and residency/allocation checks against the GPU when there is
// one, and skip with the reason otherwise. TestEmulator runs the same tests in a child process
// against testdata/fakecuda, a CPU emulator of the driver API, NVRTC and cuBLAS built with g++:
// kernels are compiled from the same sources against a shim and executed block by block with
// fibers for threads, device memory is host memory with canaries checked after every launch, and
// driver calls fail unless the calling thread made the context current. It cannot show real-GPU
// timing, warp-level races hidden by its barrier-to-barrier scheduling, or NVRTC dialect
// differences; scripts/gpu-check.sh runs everything on a real GPU.
package cuda
