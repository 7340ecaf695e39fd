// Quantized weights (ops.QuantMatMul, ops.QuantGather): matrices stored as bfloat16 or float16
// bits, or as int8 with one float32 scale per row, widened to float32 as they are read; the
// activations, the sums and the results are float32 (for int8 weights the activations are first
// rounded per block by quant_round_act, as the op defines). Each kernel comes in three variants
// named after the storage: _bf16, _f16 and _i8. A kernel takes the scale pointer in every
// variant; it is null for bfloat16 and float16 and the per-row scale [rows] for int8.
//
// The widening is bitwise package quant's: bfloat16 is the upper half of a float32, float16 is
// converted with integer operations (exact, subnormals, infinities and NaN payloads included, and
// free of cuda_fp16.h, which NVRTC cannot include without the toolkit's headers), and an int8
// weight is scale·q rounded once to float32.

typedef unsigned short u16;
typedef signed char s8;

// 16-byte vectors for the coalesced loads of the mat-vec kernel.
struct alignas(16) U4 {
  u32 v[4];
};
struct alignas(16) F4 {
  float v[4];
};

// f16_to_f32 widens IEEE half-precision bits (the low 16 bits of h) to float32, exactly.
__device__ __forceinline__ float f16_to_f32(u32 h) {
  u32 sign = (h & 0x8000u) << 16, em = h & 0x7fffu;
  if (em >= 0x7c00u) return __uint_as_float(sign | 0x7f800000u | ((em & 0x3ffu) << 13));  // Inf, NaN
  if (em < 0x400u) {  // zero or subnormal: em·2⁻²⁴, a normal float32 (or zero)
    float v = (float)em * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return __uint_as_float(sign | ((em << 13) + (112u << 23)));  // rebias the exponent: 127 − 15
}

// The storage formats: W is the element type, VEC how many elements one 16-byte load holds, get
// widens one element, unpack the VEC elements of a 16-byte load (little-endian, element 0 in the
// low bits of v[0]). The int8 scale is applied by the callers.
struct QBF16 {
  typedef u16 W;
  enum { VEC = 8 };
  static __device__ __forceinline__ float get(W h) { return __uint_as_float((u32)h << 16); }
  static __device__ __forceinline__ void unpack(const U4& q, float* f) {
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __uint_as_float(q.v[i] << 16);
      f[2 * i + 1] = __uint_as_float(q.v[i] & 0xffff0000u);
    }
  }
};

struct QF16 {
  typedef u16 W;
  enum { VEC = 8 };
  static __device__ __forceinline__ float get(W h) { return f16_to_f32(h); }
  static __device__ __forceinline__ void unpack(const U4& q, float* f) {
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = f16_to_f32(q.v[i] & 0xffffu);
      f[2 * i + 1] = f16_to_f32(q.v[i] >> 16);
    }
  }
};

struct QI8 {
  typedef s8 W;
  enum { VEC = 16 };
  static __device__ __forceinline__ float get(W q) { return (float)q; }
  static __device__ __forceinline__ void unpack(const U4& q, float* f) {
    for (int i = 0; i < 4; ++i)
      for (int b = 0; b < 4; ++b) f[4 * i + b] = (float)(s8)(q.v[i] >> (8 * b));
  }
};

#define FOR_QUANTS(M) M(QBF16, bf16) M(QF16, f16) M(QI8, i8)

// deq returns the float32 value of element p of row r of a quantized matrix with rows of k.
template <typename Q>
__device__ __forceinline__ float deq(const typename Q::W* w, const float* scale, i64 r, i64 k, i64 p) {
  float v = Q::get(w[r * k + p]);
  return scale ? scale[r] * v : v;
}

// quant_gather: y[i, :] = dequant(table[idx[i], :]) for a [rows, d] table; a bad index is
// reported and its row of y zeroed.
template <typename Q>
__device__ void quant_gather_t(i64 nidx, i64 rows, i64 d, const typename Q::W* table, const i64* idx,
                               const float* scale, float* y, i64* rec) {
  gather_rows<float>(nidx, rows, d, idx, y, rec, [=](i64 t, i64 j) { return deq<Q>(table, scale, t, d, j); });
}

#define QUANT_GATHER(Q, S)                                                                                  \
  KERNEL void quant_gather_##S(i64 nidx, i64 rows, i64 d, const Q::W* table, const i64* idx, const float* scale, \
                               float* y, i64* rec) {                                                        \
    quant_gather_t<Q>(nidx, rows, d, table, idx, scale, y, rec);                                            \
  }
