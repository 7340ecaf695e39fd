// prelude.cuh — shared by every kernel module. The Go side prepends it to each .cu file before
// compiling with NVRTC, so there is no #include anywhere (NVRTC has no system headers).
//
// Conventions:
//   * every kernel is extern "C" (no name mangling) and exists in two variants, _f32 and _f64
//     (layout kernels that only move bits: _b4 and _b8), instantiated with FOR_FLOATS/FOR_WIDTHS;
//   * integer parameters are long long and scalar parameters double, so every parameter is one
//     8-byte slot; index arrays travel by value as struct Dims;
//   * element-wise kernels use grid-stride loops, reductions one block of BLOCK threads per item;
//   * kernels never trap on bad data: an invalid index is counted in an error record (report) that
//     the host reads back after the launch, and the offending element is skipped.

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;

#define KERNEL extern "C" __global__
#define BLOCK 256
#define MAXD 8

struct Dims {
  i64 v[MAXD];
};

#define FOR_FLOATS(M) M(float, f32) M(double, f64)
#define FOR_WIDTHS(M) M(u32, b4) M(u64, b8)

__device__ __forceinline__ i64 gtid() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ i64 gstride() { return (i64)gridDim.x * blockDim.x; }

// offset_of maps linear index i over dims d (rank axes, row-major) to Σ index_k · s_k.
__device__ __forceinline__ i64 offset_of(i64 i, int rank, const Dims& d, const Dims& s) {
  i64 off = 0;
  for (int k = rank - 1; k >= 0; --k) {
    i64 q = i % d.v[k];
    i /= d.v[k];
    off += q * s.v[k];
  }
  return off;
}

__device__ __forceinline__ double neg_inf() { return __longlong_as_double((long long)0xfff0000000000000ULL); }

// dmax is max that propagates NaN (as Go's math.Max does).
__device__ __forceinline__ double dmax(double a, double b) { return (a > b || a != a) ? a : b; }

__device__ __forceinline__ i64 imin(i64 a, i64 b) { return a < b ? a : b; }
__device__ __forceinline__ i64 imax(i64 a, i64 b) { return a > b ? a : b; }

__device__ __forceinline__ double sigmoid_d(double x) {
  if (x >= 0) return 1.0 / (1.0 + exp(-x));
  double e = exp(x);
  return e / (1.0 + e);
}

// block_sum and block_max reduce one value per thread over the block (blockDim.x a power of two,
// at most 1024, sh at least blockDim.x long). Every thread of the block must call them.
__device__ double block_sum(double v, double* sh) {
  int t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (int s = blockDim.x >> 1; s > 0; s >>= 1) {
    if (t < s) sh[t] += sh[t + s];
    __syncthreads();
  }
  double r = sh[0];
  __syncthreads();
  return r;
}

__device__ double block_max(double v, double* sh) {
  int t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (int s = blockDim.x >> 1; s > 0; s >>= 1) {
    if (t < s) sh[t] = dmax(sh[t], sh[t + s]);
    __syncthreads();
  }
  double r = sh[0];
  __syncthreads();
  return r;
}

__device__ __forceinline__ float atomic_add(float* a, float v) { return atomicAdd(a, v); }
__device__ __forceinline__ double atomic_add(double* a, double v) {
#if __CUDA_ARCH__ >= 600
  return atomicAdd(a, v);
#else
  u64* p = (u64*)a;
  u64 old = *p, assumed;
  do {
    assumed = old;
    old = atomicCAS(p, assumed, (u64)__double_as_longlong(v + __longlong_as_double((long long)assumed)));
  } while (assumed != old);
  return __longlong_as_double((long long)old);
#endif
}

// report counts an invalid index at position pos in the error record rec = {count, first pos}.
__device__ __forceinline__ void report(i64* rec, i64 pos) {
  atomicAdd((u64*)rec, 1ULL);
  atomicMin((u64*)(rec + 1), (u64)pos);
}

// gather_rows sets y[i, j] = get(idx[i], j) for the nidx indices and the d columns of a table of
// rows rows; an index outside [0, rows) is reported and its row of y zeroed. Gather and
// QuantGather differ only in get, which reads (and for QuantGather widens) one table element.
template <typename E, typename Get>
__device__ __forceinline__ void gather_rows(i64 nidx, i64 rows, i64 d, const i64* idx, E* y, i64* rec, Get get) {
  i64 total = nidx * d;
  for (i64 i = gtid(); i < total; i += gstride()) {
    i64 k = i / d, j = i % d;
    i64 t = idx[k];
    if (t < 0 || t >= rows) {
      if (j == 0) report(rec, k);
      y[i] = (E)0;
      continue;
    }
    y[i] = get(t, j);
  }
}
