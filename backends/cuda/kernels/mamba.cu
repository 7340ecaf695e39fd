// Mamba2 mixer kernels: the depthwise causal convolution with carried state (and its gradient),
// the selective state-space scan (SSD, also used for SSDStep with T = 1) and its gradient.

// ---- CausalConv1D ----
// x [B,T,C], w [C,K], bias [C], state [B,C,K] (oldest column first), optional lengths [B]. With u
// the state's K columns followed by x, y[b,t,c] = bias[c] + Σ_j w[c,j]·u[t+1+j]; positions at or
// past lengths[b] are zero and the new state holds the K columns of u ending at lengths[b].

// conv_valid returns row b's valid length, clamped to [0, T] (bad values are reported elsewhere).
__device__ __forceinline__ i64 conv_valid(int has_len, const i64* lens, i64 b, i64 T) {
  if (!has_len) return T;
  i64 v = lens[b];
  return v < 0 ? 0 : (v > T ? T : v);
}

__device__ __forceinline__ void conv_check(int has_len, const i64* lens, i64 b, i64 T, i64* rec) {
  if (has_len) {
    i64 v = lens[b];
    if (v < 0 || v > T) report(rec, b);
  }
}

template <typename T>
__device__ __forceinline__ T conv_u(const T* x, const T* st, i64 b, i64 Tn, i64 C, i64 K, i64 c, i64 src) {
  return src >= 0 ? x[(b * Tn + src) * C + c] : st[(b * C + c) * K + K + src];
}

template <typename T>
__device__ void conv_fwd_t(i64 B, i64 Tn, i64 C, i64 K, int has_len, const T* x, const T* w, const T* bias,
                           const T* st, const i64* lens, T* y, i64* rec) {
  i64 total = B * Tn * C;
  for (i64 i = gtid(); i < total; i += gstride()) {
    i64 c = i % C, t = (i / C) % Tn, b = i / (C * Tn);
    if (t == 0 && c == 0) conv_check(has_len, lens, b, Tn, rec);
    i64 valid = conv_valid(has_len, lens, b, Tn);
    if (t >= valid) {
      y[i] = (T)0;
      continue;
    }
    T acc = bias[c];
    for (i64 j = 0; j < K; ++j) acc += w[c * K + j] * conv_u<T>(x, st, b, Tn, C, K, c, t + 1 + j - K);
    y[i] = acc;
  }
}

#define CONV_FWD(T, S)                                                                                  \
  KERNEL void conv_fwd_##S(i64 B, i64 Tn, i64 C, i64 K, i64 has_len, const T* x, const T* w, const T* bias, \
                           const T* st, const i64* lens, T* y, i64* rec) {                             \
    conv_fwd_t<T>(B, Tn, C, K, (int)has_len, x, w, bias, st, lens, y, rec);                             \
  }
FOR_FLOATS(CONV_FWD)

// conv_state: ns[b,c,j] = u[valid + j].
template <typename T>
__device__ void conv_state_t(i64 B, i64 Tn, i64 C, i64 K, int has_len, const T* x, const T* st, const i64* lens,
                             T* ns) {
  i64 total = B * C * K;
  for (i64 i = gtid(); i < total; i += gstride()) {
    i64 j = i % K, c = (i / K) % C, b = i / (K * C);
    i64 m = conv_valid(has_len, lens, b, Tn) + j;
    ns[i] = m >= K ? x[(b * Tn + m - K) * C + c] : st[(b * C + c) * K + m];
  }
}

#define CONV_STATE(T, S)                                                                             \
  KERNEL void conv_state_##S(i64 B, i64 Tn, i64 C, i64 K, i64 has_len, const T* x, const T* st,       \
                             const i64* lens, T* ns) {                                               \
    conv_state_t<T>(B, Tn, C, K, (int)has_len, x, st, lens, ns);                                     \
  }
FOR_FLOATS(CONV_STATE)

