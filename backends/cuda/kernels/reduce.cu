// Sum over axes. The input is viewed as kept axes (m output elements) × reduced axes (r
// elements each); kd/ks and rd/rs are the dimensions and input strides of the two groups.
// Accumulation is in double.

// sum_block: one block per output element (large r).
template <typename T>
__device__ void sum_block_t(i64 m, i64 r, int krank, const Dims& kd, const Dims& ks, int rrank, const Dims& rd,
                            const Dims& rs, const T* x, T* y) {
  __shared__ double sh[BLOCK];
  for (i64 o = blockIdx.x; o < m; o += gridDim.x) {
    i64 base = offset_of(o, krank, kd, ks);
    double acc = 0;
    for (i64 j = threadIdx.x; j < r; j += blockDim.x) acc += (double)x[base + offset_of(j, rrank, rd, rs)];
    double s = block_sum(acc, sh);
    if (threadIdx.x == 0) y[o] = (T)s;
  }
}

// sum_thread: one thread per output element (small r, many outputs).
template <typename T>
__device__ void sum_thread_t(i64 m, i64 r, int krank, const Dims& kd, const Dims& ks, int rrank, const Dims& rd,
                             const Dims& rs, const T* x, T* y) {
  for (i64 o = gtid(); o < m; o += gstride()) {
    i64 base = offset_of(o, krank, kd, ks);
    double acc = 0;
    for (i64 j = 0; j < r; ++j) acc += (double)x[base + offset_of(j, rrank, rd, rs)];
    y[o] = (T)acc;
  }
}

#define SUM(T, S)                                                                                  \
  KERNEL void sum_block_##S(i64 m, i64 r, i64 krank, Dims kd, Dims ks, i64 rrank, Dims rd, Dims rs,  \
                            const T* x, T* y) {                                                    \
    sum_block_t<T>(m, r, (int)krank, kd, ks, (int)rrank, rd, rs, x, y);                            \
  }                                                                                                \
  KERNEL void sum_thread_##S(i64 m, i64 r, i64 krank, Dims kd, Dims ks, i64 rrank, Dims rd, Dims rs, \
                             const T* x, T* y) {                                                   \
    sum_thread_t<T>(m, r, (int)krank, kd, ks, (int)rrank, rd, rs, x, y);                           \
  }
FOR_FLOATS(SUM)
