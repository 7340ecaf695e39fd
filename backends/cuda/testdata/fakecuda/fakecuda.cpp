// fakecuda.cpp — a CPU emulator of the parts of the CUDA driver API, NVRTC and cuBLAS that the
// mamba2 CUDA backend calls, for testing the backend on machines without a GPU. It is one shared
// library exporting all three APIs; the tests point $MAMBA2_CUDA_LIBCUDA, $MAMBA2_CUDA_NVRTC and
// $MAMBA2_CUDA_CUBLAS at it.
//
// "Device" memory is host memory with canaries after every allocation (checked after every
// launch and at free, so a kernel writing out of bounds fails the test). "NVRTC" compiles the
// CUDA C with g++ and shim.h into a shared object (cached by source hash); "PTX" is the text
// "FAKEMOD <path>", which cuModuleLoadData dlopens. Driver calls fail with
// CUDA_ERROR_INVALID_CONTEXT unless the calling thread made the context current, as on a GPU.
//
// Build: g++ -std=c++17 -O1 -shared -fPIC -DSHIM_PATH='"…/shim.h"' fakecuda.cpp -o libfakecuda.so -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#ifndef SHIM_PATH
#error "define SHIM_PATH"
#endif

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum {
  OK = 0,
  INVALID_VALUE = 1,
  OUT_OF_MEMORY = 2,
  INVALID_DEVICE = 101,
  INVALID_IMAGE = 200,
  INVALID_CONTEXT = 201,
  INVALID_HANDLE = 400,
  NOT_FOUND = 500,
  ILLEGAL_ADDRESS = 700,
  LAUNCH_OUT_OF_RESOURCES = 701,
};

static int g_ctx_storage;
static void* const g_ctx = &g_ctx_storage;
static thread_local void* t_current = nullptr;
static std::mutex g_mu;  // one launch / memory operation at a time

static const size_t kCanary = 64;
static const unsigned char kCanaryByte = 0xA5;

struct Alloc {
  size_t size;
};
static std::map<uintptr_t, Alloc> g_allocs;  // guarded by g_mu

static bool current() { return t_current == g_ctx; }

static bool canary_ok(uintptr_t p, const Alloc& a) {
  const unsigned char* c = (const unsigned char*)(p + a.size);
  for (size_t i = 0; i < kCanary; ++i)
    if (c[i] != kCanaryByte) return false;
  return true;
}

// in_range reports whether [p, p+n) lies inside one live allocation (g_mu held).
static bool in_range(uintptr_t p, size_t n) {
  auto it = g_allocs.upper_bound(p);
  if (it == g_allocs.begin()) return false;
  --it;
  return p >= it->first && p + n <= it->first + it->second.size;
}

extern "C" {

CUresult cuInit(unsigned flags) { return OK; }
CUresult cuDriverGetVersion(int* v) { *v = 12040; return OK; }
CUresult cuDeviceGetCount(int* n) { *n = 1; return OK; }
CUresult cuDeviceGet(int* dev, int ordinal) {
  if (ordinal != 0) return INVALID_DEVICE;
  *dev = 0;
  return OK;
}
CUresult cuDeviceGetName(char* name, int len, int dev) {
  snprintf(name, len, "FakeCUDA CPU emulator");
  return OK;
}
CUresult cuDeviceGetAttribute(int* v, int attr, int dev) {
  switch (attr) {
    case 75: *v = 8; return OK;   // compute capability 8.0
    case 76: *v = 0; return OK;
    case 16: *v = 2; return OK;   // multiprocessors: keeps emulated grids small
    default: *v = 0; return OK;
  }
}
CUresult cuDeviceTotalMem_v2(size_t* n, int dev) { *n = (size_t)1 << 32; return OK; }

static int g_retain;
CUresult cuDevicePrimaryCtxRetain(void** ctx, int dev) {
  ++g_retain;
  *ctx = g_ctx;
  return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(int dev) {
  if (g_retain <= 0) return INVALID_CONTEXT;
  --g_retain;
  return OK;
}
CUresult cuCtxSetCurrent(void* ctx) {
  if (ctx != nullptr && ctx != g_ctx) return INVALID_CONTEXT;
  t_current = ctx;
  return OK;
}
CUresult cuCtxSynchronize() { return current() ? OK : INVALID_CONTEXT; }

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t n) {
  if (!current()) return INVALID_CONTEXT;
  if (n == 0) return INVALID_VALUE;
  unsigned char* m = (unsigned char*)malloc(n + kCanary);
  if (!m) return OUT_OF_MEMORY;
  memset(m, 0x5C, n);  // device memory is not zeroed
  memset(m + n, kCanaryByte, kCanary);
  std::lock_guard<std::mutex> l(g_mu);
  g_allocs[(uintptr_t)m] = Alloc{n};
  *p = (CUdeviceptr)(uintptr_t)m;
  return OK;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
  if (!current()) return INVALID_CONTEXT;
  std::lock_guard<std::mutex> l(g_mu);
  auto it = g_allocs.find((uintptr_t)p);
  if (it == g_allocs.end()) return INVALID_VALUE;
  bool ok = canary_ok(it->first, it->second);
  free((void*)it->first);
  g_allocs.erase(it);
  return ok ? OK : ILLEGAL_ADDRESS;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
  if (!current()) return INVALID_CONTEXT;
  std::lock_guard<std::mutex> l(g_mu);
  if (!in_range(dst, n)) return INVALID_VALUE;
  memcpy((void*)(uintptr_t)dst, src, n);
  return OK;
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
  if (!current()) return INVALID_CONTEXT;
  std::lock_guard<std::mutex> l(g_mu);
  if (!in_range(src, n)) return INVALID_VALUE;
  memcpy(dst, (const void*)(uintptr_t)src, n);
  return OK;
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
  if (!current()) return INVALID_CONTEXT;
  std::lock_guard<std::mutex> l(g_mu);
  if (!in_range(dst, n) || !in_range(src, n)) return INVALID_VALUE;
  memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n);
  return OK;
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
  if (!current()) return INVALID_CONTEXT;
  std::lock_guard<std::mutex> l(g_mu);
  if (!in_range(dst, n)) return INVALID_VALUE;
  memset((void*)(uintptr_t)dst, v, n);
  return OK;
}