// conv_bwd_dx: dx[b,s,c] = Σ_j w[c,j]·gy[b,s+K−1−j,c] (outputs before valid) + gNewState[b,c,K+s−valid],
// zero at padded positions.
template <typename T>
__device__ void conv_bwd_dx_t(i64 B, i64 Tn, i64 C, i64 K, int has_len, const T* w, const T* gy, const T* gs,
                              const i64* lens, T* dx, i64* rec) {
  i64 total = B * Tn * C;
  for (i64 i = gtid(); i < total; i += gstride()) {
    i64 c = i % C, s = (i / C) % Tn, b = i / (C * Tn);
    if (s == 0 && c == 0) conv_check(has_len, lens, b, Tn, rec);
    i64 valid = conv_valid(has_len, lens, b, Tn);
    if (s >= valid) {
      dx[i] = (T)0;
      continue;
    }
    T acc = 0;
    for (i64 j = 0; j < K; ++j) {
      i64 t = s + K - 1 - j;
      if (t < valid) acc += w[c * K + j] * gy[(b * Tn + t) * C + c];
    }
    i64 col = K + s - valid;
    if (col >= 0) acc += gs[(b * C + c) * K + col];
    dx[i] = acc;
  }
}

#define CONV_BWD_DX(T, S)                                                                            \
  KERNEL void conv_bwd_dx_##S(i64 B, i64 Tn, i64 C, i64 K, i64 has_len, const T* w, const T* gy,      \
                              const T* gs, const i64* lens, T* dx, i64* rec) {                       \
    conv_bwd_dx_t<T>(B, Tn, C, K, (int)has_len, w, gy, gs, lens, dx, rec);                           \
  }
FOR_FLOATS(CONV_BWD_DX)

// conv_bwd_dstate: dstate[b,c,col] = Σ_{j<col} w[c,j]·gy[b,col−1−j,c] (t < valid) + gNewState[col−valid].
template <typename T>
__device__ void conv_bwd_dstate_t(i64 B, i64 Tn, i64 C, i64 K, int has_len, const T* w, const T* gy, const T* gs,
                                  const i64* lens, T* dst) {
  i64 total = B * C * K;
  for (i64 i = gtid(); i < total; i += gstride()) {
    i64 col = i % K, c = (i / K) % C, b = i / (K * C);
    i64 valid = conv_valid(has_len, lens, b, Tn);
    T acc = 0;
    for (i64 j = 0; j < col; ++j) {
      i64 t = col - 1 - j;
      if (t < valid) acc += w[c * K + j] * gy[(b * Tn + t) * C + c];
    }
    if (col >= valid) acc += gs[(b * C + c) * K + col - valid];
    dst[i] = acc;
  }
}

#define CONV_BWD_DSTATE(T, S)                                                                         \
  KERNEL void conv_bwd_dstate_##S(i64 B, i64 Tn, i64 C, i64 K, i64 has_len, const T* w, const T* gy,   \
                                  const T* gs, const i64* lens, T* dst) {                             \
    conv_bwd_dstate_t<T>(B, Tn, C, K, (int)has_len, w, gy, gs, lens, dst);                            \
  }
FOR_FLOATS(CONV_BWD_DSTATE)

// conv_bwd_dw: one block per (channel, tap) item, tap K meaning the bias: Σ over valid (b, t) of
// gy[b,t,c]·u[t+1+j] (or gy for the bias).
template <typename T>
__device__ void conv_bwd_dw_t(i64 B, i64 Tn, i64 C, i64 K, int has_len, const T* x, const T* st, const T* gy,
                              const i64* lens, T* dw, T* dbias) {
  __shared__ double sh[BLOCK];
  i64 items = C * (K + 1);
  for (i64 it = blockIdx.x; it < items; it += gridDim.x) {
    i64 c = it / (K + 1), j = it % (K + 1);
    double acc = 0;
    for (i64 e = threadIdx.x; e < B * Tn; e += blockDim.x) {
      i64 b = e / Tn, t = e % Tn;
      if (t >= conv_valid(has_len, lens, b, Tn)) continue;
      double g = (double)gy[(b * Tn + t) * C + c];
      acc += j == K ? g : g * (double)conv_u<T>(x, st, b, Tn, C, K, c, t + 1 + j - K);
    }
    acc = block_sum(acc, sh);
    if (threadIdx.x == 0) {
      if (j == K)
        dbias[c] = (T)acc;
      else
        dw[c * K + j] = (T)acc;
    }
  }
}

#define CONV_BWD_DW(T, S)                                                                             \
  KERNEL void conv_bwd_dw_##S(i64 B, i64 Tn, i64 C, i64 K, i64 has_len, const T* x, const T* st,       \
                              const T* gy, const i64* lens, T* dw, T* dbias) {                        \
    conv_bwd_dw_t<T>(B, Tn, C, K, (int)has_len, x, st, gy, lens, dw, dbias);                          \
  }
FOR_FLOATS(CONV_BWD_DW)

