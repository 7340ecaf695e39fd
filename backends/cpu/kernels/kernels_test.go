package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// levels runs f once per instruction-set level this CPU and build support (Generic always).
func levels(t *testing.T, f func(t *testing.T)) {
	levelsL(t, func(t *testing.T, _ Level) { f(t) })
}

func levelsL(t *testing.T, f func(t *testing.T, l Level)) {
	t.Helper()
	for _, l := range []Level{Generic, AVX2, AVX512} {
		if l > cpuLevel() {
			continue
		}
		t.Run(l.String(), func(t *testing.T) {
			prev := SetLevel(l)
			defer SetLevel(prev)
			f(t, l)
		})
	}
}

func randF32(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

func randF64(r *rand.Rand, n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = r.NormFloat64()
	}
	return s
}

// refDot is Σ x·y in float64 with Σ|x·y| for the error bound.
func refDot[T float](n int, x func(int) T, y func(int) T) (s, abs float64) {
	for i := 0; i < n; i++ {
		v := float64(x(i)) * float64(y(i))
		s += v
		abs += math.Abs(v)
	}
	return s, abs
}

// close32 checks a float32 result of a k-term sum against its float64 reference.
func close32(got float32, want, abs float64, k int) bool {
	return math.Abs(float64(got)-want) <= 1e-6*float64(k+1)*abs+1e-30
}

func close64(got, want, abs float64, k int) bool {
	return math.Abs(got-want) <= 1e-14*float64(k+1)*abs+1e-300
}

var sizes = []int{0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 768, 1000}

func TestDotAxpy(t *testing.T) {
	levels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for _, n := range sizes {
			x, y := randF32(r, n), randF32(r, n+3)
			want, abs := refDot(n, func(i int) float32 { return x[i] }, func(i int) float32 { return y[i] })
			if got := Dot(x, y); !close32(got, want, abs, n) {
				t.Errorf("Dot n=%d: %v, want %v", n, got, want)
			}
			a := float32(r.NormFloat64())
			y0 := append([]float32(nil), y...)
			Axpy(a, x, y)
			for i := range y {
				want := y0[i]
				if i < n {
					want += a * x[i]
				}
				if math.Abs(float64(y[i]-want)) > 1e-6*(math.Abs(float64(want))+1) {
					t.Fatalf("Axpy n=%d i=%d: %v, want %v", n, i, y[i], want)
				}
			}
		}
	})
}

func TestMatVecT(t *testing.T) {
	levels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		for _, k := range sizes {
			for _, n := range []int{1, 2, 3, 4, 5, 7, 8, 13} {
				w, x := randF32(r, n*k), randF32(r, k)
				y := randF32(r, n+1)
				sentinel := y[n]
				MatVecT(y, w, x, n, k)
				for j := 0; j < n; j++ {
					want, abs := refDot(k, func(p int) float32 { return w[j*k+p] }, func(p int) float32 { return x[p] })
					if !close32(y[j], want, abs, k) {
						t.Fatalf("MatVecT n=%d k=%d row %d: %v, want %v", n, k, j, y[j], want)
					}
				}
				if y[n] != sentinel {
					t.Fatalf("MatVecT n=%d k=%d wrote past n", n, k)
				}
				// A range leaves the other rows alone.
				if n >= 3 {
					z := make([]float32, n)
					MatVecTRange(z, w, x, k, 1, n-1)
					if z[0] != 0 || z[n-1] != 0 {
						t.Fatalf("MatVecTRange wrote outside [1,%d)", n-1)
					}
					for j := 1; j < n-1; j++ {
						if z[j] != y[j] {
							t.Fatalf("MatVecTRange row %d: %v, MatVecT %v", j, z[j], y[j])
						}
					}
				}
			}
		}
	})
}

type gemmCase struct{ m, n, k int }

var gemmCases = []gemmCase{
	{1, 1, 1}, {1, 7, 3}, {3, 1, 5}, {2, 2, 0}, {1, 50, 33}, {4, 4, 4}, {5, 9, 17}, {7, 33, 16},
	{8, 32, 32}, {12, 32, 64}, {13, 33, 65}, {25, 70, 300}, {100, 45, 9},
	{13, 513, 257}, // two blocks of columns (nc 512) and of the shared dimension (kc 256)
}