typedef void (*launcher_t)(void**, const unsigned*);
struct Function {
  launcher_t fn;
  std::string name;
};

CUresult cuModuleLoadData(void** mod, const void* image) {
  if (!current()) return INVALID_CONTEXT;
  const char* s = (const char*)image;
  if (strncmp(s, "FAKEMOD ", 8) != 0) return INVALID_IMAGE;
  void* h = dlopen(s + 8, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "fakecuda: dlopen %s: %s\n", s + 8, dlerror());
    return INVALID_IMAGE;
  }
  *mod = h;
  return OK;
}
CUresult cuModuleUnload(void* mod) {
  if (!current()) return INVALID_CONTEXT;
  return OK;  // kept loaded: functions may still be referenced by a test's leftovers
}
CUresult cuModuleGetFunction(void** f, void* mod, const char* name) {
  if (!current()) return INVALID_CONTEXT;
  std::string sym = std::string("__fake_launch_") + name;
  void* p = dlsym(mod, sym.c_str());
  if (!p) return NOT_FOUND;
  *f = new Function{(launcher_t)p, name};
  return OK;
}

CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shmem, void* stream, void** params, void** extra) {
  if (!current()) return INVALID_CONTEXT;
  if (!f || !params) return INVALID_VALUE;
  if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0) return INVALID_VALUE;
  if ((unsigned long long)bx * by * bz > 1024 || gy > 65535 || gz > 65535) return INVALID_VALUE;
  if (shmem > 48 * 1024) return LAUNCH_OUT_OF_RESOURCES;
  unsigned cfg[6] = {gx, gy, gz, bx, by, bz};
  std::lock_guard<std::mutex> l(g_mu);
  ((Function*)f)->fn(params, cfg);
  for (auto& a : g_allocs) {
    if (!canary_ok(a.first, a.second)) {
      fprintf(stderr, "fakecuda: kernel %s wrote past an allocation of %zu bytes\n", ((Function*)f)->name.c_str(),
              a.second.size);
      memset((void*)(a.first + a.second.size), kCanaryByte, kCanary);
      return ILLEGAL_ADDRESS;
    }
  }
  return OK;
}

static const char* err_name(int c) {
  switch (c) {
    case OK: return "CUDA_SUCCESS";
    case INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
    case INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
    case INVALID_IMAGE: return "CUDA_ERROR_INVALID_IMAGE";
    case INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
    case INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
    case NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
    case ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
    case LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
  }
  return nullptr;
}
CUresult cuGetErrorName(int c, const char** s) {
  *s = err_name(c);
  return *s ? OK : INVALID_VALUE;
}
CUresult cuGetErrorString(int c, const char** s) {
  *s = err_name(c) ? "fake CUDA error" : nullptr;
  return *s ? OK : INVALID_VALUE;
}

// ---- NVRTC ----

struct Program {
  std::string src, name, log, image;
};

int nvrtcVersion(int* major, int* minor) {
  *major = 12;
  *minor = 4;
  return 0;
}
const char* nvrtcGetErrorString(int c) { return c == 6 ? "NVRTC_ERROR_COMPILATION" : "NVRTC_ERROR"; }

