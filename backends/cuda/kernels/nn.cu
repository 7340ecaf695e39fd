// Softmax, CrossEntropy(+Grad), RMSNorm and GatedRMSNorm (+Grad). One block per row (or per
// row and group); sums in double.

// softmax: lines of n elements with stride step; line l starts at (l/step)·n·step + l%step.
template <typename T>
__device__ void softmax_t(i64 lines, i64 n, i64 step, const T* x, T* y) {
  __shared__ double sh[BLOCK];
  for (i64 l = blockIdx.x; l < lines; l += gridDim.x) {
    i64 base = (l / step) * n * step + l % step;
    double m = neg_inf();
    for (i64 j = threadIdx.x; j < n; j += blockDim.x) m = dmax(m, (double)x[base + j * step]);
    m = block_max(m, sh);
    double s = 0;
    for (i64 j = threadIdx.x; j < n; j += blockDim.x) s += exp((double)x[base + j * step] - m);
    s = block_sum(s, sh);
    double inv = 1.0 / s;
    for (i64 j = threadIdx.x; j < n; j += blockDim.x) y[base + j * step] = (T)(exp((double)x[base + j * step] - m) * inv);
  }
}

#define SOFTMAX(T, S) \
  KERNEL void softmax_##S(i64 lines, i64 n, i64 step, const T* x, T* y) { softmax_t<T>(lines, n, step, x, y); }
FOR_FLOATS(SOFTMAX)

// cross_entropy: rows of v logits and one int64 target each. grad == 0: y[r] = logsumexp − x[t];
// grad != 0: y[r, :] = (softmax − onehot(t))·g[r]. A target outside [0, v) is reported and the
// row is left unwritten.
template <typename T>
__device__ void cross_entropy_t(i64 rows, i64 v, int grad, const T* logits, const i64* targets, const T* g, T* y,
                                i64* rec) {
  __shared__ double sh[BLOCK];
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    i64 t = targets[r];
    if (t < 0 || t >= v) {
      if (threadIdx.x == 0) report(rec, r);
      continue;
    }
    const T* x = logits + r * v;
    double m = neg_inf();
    for (i64 j = threadIdx.x; j < v; j += blockDim.x) m = dmax(m, (double)x[j]);
    m = block_max(m, sh);
    double s = 0;
    for (i64 j = threadIdx.x; j < v; j += blockDim.x) s += exp((double)x[j] - m);
    s = block_sum(s, sh);
    if (!grad) {
      if (threadIdx.x == 0) y[r] = (T)(log(s) + m - (double)x[t]);
      continue;
    }
    double gr = (double)g[r];
    double scale = gr / s;
    T* dy = y + r * v;
    for (i64 j = threadIdx.x; j < v; j += blockDim.x) {
      double d = exp((double)x[j] - m) * scale;
      if (j == t) d -= gr;
      dy[j] = (T)d;
    }
  }
}

#define CROSS_ENTROPY(T, S)                                                                          \
  KERNEL void cross_entropy_##S(i64 rows, i64 v, i64 grad, const T* logits, const i64* targets,      \
                                const T* g, T* y, i64* rec) {                                        \
    cross_entropy_t<T>(rows, v, (int)grad, logits, targets, g, y, rec);                              \
  }
FOR_FLOATS(CROSS_ENTROPY)

// Norms. Rows of d features are normalised in groups of dg contiguous features (ng = d/dg groups);
// h is x (RMSNorm) or x·silu(z) (gated; x is the gated norm's y input). Items are (row, group).
template <typename T>
__device__ __forceinline__ double norm_h(int gated, const T* x, const T* z, i64 i) {
  double xv = (double)x[i];
  if (!gated) return xv;
  double zv = (double)z[i];
  return xv * zv * sigmoid_d(zv);
}

template <typename T>
__device__ void norm_fwd_t(i64 rows, i64 d, i64 dg, int gated, double eps, const T* x, const T* z, const T* w,
                           T* y) {
  __shared__ double sh[BLOCK];
  i64 ng = d / dg, items = rows * ng;
  for (i64 it = blockIdx.x; it < items; it += gridDim.x) {
    i64 base = (it / ng) * d + (it % ng) * dg, wbase = (it % ng) * dg;
    double ss = 0;
    for (i64 j = threadIdx.x; j < dg; j += blockDim.x) {
      double h = norm_h<T>(gated, x, z, base + j);
      ss += h * h;
    }
    ss = block_sum(ss, sh);
    double inv = 1.0 / sqrt(ss / (double)dg + eps);
    for (i64 j = threadIdx.x; j < dg; j += blockDim.x)
      y[base + j] = (T)(norm_h<T>(gated, x, z, base + j) * inv * (double)w[wbase + j]);
  }
}

