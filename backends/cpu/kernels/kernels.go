package kernels

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// Level is an instruction-set level a kernel family runs at.
type Level int

const (
	Generic Level = iota // plain Go
	AVX2                 // AVX2 + FMA (256-bit)
	AVX512               // AVX-512 F/DQ/BW/VL (512-bit)
)

func (l Level) String() string {
	switch l {
	case AVX2:
		return "avx2"
	case AVX512:
		return "avx512"
	}
	return "generic"
}

var (
	cpuAVX2, cpuAVX512 = detectCPU()
	// vecLevel selects Dot/Axpy/MatVecT and the quantised matvecs (archsimd; Generic unless
	// built with GOEXPERIMENT=simd). gemmLevel selects the GEMM micro-kernel (assembly, amd64).
	vecLevel, gemmLevel = defaultLevels()
	blasOn              atomic.Bool // BLAS use allowed (SetBLAS); loading happens on first use
)

func init() { blasOn.Store(true) }

func cpuLevel() Level {
	switch {
	case cpuAVX512:
		return AVX512
	case cpuAVX2:
		return AVX2
	}
	return Generic
}

func defaultLevels() (vec, gemm Level) {
	gemm = cpuLevel()
	return min(gemm, simdLevel()), gemm
}

// SetLevel caps the instruction-set level the kernels use (for comparisons and tests); it
// returns the previous cap. Levels the CPU or the build lacks are never used. It must not be
// called while kernels run.
func SetLevel(l Level) (previous Level) {
	previous = max(vecLevel, gemmLevel)
	v, g := defaultLevels()
	vecLevel, gemmLevel = min(v, l), min(g, l)
	return previous
}

// SetBLAS allows (true, the default) or forbids GemmNT handing large products to OpenBLAS; it
// returns the previous setting. OpenBLAS loads only when MAMBA2_BLAS=on (or a library path) is
// in the environment.
func SetBLAS(enabled bool) (previous bool) { return blasOn.Swap(enabled) }

// BLAS loads OpenBLAS on first call and reports its configuration string (for example
// "OpenBLAS 0.3.21 DYNAMIC_ARCH … SkylakeX MAX_THREADS=64") and whether it is available.
func BLAS() (name string, ok bool) {
	if !blasLoaded() {
		return "", false
	}
	return blasLib.name, true
}

// SetThreads sets the number of threads OpenBLAS uses (no effect without it). The Go kernels
// themselves are single-threaded: callers split work with the …Range functions.
func SetThreads(n int) {
	if n > 0 {
		blasSetThreads(n)
	}
}

// Threads reports OpenBLAS's thread count, 0 without OpenBLAS.
func Threads() int { return blasThreads() }

// Kernels names the kernels in use: "simd-avx512", "simd-avx2" or "generic" for the vector
// kernels, "+asm-avx512"/"+asm-avx2" when the GEMM micro-kernel is assembly and the vector
// kernels are not at the same level (a build without GOEXPERIMENT=simd), "+vnni" when int8
// products use AVX-512 VNNI, and "+blas" when OpenBLAS is loaded and enabled. Calling it loads
// OpenBLAS if present.
func Kernels() string {
	var b strings.Builder
	if vecLevel == Generic {
		b.WriteString("generic")
	} else {
		b.WriteString("simd-" + vecLevel.String())
	}
	if gemmLevel != Generic && gemmLevel != vecLevel {
		b.WriteString("+asm-" + gemmLevel.String())
	}
	if cpuVNNI && gemmLevel == AVX512 {
		b.WriteString("+vnni")
	}
	if blasOn.Load() && blasLoaded() {
		b.WriteString("+blas")
	}
	return b.String()
}

func need(fn, what string, have, want int) {
	if have < want {
		panic(fmt.Sprintf("kernels: %s: len(%s) = %d, need %d", fn, what, have, want))
	}
}

func checkRange2(fn, what string, lo, hi, n int) {
	if lo < 0 || hi > n || lo > hi {
		panic(fmt.Sprintf("kernels: %s %s: range [%d,%d) outside [0,%d)", fn, what, lo, hi, n))
	}
}

func checkRange(fn string, lo, hi, n int) {
	if lo < 0 || hi > n || lo > hi {
		panic(fmt.Sprintf("kernels: %s: range [%d,%d) outside [0,%d)", fn, lo, hi, n))
	}
}