// ---- SSD ----
// x [B,T,H,P], dt [B,T,H], A [H], B/C [B,T,G,N], D [H], state [B,H,P,N]; head h uses group
// h/(H/G). Per token S = exp(dt·A)·S + dt·x⊗B, y = S·C + D·x.
//
// One block per (batch row, head), walking the tokens in order. Thread (p, q) of the block owns
// state elements (p, n) for n = q, q+Q, q+2Q, … (at most SSD_MAXE of them, kept in registers);
// the Q partial sums of y[p] meet in shared memory. The block has a power-of-two number of
// threads ≥ P·Q; threads past P·Q only take part in the barriers.

#define SSD_MAXE 32
#define SSD_MAXB 1024
#define SSD_MAXN 256

template <typename T>
__device__ void ssd_fwd_t(i64 Bn, i64 Tn, i64 H, i64 P, i64 G, i64 N, i64 Q, const T* x, const T* dt, const T* A,
                          const T* Bm, const T* Cm, const T* D, const T* st, T* y, T* ns) {
  __shared__ T red[SSD_MAXB];
  int tid = threadIdx.x;
  i64 p = tid / Q, q = tid % Q;
  bool active = p < P;
  i64 hpg = H / G;
  for (i64 item = blockIdx.x; item < Bn * H; item += gridDim.x) {
    i64 b = item / H, h = item % H, g = h / hpg;
    i64 own = (item * P + p) * N;
    T s[SSD_MAXE];
#pragma unroll
    for (int k = 0; k < SSD_MAXE; ++k) {
      i64 n = q + (i64)k * Q;
      s[k] = (active && n < N) ? st[own + n] : (T)0;
    }
    T a = A[h], dv = D[h];
    for (i64 t = 0; t < Tn; ++t) {
      i64 bt = b * Tn + t;
      T dtv = dt[bt * H + h];
      T decay = (T)exp((double)(dtv * a));
      T xv = active ? x[(bt * H + h) * P + p] : (T)0;
      T f = dtv * xv;
      const T* Bt = Bm + (bt * G + g) * N;
      const T* Ct = Cm + (bt * G + g) * N;
      T part = 0;
#pragma unroll
      for (int k = 0; k < SSD_MAXE; ++k) {
        i64 n = q + (i64)k * Q;
        if (n < N) {
          T v = decay * s[k] + f * Bt[n];
          s[k] = v;
          part += v * Ct[n];
        }
      }
      red[tid] = part;
      __syncthreads();
      if (active && q == 0) {
        T acc = 0;
        for (i64 j = 0; j < Q; ++j) acc += red[p * Q + j];
        y[(bt * H + h) * P + p] = acc + dv * xv;
      }
      __syncthreads();
    }
#pragma unroll
    for (int k = 0; k < SSD_MAXE; ++k) {
      i64 n = q + (i64)k * Q;
      if (active && n < N) ns[own + n] = s[k];
    }
  }
}

#define SSD_FWD(T, S)                                                                                      \
  KERNEL void ssd_fwd_##S(i64 Bn, i64 Tn, i64 H, i64 P, i64 G, i64 N, i64 Q, const T* x, const T* dt,        \
                          const T* A, const T* Bm, const T* Cm, const T* D, const T* st, T* y, T* ns) {    \
    ssd_fwd_t<T>(Bn, Tn, H, P, G, N, Q, x, dt, A, Bm, Cm, D, st, y, ns);                                  \
  }
FOR_FLOATS(SSD_FWD)

// ---- SSDGrad ----
// The exact reverse of the token recurrence, per (batch row, head) block with SSD's thread layout.
// A forward walk stores the state at the start of every segment of segLen tokens (ckpt); the
// segments are then taken backwards: each is recomputed into seg (segLen+1 states) and walked
// back, carrying the state adjoint G (from gNewState):
//   G += gy_t ⊗ C_t;  dC_t += Sᵀ_t·gy_t;  dx_t = D·gy_t + dt_t·G·B_t;  dB_t += dt_t·Gᵀ·x_t
//   ddt_t = xᵀ_t·G·B_t + A·a_t·⟨G, S_{t−1}⟩;  dA += dt_t·a_t·⟨G, S_{t−1}⟩;  G ← a_t·G
// with a_t = exp(dt_t·A). dB and dC (zeroed before) receive atomic adds from the heads of a
// group; dA and dD are left per (row, head) in pdA/pdD for ssd_bwd_final.

