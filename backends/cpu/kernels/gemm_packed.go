package kernels

import (
	"sync"
	"unsafe"
)

// Packed GEMM (the BLIS scheme, mirrored for row-major C). For each block of nc columns of C
// and kc of the shared dimension, B is packed into micro-panels of nr columns ([kc][nr],
// zero-padded; about 512 KiB, so the block stays in L2). Then for each group of mr rows of C
// the micro-kernel sweeps the micro-panels, broadcasting A[i,p] and accumulating the mr×nr
// tile in registers: C[mr×nr] (+)= Σ_p A[i,p]·b[p][j]. The group's mr rows of A (mr·kc values,
// in L1 across the sweep) are read in place; only a last partial group is copied into a
// zero-padded panel. The micro-kernels are assembly (gemm_amd64.s): AVX-512 12×32 (24 ZMM
// accumulators) or AVX2+FMA 6×16. NT, NN and TN differ only in how A is addressed and B
// packed: for NT, W's rows are transposed into the panels 16×16 (8×8) at a time.

type gemmKind int

const (
	kindNT gemmKind = iota // C = A·Wᵀ, A [m×k], W [n×k]
	kindNN                 // C = A·B,  A [m×k], B [k×n]
	kindTN                 // C = Aᵀ·B, A [k×m], B [k×n]
)

// microKernel computes an mr×nr tile C (=|+=) Σ_p A[i,p]·bp[p·nr+j]; A[i,p] is at a[i+p·lda]
// for the P form and a[i·lda+p] for the R form; ldc in elements.
type microKernel func(kc int, a *float32, lda int, bp, c *float32, ldc int, acc bool)

// transposer sets dst[c·ldd+r] = src[r·lds+c] for r, c < tb (a tb×tb block).
type transposer func(dst *float32, ldd int, src *float32, lds int)

type gemmParams struct {
	mr, nr, kc, nc int
	kernP, kernR   microKernel
	transpose      transposer // packs W for NT in tb×tb blocks; nil: scalar
	tb             int
}

const maxTile = 12 * 32

type packBuf struct {
	a, b []float32
	tmp  [maxTile]float32 // edge-tile output; here rather than on the stack, which the assembly call would make escape
}

var packPool freeList[packBuf]

// freeList keeps values for reuse like a sync.Pool, but never drops them at a garbage
// collection: a Pool emptied by a GC refills with allocations inside kernels that promise none
// after warm-up. It holds at most as many values as were ever in use at once.
type freeList[T any] struct {
	mu   sync.Mutex
	free []*T
}

func (l *freeList[T]) get() *T {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.free); n > 0 {
		v := l.free[n-1]
		l.free[n-1] = nil
		l.free = l.free[:n-1]
		return v
	}
	return new(T)
}

