package cpu

import (
	"math"
	"sync"
)

// arena lends kernels temporary memory for the length of one Run. The kernels of one program run
// one at a time, so memory a kernel owned for its whole life (SSD chunk products, dequantised
// weight panels) sat idle in every layer but the running one: 24 layers of the 130m shape held
// ~70 MB that way. Borrowed from the backend instead, a model needs the scratch of its largest
// kernel once per program running at that moment. After the first runs every request is met
// from the free lists, so Run stays allocation-free.
type arena struct {
	mu  sync.Mutex
	f32 [][]float32
	f64 [][]float64
}

// borrow returns a slice of n elements (contents unspecified) that the caller hands back with
// giveBack when its Run ends.
func borrow[T Float](a *arena, n int) []T {
	a.mu.Lock()
	var s []T
	switch list := any(&a.f32).(type) {
	case *[][]T:
		s = take(list, n)
	default:
		s = take(any(&a.f64).(*[][]T), n)
	}
	a.mu.Unlock()
	if poisonScratch {
		nan := T(math.NaN())
		for i := range s {
			s[i] = nan
		}
	}
	return s
}

// giveBack returns a slice from borrow to the arena.
func giveBack[T Float](a *arena, s []T) {
	if cap(s) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch list := any(&a.f32).(type) {
	case *[][]T:
		*list = append(*list, s[:cap(s)])
		return
	}
	l := any(&a.f64).(*[][]T)
	*l = append(*l, s[:cap(s)])
}

// take removes the smallest free slice of at least n elements from list (best fit, so that small
// requests do not hold on to large slices), or makes one.
func take[T any](list *[][]T, n int) []T {
	best := -1
	for i, s := range *list {
		if cap(s) >= n && (best < 0 || cap(s) < cap((*list)[best])) {
			best = i
		}
	}
	if best < 0 {
		return make([]T, n)
	}
	s := (*list)[best]
	last := len(*list) - 1
	(*list)[best] = (*list)[last]
	(*list)[last] = nil
	*list = (*list)[:last]
	return s[:n]
}