func checkDims(fn string, dims ...int) {
	for _, d := range dims {
		if d < 0 {
			panic(fmt.Sprintf("kernels: %s: negative size %d", fn, d)) // not dims: that would make the slice escape
		}
	}
}

// ---------------------------------------------------------------- float32 vector kernels

// Dot returns Σ x[i]·y[i] over len(x); y must be at least as long.
func Dot(x, y []float32) float32 {
	need("Dot", "y", len(y), len(x))
	switch vecLevel {
	case AVX512:
		return dotAVX512(x, y)
	case AVX2:
		return dotAVX2(x, y)
	}
	if dot, step := asmDot(dotF32AVX512, dotF32AVX2); dot != nil && len(x) >= step {
		main := len(x) / step * step
		return dot(main, &x[0], &y[0]) + dotGeneric(x[main:], y[main:len(x)])
	}
	return dotGeneric(x, y)
}

// Axpy sets y[i] += a·x[i] for i < len(x); y must be at least as long.
func Axpy(a float32, x, y []float32) {
	need("Axpy", "y", len(y), len(x))
	switch vecLevel {
	case AVX512:
		axpyAVX512(a, x, y)
	case AVX2:
		axpyAVX2(a, x, y)
	default:
		axpyGeneric(a, x, y)
	}
}

// MatVecT sets y[j] = Σ_p w[j·k+p]·x[p] for j < n: the product of a row-major W [n×k] (the
// Hugging Face [out_features, in_features] layout) with x, that is y = W·x = x·Wᵀ.
// This is the decode hot path; it is single-threaded, see MatVecTRange to split it.
func MatVecT(y, w, x []float32, n, k int) {
	MatVecTRange(y, w, x, k, 0, n)
}

// MatVecTRange computes rows [lo,hi) of MatVecT (y is the whole output, indexed by row), so a
// caller can split the rows across its own workers. Memory-bound: each worker should get
// whole blocks of ≥ 64 rows.
func MatVecTRange(y, w, x []float32, k, lo, hi int) {
	checkDims("MatVecTRange", k)
	checkRange("MatVecTRange", lo, hi, len(y))
	if lo == hi {
		return
	}
	need("MatVecTRange", "x", len(x), k)
	need("MatVecTRange", "w", len(w), hi*k)
	if k == 0 {
		clear(y[lo:hi])
		return
	}
	matVecT(y, w, x, k, lo, hi)
}

// matVecT is MatVecTRange after the checks (k ≥ 1, lo < hi).
func matVecT(y, w, x []float32, k, lo, hi int) {
	if useMV4(k) {
		matVecT4(y, w, x, k, lo, hi, mv4F32, func(v float32) float32 { return v })
		return
	}
	switch vecLevel {
	case AVX512, AVX2:
		// On AVX-512 CPUs only rows shorter than 16 elements get here: 8-wide vectors serve them.
		matVecTAVX2(y, w, x, k, lo, hi)
	default:
		// The plain build on an AVX2 CPU: the assembly dot product, one row at a time.
		if gemmLevel == AVX2 && k >= 32 {
			matVecTAsm(y, w, nil, x, k, lo, hi, dotF32AVX2, 32, func(v float32) float32 { return v })
			return
		}
		matVecTGeneric(y, w, x, k, lo, hi)
	}
}

// ---------------------------------------------------------------- float32 GEMM

// Small products skip packing: below these sizes the packing of B costs more than it saves.
const (
	packMinRows = 8 // rows of C per call (GemmNT: below this, W is streamed 4 rows at a time)
	packMinWork = 32 * 32 * 32
)

var (
	gemm512 = gemmParams{mr: 12, nr: 32, kc: 256, nc: 512}
	gemm256 = gemmParams{mr: 6, nr: 16, kc: 256, nc: 384}
)

func init() {
	gemm512.kernP, gemm512.kernR = sgemmAVX512P, sgemmAVX512R
	gemm512.transpose, gemm512.tb = transpose16x16AVX512, 16
	gemm256.kernP, gemm256.kernR = sgemmAVX2P, sgemmAVX2R
	gemm256.transpose, gemm256.tb = transpose8x8AVX2, 8
}

