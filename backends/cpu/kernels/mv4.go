package kernels

// mv4Step is the multiple of columns the four-row kernels (mv4_amd64.s) take.
const mv4Step = 16

// mv4Kind names the element type of a four-row kernel of mv4_amd64.s.
type mv4Kind uint8

const (
	mv4F32 mv4Kind = iota
	mv4BF16
	mv4F16
)

// mv4 runs the four-row kernel of kind on the rows at w, ldw elements apart. The kernels are
// called directly, not through a func value, so that out stays on the caller's stack.
func mv4[T float32 | uint16](kind mv4Kind, n int, w *T, ldw int, x *float32, out *[4]float32) {
	switch p := any(w).(type) {
	case *float32:
		asm4F32(n, p, ldw, x, out)
	case *uint16:
		if kind == mv4F16 {
			asm4F16(n, p, ldw, x, out)
		} else {
			asm4BF16(n, p, ldw, x, out)
		}
	}
}

// useMV4 reports whether the four-row AVX-512 kernels run rows of k elements: in every amd64
// build on AVX-512 CPUs (they are assembly), for rows of at least one step.
func useMV4(k int) bool { return gemmLevel == AVX512 && k >= mv4Step }

// matVecT4 sets y[j] = Σ_p widen(W[j,p])·x[p] for the rows j in [lo,hi) of a [·×k] W with the
// four-row kernel of kind over the first k/16·16 columns and widen for the rest. The rows left after
// the groups of four run alone (the kernel with ldw = 0 computes one row four times), with the
// same bits as in a group. The callers have checked the sizes; useMV4(k).
func matVecT4[T float32 | uint16](y []float32, w []T, x []float32, k, lo, hi int, kind mv4Kind, widen func(T) float32) {
	main := k / mv4Step * mv4Step
	x = x[:k]
	var out [4]float32
	j := lo
	for ; j+4 <= hi; j += 4 {
		mv4(kind, main, &w[j*k], k, &x[0], &out)
		y4 := y[j : j+4 : j+4]
		for r, s := range out {
			if main < k { // rows of whole steps (the usual case) make no call per row
				s += tail4(w[(j+r)*k+main:(j+r+1)*k], x[main:], widen)
			}
			y4[r] = s
		}
	}
	for ; j < hi; j++ {
		mv4(kind, main, &w[j*k], 0, &x[0], &out)
		y[j] = out[0] + tail4(w[j*k+main:(j+1)*k], x[main:], widen)
	}
}

// tail4 is Σ widen(w[p])·x[p] over the last k mod 16 columns.
func tail4[T float32 | uint16](w []T, x []float32, widen func(T) float32) float32 {
	var s float32
	for p, v := range w {
		s += widen(v) * x[p]
	}
	return s
}
