package kernels

import (
	"math/rand/v2"
	"testing"
)

func needBLAS(t testing.TB) {
	t.Helper()
	if _, ok := BLAS(); !ok {
		t.Skip("OpenBLAS not loaded: set MAMBA2_BLAS=on (and apt-get install libopenblas0-pthread)")
	}
}

// refGemmStrided computes alpha·op(A)·op(B) + beta·C in float64 for row-major strided operands.
func refGemmStrided(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) (want, bound []float64) {
	want = make([]float64, len(c))
	bound = make([]float64, len(c))
	for i := range c {
		want[i], bound[i] = float64(c[i]), 0
	}
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, abs float64
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
				abs += abs1(float64(av) * float64(bv))
			}
			x := i*ldc + j
			want[x] = float64(alpha)*s + float64(beta)*float64(c[x])
			bound[x] = abs1(float64(alpha))*abs + abs1(float64(beta)*float64(c[x]))
		}
	}
	return want, bound
}

func abs1(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestSGEMM(t *testing.T) {
	needBLAS(t)
	r := rand.New(rand.NewPCG(21, 22))
	for _, tc := range []gemmCase{{1, 1, 1}, {3, 5, 7}, {17, 33, 65}, {70, 90, 130}} {
		m, n, k := tc.m, tc.n, tc.k
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				ar, ac := m, k
				if ta {
					ar, ac = k, m
				}
				br, bc := k, n
				if tb {
					br, bc = n, k
				}
				lda, ldb, ldc := ac+3, bc+1, n+2
				a, b, c := randF32(r, ar*lda), randF32(r, br*ldb), randF32(r, m*ldc)
				want, bound := refGemmStrided(ta, tb, m, n, k, 0.5, a, lda, b, ldb, -2, c, ldc)
				if !SGEMM(ta, tb, m, n, k, 0.5, a, lda, b, ldb, -2, c, ldc) {
					t.Fatal("SGEMM returned false with BLAS loaded")
				}
				for i := 0; i < m; i++ {
					for j := 0; j < ldc; j++ {
						x := i*ldc + j
						if j >= n {
							continue // padding: untouched by the reference either
						}
						if !close32(c[x], want[x], bound[x], k) {
							t.Fatalf("SGEMM %v ta=%v tb=%v: c[%d,%d] = %v, want %v", tc, ta, tb, i, j, c[x], want[x])
						}
					}
				}
			}
		}
	}
}

func TestSGEMV(t *testing.T) {
	needBLAS(t)
	r := rand.New(rand.NewPCG(23, 24))
	for _, sz := range [][2]int{{1, 1}, {5, 7}, {64, 33}, {100, 257}} {
		m, n := sz[0], sz[1]
		lda := n + 3
		a := randF32(r, m*lda)
		for _, tr := range []bool{false, true} {
			xl, yl := n, m
			if tr {
				xl, yl = m, n
			}
			x, y := randF32(r, xl), randF32(r, yl)
			want := make([]float64, yl)
			bound := make([]float64, yl)
			for o := 0; o < yl; o++ {
				var s, abs float64
				for q := 0; q < xl; q++ {
					var av float32
					if tr {
						av = a[q*lda+o]
					} else {
						av = a[o*lda+q]
					}
					s += float64(av) * float64(x[q])
					abs += abs1(float64(av) * float64(x[q]))
				}
				want[o] = 2*s + 0.5*float64(y[o])
				bound[o] = 2*abs + abs1(0.5*float64(y[o]))
			}
			if !SGEMV(tr, m, n, 2, a, lda, x, 0.5, y) {
				t.Fatal("SGEMV returned false with BLAS loaded")
			}
			for o := range y {
				if !close32(y[o], want[o], bound[o], xl) {
					t.Fatalf("SGEMV %v trans=%v: y[%d] = %v, want %v", sz, tr, o, y[o], want[o])
				}
			}
		}
	}
}

func TestGemmNTBLAS(t *testing.T) {
	needBLAS(t)
	r := rand.New(rand.NewPCG(25, 26))
	tc := gemmCase{BLASMinRows + 3, 70, 50}
	if !UseBLAS(tc.m, tc.n, tc.k) {
		t.Fatal("UseBLAS false for a large product with BLAS loaded")
	}
	a, b, c0 := randF32(r, tc.m*tc.k), randF32(r, tc.n*tc.k), randF32(r, tc.m*tc.n)
	for _, acc := range []bool{false, true} {
		c := append([]float32(nil), c0...)
		GemmNT(c, a, b, tc.m, tc.n, tc.k, acc)
		checkGemm32(t, "GemmNT(BLAS)", tc, refNT, c, c0, a, b, acc)
	}
	prev := SetBLAS(false)
	if UseBLAS(tc.m, tc.n, tc.k) || SGEMM(false, false, 1, 1, 1, 1, a, 1, b, 1, 0, c0, 1) {
		t.Error("SetBLAS(false) did not stop BLAS use")
	}
	SetBLAS(prev)
	allocs := testing.AllocsPerRun(20, func() { GemmNT(c0, a, b, tc.m, tc.n, tc.k, false) })
	if allocs > 0 {
		t.Logf("GemmNT through OpenBLAS: %v allocations per call", allocs)
	}
}
