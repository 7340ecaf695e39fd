package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// rangeFile writes a file holding a tensor of n elements of random bits for every float dtype
// (named after the dtype) and an I64 tensor "ids", and returns its path.
func rangeFile(t *testing.T, n int) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	var header strings.Builder
	var data []byte
	header.WriteString("{")
	for i, dt := range []string{F32, F64, F16, BF16, F8E5M2, F8E4M3, I64} {
		name := dt
		if dt == I64 {
			name = "ids"
		}
		b := make([]byte, n*dtypeSize[dt])
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if i > 0 {
			header.WriteString(",")
		}
		fmt.Fprintf(&header, `%q:{"dtype":%q,"shape":[%d],"data_offsets":[%d,%d]}`, name, dt, n, len(data), len(data)+len(b))
		data = append(data, b...)
	}
	header.WriteString("}")
	path := filepath.Join(t.TempDir(), "ranges.safetensors")
	require.NoError(t, os.WriteFile(path, build(header.String(), data), 0o644))
	return path
}

// bitsEqual compares float32 slices bit for bit (NaN payloads included).
func bitsEqual(t *testing.T, want, got []float32, msg string) {
	t.Helper()
	require.Equal(t, len(want), len(got), msg)
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			t.Fatalf("%s: element %d: want %v (%#x), got %v (%#x)", msg, i, want[i], math.Float32bits(want[i]), got[i], math.Float32bits(got[i]))
		}
	}
}

