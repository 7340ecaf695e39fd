// Element-wise kernels: unary functions, Scale, Clamp, ClampGrad, Fill, binary ops with
// broadcasting. Transcendental functions are evaluated in double and rounded once to T, as the
// CPU backend does.

// Unary kinds 0..7 are ops.UnaryKind (Exp, Log, Neg, SiLU, Sigmoid, Softplus, Sqrt, Square);
// 100 is Scale (y = x·p0 + p1) and 101 Clamp (to [p0, p1], NaN kept).
template <typename T>
__device__ void unary_t(i64 n, int kind, double p0, double p1, const T* x, T* y) {
  for (i64 i = gtid(); i < n; i += gstride()) {
    T v = x[i];
    T r;
    switch (kind) {
      case 0: r = (T)exp((double)v); break;
      case 1: r = (T)log((double)v); break;
      case 2: r = -v; break;
      case 3: r = v * (T)sigmoid_d((double)v); break;
      case 4: r = (T)sigmoid_d((double)v); break;
      case 5: r = v > (T)20 ? v : (T)log1p(exp((double)v)); break;
      case 6: r = (T)sqrt((double)v); break;
      case 7: r = v * v; break;
      case 100: r = v * (T)p0 + (T)p1; break;
      case 101: {
        T lo = (T)p0, hi = (T)p1;
        r = v != v ? v : (v < lo ? lo : (v > hi ? hi : v));
        break;
      }
      default: r = v;
    }
    y[i] = r;
  }
}

#define UNARY(T, S)                                                                       \
  KERNEL void unary_##S(i64 n, i64 kind, double p0, double p1, const T* x, T* y) {        \
    unary_t<T>(n, (int)kind, p0, p1, x, y);                                               \
  }
FOR_FLOATS(UNARY)

// clamp_grad: y = g where lo ≤ x ≤ hi, else 0.
template <typename T>
__device__ void clamp_grad_t(i64 n, double lo, double hi, const T* x, const T* g, T* y) {
  T l = (T)lo, h = (T)hi;
  for (i64 i = gtid(); i < n; i += gstride()) {
    T v = x[i];
    y[i] = (v >= l && v <= h) ? g[i] : (T)0;
  }
}

#define CLAMP_GRAD(T, S)                                                                        \
  KERNEL void clamp_grad_##S(i64 n, double lo, double hi, const T* x, const T* g, T* y) {       \
    clamp_grad_t<T>(n, lo, hi, x, g, y);                                                        \
  }
FOR_FLOATS(CLAMP_GRAD)

template <typename T>
__device__ void fill_t(i64 n, double v, T* y) {
  T c = (T)v;
  for (i64 i = gtid(); i < n; i += gstride()) y[i] = c;
}

#define FILL(T, S) \
  KERNEL void fill_##S(i64 n, double v, T* y) { fill_t<T>(n, v, y); }
FOR_FLOATS(FILL)

// binary: c[i] = a[offA(i)] op b[offB(i)] with kinds 0..3 = ops.BinaryKind (Add, Sub, Mul, Div).
// contig != 0: both operands have the output's shape (offsets are i).
template <typename T>
__device__ __forceinline__ T binop(int kind, T a, T b) {
  switch (kind) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    default: return a / b;
  }
}

template <typename T>
__device__ void binary_t(i64 n, int kind, int contig, int rank, const Dims& d, const Dims& sa, const Dims& sb,
                         const T* a, const T* b, T* c) {
  for (i64 i = gtid(); i < n; i += gstride()) {
    i64 oa = i, ob = i;
    if (!contig) {
      oa = 0;
      ob = 0;
      i64 r = i;
      for (int k = rank - 1; k >= 0; --k) {
        i64 q = r % d.v[k];
        r /= d.v[k];
        oa += q * sa.v[k];
        ob += q * sb.v[k];
      }
    }
    c[i] = binop<T>(kind, a[oa], b[ob]);
  }
}

#define BINARY(T, S)                                                                             \
  KERNEL void binary_##S(i64 n, i64 kind, i64 contig, i64 rank, Dims d, Dims sa, Dims sb,         \
                         const T* a, const T* b, T* c) {                                          \
    binary_t<T>(n, (int)kind, (int)contig, (int)rank, d, sa, sb, a, b, c);                       \
  }
FOR_FLOATS(BINARY)