// longGemmCases are added without -short.
var longGemmCases = []gemmCase{{36, 96, 256}, {37, 97, 257}, {64, 600, 40}, {30, 17, 530}, {70, 1030, 20}}

func allGemmCases() []gemmCase {
	if testing.Short() {
		return gemmCases
	}
	return append(append([]gemmCase(nil), gemmCases...), longGemmCases...)
}

type gemmRef func(c, a, b []float64, m, n, k int)

func refNT(c, a, w []float64, m, n, k int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			for p := 0; p < k; p++ {
				c[i*n+j] += a[i*k+p] * w[j*k+p]
			}
		}
	}
}

func refNN(c, a, b []float64, m, n, k int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			for p := 0; p < k; p++ {
				c[i*n+j] += a[i*k+p] * b[p*n+j]
			}
		}
	}
}

func refTN(c, a, b []float64, m, n, k int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			for p := 0; p < k; p++ {
				c[i*n+j] += a[p*m+i] * b[p*n+j]
			}
		}
	}
}

func to64(s []float32) []float64 {
	d := make([]float64, len(s))
	for i, v := range s {
		d[i] = float64(v)
	}
	return d
}

func abs64(s []float64) []float64 {
	d := make([]float64, len(s))
	for i, v := range s {
		d[i] = math.Abs(v)
	}
	return d
}

// checkGemm32 compares c (after the kernel) with c0 + A·B computed in float64.
func checkGemm32(t *testing.T, name string, tc gemmCase, ref gemmRef, c, c0, a, b []float32, acc bool) {
	t.Helper()
	want := make([]float64, len(c))
	bound := make([]float64, len(c))
	if acc {
		copy(want, to64(c0))
		copy(bound, abs64(to64(c0)))
	}
	a64, b64 := to64(a), to64(b)
	ref(want, a64, b64, tc.m, tc.n, tc.k)
	ref(bound, abs64(a64), abs64(b64), tc.m, tc.n, tc.k)
	for i := range c {
		if !close32(c[i], want[i], bound[i], tc.k) {
			t.Fatalf("%s %v acc=%v: c[%d] (row %d col %d) = %v, want %v", name, tc, acc, i, i/tc.n, i%tc.n, c[i], want[i])
		}
	}
}