int nvrtcCreateProgram(void** prog, const char* src, const char* name, int nh, const char* const* h,
                       const char* const* hn) {
  if (!prog || !src) return 3;
  *prog = new Program{src, name ? name : "prog", "", ""};
  return 0;
}
int nvrtcDestroyProgram(void** prog) {
  delete (Program*)*prog;
  *prog = nullptr;
  return 0;
}

static std::string run(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) {
    *status = -1;
    return "popen failed";
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

static std::string read_file(const char* path) {
  std::string s;
  FILE* f = fopen(path, "rb");
  if (!f) return s;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  fclose(f);
  return s;
}

static bool write_file(const std::string& path, const std::string& data) {
  FILE* f = fopen(path.c_str(), "wb");
  if (!f) return false;
  bool ok = fwrite(data.data(), 1, data.size(), f) == data.size();
  return fclose(f) == 0 && ok;
}

static std::string hex_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[17];
  snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

static const char* kFlags = "-std=c++17 -O1 -w -D__CUDA_ARCH__=800";

int nvrtcCompileProgram(void* prog, int nopt, const char* const* opts) {
  Program* p = (Program*)prog;
  const char* cache = getenv("FAKECUDA_CACHE");
  std::string dir = cache && *cache ? cache : "/tmp/fakecuda-cache";
  mkdir(dir.c_str(), 0755);
  std::string shim = read_file(SHIM_PATH);
  std::string key = hex_hash(p->src + "\n--\n" + shim + kFlags);
  std::string base = dir + "/" + key;
  std::string so = base + ".so";
  struct stat st;
  if (stat(so.c_str(), &st) != 0) {
    std::string cu = base + ".cu";
    if (!write_file(cu, p->src)) {
      p->log = "cannot write " + cu;
      return 6;
    }
    int status;
    std::string pre = run("g++ -E -P -x c++ -D__CUDA_ARCH__=800 " + cu, &status);
    if (status != 0) {
      p->log = pre;
      return 6;
    }
    std::vector<std::string> names;
    const char* marker = "extern \"C\" __global__ void ";
    for (size_t pos = pre.find(marker); pos != std::string::npos; pos = pre.find(marker, pos + 1)) {
      size_t b = pos + strlen(marker), e = b;
      while (e < pre.size() && (isalnum((unsigned char)pre[e]) || pre[e] == '_')) ++e;
      names.push_back(pre.substr(b, e - b));
    }
    std::string launch = std::string("#include \"") + SHIM_PATH + "\"\n#include \"" + cu + "\"\n";
    for (auto& n : names)
      launch += "extern \"C\" void __fake_launch_" + n + "(void** a, const unsigned* c) { fake::launch(" + n +
                ", a, c); }\n";
    std::string lc = base + "_launch.cpp";
    write_file(lc, launch);
    std::string tmp = so + "." + std::to_string(getpid()) + ".tmp";
    std::string out = run(std::string("g++ ") + kFlags + " -shared -fPIC -x c++ " + lc + " -o " + tmp, &status);
    if (status != 0) {
      p->log = out;
      unlink(tmp.c_str());
      return 6;
    }
    rename(tmp.c_str(), so.c_str());
  }
  p->image = "FAKEMOD " + so;
  p->image.push_back('\0');
  return 0;
}
int nvrtcGetPTXSize(void* prog, size_t* n) {
  *n = ((Program*)prog)->image.size();
  return 0;
}
int nvrtcGetPTX(void* prog, char* out) {
  Program* p = (Program*)prog;
  memcpy(out, p->image.data(), p->image.size());
  return 0;
}
int nvrtcGetCUBINSize(void* prog, size_t* n) { return nvrtcGetPTXSize(prog, n); }
int nvrtcGetCUBIN(void* prog, char* out) { return nvrtcGetPTX(prog, out); }
int nvrtcGetProgramLogSize(void* prog, size_t* n) {
  *n = ((Program*)prog)->log.size() + 1;
  return 0;
}
int nvrtcGetProgramLog(void* prog, char* out) {
  Program* p = (Program*)prog;
  memcpy(out, p->log.c_str(), p->log.size() + 1);
  return 0;
}

// ---- cuBLAS (column-major, host pointer mode) ----

static std::set<void*> g_handles;

int cublasCreate_v2(void** h) {
  if (!current()) return 1;  // NOT_INITIALIZED: no context
  *h = new int(0);
  g_handles.insert(*h);
  return 0;
}
int cublasDestroy_v2(void* h) {
  if (!g_handles.erase(h)) return 1;
  delete (int*)h;
  return 0;
}
int cublasGetVersion_v2(void* h, int* v) {
  *v = 120400;
  return 0;
}

}  // extern "C"