FOR_QUANTS(QUANT_GATHER)

// quant_dequant: out [rows, k] = dequant(rows [r0, r0 + rows) of w [·, k]): a float32 panel of
// the weight for the cuBLAS GEMM of the many-row QuantMatMul. One block per row (grid-stride),
// threads across the row: coalesced, and no 64-bit division per element.
template <typename Q>
__device__ void quant_dequant_t(i64 rows, i64 k, i64 r0, const typename Q::W* w, const float* scale, float* out) {
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const typename Q::W* src = w + (r0 + r) * k;
    float* dst = out + r * k;
    const float s = scale ? scale[r0 + r] : 1.f;
    for (i64 p = threadIdx.x; p < k; p += blockDim.x) {
      float v = Q::get(src[p]);
      dst[p] = scale ? s * v : v;
    }
  }
}

#define QUANT_DEQUANT(Q, S)                                                                                 \
  KERNEL void quant_dequant_##S(i64 rows, i64 k, i64 r0, const Q::W* w, const float* scale, float* out) {   \
    quant_dequant_t<Q>(rows, k, r0, w, scale, out);                                                         \
  }
FOR_QUANTS(QUANT_DEQUANT)

// quant_round_act: out [rows, k] = x rounded as products with int8 weights see it (package quant's
// Int16Blocks and RoundInt16Blocks, bitwise): each block of 32 consecutive values of a row (the
// last one possibly shorter) gets scale = max|block|/32767 and becomes scale·q with q the value
// divided by the scale in float32 (IEEE division: NVRTC's default -prec-div=true), rounded half
// to even and clamped to ±32767. A block holding an Inf or NaN becomes NaN; an all-zero one (or
// one whose scale underflows) zeros. One thread per block: x is a few rows of activations, small
// next to the weight.
KERNEL void quant_round_act(i64 rows, i64 k, const float* x, float* out) {
  const i64 nb = (k + 31) / 32, total = rows * nb;
  for (i64 i = gtid(); i < total; i += gstride()) {
    const i64 r = i / nb, b = i % nb;
    const float* src = x + r * k + b * 32;
    float* dst = out + r * k + b * 32;
    const int n = k - b * 32 < 32 ? (int)(k - b * 32) : 32;
    float amax = 0.f;
    bool bad = false;
    for (int p = 0; p < n; ++p) {
      const float a = fabsf(src[p]);
      if (!(a <= 3.40282346638528859812e38f)) bad = true;  // Inf or NaN
      else if (a > amax) amax = a;
    }
    const float s = amax / 32767.f;
    for (int p = 0; p < n; ++p) {
      if (bad) {
        dst[p] = __uint_as_float(0x7fc00000u);
      } else if (s == 0.f) {
        dst[p] = 0.f;
      } else {
        float q = rintf(src[p] / s);
        q = q > 32767.f ? 32767.f : (q < -32767.f ? -32767.f : q);
        dst[p] = s * q;
      }
    }
  }
}

// quant_matvec: y [M, N] = x [M, K] · dequant(w [N, K])ᵀ for M ≤ QMV_MAXM rows of x (decoding a
// few sequences). Decode is bound by reading W, so each row of W is read once, by a group of 32
// threads walking it in 16-byte loads (consecutive threads, consecutive addresses) when K fills
// whole loads, else one element per thread; each thread keeps one float32 partial sum per row of
// x. A block of QMV_THREADS threads handles QMV_ROWS rows of W; the partial sums meet in shared
// memory after one barrier and one thread per (row of W, row of x) adds its group's 32 in a fixed
// order, so the result does not depend on timing. The int8 scale multiplies the finished sum.
#define QMV_MAXM 8
#define QMV_THREADS 256
#define QMV_ROWS (QMV_THREADS / 32)