template <typename T>
__device__ __forceinline__ void ssd_advance(T* s, i64 b, i64 t, i64 h, i64 g, i64 p, i64 q, bool active, i64 Tn,
                                            i64 H, i64 P, i64 G, i64 N, i64 Q, T a, const T* x, const T* dt,
                                            const T* Bm) {
  i64 bt = b * Tn + t;
  T dtv = dt[bt * H + h];
  T decay = (T)exp((double)(dtv * a));
  T f = active ? dtv * x[(bt * H + h) * P + p] : (T)0;
  const T* Bt = Bm + (bt * G + g) * N;
#pragma unroll
  for (int k = 0; k < SSD_MAXE; ++k) {
    i64 n = q + (i64)k * Q;
    if (n < N) s[k] = decay * s[k] + f * Bt[n];
  }
}

template <typename T>
__device__ void ssd_bwd_t(i64 Bn, i64 Tn, i64 H, i64 P, i64 G, i64 N, i64 Q, i64 seg_len, i64 nseg, const T* x,
                          const T* dt, const T* A, const T* Bm, const T* Cm, const T* D, const T* st, const T* gy,
                          const T* gs, T* dx, T* ddt, T* dB, T* dC, T* dst, T* ckpt, T* segb, T* pdA, T* pdD) {
  __shared__ T rv[SSD_MAXB];
  __shared__ T r1[SSD_MAXB];
  __shared__ T r2[SSD_MAXB];
  __shared__ T sdB[SSD_MAXN];
  __shared__ T sdC[SSD_MAXN];
  int tid = threadIdx.x, bd = blockDim.x;
  i64 p = tid / Q, q = tid % Q;
  bool active = p < P;
  i64 PN = P * N, hpg = H / G;
  i64 own = p * N;
  for (i64 n = tid; n < N; n += bd) {
    sdB[n] = (T)0;
    sdC[n] = (T)0;
  }
  __syncthreads();
  for (i64 item = blockIdx.x; item < Bn * H; item += gridDim.x) {
    i64 b = item / H, h = item % H, g = h / hpg;
    T a = A[h], dv = D[h];
    T* ck = ckpt + item * nseg * PN;
    T* sg = segb + item * (seg_len + 1) * PN;
    T s[SSD_MAXE];
    T gm[SSD_MAXE];
#pragma unroll
    for (int k = 0; k < SSD_MAXE; ++k) {
      i64 n = q + (i64)k * Q;
      s[k] = (active && n < N) ? st[item * PN + own + n] : (T)0;
      gm[k] = (active && n < N) ? gs[item * PN + own + n] : (T)0;
    }
    // Forward walk: checkpoints at segment starts.
    for (i64 c = 0; c < nseg; ++c) {
#pragma unroll
      for (int k = 0; k < SSD_MAXE; ++k) {
        i64 n = q + (i64)k * Q;
        if (active && n < N) ck[c * PN + own + n] = s[k];
      }
      if (c + 1 == nseg) break;
      for (i64 t = c * seg_len; t < (c + 1) * seg_len; ++t)
        ssd_advance<T>(s, b, t, h, g, p, q, active, Tn, H, P, G, N, Q, a, x, dt, Bm);
    }
    T dA_acc = 0, dD_acc = 0;
    for (i64 c = nseg - 1; c >= 0; --c) {
      i64 t0 = c * seg_len, cnt = imin(seg_len, Tn - t0);
      // Recompute the segment's states: seg slot i holds the state before token t0+i.
#pragma unroll
      for (int k = 0; k < SSD_MAXE; ++k) {
        i64 n = q + (i64)k * Q;
        s[k] = (active && n < N) ? ck[c * PN + own + n] : (T)0;
        if (active && n < N) sg[own + n] = s[k];
      }
      for (i64 i = 0; i < cnt; ++i) {
        ssd_advance<T>(s, b, t0 + i, h, g, p, q, active, Tn, H, P, G, N, Q, a, x, dt, Bm);
#pragma unroll
        for (int k = 0; k < SSD_MAXE; ++k) {
          i64 n = q + (i64)k * Q;
          if (active && n < N) sg[(i + 1) * PN + own + n] = s[k];
        }
      }
      // Walk the segment back.
      for (i64 i = cnt - 1; i >= 0; --i) {
        i64 t = t0 + i, bt = b * Tn + t;
        T dtv = dt[bt * H + h];
        T decay = (T)exp((double)(dtv * a));
        T xv = active ? x[(bt * H + h) * P + p] : (T)0;
        T gyv = active ? gy[(bt * H + h) * P + p] : (T)0;
        const T* Bt = Bm + (bt * G + g) * N;
        const T* Ct = Cm + (bt * G + g) * N;
        T pv = 0, pg = 0;
#pragma unroll
        for (int k = 0; k < SSD_MAXE; ++k) {
          i64 n = q + (i64)k * Q;
          if (n < N) {
            T scur = active ? sg[(i + 1) * PN + own + n] : (T)0;
            T sprev = active ? sg[i * PN + own + n] : (T)0;
            T gv = gm[k] + gyv * Ct[n];
            pv += gv * Bt[n];
            pg += gv * sprev;
            if (active) {
              atomic_add(&sdC[n], gyv * scur);
              atomic_add(&sdB[n], dtv * xv * gv);
            }
            gm[k] = decay * gv;
          }
        }
        rv[tid] = pv;
        r1[tid] = xv * pv;
        r2[tid] = pg;
        __syncthreads();
        if (active && q == 0) {
          T v = 0;
          for (i64 j = 0; j < Q; ++j) v += rv[p * Q + j];
          dx[(bt * H + h) * P + p] = dv * gyv + dtv * v;
          dD_acc += gyv * xv;
        }
        for (int s2 = bd >> 1; s2 > 0; s2 >>= 1) {
          if (tid < s2) {
            r1[tid] += r1[tid + s2];
            r2[tid] += r2[tid + s2];
          }
          __syncthreads();
        }
        if (tid == 0) {
          ddt[bt * H + h] = r1[0] + a * decay * r2[0];
          dA_acc += dtv * decay * r2[0];
        }
        for (i64 n = tid; n < N; n += bd) {
          atomic_add(&dB[(bt * G + g) * N + n], sdB[n]);
          atomic_add(&dC[(bt * G + g) * N + n], sdC[n]);
          sdB[n] = (T)0;
          sdC[n] = (T)0;
        }
        __syncthreads();
      }
    }
#pragma unroll
    for (int k = 0; k < SSD_MAXE; ++k) {
      i64 n = q + (i64)k * Q;
      if (active && n < N) dst[item * PN + own + n] = gm[k];
    }
    r1[tid] = (active && q == 0) ? dD_acc : (T)0;
    __syncthreads();
    for (int s2 = bd >> 1; s2 > 0; s2 >>= 1) {
      if (tid < s2) r1[tid] += r1[tid + s2];
      __syncthreads();
    }
    if (tid == 0) {
      pdA[item] = dA_acc;
      pdD[item] = r1[0];
    }
    __syncthreads();
  }
}