func packedParams(rows, n, k int) *gemmParams {
	if rows*n*k < packMinWork {
		return nil
	}
	switch gemmLevel {
	case AVX512:
		return &gemm512
	case AVX2:
		return &gemm256
	}
	return nil
}

// usePacked reports whether a product with this many rows of C should take the packed
// assembly path once packedParams allows it: with enough rows. Fewer rows stream W once through
// the mat-vec kernels — the vector loops, or in a plain build the assembly dot product (packing
// and transposing all of W for one row of C made the plain build's decode 2× slower).
func usePacked(rows int) bool { return rows >= packMinRows }

// BLASMinRows is the smallest m for which GemmNT hands a product to OpenBLAS (when loaded and
// enabled). Below it OpenBLAS's packing and thread start-up cost more than they save.
var BLASMinRows = 64

// UseBLAS reports whether GemmNT would compute an m×n×k product with OpenBLAS (which then
// uses its own threads, see SetThreads). Callers that split work across their own workers
// should call GemmNT whole when it returns true and use GemmNTRange otherwise.
func UseBLAS(m, n, k int) bool {
	return m >= BLASMinRows && n >= 16 && k >= 16 && blasOn.Load() && blasLoaded()
}

// GemmNT computes C[m×n] = A[m×k]·W[n×k]ᵀ (+ C when accumulate): every row of A dotted with
// every row of W, the product of activations with a Hugging Face weight. All row-major. Large
// products go to OpenBLAS when it is loaded (see UseBLAS); otherwise single-threaded Go.
func GemmNT(c, a, w []float32, m, n, k int, accumulate bool) {
	if UseBLAS(m, n, k) {
		checkDims("GemmNT", m, n, k)
		need("GemmNT", "a", len(a), m*k)
		need("GemmNT", "w", len(w), n*k)
		need("GemmNT", "c", len(c), m*n)
		beta := float32(0)
		if accumulate {
			beta = 1
		}
		sgemmRowMajor(false, true, m, n, k, 1, a, k, w, k, beta, c, n)
		return
	}
	GemmNTBlock(c, a, w, m, n, k, 0, m, 0, n, accumulate)
}

// GemmNTRange computes rows [lo,hi) of GemmNT in Go (never BLAS), for the caller's workers.
func GemmNTRange(c, a, w []float32, m, n, k, lo, hi int, accumulate bool) {
	GemmNTBlock(c, a, w, m, n, k, lo, hi, 0, n, accumulate)
}

// GemmNTBlock computes the block rows [i0,i1) × columns [j0,j1) of GemmNT in Go. Splitting
// by columns (rows of W) suits products with n ≫ m, such as a vocabulary projection.
func GemmNTBlock(c, a, w []float32, m, n, k, i0, i1, j0, j1 int, accumulate bool) {
	checkDims("GemmNT", m, n, k)
	checkRange("GemmNT rows", i0, i1, m)
	checkRange("GemmNT columns", j0, j1, n)
	if i0 == i1 || j0 == j1 {
		return
	}
	need("GemmNT", "a", len(a), m*k)
	need("GemmNT", "w", len(w), n*k)
	need("GemmNT", "c", len(c), m*n)
	gemmNT(c, n, a, w, m, k, i0, i1, j0, j1, accumulate)
}

// GemmNTStrided computes C = A[m×k]·W[n×k]ᵀ (+ C when accumulate) like GemmNT, in Go (never
// OpenBLAS), into a C whose rows are ldc ≥ n elements apart: C[i·ldc+j] for i < m, j < n. It
// lets a caller fill a block of columns of a wider product from a panel of W rows kept
// elsewhere — pass c[j0:] to write columns j0…j0+n−1 — as the CPU backend does with the
// dequantised panels of a quantised weight.
func GemmNTStrided(c []float32, ldc int, a, w []float32, m, n, k int, accumulate bool) {
	checkDims("GemmNTStrided", m, n, k)
	if ldc < n {
		panic(fmt.Sprintf("kernels: GemmNTStrided: ldc %d < n %d", ldc, n))
	}
	if m == 0 || n == 0 {
		return
	}
	need("GemmNTStrided", "a", len(a), m*k)
	need("GemmNTStrided", "w", len(w), n*k)
	need("GemmNTStrided", "c", len(c), (m-1)*ldc+n)
	gemmNT(c, ldc, a, w, m, k, 0, m, 0, n, accumulate)
}