func TestGemm(t *testing.T) {
	prevBLAS := SetBLAS(false)
	defer SetBLAS(prevBLAS)
	levelsL(t, func(t *testing.T, l Level) {
		r := rand.New(rand.NewPCG(5, 6))
		for _, tc := range allGemmCases() {
			m, n, k := tc.m, tc.n, tc.k
			if testing.Short() && l == Generic && m*n*k > 100_000 {
				continue // the plain-Go paths are the same code at every size; -race makes them slow
			}
			a, b := randF32(r, m*k), randF32(r, n*k)
			c0 := randF32(r, m*n)
			for _, acc := range []bool{false, true} {
				c := append([]float32(nil), c0...)
				GemmNT(c, a, b, m, n, k, acc)
				checkGemm32(t, "GemmNT", tc, refNT, c, c0, a, b, acc)
				c = append([]float32(nil), c0...)
				GemmNN(c, a, b, m, n, k, acc)
				checkGemm32(t, "GemmNN", tc, refNN, c, c0, a, b, acc)
				c = append([]float32(nil), c0...)
				GemmTN(c, a, b, m, n, k, acc)
				checkGemm32(t, "GemmTN", tc, refTN, c, c0, a, b, acc)
			}
			// GemmNTStrided: column blocks of a wider C computed from panels of W, as the
			// quantised product does; the columns of the other panels stay as they were.
			for _, panel := range []int{1, 5, 32, n} {
				if panel > n || panel == 0 {
					continue
				}
				c := append([]float32(nil), c0...)
				for j0 := 0; j0 < n; j0 += panel {
					j1 := min(j0+panel, n)
					before := append([]float32(nil), c...)
					GemmNTStrided(c[j0:], n, a, b[j0*k:j1*k], m, j1-j0, k, false)
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							if (j < j0 || j >= j1) && c[i*n+j] != before[i*n+j] {
								t.Fatalf("GemmNTStrided %v panel %d at column %d wrote column %d", tc, panel, j0, j)
							}
						}
					}
				}
				checkGemm32(t, fmt.Sprintf("GemmNTStrided/panel=%d", panel), tc, refNT, c, c0, a, b, false)
			}
			// Split into row ranges and column blocks: the same numbers, nothing outside the block.
			if m >= 3 && n >= 3 {
				c := append([]float32(nil), c0...)
				GemmNTRange(c, a, b, m, n, k, 0, m/3, false)
				GemmNTRange(c, a, b, m, n, k, m/3, m, false)
				checkGemm32(t, "GemmNTRange", tc, refNT, c, c0, a, b, false)
				c = append([]float32(nil), c0...)
				GemmNNRange(c, a, b, m, n, k, 0, m/2, true)
				GemmNNRange(c, a, b, m, n, k, m/2, m, true)
				checkGemm32(t, "GemmNNRange", tc, refNN, c, c0, a, b, true)
				c = append([]float32(nil), c0...)
				GemmTNRange(c, a, b, m, n, k, 0, m/2, false)
				GemmTNRange(c, a, b, m, n, k, m/2, m, false)
				checkGemm32(t, "GemmTNRange", tc, refTN, c, c0, a, b, false)
				for _, v := range []struct {
					name  string
					block func(c, a, b []float32, m, n, k, i0, i1, j0, j1 int, acc bool)
					ref   gemmRef
				}{{"GemmNTBlock", GemmNTBlock, refNT}, {"GemmNNBlock", GemmNNBlock, refNN}, {"GemmTNBlock", GemmTNBlock, refTN}} {
					c := append([]float32(nil), c0...)
					v.block(c, a, b, m, n, k, 1, m-1, 1, n-1, true)
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							if (i == 0 || i == m-1 || j == 0 || j == n-1) && c[i*n+j] != c0[i*n+j] {
								t.Fatalf("%s %v wrote outside the block at %d,%d", v.name, tc, i, j)
							}
						}
					}
					v.block(c, a, b, m, n, k, 0, 1, 0, n, true)
					v.block(c, a, b, m, n, k, m-1, m, 0, n, true)
					v.block(c, a, b, m, n, k, 1, m-1, 0, 1, true)
					v.block(c, a, b, m, n, k, 1, m-1, n-1, n, true)
					checkGemm32(t, v.name, tc, v.ref, c, c0, a, b, true)
				}
			}
		}
	})
}

func TestFloat64(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range sizes {
		x, y := randF64(r, n), randF64(r, n)
		want, abs := refDot(n, func(i int) float64 { return x[i] }, func(i int) float64 { return y[i] })
		if got := Dot64(x, y); !close64(got, want, abs, n) {
			t.Fatalf("Dot64 n=%d: %v, want %v", n, got, want)
		}
		y0 := append([]float64(nil), y...)
		Axpy64(0.5, x, y)
		for i := range y {
			if y[i] != y0[i]+0.5*x[i] {
				t.Fatalf("Axpy64 n=%d i=%d", n, i)
			}
		}
	}
	for _, k := range []int{0, 1, 5, 17, 64, 129} {
		for _, n := range []int{1, 3, 4, 9} {
			w, x := randF64(r, n*k), randF64(r, k)
			y := make([]float64, n)
			MatVecT64(y, w, x, n, k)
			for j := 0; j < n; j++ {
				want, abs := refDot(k, func(p int) float64 { return w[j*k+p] }, func(p int) float64 { return x[p] })
				if !close64(y[j], want, abs, k) {
					t.Fatalf("MatVecT64 n=%d k=%d row %d: %v, want %v", n, k, j, y[j], want)
				}
			}
		}
	}
	for _, tc := range allGemmCases() {
		m, n, k := tc.m, tc.n, tc.k
		a, b, c0 := randF64(r, m*k), randF64(r, n*k), randF64(r, m*n)
		for _, acc := range []bool{false, true} {
			for _, v := range []struct {
				name string
				f    func(c, a, b []float64, m, n, k int, acc bool)
				ref  gemmRef
			}{{"GemmNT64", GemmNT64, refNT}, {"GemmNN64", GemmNN64, refNN}, {"GemmTN64", GemmTN64, refTN}} {
				c := append([]float64(nil), c0...)
				v.f(c, a, b, m, n, k, acc)
				want := make([]float64, m*n)
				bound := make([]float64, m*n)
				if acc {
					copy(want, c0)
					copy(bound, abs64(c0))
				}
				v.ref(want, a, b, m, n, k)
				v.ref(bound, abs64(a), abs64(b), m, n, k)
				for i := range c {
					if !close64(c[i], want[i], bound[i], k) {
						t.Fatalf("%s %v acc=%v: c[%d] = %v, want %v", v.name, tc, acc, i, c[i], want[i])
					}
				}
			}
		}
	}
}

