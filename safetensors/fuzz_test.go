package safetensors

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, that OpenLazy reaches the same verdict
// with the same message, and that every tensor of a file Parse accepts can be read, whole and
// in ranges, from memory and from disk. Under plain `go test` it runs the seed corpus only; fuzz with
//
//	go test ./safetensors -run '^$' -fuzz FuzzParse -fuzztime 30s -fuzzminimizetime 5s
//
// (minimising a new input found in the 200 KB golden file takes long at the default limit).
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile(tinyCase); err == nil {
		f.Add(data)
		// A compact copy holding only the small tensors of the golden file mutates much faster.
		if g, err := Parse(data); err == nil {
			var small []Tensor
			for _, name := range g.Names() {
				if info, _ := g.Info(name); info.Size() <= 16 {
					v, _, _ := g.Int64(name)
					small = append(small, Tensor{Name: name, Shape: info.Shape, Data: v})
				}
			}
			path := filepath.Join(f.TempDir(), "small.safetensors")
			if Write(path, small, g.Metadata()) == nil {
				if b, err := os.ReadFile(path); err == nil {
					f.Add(b)
				}
			}
		}
		for _, n := range []int{0, 7, 8, 100, 1408, len(data) - 1} {
			if n <= len(data) {
				f.Add(data[:n])
			}
		}
		for _, i := range []int{0, 3, 7, 9, 200, 1000, 1407} {
			flipped := append([]byte(nil), data...)
			flipped[i] ^= 0x5a
			f.Add(flipped)
		}
	}
	for _, h := range []string{
		`{}`,
		`{"__metadata__":{"format":"pt"}}`,
		`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`,
		`{"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}`,
		`{"a":{"dtype":"F16","shape":[],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[6],"data_offsets":[2,8]}}`,
		`{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}`,
		`{"a":{"dtype":"U64","shape":[1],"data_offsets":[0,8]}}`,
		`{"a":{"dtype":"F8_E4M3","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}`,
		`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`,
	} {
		f.Add(build(h, []byte{1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff}))
	}
	lazyPath := filepath.Join(f.TempDir(), "lazy.safetensors") // fuzz calls in one process are sequential
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		// OpenLazy reads only the header from disk: it must reach the same verdict, with the
		// same message naming the file.
		if werr := os.WriteFile(lazyPath, data, 0o644); werr != nil {
			t.Fatal(werr)
		}
		lazy, lerr := OpenLazy(lazyPath)
		if (err == nil) != (lerr == nil) {
			t.Fatalf("Parse: %v; OpenLazy: %v", err, lerr)
		}
		if err != nil {
			if file != nil || lazy != nil || !strings.HasPrefix(err.Error(), "safetensors: ") {
				t.Fatalf("bad failure: %v, %v", file, err)
			}
			if want := "safetensors: " + lazyPath + ": " + strings.TrimPrefix(err.Error(), "safetensors: "); lerr.Error() != want {
				t.Fatalf("OpenLazy: %v, want %v", lerr, want)
			}
			return
		}
		defer lazy.Close()
		if !slices.Equal(file.Names(), lazy.Names()) {
			t.Fatalf("Names: Parse %v, OpenLazy %v", file.Names(), lazy.Names())
		}
		for _, name := range file.Names() {
			info, ok := file.Info(name)
			if !ok {
				t.Fatalf("Names lists %q, Info does not know it", name)
			}
			switch {
			case IsFloat(info.DType):
				v, shape, err := file.Float32(name)
				if err != nil || len(v) != info.Size() || len(shape) != len(info.Shape) {
					t.Fatalf("tensor %q (%v): Float32: %d elements, %v", name, info, len(v), err)
				}
				if _, _, err := file.Float64(name); err != nil {
					t.Fatalf("tensor %q: Float64: %v", name, err)
				}
				// Any split into ranges, from memory or from disk, decodes the same bits.
				for _, src := range []*File{file, lazy} {
					got := make([]float32, len(v))
					cut := len(v) / 3
					if err := src.ReadFloat32(name, got[cut:], cut); err != nil {
						t.Fatalf("tensor %q: ReadFloat32 from %d: %v", name, cut, err)
					}
					if err := src.ReadFloat32(name, got[:cut], 0); err != nil {
						t.Fatalf("tensor %q: ReadFloat32 to %d: %v", name, cut, err)
					}
					for i := range v {
						if math.Float32bits(v[i]) != math.Float32bits(got[i]) {
							t.Fatalf("tensor %q: element %d: Float32 %v, ReadFloat32 %v", name, i, v[i], got[i])
						}
					}
				}
				if err := file.ReadFloat32(name, make([]float32, 1), len(v)); err == nil {
					t.Fatalf("tensor %q: ReadFloat32 past the end: no error", name)
				}
			case IsInt(info.DType):
				v, _, err := file.Int64(name)
				if err != nil && !(info.DType == U64 && strings.Contains(err.Error(), "does not fit")) {
					t.Fatalf("tensor %q (%v): Int64: %v", name, info, err)
				}
				if err == nil && len(v) != info.Size() {
					t.Fatalf("tensor %q (%v): Int64: %d elements", name, info, len(v))
				}
			default:
				t.Fatalf("tensor %q: dtype %q is neither float nor int", name, info.DType)
			}
		}
	})
}