// gemmNT computes the block rows [i0,i1) × columns [j0,j1) of C = A·Wᵀ with C's rows ldc apart,
// after the checks (the block is not empty). Every path below indexes C as c[i·ldc+j] and W by
// row j, so the row stride of C need not be W's row count.
func gemmNT(c []float32, ldc int, a, w []float32, m, k, i0, i1, j0, j1 int, accumulate bool) {
	if k == 0 {
		zeroBlock(c, ldc, i0, i1, j0, j1, accumulate)
		return
	}
	rows := i1 - i0
	switch p := packedParams(rows, j1-j0, k); {
	case p != nil && usePacked(rows):
		gemmPacked(p, kindNT, c, a, w, m, ldc, k, i0, i1, j0, j1, accumulate)
	case rows < packMinRows || vecLevel != Generic:
		// Few rows: stream W once through the vector kernels.
		gemmNTSmall(c, a, w, ldc, k, i0, i1, j0, j1, accumulate)
	default:
		gemmNTGeneric(c, a, w, ldc, k, i0, i1, j0, j1, accumulate)
	}
}

// gemmNTSmall streams W once, 4 rows at a time, against every row of A (few rows: decode with
// a small batch). The 4 rows of W stay in L1 while the rows of A pass. n is C's row stride.
func gemmNTSmall(c, a, w []float32, n, k, i0, i1, j0, j1 int, acc bool) {
	if i1-i0 == 1 && !acc {
		// One row of A (decode): a mat-vec over the whole range, so that its kernels stream W
		// in one pass.
		matVecT(c[i0*n:], w, a[i0*k:i0*k+k], k, j0, j1)
		return
	}
	var out [4]float32
	j := j0
	for ; j+4 <= j1; j += 4 {
		for i := i0; i < i1; i++ {
			matVecT(out[:], w[j*k:(j+4)*k], a[i*k:i*k+k], k, 0, 4)
			cr := c[i*n+j : i*n+j+4]
			if acc {
				cr[0] += out[0]
				cr[1] += out[1]
				cr[2] += out[2]
				cr[3] += out[3]
			} else {
				copy(cr, out[:])
			}
		}
	}
	for ; j < j1; j++ {
		wr := w[j*k : j*k+k]
		for i := i0; i < i1; i++ {
			s := Dot(a[i*k:i*k+k], wr)
			if acc {
				s += c[i*n+j]
			}
			c[i*n+j] = s
		}
	}
}

func zeroBlock[T float](c []T, n, i0, i1, j0, j1 int, acc bool) {
	if acc {
		return
	}
	for i := i0; i < i1; i++ {
		clear(c[i*n+j0 : i*n+j1])
	}
}

// GemmNN computes C[m×n] = A[m×k]·B[k×n] (+ C when accumulate), row-major, single-threaded:
// the input gradient dX = dY·W of a linear layer.
func GemmNN(c, a, b []float32, m, n, k int, accumulate bool) {
	GemmNNBlock(c, a, b, m, n, k, 0, m, 0, n, accumulate)
}

// GemmNNRange computes rows [lo,hi) of GemmNN.
func GemmNNRange(c, a, b []float32, m, n, k, lo, hi int, accumulate bool) {
	GemmNNBlock(c, a, b, m, n, k, lo, hi, 0, n, accumulate)
}

// GemmNNBlock computes the block rows [i0,i1) × columns [j0,j1) of GemmNN. Column blocks
// split the packing of B between workers; row blocks make each worker pack all of it.
func GemmNNBlock(c, a, b []float32, m, n, k, i0, i1, j0, j1 int, accumulate bool) {
	gemmBlock("GemmNN", kindNN, c, a, b, m, n, k, i0, i1, j0, j1, accumulate)
}

// GemmTN computes C[m×n] = Aᵀ·B (+ C when accumulate) for A [k×m] and B [k×n], row-major,
// single-threaded: the weight gradient dW = dYᵀ·X of a linear layer (Σ over tokens).
func GemmTN(c, a, b []float32, m, n, k int, accumulate bool) {
	GemmTNBlock(c, a, b, m, n, k, 0, m, 0, n, accumulate)
}

// GemmTNRange computes rows [lo,hi) of GemmTN (columns [lo,hi) of A).
func GemmTNRange(c, a, b []float32, m, n, k, lo, hi int, accumulate bool) {
	GemmTNBlock(c, a, b, m, n, k, lo, hi, 0, n, accumulate)
}