// TestReadFloat32Ranges reads ranges of every float dtype, from a file held in memory and from
// a lazily opened one, and compares them with the whole tensor as Float32 decodes it. The tensors
// are larger than the lazy read buffer, so ranges cross its boundaries.
func TestReadFloat32Ranges(t *testing.T) {
	const n = 600_000 // three reads of every dtype
	path := rangeFile(t, n)
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	parsed, err := Parse(raw)
	require.NoError(t, err)
	files := map[string]*File{"Parse": parsed}
	for _, open := range opens {
		f, err := open.fn(path)
		require.NoError(t, err)
		defer f.Close()
		files[open.name] = f
	}
	for how, f := range files {
		for _, dt := range []string{F32, F64, F16, BF16, F8E5M2, F8E4M3} {
			whole, _, err := parsed.Float32(dt)
			require.NoError(t, err)
			per := readChunk / dtypeSize[dt] // elements per lazy read
			require.Less(t, 2*per+20, n)
			for _, r := range []struct {
				name        string
				offset, len int
			}{
				{"first", 0, 1}, {"middle", n/2 - 3, 7}, {"last", n - 1, 1}, {"whole", 0, n},
				{"across a read boundary", per - 5, 10}, {"three reads", 17, 2*per + 3},
				{"empty at the end", n, 0}, {"empty at the start", 0, 0},
			} {
				dst := make([]float32, r.len)
				require.NoError(t, f.ReadFloat32(dt, dst, r.offset), "%s %s %s", how, dt, r.name)
				bitsEqual(t, whole[r.offset:r.offset+r.len], dst, how+" "+dt+" "+r.name)
			}
			for _, r := range []struct {
				offset, len int
				want        string
			}{
				{-1, 1, "elements [-1, 0) are outside its 600000 elements"},
				{n + 1, 0, "elements [600001, 600001) are outside"},
				{n - 1, 2, "elements [599999, 600001) are outside"},
				{0, n + 1, "elements [0, 600001) are outside"},
			} {
				err := f.ReadFloat32(dt, make([]float32, r.len), r.offset)
				require.ErrorContains(t, err, r.want, how)
				require.ErrorContains(t, err, fmt.Sprintf("tensor %q", dt), how)
				if how != "Parse" {
					require.ErrorContains(t, err, path, how)
				}
			}
		}
		err := f.ReadFloat32("ids", make([]float32, 1), 0)
		require.ErrorContains(t, err, `tensor "ids": dtype I64 is not a floating-point type`, how)
		err = f.ReadFloat32("nope", make([]float32, 1), 0)
		require.ErrorContains(t, err, `no tensor named "nope"`, how)
	}
	// Whole-tensor reads of a lazy file agree with those of the file held in memory.
	for _, name := range parsed.Names() {
		info, _ := parsed.Info(name)
		if IsFloat(info.DType) {
			want, _, err := parsed.Float32(name)
			require.NoError(t, err)
			got, _, err := files["OpenLazy"].Float32(name)
			require.NoError(t, err)
			bitsEqual(t, want, got, name)
			want64, _, err := parsed.Float64(name)
			require.NoError(t, err)
			got64, _, err := files["OpenLazy"].Float64(name)
			require.NoError(t, err)
			for i := range want64 {
				if math.Float64bits(want64[i]) != math.Float64bits(got64[i]) {
					t.Fatalf("%s[%d]: Float64 of the lazy file %v, of the parsed one %v", name, i, got64[i], want64[i])
				}
			}
			continue
		}
		want, _, err := parsed.Int64(name)
		require.NoError(t, err)
		got, _, err := files["OpenLazy"].Int64(name)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
}

// TestReadFloat32BoundedMemory: reading a lazy file's tensor in full into a caller's slice
// allocates a small fixed amount, not memory proportional to the tensor.
func TestReadFloat32BoundedMemory(t *testing.T) {
	const n = 300_000
	f, err := OpenLazy(rangeFile(t, n))
	require.NoError(t, err)
	defer f.Close()
	dst := make([]float32, n)
	require.NoError(t, f.ReadFloat32(F64, dst, 0)) // warm the buffer pool
	const calls = 10
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < calls; i++ {
		require.NoError(t, f.ReadFloat32(F64, dst, 0))
	}
	runtime.ReadMemStats(&after)
	perCall := (after.TotalAlloc - before.TotalAlloc) / calls
	// At most the read buffer (when the pool was emptied), against 2.4 MB of F64 data.
	require.LessOrEqual(t, perCall, uint64(readChunk+4096), "bytes allocated per ReadFloat32 of a 2.4 MB tensor")
}

// TestLazyFileFaults: a closed lazy file and one that shrank after it was opened give errors
// naming the file and the tensor; Close on a file held in memory does nothing.
func TestLazyFileFaults(t *testing.T) {
	const n = 1000
	path := rangeFile(t, n)
	mem, err := Open(path)
	require.NoError(t, err)
	require.NoError(t, mem.Close())
	require.NoError(t, mem.Close())
	require.NoError(t, mem.ReadFloat32(F32, make([]float32, n), 0), "a file held in memory stays readable")

	f, err := OpenLazy(path)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(path, 8+int64(binary.LittleEndian.Uint64(mustRead(t, path)[:8]))+100))
	err = f.ReadFloat32(F64, make([]float32, 1), n-1)
	require.ErrorContains(t, err, path)
	require.ErrorContains(t, err, `tensor "F64"`)
	require.ErrorContains(t, err, "unexpected EOF")
	_, _, err = f.Float32(BF16)
	require.ErrorContains(t, err, `tensor "BF16"`)
	require.NoError(t, f.ReadFloat32(F32, make([]float32, 25), 0), "what is still there reads")

	require.NoError(t, f.Close())
	err = f.ReadFloat32(F32, make([]float32, 1), 0)
	require.ErrorContains(t, err, path)
	require.ErrorContains(t, err, `tensor "F32"`)
	_, _, err = f.Int64("ids")
	require.ErrorContains(t, err, `tensor "ids"`)
	require.Error(t, f.Close(), "closing twice")
	// Metadata, names and shapes stay available: they were read with the header.
	info, ok := f.Info(F16)
	require.True(t, ok)
	require.Equal(t, []int{n}, info.Shape)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}
