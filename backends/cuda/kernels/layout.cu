// Layout kernels move elements without computing, so they come in element widths: _b4 (float32)
// and _b8 (float64, int64). Gather and ScatterAdd index with int64 and report bad indices.

// transpose / broadcast: y[i] = x[Σ idx_k(i)·s_k] over output dims d.
template <typename E>
__device__ void gather_strided_t(i64 n, int rank, const Dims& d, const Dims& s, const E* x, E* y) {
  for (i64 i = gtid(); i < n; i += gstride()) y[i] = x[offset_of(i, rank, d, s)];
}

#define STRIDED(E, S)                                                                   \
  KERNEL void strided_##S(i64 n, i64 rank, Dims d, Dims s, const E* x, E* y) {          \
    gather_strided_t<E>(n, (int)rank, d, s, x, y);                                      \
  }
FOR_WIDTHS(STRIDED)

// copy_blocks: for o < outer and j < n, y[o·db + do + j] = x[o·sb + so + j] (Slice, Concat).
template <typename E>
__device__ void copy_blocks_t(i64 outer, i64 n, i64 sb, i64 so, i64 db, i64 dof, const E* x, E* y) {
  i64 total = outer * n;
  for (i64 i = gtid(); i < total; i += gstride()) {
    i64 o = i / n, j = i % n;
    y[o * db + dof + j] = x[o * sb + so + j];
  }
}

#define COPY_BLOCKS(E, S)                                                                          \
  KERNEL void copy_blocks_##S(i64 outer, i64 n, i64 sb, i64 so, i64 db, i64 dof, const E* x, E* y) { \
    copy_blocks_t<E>(outer, n, sb, so, db, dof, x, y);                                             \
  }
FOR_WIDTHS(COPY_BLOCKS)

// pad: output blocks of db elements hold the input block of n elements at offset dof, zeros elsewhere.
template <typename E>
__device__ void pad_t(i64 outer, i64 n, i64 db, i64 dof, const E* x, E* y) {
  i64 total = outer * db;
  for (i64 i = gtid(); i < total; i += gstride()) {
    i64 o = i / db, j = i % db - dof;
    y[i] = (j >= 0 && j < n) ? x[o * n + j] : (E)0;
  }
}

#define PAD(E, S) \
  KERNEL void pad_##S(i64 outer, i64 n, i64 db, i64 dof, const E* x, E* y) { pad_t<E>(outer, n, db, dof, x, y); }
FOR_WIDTHS(PAD)

// gather: y[i, :] = table[idx[i], :] for a [rows, d] table.
template <typename E>
__device__ void gather_t(i64 nidx, i64 rows, i64 d, const E* table, const i64* idx, E* y, i64* rec) {
  gather_rows<E>(nidx, rows, d, idx, y, rec, [=](i64 t, i64 j) { return table[t * d + j]; });
}

#define GATHER(E, S)                                                                                 \
  KERNEL void gather_##S(i64 nidx, i64 rows, i64 d, const E* table, const i64* idx, E* y, i64* rec) { \
    gather_t<E>(nidx, rows, d, table, idx, y, rec);                                                  \
  }
FOR_WIDTHS(GATHER)

// scatter_add: y[idx[i], :] += g[i, :] (y zeroed before; atomics, so the order of additions
// varies between runs).
template <typename T>
__device__ void scatter_add_t(i64 nidx, i64 rows, i64 d, const i64* idx, const T* g, T* y, i64* rec) {
  i64 total = nidx * d;
  for (i64 i = gtid(); i < total; i += gstride()) {
    i64 k = i / d, j = i % d;
    i64 t = idx[k];
    if (t < 0 || t >= rows) {
      if (j == 0) report(rec, k);
      continue;
    }
    atomic_add(&y[t * d + j], g[i]);
  }
}

#define SCATTER_ADD(T, S)                                                                                \
  KERNEL void scatter_add_##S(i64 nidx, i64 rows, i64 d, const i64* idx, const T* g, T* y, i64* rec) {    \
    scatter_add_t<T>(nidx, rows, d, idx, g, y, rec);                                                     \
  }
FOR_FLOATS(SCATTER_ADD)