func (l *freeList[T]) put(v *T) {
	l.mu.Lock()
	l.free = append(l.free, v)
	l.mu.Unlock()
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// gemmPacked computes the block rows [i0,i1) × columns [j0,j1) of C[m×n] for the given kind.
// c has row stride n. The caller has checked sizes; k ≥ 1.
//
// Only B is packed; full groups of mr rows of A are read in place by the micro-kernel (R form
// for row-major A, P form for Aᵀ), and only a last partial group is copied into a zero-padded
// [kc][mr] panel.
func gemmPacked(p *gemmParams, kind gemmKind, c, a, b []float32, m, n, k, i0, i1, j0, j1 int, acc bool) {
	mr, nr := p.mr, p.nr
	buf := packPool.get()
	kcMax := min(p.kc, k)
	buf.a = grow(buf.a, kcMax*mr)
	buf.b = grow(buf.b, kcMax*roundUp(min(p.nc, j1-j0), nr))
	tmp := &buf.tmp
	for jc := j0; jc < j1; jc += p.nc {
		nc := min(p.nc, j1-jc)
		for pc := 0; pc < k; pc += p.kc {
			kc := min(p.kc, k-pc)
			bp := buf.b[:kc*roundUp(nc, nr)]
			if kind == kindNT {
				packBT(bp, b, k, jc, nc, pc, kc, nr, p.transpose, p.tb)
			} else {
				packBN(bp, b, n, jc, nc, pc, kc, nr)
			}
			accum := acc || pc > 0
			for ic := i0; ic < i1; ic += mr {
				rows := min(mr, i1-ic)
				kern, ap, lda := p.kernR, &a[0], k
				switch {
				case rows < mr:
					panel := buf.a[:kc*mr]
					if kind == kindTN {
						packAT(panel, a, m, ic, rows, pc, kc, mr)
					} else {
						packAN(panel, a, k, ic, rows, pc, kc, mr)
					}
					kern, ap, lda = p.kernP, &panel[0], mr
				case kind == kindTN:
					kern, ap, lda = p.kernP, &a[pc*m+ic], m
				default:
					ap = &a[ic*k+pc]
				}
				for jr := 0; jr < nc; jr += nr {
					cols := min(nr, nc-jr)
					bpan := &bp[jr*kc]
					if rows == mr && cols == nr {
						kern(kc, ap, lda, bpan, &c[ic*n+jc+jr], n, accum)
						continue
					}
					kern(kc, ap, lda, bpan, &tmp[0], nr, false)
					for r := 0; r < rows; r++ {
						dst := c[(ic+r)*n+jc+jr : (ic+r)*n+jc+jr+cols]
						src := tmp[r*nr : r*nr+cols]
						if accum {
							for q, v := range src {
								dst[q] += v
							}
						} else {
							copy(dst, src)
						}
					}
				}
			}
		}
	}
	packPool.put(buf)
}

func roundUp(x, q int) int { return (x + q - 1) / q * q }

// packBT packs W[jc:jc+nc, pc:pc+kc] (W is [n×k]) transposed into nr-wide micro-panels,
// tb×tb blocks at a time with tr, the edges one row of W at a time.
func packBT(dst, w []float32, k, jc, nc, pc, kc, nr int, tr transposer, tb int) {
	for jr := 0; jr < nc; jr += nr {
		panel := dst[jr*kc : jr*kc+kc*nr]
		cols := min(nr, nc-jr)
		if cols < nr {
			clear(panel)
		}
		r := 0
		if tr != nil && kc >= tb {
			kmain := kc / tb * tb
			for ; r+tb <= cols; r += tb {
				src := (jc+jr+r)*k + pc
				_ = w[src+(tb-1)*k+kc-1]
				_ = panel[(kmain-1)*nr+r+tb-1]
				for p := 0; p < kmain; p += tb {
					tr(&panel[p*nr+r], nr, &w[src+p], k)
				}
				if kmain < kc {
					for i := 0; i < tb; i++ {
						transposeColumn(panel[kmain*nr:], w[src+i*k+kmain:src+i*k+kc], r+i, nr)
					}
				}
			}
		}
		for ; r < cols; r++ {
			transposeColumn(panel, w[(jc+jr+r)*k+pc:(jc+jr+r)*k+pc+kc], r, nr)
		}
	}
}

// transposeColumn writes src[p] to dst[p*stride+col].
func transposeColumn(dst, src []float32, col, stride int) {
	if len(src) == 0 {
		return
	}
	_ = dst[(len(src)-1)*stride+col]
	base := unsafe.Pointer(&dst[col])
	for p, v := range src {
		*(*float32)(unsafe.Add(base, uintptr(p*stride)*4)) = v
	}
}

// packBN packs B[pc:pc+kc, jc:jc+nc] (B is [k×n], row stride n) into nr-wide micro-panels.
func packBN(dst, b []float32, n, jc, nc, pc, kc, nr int) {
	for jr := 0; jr < nc; jr += nr {
		panel := dst[jr*kc : jr*kc+kc*nr]
		cols := min(nr, nc-jr)
		for p := 0; p < kc; p++ {
			row := b[(pc+p)*n+jc+jr : (pc+p)*n+jc+jr+cols]
			d := panel[p*nr : p*nr+nr]
			copy(d, row)
			if cols < nr {
				clear(d[cols:])
			}
		}
	}
}

// packAN packs A[ic:ic+rows, pc:pc+kc] (A is [m×k]) into [kc][mr], zero-padding rows ≥ rows.
func packAN(dst, a []float32, k, ic, rows, pc, kc, mr int) {
	if rows < mr {
		clear(dst[:kc*mr])
	}
	for r := 0; r < rows; r++ {
		transposeColumn(dst, a[(ic+r)*k+pc:(ic+r)*k+pc+kc], r, mr)
	}
}

// packAT packs Aᵀ for A [k×m]: dst[p][r] = A[pc+p, ic+r].
func packAT(dst, a []float32, m, ic, rows, pc, kc, mr int) {
	for p := 0; p < kc; p++ {
		d := dst[p*mr : p*mr+mr]
		copy(d, a[(pc+p)*m+ic:(pc+p)*m+ic+rows])
		if rows < mr {
			clear(d[rows:])
		}
	}
}