// GemmTNBlock computes the block rows [i0,i1) × columns [j0,j1) of GemmTN.
func GemmTNBlock(c, a, b []float32, m, n, k, i0, i1, j0, j1 int, accumulate bool) {
	gemmBlock("GemmTN", kindTN, c, a, b, m, n, k, i0, i1, j0, j1, accumulate)
}

// gemmBlock is GemmNNBlock and GemmTNBlock (A is [m×k] for NN, [k×m] for TN; B is [k×n]).
func gemmBlock(fn string, kind gemmKind, c, a, b []float32, m, n, k, i0, i1, j0, j1 int, acc bool) {
	checkDims(fn, m, n, k)
	checkRange2(fn, "rows", i0, i1, m) // no concatenation here: it would allocate on every call
	checkRange2(fn, "columns", j0, j1, n)
	if i0 == i1 || j0 == j1 {
		return
	}
	need(fn, "a", len(a), m*k)
	need(fn, "b", len(b), k*n)
	need(fn, "c", len(c), m*n)
	if k == 0 {
		zeroBlock(c, n, i0, i1, j0, j1, acc)
		return
	}
	if p := packedParams(i1-i0, j1-j0, k); p != nil && usePacked(i1-i0) {
		gemmPacked(p, kind, c, a, b, m, n, k, i0, i1, j0, j1, acc)
		return
	}
	// Small products: rows of C as sums of scaled rows of B.
	axpy := axpyGeneric[float32]
	switch vecLevel {
	case AVX512:
		axpy = axpyAVX512
	case AVX2:
		axpy = axpyAVX2
	}
	zeroBlock(c, n, i0, i1, j0, j1, acc)
	for p := 0; p < k; p++ {
		br := b[p*n+j0 : p*n+j1]
		for i := i0; i < i1; i++ {
			s := a[i*k+p]
			if kind == kindTN {
				s = a[p*m+i]
			}
			axpy(s, br, c[i*n+j0:i*n+j1])
		}
	}
}

// SGEMM computes C = alpha·op(A)·op(B) + beta·C with OpenBLAS for row-major matrices (op
// transposes when trans is set; lda, ldb, ldc are row strides). It returns false, doing
// nothing, when OpenBLAS is not loaded or SetBLAS(false) is in effect.
func SGEMM(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
	if !blasOn.Load() || !blasLoaded() {
		return false
	}
	checkDims("SGEMM", m, n, k)
	if m == 0 || n == 0 {
		return true
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	if lda < max(ac, 1) || ldb < max(bc, 1) || ldc < max(n, 1) {
		panic(fmt.Sprintf("kernels: SGEMM: leading dimensions %d, %d, %d too small", lda, ldb, ldc))
	}
	need("SGEMM", "a", len(a), (ar-1)*lda+ac)
	need("SGEMM", "b", len(b), (br-1)*ldb+bc)
	need("SGEMM", "c", len(c), (m-1)*ldc+n)
	if k == 0 {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			for j := range row {
				row[j] *= beta
			}
		}
		return true
	}
	sgemmRowMajor(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	return true
}

// SGEMV computes y = alpha·op(A)·x + beta·y with OpenBLAS for a row-major A [m×n] with row
// stride lda (op(A) = Aᵀ when trans). It returns false when OpenBLAS is unavailable or disabled.
func SGEMV(trans bool, m, n int, alpha float32, a []float32, lda int, x []float32, beta float32, y []float32) bool {
	if !blasOn.Load() || !blasLoaded() {
		return false
	}
	checkDims("SGEMV", m, n)
	if lda < max(n, 1) {
		panic(fmt.Sprintf("kernels: SGEMV: lda %d < %d", lda, n))
	}
	xl, yl := n, m
	if trans {
		xl, yl = m, n
	}
	need("SGEMV", "x", len(x), xl)
	need("SGEMV", "y", len(y), yl)
	if m == 0 || n == 0 {
		if yl > 0 {
			for i := range y[:yl] {
				y[i] *= beta
			}
		}
		return true
	}
	need("SGEMV", "a", len(a), (m-1)*lda+n)
	sgemvRowMajor(trans, m, n, alpha, a, lda, x, beta, y)
	return true
}
