package kernels

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// Benchmarks are single-threaded. Shapes are Mamba2-130m's: d_model 768, in_proj 3352 rows,
// vocabulary 50288 rows. MatVecT reports the weight bytes streamed per second (decode is bound
// by memory bandwidth); GEMM reports GFLOP/s.
//
//	go test -run XXX -bench . -benchtime=200ms ./backends/cpu/kernels/
//	GOEXPERIMENT=simd go test -run XXX -bench . -benchtime=200ms ./backends/cpu/kernels/

var matShapes = [][2]int{{3352, 768}, {50288, 768}}

var benchMats sync.Map // "n×k" → []float32

func benchMatrix(n, k int) []float32 {
	key := fmt.Sprint(n, "x", k)
	if v, ok := benchMats.Load(key); ok {
		return v.([]float32)
	}
	r := rand.New(rand.NewPCG(uint64(n), uint64(k)))
	w := randF32(r, n*k)
	benchMats.Store(key, w)
	return w
}

func BenchmarkMatVecT(b *testing.B) {
	for _, s := range matShapes {
		n, k := s[0], s[1]
		b.Run(fmt.Sprintf("%dx%d", n, k), func(b *testing.B) {
			w, x, y := benchMatrix(n, k), benchMatrix(1, k), make([]float32, n)
			b.SetBytes(int64(n * k * 4))
			for b.Loop() {
				MatVecT(y, w, x, n, k)
			}
		})
	}
}

func BenchmarkMatVecTBF16(b *testing.B) {
	for _, s := range matShapes {
		n, k := s[0], s[1]
		b.Run(fmt.Sprintf("%dx%d", n, k), func(b *testing.B) {
			w, x, y := NewBF16Matrix(benchMatrix(n, k), n, k), benchMatrix(1, k), make([]float32, n)
			b.SetBytes(int64(n * k * 2))
			for b.Loop() {
				MatVecTBF16(y, w, x, 0, n)
			}
		})
	}
}

func BenchmarkMatVecTInt8(b *testing.B) {
	for _, s := range matShapes {
		n, k := s[0], s[1]
		b.Run(fmt.Sprintf("%dx%d", n, k), func(b *testing.B) {
			w, x, y := NewInt8Matrix(benchMatrix(n, k), n, k), benchMatrix(1, k), make([]float32, n)
			b.SetBytes(int64(n*k + 4*n))
			for b.Loop() {
				MatVecTInt8(y, w, x, 0, n)
			}
		})
	}
}

func BenchmarkMatVecTF16(b *testing.B) {
	n, k := 3352, 768
	w, x, y := NewF16Matrix(benchMatrix(n, k), n, k), benchMatrix(1, k), make([]float32, n)
	b.SetBytes(int64(n * k * 2))
	for b.Loop() {
		MatVecTF16(y, w, x, 0, n)
	}
}

// BenchmarkSGEMV is OpenBLAS's matrix–vector product on the same shapes (its own threads).
func BenchmarkSGEMV(b *testing.B) {
	needBLAS(b)
	for _, s := range matShapes {
		n, k := s[0], s[1]
		b.Run(fmt.Sprintf("%dx%d", n, k), func(b *testing.B) {
			w, x, y := benchMatrix(n, k), benchMatrix(1, k), make([]float32, n)
			b.SetBytes(int64(n * k * 4))
			for b.Loop() {
				SGEMV(false, n, k, 1, w, k, x, 0, y)
			}
		})
	}
}

func reportFlops(b *testing.B, m, n, k int) {
	b.ReportMetric(2*float64(m)*float64(n)*float64(k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

var gemmShapes = [][3]int{{512, 3352, 768}, {64, 3352, 768}, {4, 3352, 768}}

// BenchmarkGemmNT: "go" is this package's single-threaded kernel, "blas1" OpenBLAS on one
// thread, "blas" OpenBLAS on its default threads.
func BenchmarkGemmNT(b *testing.B) {
	for _, s := range gemmShapes {
		m, n, k := s[0], s[1], s[2]
		a, w, c := benchMatrix(m, k), benchMatrix(n, k), make([]float32, m*n)
		b.Run(fmt.Sprintf("go/%dx%dx%d", m, n, k), func(b *testing.B) {
			for b.Loop() {
				GemmNTRange(c, a, w, m, n, k, 0, m, false)
			}
			reportFlops(b, m, n, k)
		})
		if _, ok := BLAS(); !ok {
			continue
		}
		for _, threads := range []int{1, 0} {
			name := "blas"
			if threads == 1 {
				name = "blas1"
			}
			b.Run(fmt.Sprintf("%s/%dx%dx%d", name, m, n, k), func(b *testing.B) {
				prev := Threads()
				if threads > 0 {
					SetThreads(threads)
				}
				defer SetThreads(prev)
				for b.Loop() {
					SGEMM(false, true, m, n, k, 1, a, k, w, k, 0, c, n)
				}
				reportFlops(b, m, n, k)
			})
		}
	}
}

func BenchmarkGemmNN(b *testing.B) {
	m, n, k := 512, 768, 3352
	a, bb, c := benchMatrix(m, k), benchMatrix(k, n), make([]float32, m*n)
	for b.Loop() {
		GemmNN(c, a, bb, m, n, k, false)
	}
	reportFlops(b, m, n, k)
}

// BenchmarkGemmTN is a weight gradient: dW [3352×768] = Σ over 512 tokens of g_tᵀ·x_t.
func BenchmarkGemmTN(b *testing.B) {
	m, n, k := 3352, 768, 512
	a, bb, c := benchMatrix(k, m), benchMatrix(k, n), make([]float32, m*n)
	for b.Loop() {
		GemmTN(c, a, bb, m, n, k, false)
	}
	reportFlops(b, m, n, k)
}

func BenchmarkGemmNT64(b *testing.B) {
	m, n, k := 64, 256, 256
	r := rand.New(rand.NewPCG(1, 1))
	a, w, c := randF64(r, m*k), randF64(r, n*k), make([]float64, m*n)
	for b.Loop() {
		GemmNT64(c, a, w, m, n, k, false)
	}
	reportFlops(b, m, n, k)
}

func BenchmarkMatVecTInt8Q16(b *testing.B) {
	for _, s := range matShapes {
		n, k := s[0], s[1]
		b.Run(fmt.Sprintf("%dx%d", n, k), func(b *testing.B) {
			w, x, y := NewInt8Matrix(benchMatrix(n, k), n, k), NewQ16Vector(k), make([]float32, n)
			x.Quantize(benchMatrix(1, k))
			b.SetBytes(int64(n*k + 4*n))
			for b.Loop() {
				MatVecTInt8Q16(y, w, x, 0, n)
			}
		})
	}
}
