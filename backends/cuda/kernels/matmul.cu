// The built-in GEMM, used when cuBLAS is not available: C[z] = op(A[z])·op(B[z]) for row-major
// matrices, one 16×16 tile of C per block. Batch z maps to A and B through the broadcast batch
// dimensions bd and their strides (in elements, 0 where broadcast); C is contiguous.

#define TILE 16

template <typename T>
__device__ void gemm_t(i64 batch, i64 M, i64 N, i64 K, int ta, int tb, int nb, const Dims& bd, const Dims& sa,
                       const Dims& sb, const T* A, const T* B, T* C) {
  __shared__ T As[TILE][TILE + 1];
  __shared__ T Bs[TILE][TILE + 1];
  int tx = threadIdx.x, ty = threadIdx.y;
  i64 tilesM = (M + TILE - 1) / TILE, tilesN = (N + TILE - 1) / TILE;
  for (i64 z = blockIdx.z; z < batch; z += gridDim.z) {
    i64 oa = 0, ob = 0, r = z;
    for (int k = nb - 1; k >= 0; --k) {
      i64 q = r % bd.v[k];
      r /= bd.v[k];
      oa += q * sa.v[k];
      ob += q * sb.v[k];
    }
    const T* a = A + oa;
    const T* b = B + ob;
    T* c = C + z * M * N;
    for (i64 by = blockIdx.y; by < tilesM; by += gridDim.y) {
      for (i64 bx = blockIdx.x; bx < tilesN; bx += gridDim.x) {
        i64 row = by * TILE + ty, col = bx * TILE + tx;
        T acc = 0;
        for (i64 k0 = 0; k0 < K; k0 += TILE) {
          i64 ka = k0 + tx, kb = k0 + ty;
          As[ty][tx] = (row < M && ka < K) ? (ta ? a[ka * M + row] : a[row * K + ka]) : (T)0;
          Bs[ty][tx] = (kb < K && col < N) ? (tb ? b[col * K + kb] : b[kb * N + col]) : (T)0;
          __syncthreads();
          for (int kk = 0; kk < TILE; ++kk) acc += As[ty][kk] * Bs[kk][tx];
          __syncthreads();
        }
        if (row < M && col < N) c[row * N + col] = acc;
      }
    }
  }
}

#define GEMM(T, S)                                                                                 \
  KERNEL void gemm_##S(i64 batch, i64 M, i64 N, i64 K, i64 ta, i64 tb, i64 nb, Dims bd, Dims sa,     \
                       Dims sb, const T* A, const T* B, T* C) {                                    \
    gemm_t<T>(batch, M, N, K, (int)ta, (int)tb, (int)nb, bd, sa, sb, A, B, C);                     \
  }
FOR_FLOATS(GEMM)
