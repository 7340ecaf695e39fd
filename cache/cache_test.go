package cache_test

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	_ "github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/cache"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/stretchr/testify/require"
)

func testSpec(fp string) cache.Spec {
	return cache.Spec{
		Tensors:     []cache.TensorSpec{{Name: "conv.0", Dims: []int{3, 2}}, {Name: "ssm.0", Dims: []int{2, 2, 2}}},
		DType:       shapes.Float32,
		Fingerprint: fp,
	}
}

// fill gives row b of every tensor the value base+b.
func fill(t *testing.T, c *cache.Cache, base float32) {
	for _, name := range c.Names() {
		s, _, err := c.Read(name)
		require.NoError(t, err)
		data := make([]float32, s.Size())
		per := s.Size() / c.Batch()
		for i := range data {
			data[i] = base + float32(i/per)
		}
		require.NoError(t, c.Write(name, data))
	}
}

func rowValue(t *testing.T, c *cache.Cache, name string, row int) float32 {
	s, data, err := c.Read(name)
	require.NoError(t, err)
	return data.([]float32)[row*(s.Size()/c.Batch())]
}

func TestSelectMergeNoAliasing(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	c, err := cache.New(be, testSpec("m"), 3)
	require.NoError(t, err)
	fill(t, c, 10)
	require.NoError(t, c.Advance([]int{5, 6, 7}))

	sel, err := c.Select([]int{2, 0})
	require.NoError(t, err)
	require.Equal(t, []int{7, 5}, sel.Lengths())
	require.Equal(t, float32(12), rowValue(t, sel, "ssm.0", 0))
	require.Equal(t, float32(10), rowValue(t, sel, "conv.0", 1))

	other, err := cache.New(be, testSpec("m"), 1)
	require.NoError(t, err)
	fill(t, other, 100)
	merged, err := cache.Merge(sel, other)
	require.NoError(t, err)
	require.Equal(t, 3, merged.Batch())
	require.Equal(t, []int{7, 5, 0}, merged.Lengths())
	require.Equal(t, float32(100), rowValue(t, merged, "ssm.0", 2))

	// Writes to one never show in another.
	fill(t, c, -1)
	require.Equal(t, float32(12), rowValue(t, sel, "ssm.0", 0))
	require.Equal(t, float32(12), rowValue(t, merged, "ssm.0", 0))

	snap, err := merged.Snapshot()
	require.NoError(t, err)
	fill(t, merged, 50)
	require.NoError(t, merged.Advance([]int{1, 1, 1}))
	require.Equal(t, float32(12), rowValue(t, snap, "ssm.0", 0))
	require.NoError(t, merged.Restore(snap))
	require.Equal(t, float32(12), rowValue(t, merged, "ssm.0", 0))
	require.Equal(t, []int{7, 5, 0}, merged.Lengths())

	_, err = c.Select([]int{3})
	require.ErrorContains(t, err, "out of range")
	wrong, err := cache.New(be, testSpec("other-model"), 1)
	require.NoError(t, err)
	_, err = cache.Merge(c, wrong)
	require.ErrorContains(t, err, "different models")
}

func TestSaveLoad(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	c, err := cache.New(be, testSpec("m"), 2)
	require.NoError(t, err)
	fill(t, c, 3)
	require.NoError(t, c.Advance([]int{4, 9}))
	path := filepath.Join(t.TempDir(), "cache.safetensors")
	require.NoError(t, c.Save(path))

	d, err := cache.Load(be, testSpec("m"), path)
	require.NoError(t, err)
	require.Equal(t, []int{4, 9}, d.Lengths())
	require.Equal(t, float32(4), rowValue(t, d, "conv.0", 1))

	_, err = cache.Load(be, testSpec("another"), path)
	require.ErrorContains(t, err, "another model configuration")
	_, err = cache.Load(be, testSpec("m"), filepath.Join(t.TempDir(), "missing.safetensors"))
	require.Error(t, err)
	f64 := testSpec("m")
	f64.DType = shapes.Float64
	_, err = cache.Load(be, f64, path)
	require.ErrorContains(t, err, "float32")
}

func TestResetAndClone(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	c, err := cache.New(be, testSpec("m"), 2)
	require.NoError(t, err)
	fill(t, c, 1)
	require.NoError(t, c.Advance([]int{1, 2}))
	cl, err := c.Clone()
	require.NoError(t, err)
	require.NoError(t, c.Reset())
	require.Equal(t, []int{0, 0}, c.Lengths())
	require.Equal(t, float32(0), rowValue(t, c, "ssm.0", 1))
	require.Equal(t, float32(2), rowValue(t, cl, "ssm.0", 1))
	require.Equal(t, []int{1, 2}, cl.Lengths())
	_, err = cache.New(be, testSpec("m"), 0)
	require.Error(t, err)
}

// TestResetAllocatesLittle: after the first Reset, a Reset of a 4 MB cache (float32 and float64)
// allocates next to nothing, and still zeroes every tensor, the largest and the smaller ones.
func TestResetAllocatesLittle(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	for _, dt := range []shapes.DType{shapes.Float32, shapes.Float64} {
		spec := cache.Spec{Tensors: []cache.TensorSpec{{Name: "conv.0", Dims: []int{7, 4}}, {Name: "ssm.0", Dims: []int{256, 1024}},
			{Name: "ssm.1", Dims: []int{256, 1024}}}, DType: dt, Fingerprint: "big"}
		c, err := cache.New(be, spec, 2)
		require.NoError(t, err)
		require.NoError(t, c.Reset())
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for _, name := range c.Names() {
			s, _, err := c.Read(name)
			require.NoError(t, err)
			require.NoError(t, c.Write(name, ones(s.DType, s.Size())))
		}
		runtime.ReadMemStats(&after)
		written := after.TotalAlloc - before.TotalAlloc // reading and filling allocate the cache's size
		runtime.ReadMemStats(&before)
		require.NoError(t, c.Reset())
		runtime.ReadMemStats(&after)
		require.Less(t, after.TotalAlloc-before.TotalAlloc, written/16, "bytes allocated by Reset (%s)", dt)
		for _, name := range c.Names() {
			_, data, err := c.Read(name)
			require.NoError(t, err)
			switch v := data.(type) {
			case []float32:
				require.Equal(t, make([]float32, len(v)), v, name)
			case []float64:
				require.Equal(t, make([]float64, len(v)), v, name)
			}
		}
		require.NoError(t, c.Free())
	}
}

func ones(dt shapes.DType, n int) any {
	if dt == shapes.Float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = 1
		}
		return v
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = 1
	}
	return v
}

// TestNewRefusesNonFloatState: the state has the model's compute dtype; a storage dtype (the
// weights' bfloat16, float16 or int8) or int64 is refused.
func TestNewRefusesNonFloatState(t *testing.T) {
	be, err := backends.New("cpu")
	require.NoError(t, err)
	for _, dt := range []shapes.DType{shapes.BFloat16, shapes.Float16, shapes.Int8, shapes.Int64, shapes.InvalidDType} {
		spec := testSpec("fp")
		spec.DType = dt
		_, err := cache.New(be, spec, 2)
		require.ErrorContains(t, err, "state dtype "+dt.String())
	}
}