#define NORM_FWD(T, S)                                                                             \
  KERNEL void norm_fwd_##S(i64 rows, i64 d, i64 dg, i64 gated, double eps, const T* x, const T* z,   \
                           const T* w, T* y) {                                                     \
    norm_fwd_t<T>(rows, d, dg, (int)gated, eps, x, z, w, y);                                       \
  }
FOR_FLOATS(NORM_FWD)

// norm_bwd writes dx (and dz when gated) and the reciprocal RMS of every item into invs.
// With r = 1/sqrt(mean(h²)+eps) over a group of n: dh = r·(g·w − h·r²·Σ(g·w·h)/n);
// gated: dy = dh·silu'(z) terms as in the CPU backend.
template <typename T>
__device__ void norm_bwd_t(i64 rows, i64 d, i64 dg, int gated, double eps, const T* x, const T* z, const T* w,
                           const T* g, T* dx, T* dz, double* invs) {
  __shared__ double sh[BLOCK];
  i64 ng = d / dg, items = rows * ng;
  for (i64 it = blockIdx.x; it < items; it += gridDim.x) {
    i64 base = (it / ng) * d + (it % ng) * dg, wbase = (it % ng) * dg;
    double ss = 0, dot = 0;
    for (i64 j = threadIdx.x; j < dg; j += blockDim.x) {
      double h = norm_h<T>(gated, x, z, base + j);
      ss += h * h;
      dot += (double)g[base + j] * (double)w[wbase + j] * h;
    }
    ss = block_sum(ss, sh);
    dot = block_sum(dot, sh);
    double inv = 1.0 / sqrt(ss / (double)dg + eps);
    double c = dot * inv * inv / (double)dg;
    for (i64 j = threadIdx.x; j < dg; j += blockDim.x) {
      i64 i = base + j;
      double h = norm_h<T>(gated, x, z, i);
      double dh = inv * ((double)g[i] * (double)w[wbase + j] - h * c);
      if (!gated) {
        dx[i] = (T)dh;
      } else {
        double zv = (double)z[i], yv = (double)x[i], s = sigmoid_d(zv);
        dx[i] = (T)(dh * zv * s);
        dz[i] = (T)(dh * yv * s * (1.0 + zv * (1.0 - s)));
      }
    }
    if (threadIdx.x == 0) invs[it] = inv;
  }
}

#define NORM_BWD(T, S)                                                                             \
  KERNEL void norm_bwd_##S(i64 rows, i64 d, i64 dg, i64 gated, double eps, const T* x, const T* z,   \
                           const T* w, const T* g, T* dx, T* dz, double* invs) {                   \
    norm_bwd_t<T>(rows, d, dg, (int)gated, eps, x, z, w, g, dx, dz, invs);                         \
  }
FOR_FLOATS(NORM_BWD)

// norm_dw_part: partial[chunk, j] = Σ over the chunk's rows of g·h·inv (blockIdx.y is the chunk).
template <typename T>
__device__ void norm_dw_part_t(i64 rows, i64 d, i64 dg, int gated, i64 rpc, const T* x, const T* z, const T* g,
                               const double* invs, double* partial) {
  i64 ng = d / dg;
  i64 chunk = blockIdx.y;
  i64 r0 = chunk * rpc, r1 = imin(rows, r0 + rpc);
  for (i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x; j < d; j += (i64)gridDim.x * blockDim.x) {
    double acc = 0;
    for (i64 r = r0; r < r1; ++r) {
      i64 i = r * d + j;
      acc += (double)g[i] * norm_h<T>(gated, x, z, i) * invs[r * ng + j / dg];
    }
    partial[chunk * d + j] = acc;
  }
}

#define NORM_DW_PART(T, S)                                                                         \
  KERNEL void norm_dw_part_##S(i64 rows, i64 d, i64 dg, i64 gated, i64 rpc, const T* x, const T* z,  \
                               const T* g, const double* invs, double* partial) {                  \
    norm_dw_part_t<T>(rows, d, dg, (int)gated, rpc, x, z, g, invs, partial);                       \
  }
FOR_FLOATS(NORM_DW_PART)

// norm_dw_sum: dw[j] = Σ_chunk partial[chunk, j], in chunk order.
template <typename T>
__device__ void norm_dw_sum_t(i64 d, i64 chunks, const double* partial, T* dw) {
  for (i64 j = gtid(); j < d; j += gstride()) {
    double s = 0;
    for (i64 c = 0; c < chunks; ++c) s += partial[c * d + j];
    dw[j] = (T)s;
  }
}

#define NORM_DW_SUM(T, S) \
  KERNEL void norm_dw_sum_##S(i64 d, i64 chunks, const double* partial, T* dw) { norm_dw_sum_t<T>(d, chunks, partial, dw); }
FOR_FLOATS(NORM_DW_SUM)