template <typename Q>
__device__ void quant_matvec_t(i64 M, i64 N, i64 K, const float* x, const typename Q::W* w, const float* scale,
                               float* y) {
  typedef typename Q::W W;
  __shared__ float red[QMV_MAXM][QMV_THREADS];
  const int t = threadIdx.x, lane = t & 31, group = t >> 5;
  const int m_rows = (int)M;
  const bool vec = K % Q::VEC == 0;  // then every row starts 16-byte aligned
  const i64 groups = (N + QMV_ROWS - 1) / QMV_ROWS;
  for (i64 g = blockIdx.x; g < groups; g += gridDim.x) {  // uniform across the block
    const i64 j = g * QMV_ROWS + group;
    float acc[QMV_MAXM];
#pragma unroll
    for (int m = 0; m < QMV_MAXM; ++m) acc[m] = 0.f;
    if (j < N) {
      const W* row = w + j * K;
      if (vec) {
        for (i64 p = (i64)lane * Q::VEC; p < K; p += 32 * Q::VEC) {
          float f[Q::VEC];
          Q::unpack(*(const U4*)(row + p), f);
#pragma unroll
          for (int m = 0; m < QMV_MAXM; ++m) {
            if (m < m_rows) {
              const F4* xv = (const F4*)(x + m * K + p);  // K % 4 == 0: 16-byte aligned
              float s = acc[m];
#pragma unroll
              for (int c = 0; c < Q::VEC / 4; ++c) {
                F4 a = xv[c];
                s += a.v[0] * f[4 * c] + a.v[1] * f[4 * c + 1] + a.v[2] * f[4 * c + 2] + a.v[3] * f[4 * c + 3];
              }
              acc[m] = s;
            }
          }
        }
      } else {
        for (i64 p = lane; p < K; p += 32) {
          float f = Q::get(row[p]);
#pragma unroll
          for (int m = 0; m < QMV_MAXM; ++m)
            if (m < m_rows) acc[m] += x[m * K + p] * f;
        }
      }
    }
#pragma unroll
    for (int m = 0; m < QMV_MAXM; ++m) red[m][t] = acc[m];
    __syncthreads();
    if (t < QMV_ROWS * m_rows) {
      const int r = t / m_rows, m = t % m_rows;
      const i64 jj = g * QMV_ROWS + r;
      if (jj < N) {
        float s = 0.f;
        // Start at a different lane per thread: the threads read different shared-memory banks.
        for (int l = 0; l < 32; ++l) s += red[m][r * 32 + ((l + t) & 31)];
        y[m * N + jj] = scale ? s * scale[jj] : s;
      }
    }
    __syncthreads();
  }
}

#define QUANT_MATVEC(Q, S)                                                                                  \
  KERNEL void quant_matvec_##S(i64 M, i64 N, i64 K, const float* x, const Q::W* w, const float* scale, float* y) { \
    quant_matvec_t<Q>(M, N, K, x, w, scale, y);                                                             \
  }
FOR_QUANTS(QUANT_MATVEC)

// quant_gemm: y [M, N] = x [M, K] · dequant(w [N, K])ᵀ with one 16×16 tile of y per block, the
// weight widened as its tile is loaded: the many-row QuantMatMul when cuBLAS is unavailable (it
// needs no float32 copy of W). Same scheme as gemm in matmul.cu.
#define QTILE 16

template <typename Q>
__device__ void quant_gemm_t(i64 M, i64 N, i64 K, const float* x, const typename Q::W* w, const float* scale,
                             float* y) {
  __shared__ float Xs[QTILE][QTILE + 1];
  __shared__ float Ws[QTILE][QTILE + 1];
  int tx = threadIdx.x, ty = threadIdx.y;
  i64 tilesM = (M + QTILE - 1) / QTILE, tilesN = (N + QTILE - 1) / QTILE;
  for (i64 by = blockIdx.y; by < tilesM; by += gridDim.y) {
    for (i64 bx = blockIdx.x; bx < tilesN; bx += gridDim.x) {
      i64 row = by * QTILE + ty, col = bx * QTILE + tx;
      i64 wrow = bx * QTILE + ty;  // the row of W this thread loads into the tile
      float acc = 0.f;
      for (i64 k0 = 0; k0 < K; k0 += QTILE) {
        i64 kx = k0 + tx;
        Xs[ty][tx] = (row < M && kx < K) ? x[row * K + kx] : 0.f;
        Ws[tx][ty] = (wrow < N && kx < K) ? deq<Q>(w, scale, wrow, K, kx) : 0.f;  // Ws[k][n]
        __syncthreads();
        for (int kk = 0; kk < QTILE; ++kk) acc += Xs[ty][kk] * Ws[kk][tx];
        __syncthreads();
      }
      if (row < M && col < N) y[row * N + col] = acc;
    }
  }
}

#define QUANT_GEMM(Q, S)                                                                                    \
  KERNEL void quant_gemm_##S(i64 M, i64 N, i64 K, const float* x, const Q::W* w, const float* scale, float* y) { \
    quant_gemm_t<Q>(M, N, K, x, w, scale, y);                                                               \
  }
FOR_QUANTS(QUANT_GEMM)