template <typename T>
static int gemm(void* h, int ta, int tb, int m, int n, int k, const T* alpha, const T* A, int lda, const T* B,
                int ldb, const T* beta, T* C, int ldc) {
  if (!g_handles.count(h) || !current()) return 1;
  if (m < 0 || n < 0 || k < 0 || lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m || lda < 1 || ldb < 1)
    return 7;
  std::lock_guard<std::mutex> l(g_mu);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      T acc = 0;
      for (int p = 0; p < k; ++p) {
        T a = ta ? A[p + (size_t)i * lda] : A[i + (size_t)p * lda];
        T b = tb ? B[j + (size_t)p * ldb] : B[p + (size_t)j * ldb];
        acc += a * b;
      }
      T* c = &C[i + (size_t)j * ldc];
      *c = *beta == 0 ? *alpha * acc : *alpha * acc + *beta * *c;
    }
  return 0;
}

template <typename T>
static int gemv(void* h, int trans, int m, int n, const T* alpha, const T* A, int lda, const T* x, int incx,
                const T* beta, T* y, int incy) {
  if (!g_handles.count(h) || !current()) return 1;
  if (m < 0 || n < 0 || lda < m || lda < 1 || incx == 0 || incy == 0) return 7;
  std::lock_guard<std::mutex> l(g_mu);
  int rows = trans ? n : m, cols = trans ? m : n;
  for (int i = 0; i < rows; ++i) {
    T acc = 0;
    for (int j = 0; j < cols; ++j) acc += (trans ? A[j + (size_t)i * lda] : A[i + (size_t)j * lda]) * x[(size_t)j * incx];
    T* c = &y[(size_t)i * incy];
    *c = *beta == 0 ? *alpha * acc : *alpha * acc + *beta * *c;
  }
  return 0;
}

extern "C" {

int cublasSgemm_v2(void* h, int ta, int tb, int m, int n, int k, const float* al, const float* A, int lda,
                   const float* B, int ldb, const float* be, float* C, int ldc) {
  return gemm<float>(h, ta, tb, m, n, k, al, A, lda, B, ldb, be, C, ldc);
}
int cublasDgemm_v2(void* h, int ta, int tb, int m, int n, int k, const double* al, const double* A, int lda,
                   const double* B, int ldb, const double* be, double* C, int ldc) {
  return gemm<double>(h, ta, tb, m, n, k, al, A, lda, B, ldb, be, C, ldc);
}
int cublasSgemv_v2(void* h, int t, int m, int n, const float* al, const float* A, int lda, const float* x, int incx,
                   const float* be, float* y, int incy) {
  return gemv<float>(h, t, m, n, al, A, lda, x, incx, be, y, incy);
}
int cublasDgemv_v2(void* h, int t, int m, int n, const double* al, const double* A, int lda, const double* x,
                   int incx, const double* be, double* y, int incy) {
  return gemv<double>(h, t, m, n, al, A, lda, x, incx, be, y, incy);
}

}  // extern "C"

template <typename T>
static int gemm_batched(void* h, int ta, int tb, int m, int n, int k, const T* al, const T* const* A, int lda,
                        const T* const* B, int ldb, const T* be, T* const* C, int ldc, int count) {
  {
    std::lock_guard<std::mutex> l(g_mu);
    if (count < 0 || !in_range((uintptr_t)A, sizeof(void*) * count) || !in_range((uintptr_t)B, sizeof(void*) * count) ||
        !in_range((uintptr_t)C, sizeof(void*) * count))
      return 7;  // the pointer arrays must live in device memory
  }
  for (int i = 0; i < count; ++i) {
    int r = gemm<T>(h, ta, tb, m, n, k, al, A[i], lda, B[i], ldb, be, C[i], ldc);
    if (r) return r;
  }
  return 0;
}
extern "C" {

int cublasSgemmBatched(void* h, int ta, int tb, int m, int n, int k, const float* al, const float* const* A, int lda,
                       const float* const* B, int ldb, const float* be, float* const* C, int ldc, int count) {
  return gemm_batched<float>(h, ta, tb, m, n, k, al, A, lda, B, ldb, be, C, ldc, count);
}
int cublasDgemmBatched(void* h, int ta, int tb, int m, int n, int k, const double* al, const double* const* A,
                       int lda, const double* const* B, int ldb, const double* be, double* const* C, int ldc,
                       int count) {
  return gemm_batched<double>(h, ta, tb, m, n, k, al, A, lda, B, ldb, be, C, ldc, count);
}

}  // extern "C"

extern "C" CUresult cuFuncGetAttribute(int* v, int attr, void* f) {
  if (!current()) return INVALID_CONTEXT;
  if (!f) return INVALID_HANDLE;
  *v = attr == 0 ? 1024 : 0;  // CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
  return OK;
}
