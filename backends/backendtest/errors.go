package backendtest

import (
	"errors"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

// foreignBuffer is a buffer no real backend made.
type foreignBuffer struct{ s shapes.Shape }

func (f foreignBuffer) Shape() shapes.Shape { return f.s }

// unknownOp is an op no backend has a kernel for.
type unknownOp struct{}

func (unknownOp) Name() string { return "NoSuchOpForBackendTest" }

type errorCase struct {
	name string
	run  func(t *testing.T, be backends.Backend, o Options)
}

// errorCaseTables lists the groups of error checks; op files add theirs here.
var errorCaseTables = []func() []errorCase{coreErrorCases}

func errorCases() []errorCase {
	var all []errorCase
	for _, f := range errorCaseTables {
		all = append(all, f()...)
	}
	return all
}

// wantErr fails unless err is non-nil.
func wantErr(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
	} else {
		t.Logf("%s: %v", what, err)
	}
}

func mustAlloc(t *testing.T, be backends.Backend, s shapes.Shape) backends.Buffer {
	t.Helper()
	b, err := be.Alloc(s)
	if err != nil {
		t.Fatalf("Alloc(%s): %v", s, err)
	}
	return b
}

func coreErrorCases() []errorCase {
	f32 := shapes.Make(shapes.Float32, 2, 3)
	return []errorCase{
		{"foreign-buffer", func(t *testing.T, be backends.Backend, o Options) {
			fb := foreignBuffer{f32}
			real := mustAlloc(t, be, f32)
			defer be.Free(real)
			wantErr(t, "Write", be.Write(fb, make([]float32, 6)))
			wantErr(t, "Read", be.Read(make([]float32, 6), fb))
			wantErr(t, "Copy to", be.Copy(fb, real))
			wantErr(t, "Copy from", be.Copy(real, fb))
			wantErr(t, "Free", be.Free(fb))
			wantErr(t, "Write nil", be.Write(nil, make([]float32, 6)))
			k, err := be.Compile(ops.Binary{Kind: ops.AddKind}, []shapes.Shape{f32, f32}, []shapes.Shape{f32})
			if err != nil {
				t.Fatalf("Compile Add: %v", err)
			}
			out := mustAlloc(t, be, f32)
			defer be.Free(out)
			wantErr(t, "Run with a foreign input", k.Run([]backends.Buffer{real, fb}, []backends.Buffer{out}))
			wantErr(t, "Run with a foreign output", k.Run([]backends.Buffer{real, real}, []backends.Buffer{fb}))
			wantErr(t, "Run with a nil input", k.Run([]backends.Buffer{real, nil}, []backends.Buffer{out}))
			wantErr(t, "Run with missing inputs", k.Run([]backends.Buffer{real}, []backends.Buffer{out}))
			wantErr(t, "Run with missing outputs", k.Run([]backends.Buffer{real, real}, nil))
		}},
		{"wrong-dtype-buffer", func(t *testing.T, be backends.Backend, o Options) {
			f64 := shapes.Make(shapes.Float64, 2, 3)
			k, err := be.Compile(ops.Unary{Kind: ops.ExpKind}, []shapes.Shape{f32}, []shapes.Shape{f32})
			if err != nil {
				t.Fatalf("Compile Exp: %v", err)
			}
			x, y := mustAlloc(t, be, f64), mustAlloc(t, be, f64)
			defer be.Free(x)
			defer be.Free(y)
			wantErr(t, "float32 kernel on float64 buffers", k.Run([]backends.Buffer{x}, []backends.Buffer{y}))
		}},
		{"freed-buffer", func(t *testing.T, be backends.Backend, o Options) {
			b := mustAlloc(t, be, f32)
			if err := be.Free(b); err != nil {
				t.Fatalf("Free: %v", err)
			}
			wantErr(t, "Write after Free", be.Write(b, make([]float32, 6)))
			wantErr(t, "Read after Free", be.Read(make([]float32, 6), b))
		}},
		{"host-mismatch", func(t *testing.T, be backends.Backend, o Options) {
			b := mustAlloc(t, be, f32)
			defer be.Free(b)
			wantErr(t, "Write too short", be.Write(b, make([]float32, 5)))
			wantErr(t, "Write too long", be.Write(b, make([]float32, 7)))
			wantErr(t, "Write float64 into float32", be.Write(b, make([]float64, 6)))
			wantErr(t, "Write a non-slice", be.Write(b, 3.0))
			wantErr(t, "Write nil data", be.Write(b, nil))
			wantErr(t, "Read too short", be.Read(make([]float32, 5), b))
			wantErr(t, "Read int64 from float32", be.Read(make([]int64, 6), b))
			other := mustAlloc(t, be, shapes.Make(shapes.Float32, 7))
			defer be.Free(other)
			wantErr(t, "Copy between sizes", be.Copy(other, b))
			f64 := mustAlloc(t, be, shapes.Make(shapes.Float64, 2, 3))
			defer be.Free(f64)
			wantErr(t, "Copy between dtypes", be.Copy(f64, b))
		}},
		{"round-trip", func(t *testing.T, be backends.Backend, o Options) {
			for _, s := range []shapes.Shape{f32, shapes.Make(shapes.Float64, 4), shapes.Make(shapes.Int64, 3), shapes.Make(shapes.Float32)} {
				b := mustAlloc(t, be, s)
				zero := graph.NewHostSlice(s)
				got := graph.NewHostSlice(s)
				if err := be.Read(got, b); err != nil {
					t.Fatalf("Read %s: %v", s, err)
				}
				if !equalHost(got, zero) {
					t.Errorf("Alloc(%s) is not zero-filled: %v", s, got)
				}
				src := graph.NewHostSlice(s)
				fillHost(src)
				if err := be.Write(b, src); err != nil {
					t.Fatalf("Write %s: %v", s, err)
				}
				c := mustAlloc(t, be, s)
				if err := be.Copy(c, b); err != nil {
					t.Fatalf("Copy %s: %v", s, err)
				}
				if err := be.Read(got, c); err != nil {
					t.Fatalf("Read %s: %v", s, err)
				}
				if !equalHost(got, src) {
					t.Errorf("%s: wrote %v, read back %v", s, src, got)
				}
				be.Free(b)
				be.Free(c)
			}
		}},
		{"alloc-invalid", func(t *testing.T, be backends.Backend, o Options) {
			for _, s := range []shapes.Shape{
				shapes.Make(shapes.Float32, 2, 0),
				shapes.Make(shapes.Float32, -1),
				shapes.Make(shapes.InvalidDType, 2),
			} {
				b, err := be.Alloc(s)
				wantErr(t, "Alloc "+s.String(), err)
				if err == nil {
					be.Free(b)
				}
			}
		}},
		{"unsupported-op", func(t *testing.T, be backends.Backend, o Options) {
			_, err := be.Compile(unknownOp{}, []shapes.Shape{f32}, []shapes.Shape{f32})
			wantErr(t, "Compile of an unknown op", err)
			if err != nil && !errors.Is(err, backends.ErrUnsupported) {
				t.Errorf("error %v does not wrap backends.ErrUnsupported", err)
			}
		}},
		{"bound-foreign-state", func(t *testing.T, be backends.Backend, o Options) {
			g := graph.New()
			s := g.State("s", f32)
			x := g.Input("x", f32)
			g.SetState("s", ops.Add(s, x))
			p, err := g.Compile(be, nil)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			defer p.Close()
			if err := p.BindState("s", foreignBuffer{f32}); err != nil {
				t.Logf("BindState refused the foreign buffer: %v", err)
				return
			}
			wantErr(t, "Run with a foreign state buffer", p.Run())
		}},
	}
}

func equalHost(a, b any) bool {
	switch x := a.(type) {
	case []float32:
		y := b.([]float32)
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
	case []float64:
		y := b.([]float64)
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
	case []int64:
		y := b.([]int64)
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
	}
	return true
}

func fillHost(a any) {
	switch x := a.(type) {
	case []float32:
		for i := range x {
			x[i] = float32(i) + 0.5
		}
	case []float64:
		for i := range x {
			x[i] = float64(i) - 0.25
		}
	case []int64:
		for i := range x {
			x[i] = int64(i*7 - 3)
		}
	}
}