func TestPanics(t *testing.T) {
	cases := map[string]func(){
		"Dot short y":        func() { Dot(make([]float32, 3), make([]float32, 2)) },
		"MatVecT short w":    func() { MatVecT(make([]float32, 2), make([]float32, 7), make([]float32, 4), 2, 4) },
		"MatVecT short x":    func() { MatVecT(make([]float32, 2), make([]float32, 8), make([]float32, 3), 2, 4) },
		"MatVecTRange range": func() { MatVecTRange(make([]float32, 2), make([]float32, 12), make([]float32, 4), 4, 1, 3) },
		"GemmNT short c":     func() { GemmNT(make([]float32, 5), make([]float32, 6), make([]float32, 9), 2, 3, 3, false) },
		"GemmNN short b":     func() { GemmNN(make([]float32, 6), make([]float32, 6), make([]float32, 8), 2, 3, 3, false) },
		"GemmTN short a":     func() { GemmTN(make([]float32, 6), make([]float32, 5), make([]float32, 9), 2, 3, 3, false) },
		"GemmNT negative":    func() { GemmNT(nil, nil, nil, -1, 3, 3, false) },
		"GemmNTStrided ldc":  func() { GemmNTStrided(make([]float32, 9), 2, make([]float32, 9), make([]float32, 9), 3, 3, 3, false) },
		"GemmNTStrided short c": func() {
			GemmNTStrided(make([]float32, 12), 5, make([]float32, 9), make([]float32, 9), 3, 3, 3, false)
		},
		"bf16 short x": func() {
			MatVecTBF16(make([]float32, 2), NewBF16Matrix(make([]float32, 8), 2, 4), make([]float32, 3), 0, 2)
		},
		"int8 range": func() {
			MatVecTInt8(make([]float32, 2), NewInt8Matrix(make([]float32, 8), 2, 4), make([]float32, 4), 0, 3)
		},
		"int8 NaN": func() { NewInt8Matrix([]float32{1, float32(math.NaN())}, 1, 2) },
		"DequantizeRows short dst": func() {
			NewBF16Matrix(make([]float32, 8), 2, 4).DequantizeRows(make([]float32, 7), 0, 2)
		},
		"DequantizeRows range": func() {
			NewInt8Matrix(make([]float32, 8), 2, 4).DequantizeRows(make([]float32, 12), 0, 3)
		},
		"GemmNNBlock range": func() {
			GemmNNBlock(make([]float32, 6), make([]float32, 6), make([]float32, 9), 2, 3, 3, 0, 2, 1, 4, false)
		},
	}
	for name, f := range cases {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestKernelsString(t *testing.T) {
	s := Kernels()
	t.Logf("Kernels() = %q, cpu level %v, simd build %v", s, cpuLevel(), simdBuild)
	if s == "" {
		t.Fatal("empty")
	}
	if name, ok := BLAS(); ok {
		t.Logf("BLAS: %s, %d threads", name, Threads())
	}
}

func ExampleMatVecT() {
	w := []float32{ // W [2×3]: two output features, three inputs
		1, 2, 3,
		4, 5, 6,
	}
	x := []float32{1, 0, -1}
	y := make([]float32, 2)
	MatVecT(y, w, x, 2, 3)
	fmt.Println(y)
	// Output: [-2 -2]
}
