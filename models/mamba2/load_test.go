package mamba2_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/models/mamba2"
	"github.com/mamba2go/mamba2/safetensors"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

// plainBackend hides the CPU backend's WriteRange: Load falls back to one Write per tensor.
type plainBackend struct{ backends.Backend }

// rangeRecorder is the CPU backend recording the range writes it is given.
type rangeRecorder struct {
	*cpu.Backend
	writes []rangeWrite
}

type rangeWrite struct {
	dims        []int
	offset, len int
}

func (r *rangeRecorder) WriteRange(dst backends.Buffer, offset int, src any) error {
	n := -1
	switch s := src.(type) {
	case []float32:
		n = len(s)
	case []float64:
		n = len(s)
	}
	r.writes = append(r.writes, rangeWrite{dims: dst.Shape().Dims, offset: offset, len: n})
	return r.Backend.WriteRange(dst, offset, src)
}

// requireSameWeights requires two models to hold bit-identical weights of the same shapes.
func requireSameWeights(t *testing.T, want, got *mamba2.Model, msg string) {
	t.Helper()
	require.Equal(t, want.Weights().Names(), got.Weights().Names(), msg)
	for _, name := range want.Weights().Names() {
		ws, wd, err := want.Weights().Read(name)
		require.NoError(t, err)
		gs, gd, err := got.Weights().Read(name)
		require.NoError(t, err)
		require.True(t, ws.Equal(gs), "%s: %s: %s vs %s", msg, name, ws, gs)
		switch w := wd.(type) {
		case []float32:
			g := gd.([]float32)
			for i := range w {
				if math.Float32bits(w[i]) != math.Float32bits(g[i]) {
					t.Fatalf("%s: %s[%d]: New has %v, Load %v", msg, name, i, w[i], g[i])
				}
			}
		case []float64:
			g := gd.([]float64)
			for i := range w {
				if math.Float64bits(w[i]) != math.Float64bits(g[i]) {
					t.Fatalf("%s: %s[%d]: New has %v, Load %v", msg, name, i, w[i], g[i])
				}
			}
		default:
			t.Fatalf("%s: %s: %T", msg, name, wd)
		}
	}
}

// TestLoadMatchesNew: streaming a checkpoint onto a backend gives exactly the weights of
// New(LoadCheckpoint), for every file dtype, both compute types, chunks of one row, of several
// rows and of whole tensors, with and without backends.RangeWriter.
func TestLoadMatchesNew(t *testing.T) {
	cpuBE := cpu.New(1)
	defer cpuBE.Close()
	for _, model := range goldenCases {
		for _, fileType := range []string{safetensors.F32, safetensors.BF16, safetensors.F16, safetensors.F64} {
			tensors := goldenTensors(t, model)
			for i := range tensors {
				tensors[i].DType = fileType
			}
			dir := writeCheckpointDir(t, goldenConfigJSON(t, model), tensors)
			ck, err := mamba2.LoadCheckpoint(dir)
			require.NoError(t, err)
			for _, dt := range []shapes.DType{shapes.Float32, shapes.Float64} {
				want, err := mamba2.New(cpuBE, ck, mamba2.Options{DType: dt})
				require.NoError(t, err)
				for _, chunk := range []int{1, 100, 1 << 20} {
					for _, be := range []backends.Backend{cpuBE, plainBackend{cpuBE}} {
						msg := fmt.Sprintf("%s %s → %s, chunks of %d, %T", model, fileType, dt, chunk, be)
						restore := mamba2.SetLoadChunkElems(chunk)
						got, err := mamba2.Load(be, dir, mamba2.Options{DType: dt})
						restore()
						require.NoError(t, err, msg)
						require.Equal(t, want.Config, got.Config, msg)
						require.Equal(t, dt, got.DType(), msg)
						requireSameWeights(t, want, got, msg)
						got.Close()
					}
				}
				want.Close()
			}
		}
	}
}