#define SSD_BWD(T, S)                                                                                       \
  KERNEL void ssd_bwd_##S(i64 Bn, i64 Tn, i64 H, i64 P, i64 G, i64 N, i64 Q, i64 seg_len, i64 nseg,          \
                          const T* x, const T* dt, const T* A, const T* Bm, const T* Cm, const T* D,          \
                          const T* st, const T* gy, const T* gs, T* dx, T* ddt, T* dB, T* dC, T* dst,         \
                          T* ckpt, T* segb, T* pdA, T* pdD) {                                                 \
    ssd_bwd_t<T>(Bn, Tn, H, P, G, N, Q, seg_len, nseg, x, dt, A, Bm, Cm, D, st, gy, gs, dx, ddt, dB, dC, dst, \
                 ckpt, segb, pdA, pdD);                                                                       \
  }
FOR_FLOATS(SSD_BWD)

// ssd_bwd_final: dA[h] = Σ_b pdA[b,h], dD[h] = Σ_b pdD[b,h], in batch order.
template <typename T>
__device__ void ssd_bwd_final_t(i64 Bn, i64 H, const T* pdA, const T* pdD, T* dA, T* dD) {
  for (i64 h = gtid(); h < H; h += gstride()) {
    T sa = 0, sd = 0;
    for (i64 b = 0; b < Bn; ++b) {
      sa += pdA[b * H + h];
      sd += pdD[b * H + h];
    }
    dA[h] = sa;
    dD[h] = sd;
  }
}

#define SSD_BWD_FINAL(T, S)                                                                       \
  KERNEL void ssd_bwd_final_##S(i64 Bn, i64 H, const T* pdA, const T* pdD, T* dA, T* dD) {         \
    ssd_bwd_final_t<T>(Bn, H, pdA, pdD, dA, dD);                                                  \
  }
FOR_FLOATS(SSD_BWD_FINAL)
