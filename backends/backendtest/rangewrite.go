package backendtest

import (
	"fmt"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/shapes"
)

func init() {
	errorCaseTables = append(errorCaseTables, rangeWriteCases)
}

// rangeWriteCases check backends.RangeWriter where the backend implements it: ranges at the
// start, in the middle and at the end of buffers of every dtype land exactly there, and bad
// ranges, types and buffers are errors that change nothing.
func rangeWriteCases() []errorCase {
	return []errorCase{
		{"write-range", func(t *testing.T, be backends.Backend, o Options) {
			rw, ok := be.(backends.RangeWriter)
			if !ok {
				t.Skipf("backend %s does not implement backends.RangeWriter", be.Name())
			}
			for _, s := range []shapes.Shape{
				shapes.Make(shapes.Float32, 3, 5), shapes.Make(shapes.Float64, 7),
				shapes.Make(shapes.Int64, 4), shapes.Make(shapes.Float32),
			} {
				t.Run(s.String(), func(t *testing.T) { checkWriteRange(t, be, rw, s) })
			}
		}},
	}
}

func checkWriteRange(t *testing.T, be backends.Backend, rw backends.RangeWriter, s shapes.Shape) {
	n := s.Size()
	b := mustAlloc(t, be, s)
	defer be.Free(b)
	want := graph.NewHostSlice(s)
	fillHost(want)
	if err := be.Write(b, want); err != nil {
		t.Fatalf("Write: %v", err)
	}
	check := func(what string) {
		t.Helper()
		got := graph.NewHostSlice(s)
		if err := be.Read(got, b); err != nil {
			t.Fatalf("%s: Read: %v", what, err)
		}
		if !equalHost(got, want) {
			t.Fatalf("%s: buffer holds %v, want %v", what, got, want)
		}
	}
	for i, r := range []struct{ offset, len int }{
		{0, 1}, {n / 2, (n + 1) / 2}, {n - 1, 1}, {n, 0}, {0, n}, {0, 0},
	} {
		src := rangeValues(s.DType, r.len, 100*(i+1))
		if err := rw.WriteRange(b, r.offset, src); err != nil {
			t.Fatalf("WriteRange of %d at %d: %v", r.len, r.offset, err)
		}
		setRange(want, r.offset, src)
		check(fmt.Sprintf("after WriteRange of %d at %d", r.len, r.offset))
	}

	other := shapes.Float64
	if s.DType == shapes.Float64 {
		other = shapes.Float32
	}
	for _, e := range []struct {
		what   string
		dst    backends.Buffer
		offset int
		src    any
	}{
		{"negative offset", b, -1, rangeValues(s.DType, 1, 7)},
		{"offset past the end", b, n + 1, rangeValues(s.DType, 0, 7)},
		{"range past the end", b, n - 1, rangeValues(s.DType, 2, 7)},
		{"more than the buffer", b, 0, rangeValues(s.DType, n+1, 7)},
		{"another dtype", b, 0, rangeValues(other, 1, 7)},
		{"a non-slice", b, 0, 3.0},
		{"nil data", b, 0, nil},
		{"a foreign buffer", foreignBuffer{s}, 0, rangeValues(s.DType, 1, 7)},
		{"a nil buffer", nil, 0, rangeValues(s.DType, 1, 7)},
	} {
		wantErr(t, "WriteRange with "+e.what, rw.WriteRange(e.dst, e.offset, e.src))
	}
	check("after the refused writes")

	freed := mustAlloc(t, be, s)
	if err := be.Free(freed); err != nil {
		t.Fatalf("Free: %v", err)
	}
	wantErr(t, "WriteRange after Free", rw.WriteRange(freed, 0, rangeValues(s.DType, 1, 7)))
}

// rangeValues returns k host values of dtype dt: base, base+1, …
func rangeValues(dt shapes.DType, k, base int) any {
	v := graph.NewHostSlice(shapes.Make(dt, k))
	switch x := v.(type) {
	case []float32:
		for i := range x {
			x[i] = float32(base + i)
		}
	case []float64:
		for i := range x {
			x[i] = float64(base+i) + 0.5
		}
	case []int64:
		for i := range x {
			x[i] = int64(-base - i)
		}
	}
	return v
}

// setRange copies src into dst from offset (same types).
func setRange(dst any, offset int, src any) {
	switch d := dst.(type) {
	case []float32:
		copy(d[offset:], src.([]float32))
	case []float64:
		copy(d[offset:], src.([]float64))
	case []int64:
		copy(d[offset:], src.([]int64))
	}
}