// TestLoadChunks: Load writes every weight in chunks of whole rows, no larger than the chunk
// size unless a single row is, that tile the buffer exactly.
func TestLoadChunks(t *testing.T) {
	const chunk = 200
	restore := mamba2.SetLoadChunkElems(chunk)
	defer restore()
	be := &rangeRecorder{Backend: cpu.New(1)}
	defer be.Close()
	m, err := mamba2.Load(be, goldenModelDir("groups"), mamba2.Options{})
	require.NoError(t, err)
	defer m.Close()
	covered := map[string]int{} // shape → elements written, for the shapes seen
	next := map[string]int{}
	for _, w := range be.writes {
		key := fmt.Sprint(w.dims)
		row := w.dims[len(w.dims)-1]
		require.Equal(t, next[key]%shapes.Make(shapes.Float32, w.dims...).Size(), w.offset, "%v: chunks in order, no gaps", w.dims)
		require.Zero(t, w.offset%row, "%v: chunk at %d does not start a row", w.dims, w.offset)
		require.Zero(t, w.len%row, "%v: chunk of %d is not whole rows", w.dims, w.len)
		require.LessOrEqual(t, w.len, max(chunk/row, 1)*row, "%v: chunk of %d", w.dims, w.len)
		next[key] += w.len
		covered[key] += w.len
	}
	// Every weight was written in full: the elements written per shape are a whole number of
	// buffers of that shape, as many as the model has.
	count := map[string]int{}
	for _, name := range m.Weights().Names() {
		b, _ := m.Weights().Get(name)
		count[fmt.Sprint(b.Shape().Dims)] += b.Shape().Size()
	}
	require.Equal(t, count, covered)
	for _, w := range be.writes {
		if w.dims[len(w.dims)-1] > chunk {
			return // a row longer than a chunk was written one row at a time (checked above)
		}
	}
	t.Fatal("no weight has rows longer than the chunk: the one-row case was not exercised")
}

// TestLoadHostMemory: streaming a checkpoint onto the CPU backend allocates on the host little
// more than the weights themselves (the backend's buffers), not the file and a converted copy.
func TestLoadHostMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector empties sync.Pools at random, so allocation totals vary")
	}
	c := tinyConfig
	c.VocabSize, c.TieWordEmbeddings = 16384, false // two 4 MiB matrices dominate
	ck, err := mamba2.RandomCheckpoint(c, 1)
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, mamba2.SaveCheckpoint(dir, ck))
	st, err := os.Stat(filepath.Join(dir, mamba2.WeightsFile))
	require.NoError(t, err)
	ck = nil
	restore := mamba2.SetLoadChunkElems(1 << 14)
	defer restore()
	be := cpu.New(1)
	defer be.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m, err := mamba2.Load(be, dir, mamba2.Options{})
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	defer m.Close()
	var weightBytes uint64
	for _, name := range m.Weights().Names() {
		b, _ := m.Weights().Get(name)
		weightBytes += uint64(b.Shape().Size() * b.Shape().DType.Size())
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("file %d bytes, weights %d bytes, Load allocated %d bytes", st.Size(), weightBytes, allocated)
	require.Greater(t, weightBytes, uint64(8<<20))
	require.LessOrEqual(t, allocated, weightBytes+1<<20, "host bytes allocated by Load beyond the weights")
}

// TestLoadOptionsErrors: Load refuses a nil backend and compute types other than float32 and
// float64 before reading anything, and frees what it allocated when a write fails.
func TestLoadOptionsErrors(t *testing.T) {
	_, err := mamba2.Load(nil, goldenModelDir("tiny"), mamba2.Options{})
	require.ErrorContains(t, err, "nil backend")
	be := cpu.New(1)
	defer be.Close()
	_, err = mamba2.Load(be, goldenModelDir("tiny"), mamba2.Options{DType: shapes.Int64})
	require.ErrorContains(t, err, "dtype int64: want float32 or float64")

	fb := &failingBackend{Backend: be, failAt: 5}
	_, err = mamba2.Load(fb, goldenModelDir("tiny"), mamba2.Options{})
	require.ErrorContains(t, err, "mamba2: weight ")
	require.ErrorContains(t, err, "injected failure")
	require.Zero(t, fb.live, "buffers left allocated after a failed Load")
}

// failingBackend fails its failAt-th WriteRange and counts live buffers.
type failingBackend struct {
	*cpu.Backend
	failAt, writes, live int
}

func (f *failingBackend) Alloc(s shapes.Shape) (backends.Buffer, error) {
	b, err := f.Backend.Alloc(s)
	if err == nil {
		f.live++
	}
	return b, err
}

func (f *failingBackend) Free(b backends.Buffer) error {
	err := f.Backend.Free(b)
	if err == nil {
		f.live--
	}
	return err
}

func (f *failingBackend) WriteRange(dst backends.Buffer, offset int, src any) error {
	f.writes++
	if f.writes == f.failAt {
		return fmt.Errorf("injected failure")
	}
	return f.Backend.WriteRange(dst, offset, src)
}

// loadBoth runs LoadCheckpoint and Load (streaming onto the CPU backend) on dir and requires
// them to agree, as they share their checks: both succeed, or both fail with the same error,
// which it returns.
func loadBoth(t *testing.T, dir string) error {
	t.Helper()
	_, err := mamba2.LoadCheckpoint(dir)
	be := cpu.New(1)
	defer be.Close()
	m, lerr := mamba2.Load(be, dir, mamba2.Options{})
	if m != nil {
		m.Close()
	}
	if err == nil {
		require.NoError(t, lerr, "Load")
	} else {
		require.EqualError(t, lerr, err.Error(), "Load and LoadCheckpoint")
	}
	return err
}
