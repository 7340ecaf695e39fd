package kernels

// Portable kernels in plain Go. They are always compiled: they are the whole implementation where
// no SIMD path exists, the fallback on CPUs without AVX2/AVX-512, the edge handling of the SIMD
// paths, and the float64 kernels. They use several independent accumulators and 4-row blocking so
// that even scalar code keeps the FP units busy.

type float interface{ ~float32 | ~float64 }

func dotGeneric[T float](x, y []T) T {
	n := len(x)
	y = y[:n]
	var s0, s1, s2, s3 T
	i := 0
	for ; i+4 <= n; i += 4 {
		s0 += x[i] * y[i]
		s1 += x[i+1] * y[i+1]
		s2 += x[i+2] * y[i+2]
		s3 += x[i+3] * y[i+3]
	}
	for ; i < n; i++ {
		s0 += x[i] * y[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func axpyGeneric[T float](a T, x, y []T) {
	n := len(x)
	y = y[:n]
	i := 0
	for ; i+4 <= n; i += 4 {
		y[i] += a * x[i]
		y[i+1] += a * x[i+1]
		y[i+2] += a * x[i+2]
		y[i+3] += a * x[i+3]
	}
	for ; i < n; i++ {
		y[i] += a * x[i]
	}
}

// matVecTGeneric sets y[j] = W[j,:]·x for j in [lo,hi); W is row-major with k columns.
func matVecTGeneric[T float](y, w, x []T, k, lo, hi int) {
	x = x[:k]
	j := lo
	for ; j+4 <= hi; j += 4 {
		w0 := w[j*k : j*k+k]
		w1 := w[(j+1)*k : (j+1)*k+k]
		w2 := w[(j+2)*k : (j+2)*k+k]
		w3 := w[(j+3)*k : (j+3)*k+k]
		var s0, s1, s2, s3, t0, t1, t2, t3 T
		p := 0
		for ; p+2 <= k; p += 2 {
			xa, xb := x[p], x[p+1]
			s0 += w0[p] * xa
			s1 += w1[p] * xa
			s2 += w2[p] * xa
			s3 += w3[p] * xa
			t0 += w0[p+1] * xb
			t1 += w1[p+1] * xb
			t2 += w2[p+1] * xb
			t3 += w3[p+1] * xb
		}
		if p < k {
			xa := x[p]
			s0 += w0[p] * xa
			s1 += w1[p] * xa
			s2 += w2[p] * xa
			s3 += w3[p] * xa
		}
		y[j], y[j+1], y[j+2], y[j+3] = s0+t0, s1+t1, s2+t2, s3+t3
	}
	// Remaining rows sum in the same order as the 4-row blocks, so y[j] does not depend on how
	// the rows were split into ranges.
	for ; j < hi; j++ {
		w0 := w[j*k : j*k+k]
		var s0, t0 T
		p := 0
		for ; p+2 <= k; p += 2 {
			s0 += w0[p] * x[p]
			t0 += w0[p+1] * x[p+1]
		}
		if p < k {
			s0 += w0[p] * x[p]
		}
		y[j] = s0 + t0
	}
}

// gemmNTGeneric computes the block rows [lo,hi) × columns [jlo,jhi) of C = A[m×k]·W[·×k]ᵀ
// (+C when acc), C's rows n elements apart.
// W is processed in blocks of rows that stay in cache while every row of A passes over them;
// the inner tile is 2 rows of A × 4 rows of W with 8 scalar accumulators.
func gemmNTGeneric[T float](c, a, w []T, n, k, lo, hi, jlo, jhi int, acc bool) {
	const nb = 64 // W rows per block (64×k values stay in L2 for the model's k)
	for j0 := jlo; j0 < jhi; j0 += nb {
		j1 := min(j0+nb, jhi)
		i := lo
		for ; i+2 <= hi; i += 2 {
			a0 := a[i*k : i*k+k]
			a1 := a[(i+1)*k : (i+1)*k+k]
			c0 := c[i*n : i*n+jhi] // n is C's row stride; only columns below jhi are written
			c1 := c[(i+1)*n : (i+1)*n+jhi]
			j := j0
			for ; j+4 <= j1; j += 4 {
				w0 := w[j*k : j*k+k]
				w1 := w[(j+1)*k : (j+1)*k+k]
				w2 := w[(j+2)*k : (j+2)*k+k]
				w3 := w[(j+3)*k : (j+3)*k+k]
				var s00, s01, s02, s03, s10, s11, s12, s13 T
				for p, x0 := range a0 {
					x1 := a1[p]
					v0, v1, v2, v3 := w0[p], w1[p], w2[p], w3[p]
					s00 += x0 * v0
					s01 += x0 * v1
					s02 += x0 * v2
					s03 += x0 * v3
					s10 += x1 * v0
					s11 += x1 * v1
					s12 += x1 * v2
					s13 += x1 * v3
				}
				if acc {
					s00 += c0[j]
					s01 += c0[j+1]
					s02 += c0[j+2]
					s03 += c0[j+3]
					s10 += c1[j]
					s11 += c1[j+1]
					s12 += c1[j+2]
					s13 += c1[j+3]
				}
				c0[j], c0[j+1], c0[j+2], c0[j+3] = s00, s01, s02, s03
				c1[j], c1[j+1], c1[j+2], c1[j+3] = s10, s11, s12, s13
			}
			for ; j < j1; j++ {
				wr := w[j*k : j*k+k]
				s0, s1 := dotGeneric(a0, wr), dotGeneric(a1, wr)
				if acc {
					s0 += c0[j]
					s1 += c1[j]
				}
				c0[j], c1[j] = s0, s1
			}
		}
		for ; i < hi; i++ {
			ar := a[i*k : i*k+k]
			cr := c[i*n : i*n+jhi]
			for j := j0; j < j1; j++ {
				s := dotGeneric(ar, w[j*k:j*k+k])
				if acc {
					s += cr[j]
				}
				cr[j] = s
			}
		}
	}
}

// gemmNNGeneric computes rows [lo,hi) of C[m×n] = A[m×k]·B[k×n] (+C when acc) as a sum of
// scaled rows of B (axpy form, unit stride everywhere).
func gemmNNGeneric[T float](c, a, b []T, n, k, lo, hi int, acc bool) {
	for i := lo; i < hi; i++ {
		cr := c[i*n : i*n+n]
		if !acc {
			clear(cr)
		}
		ar := a[i*k : i*k+k]
		for p, s := range ar {
			axpyGeneric(s, b[p*n:p*n+n], cr)
		}
	}
}

// gemmTNGeneric computes rows [lo,hi) of C[m×n] = Aᵀ·B (+C when acc) with A [k×m], B [k×n].
func gemmTNGeneric[T float](c, a, b []T, m, n, k, lo, hi int, acc bool) {
	if !acc {
		clear(c[lo*n : hi*n])
	}
	for p := 0; p < k; p++ {
		br := b[p*n : p*n+n]
		ar := a[p*m : p*m+m]
		for i := lo; i < hi; i++ {
			axpyGeneric(ar[i], br, c[i*n:i*n+n])
		}
	}
}
