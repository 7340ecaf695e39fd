package safetensors

import (
	"bufio"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var tinyCase = filepath.Join("..", "testdata", "hf-mamba2", "tiny", "case.safetensors")

// build assembles a file from a raw header and data section, without any checking.
func build(header string, data []byte) []byte {
	out := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	out = append(out, header...)
	return append(out, data...)
}

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.safetensors")
	f32 := []float32{1, -2.5, float32(math.Inf(1)), 3.25e-7, 0, 6}
	f64 := []float64{math.Pi, -1e300, 5e-324}
	i64 := []int64{math.MinInt64, -1, 0, math.MaxInt64}
	tensors := []Tensor{
		{Name: "z.f32", Shape: []int{2, 3}, Data: f32},
		{Name: "a.f64", Shape: []int{3}, Data: f64},
		{Name: "m.i64", Shape: []int{2, 1, 2}, Data: i64},
		{Name: "i32", Shape: []int{2}, Data: []int32{-7, 1 << 30}},
		{Name: "u8", Shape: []int{3}, Data: []uint8{0, 200, 255}},
		{Name: "scalar", Shape: nil, Data: []float32{42}},
		{Name: "empty", Shape: []int{0, 5}, Data: []float32{}},
		{Name: "half", Shape: []int{6}, Data: f32, DType: F16},
		{Name: "brain", Shape: []int{6}, Data: f32, DType: BF16},
		{Name: "wide", Shape: []int{6}, Data: f32, DType: F64},
		{Name: "narrow", Shape: []int{3}, Data: f64, DType: F32},
	}
	meta := map[string]string{"format": "pt", "note": `quotes " and <tags> & ünïcode`}
	require.NoError(t, Write(path, tensors, meta))

	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	n := binary.LittleEndian.Uint64(raw)
	require.Zero(t, (8+n)%8, "header padded to a multiple of 8")
	// Data is laid out in the order given.
	require.True(t, strings.Index(string(raw), `"z.f32"`) < strings.Index(string(raw), `"a.f64"`))

	for _, open := range opens {
		t.Run(open.name, func(t *testing.T) {
			f, err := open.fn(path)
			require.NoError(t, err)
			defer func() { require.NoError(t, f.Close()) }()
			checkRoundTrip(t, f, path, meta, f32, f64, i64)
		})
	}
}

// opens are the two ways to open a file by path; every by-path test runs with both.
var opens = []struct {
	name string
	fn   func(string) (*File, error)
}{{"Open", Open}, {"OpenLazy", OpenLazy}}

func checkRoundTrip(t *testing.T, f *File, path string, meta map[string]string, f32 []float32, f64 []float64, i64 []int64) {
	t.Helper()
	require.Equal(t, meta, f.Metadata())
	require.Equal(t, []string{"a.f64", "brain", "empty", "half", "i32", "m.i64", "narrow", "scalar", "u8", "wide", "z.f32"}, f.Names())

	for _, tc := range []struct {
		name  string
		dtype string
		shape []int
	}{
		{"z.f32", F32, []int{2, 3}}, {"a.f64", F64, []int{3}}, {"m.i64", I64, []int{2, 1, 2}},
		{"i32", I32, []int{2}}, {"u8", U8, []int{3}}, {"scalar", F32, []int{}}, {"empty", F32, []int{0, 5}},
		{"half", F16, []int{6}}, {"brain", BF16, []int{6}}, {"wide", F64, []int{6}}, {"narrow", F32, []int{3}},
	} {
		info, ok := f.Info(tc.name)
		require.True(t, ok, tc.name)
		require.Equal(t, TensorInfo{DType: tc.dtype, Shape: tc.shape}, info, tc.name)
	}

	got32, shape, err := f.Float32("z.f32")
	require.NoError(t, err)
	require.Equal(t, f32, got32)
	require.Equal(t, []int{2, 3}, shape)
	got64, _, err := f.Float64("a.f64")
	require.NoError(t, err)
	require.Equal(t, f64, got64)
	gotI, _, err := f.Int64("m.i64")
	require.NoError(t, err)
	require.Equal(t, i64, gotI)
	gotI, _, err = f.Int64("i32")
	require.NoError(t, err)
	require.Equal(t, []int64{-7, 1 << 30}, gotI)
	gotI, _, err = f.Int64("u8")
	require.NoError(t, err)
	require.Equal(t, []int64{0, 200, 255}, gotI)
	got32, shape, err = f.Float32("scalar")
	require.NoError(t, err)
	require.Equal(t, []float32{42}, got32)
	require.Empty(t, shape)
	got32, _, err = f.Float32("empty")
	require.NoError(t, err)
	require.Empty(t, got32)

	half, _, err := f.Float32("half")
	require.NoError(t, err)
	require.Equal(t, []float32{1, -2.5, float32(math.Inf(1)), F16ToFloat32(Float32ToF16(3.25e-7)), 0, 6}, half)
	require.NotZero(t, half[3], "3.25e-7 is a half subnormal")
	brain, _, err := f.Float32("brain")
	require.NoError(t, err)
	for i, v := range f32 {
		require.Equal(t, BF16ToFloat32(Float32ToBF16(v)), brain[i])
	}
	wide, _, err := f.Float64("wide")
	require.NoError(t, err)
	for i, v := range f32 {
		require.Equal(t, float64(v), wide[i])
	}
	narrow, _, err := f.Float32("narrow")
	require.NoError(t, err)
	require.Equal(t, []float32{float32(math.Pi), float32(math.Inf(-1)), 0}, narrow)

	// Wrong-kind reads are errors naming the file and tensor.
	_, _, err = f.Int64("z.f32")
	require.ErrorContains(t, err, path)
	require.ErrorContains(t, err, `"z.f32"`)
	_, _, err = f.Float32("m.i64")
	require.ErrorContains(t, err, "not a floating-point type")
	_, _, err = f.Float64("u8")
	require.ErrorContains(t, err, "not a floating-point type")
	_, _, err = f.Float32("nope")
	require.ErrorContains(t, err, `no tensor named "nope"`)
	_, ok := f.Info("nope")
	require.False(t, ok)
}

func TestWriteHeaderFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.safetensors")
	require.NoError(t, Write(path, []Tensor{{Name: "a", Shape: []int{2}, Data: []float32{1, 2}}}, map[string]string{"format": "pt"}))
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	want := `{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	for len(want)%8 != 0 {
		want += " "
	}
	require.Equal(t, uint64(len(want)), binary.LittleEndian.Uint64(raw))
	require.Equal(t, want, string(raw[8:8+len(want)]))
	require.Len(t, raw, 8+len(want)+8)

	// No tensors and no metadata is a valid (empty) file.
	require.NoError(t, Write(path, nil, nil))
	f, err := Open(path)
	require.NoError(t, err)
	require.Empty(t, f.Names())
	require.Empty(t, f.Metadata())
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.safetensors")
	require.NoError(t, os.WriteFile(path, []byte("previous"), 0o644))
	for _, tc := range []struct {
		name    string
		tensors []Tensor
		want    string
	}{
		{"unnamed", []Tensor{{Shape: []int{1}, Data: []float32{1}}}, "has no name"},
		{"reserved", []Tensor{{Name: "__metadata__", Shape: []int{1}, Data: []float32{1}}}, "reserved"},
		{"duplicate", []Tensor{{Name: "a", Shape: []int{1}, Data: []float32{1}}, {Name: "a", Shape: []int{1}, Data: []float32{1}}}, `"a" appears twice`},
		{"shape", []Tensor{{Name: "a", Shape: []int{2, 2}, Data: []float32{1}}}, "holds 4 elements, data has 1"},
		{"negative", []Tensor{{Name: "a", Shape: []int{-1}, Data: []float32{}}}, "bad shape"},
		{"type", []Tensor{{Name: "a", Shape: []int{1}, Data: []string{"x"}}}, "unsupported data type []string"},
		{"nil data", []Tensor{{Name: "a", Shape: []int{1}}}, "unsupported data type <nil>"},
		{"int as half", []Tensor{{Name: "a", Shape: []int{1}, Data: []int64{1}, DType: F16}}, "cannot store []int64 as F16"},
		{"float as int", []Tensor{{Name: "a", Shape: []int{1}, Data: []float32{1}, DType: I64}}, "cannot store []float32 as I64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(path, tc.tensors, nil)
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, path)
			got, _ := os.ReadFile(path)
			require.Equal(t, "previous", string(got), "a failed write leaves the old file")
		})
	}
	require.Error(t, Write(filepath.Join(dir, "missing", "x.safetensors"), nil, nil))

	// A failure part-way through writing leaves the old file and no temporary file.
	boom := errors.New("boom")
	err := AtomicWrite(path, func(w *bufio.Writer) error {
		w.WriteString("partial")
		return boom
	})
	require.ErrorIs(t, err, boom)
	got, _ := os.ReadFile(path)
	require.Equal(t, "previous", string(got))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left behind")
}

func TestGoldenTiny(t *testing.T) {
	f, err := Open(tinyCase)
	require.NoError(t, err)
	require.Equal(t, "tiny", f.Metadata()["case"])
	require.Equal(t, "pt", f.Metadata()["format"])
	require.Len(t, f.Names(), 16)

	info, ok := f.Info("input_ids")
	require.True(t, ok)
	require.Equal(t, TensorInfo{DType: I64, Shape: []int{2, 21}}, info)
	ids, shape, err := f.Int64("input_ids")
	require.NoError(t, err)
	require.Equal(t, []int{2, 21}, shape)
	require.Equal(t, []int64{83, 24, 27, 15, 75}, ids[:5])

	logits, shape, err := f.Float32("logits_full")
	require.NoError(t, err)
	require.Equal(t, []int{2, 21, 97}, shape)
	require.Len(t, logits, 2*21*97)
	require.Equal(t, []float32{-0.41832971572875977, 8.038107872009277, 0.5335631370544434}, logits[:3])
	require.Equal(t, float32(-1.5320059061050415), logits[len(logits)-1])

	p, _, err := f.Int64("trace_prefill_len")
	require.NoError(t, err)
	require.Equal(t, []int64{13}, p)
	info, _ = f.Info("ssm_state")
	require.Equal(t, []int{2, 2, 8, 16, 16}, info.Shape)
	l64, _, err := f.Float64("logits_full")
	require.NoError(t, err)
	require.Equal(t, float64(logits[7]), l64[7])
}

func TestHalfConversions(t *testing.T) {
	// Hand-made F16, BF16 and F8 tensors.
	f16 := []uint16{0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x7c00, 0xfc00, 0x8000, 0x3555}
	want16 := []float32{1, -2, 65504, float32(math.Ldexp(1, -24)), float32(math.Ldexp(1023, -24)),
		float32(math.Ldexp(1, -14)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.Copysign(0, -1)),
		0.333251953125}
	bf := []uint16{0x3f80, 0xc049, 0x7f80, 0x0001, 0x8000}
	wantBF := []float32{1, -3.140625, float32(math.Inf(1)), math.Float32frombits(0x10000), float32(math.Copysign(0, -1))}
	e4 := []uint8{0x38, 0x7e, 0x01, 0xb8, 0x00}
	wantE4 := []float32{1, 448, float32(math.Ldexp(1, -9)), -1, 0}
	e5 := []uint8{0x3c, 0x7b, 0x7c, 0xc0}
	wantE5 := []float32{1, 57344, float32(math.Inf(1)), -2}

	var data []byte
	for _, h := range f16 {
		data = binary.LittleEndian.AppendUint16(data, h)
	}
	for _, h := range bf {
		data = binary.LittleEndian.AppendUint16(data, h)
	}
	data = append(data, e4...)
	data = append(data, e5...)
	data = binary.LittleEndian.AppendUint16(data, 0x7e00) // an F16 NaN
	data = append(data, 0x7f)                             // an F8_E4M3 NaN
	header := `{"h":{"dtype":"F16","shape":[10],"data_offsets":[0,20]},` +
		`"b":{"dtype":"BF16","shape":[5],"data_offsets":[20,30]},` +
		`"e4":{"dtype":"F8_E4M3","shape":[5],"data_offsets":[30,35]},` +
		`"e5":{"dtype":"F8_E5M2","shape":[4],"data_offsets":[35,39]},` +
		`"nan":{"dtype":"F16","shape":[],"data_offsets":[39,41]},` +
		`"nan8":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[41,42]}}`
	f, err := Parse(build(header, data))
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		want []float32
	}{{"h", want16}, {"b", wantBF}, {"e4", wantE4}, {"e5", wantE5}} {
		got, _, err := f.Float32(tc.name)
		require.NoError(t, err)
		require.Len(t, got, len(tc.want))
		for i := range got {
			require.Equal(t, math.Float32bits(tc.want[i]), math.Float32bits(got[i]), "%s[%d] = %g, want %g", tc.name, i, got[i], tc.want[i])
		}
		got64, _, err := f.Float64(tc.name)
		require.NoError(t, err)
		for i := range got64 {
			require.Equal(t, float64(got[i]), got64[i])
		}
	}
	for _, name := range []string{"nan", "nan8"} {
		got, _, err := f.Float32(name)
		require.NoError(t, err)
		require.True(t, math.IsNaN(float64(got[0])), name)
	}
}

func TestHalfRounding(t *testing.T) {
	// Every half and bfloat16 survives a round trip through float32.
	for h := 0; h < 1<<16; h++ {
		v := F16ToFloat32(uint16(h))
		if v != v {
			require.True(t, math.IsNaN(float64(F16ToFloat32(Float32ToF16(v)))))
			continue
		}
		require.Equal(t, uint16(h), Float32ToF16(v), "half %#04x", h)
		b := BF16ToFloat32(uint16(h))
		if b == b {
			require.Equal(t, uint16(h), Float32ToBF16(b), "bf16 %#04x", h)
		}
	}
	ldexp := func(m float64, e int) float32 { return float32(math.Ldexp(m, e)) }
	for _, tc := range []struct {
		in   float32
		want uint16
	}{
		{1 + ldexp(1, -11), 0x3c00},   // tie, to even
		{1 + ldexp(3, -11), 0x3c02},   // tie, to even (up)
		{1 + ldexp(1.5, -11), 0x3c01}, // above half way
		{65519, 0x7bff},
		{65520, 0x7c00}, // rounds to Inf
		{1e10, 0x7c00},
		{-1e10, 0xfc00},
		{ldexp(1, -25), 0x0000},   // tie between 0 and the smallest subnormal
		{ldexp(1.5, -25), 0x0001}, // above it
		{ldexp(3, -25), 0x0002},   // tie between 1 and 2 ulps, to even
		{ldexp(1, -26), 0x0000},
		{ldexp(2047, -25), 0x0400}, // the largest subnormal rounds up into the normals
		{float32(math.NaN()), 0x7e00},
	} {
		require.Equal(t, tc.want, Float32ToF16(tc.in), "%g", tc.in)
	}
	require.Equal(t, uint16(0x3f80), Float32ToBF16(1+ldexp(1, -8)))
	require.Equal(t, uint16(0x3f82), Float32ToBF16(1+ldexp(3, -8)))
	require.Equal(t, uint16(0x7fc0), Float32ToBF16(float32(math.NaN())))
	require.Equal(t, uint16(0x7f80), Float32ToBF16(math.MaxFloat32))

	// Random values round to a nearest neighbour.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		x := float32(math.Ldexp(rng.Float64()*2-1, rng.IntN(40)-24))
		h := Float32ToF16(x)
		if h&0x7c00 == 0x7c00 {
			continue
		}
		d := math.Abs(float64(F16ToFloat32(h) - x))
		for _, n := range []uint16{h + 1, h - 1} {
			if n&0x7c00 != 0x7c00 && (n^h)&0x8000 == 0 {
				require.LessOrEqual(t, d, math.Abs(float64(F16ToFloat32(n)-x)), "%g → %#04x", x, h)
			}
		}
	}
}

func TestIntConversions(t *testing.T) {
	var data []byte
	data = binary.LittleEndian.AppendUint16(data, 0xffff) // I16 −1
	data = binary.LittleEndian.AppendUint16(data, 0xffff) // U16 65535
	data = append(data, 0x80, 0x80, 0, 2)                 // I8 −128, U8 128, BOOL 0 and 2→1
	data = binary.LittleEndian.AppendUint32(data, 0xffffffff)
	data = binary.LittleEndian.AppendUint64(data, 1<<63) // U64 too big
	data = binary.LittleEndian.AppendUint64(data, 7)
	header := `{"i16":{"dtype":"I16","shape":[1],"data_offsets":[0,2]},` +
		`"u16":{"dtype":"U16","shape":[1],"data_offsets":[2,4]},` +
		`"i8":{"dtype":"I8","shape":[1],"data_offsets":[4,5]},` +
		`"u8":{"dtype":"U8","shape":[1],"data_offsets":[5,6]},` +
		`"b":{"dtype":"BOOL","shape":[2],"data_offsets":[6,8]},` +
		`"u32":{"dtype":"U32","shape":[1],"data_offsets":[8,12]},` +
		`"u64":{"dtype":"U64","shape":[2],"data_offsets":[12,28]}}`
	f, err := Parse(build(header, data))
	require.NoError(t, err)
	for name, want := range map[string][]int64{
		"i16": {-1}, "u16": {65535}, "i8": {-128}, "u8": {128}, "b": {0, 1}, "u32": {1<<32 - 1},
	} {
		got, _, err := f.Int64(name)
		require.NoError(t, err, name)
		require.Equal(t, want, got, name)
	}
	_, _, err = f.Int64("u64")
	require.ErrorContains(t, err, "does not fit in int64")
}

func TestCorruption(t *testing.T) {
	good := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	data8 := make([]byte, 8)
	tooLong := make([]byte, 8)
	binary.LittleEndian.PutUint64(tooLong, 1<<62)
	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"short", []byte{1, 2, 3}, "too short"},
		{"header past end", build(good, data8)[:20], "runs past the end of the file"},
		{"huge header length", append(tooLong, "{}"...), "runs past the end of the file"},
		{"not json", build("{nope", nil), "header"},
		{"not an object", build(`["a"]`, nil), "does not start with '{'"},
		{"leading space", build(` {}`, nil), "does not start with '{'"},
		{"trailing junk", build(`{} x`, nil), "after the JSON object"},
		{"two objects", build(`{}{}`, nil), "after the JSON object"},
		{"invalid utf8", build("{\"\xff\":1}", nil), "UTF-8"},
		{"entry not object", build(`{"a":3}`, nil), `tensor "a": bad header entry`},
		{"no dtype", build(`{"a":{"shape":[2],"data_offsets":[0,8]}}`, data8), `tensor "a": no dtype`},
		{"no shape", build(`{"a":{"dtype":"F32","data_offsets":[0,8]}}`, data8), `tensor "a": no shape`},
		{"null shape", build(`{"a":{"dtype":"F32","shape":null,"data_offsets":[0,8]}}`, data8), `tensor "a": no shape`},
		{"no offsets", build(`{"a":{"dtype":"F32","shape":[2]}}`, data8), `tensor "a": data_offsets must hold 2`},
		{"three offsets", build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}}`, data8), "must hold 2"},
		{"unknown dtype", build(`{"a":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}}`, data8), `tensor "a": unknown dtype "F17"`},
		{"dtype not string", build(`{"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}`, data8), `tensor "a": bad header entry`},
		{"negative dim", build(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, data8), `tensor "a": shape[0]: "-2" is negative`},
		{"fractional dim", build(`{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}`, data8), `shape[0]`},
		{"string dim", build(`{"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}`, data8), `is not a number`},
		{"dim beyond int", build(`{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}}`, data8), "shape[0]"},
		{"dim beyond MaxInt", build(`{"a":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]}}`, data8), "too large"},
		{"element overflow", build(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, data8), "too many elements"},
		{"byte overflow", build(`{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}}`, data8), "too large"},
		{"negative offset", build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}`, data8), "data_offsets[0]"},
		{"reversed offsets", build(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, data8), "end before they begin"},
		{"offsets past end", build(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, data8), "run past the data section of 8 bytes"},
		{"size mismatch", build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}`, data8), "hold 8 bytes, but F32 [1] needs 4"},
		{"overlap", build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, data8), "overlap"},
		{"gap", build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, data8), "gap of 4 bytes"},
		{"trailing data", build(good, make([]byte, 12)), "cover 8 bytes of a data section of 12"},
		{"duplicate tensor", build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, data8), `"a" appears twice`},
		{"bad metadata", build(`{"__metadata__":{"k":1}}`, nil), "__metadata__ must be an object of strings"},
		{"null metadata", build(`{"__metadata__":null}`, nil), "__metadata__ must be an object of strings"},
		{"double metadata", build(`{"__metadata__":{},"__metadata__":{}}`, nil), "appears twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse(tc.file)
			require.Nil(t, f)
			require.ErrorContains(t, err, tc.want)
			require.True(t, strings.HasPrefix(err.Error(), "safetensors: "), err.Error())
			// Open and OpenLazy (which reads only the header) find the same fault, naming the file.
			path := filepath.Join(t.TempDir(), "bad.safetensors")
			require.NoError(t, os.WriteFile(path, tc.file, 0o644))
			want := "safetensors: " + path + ": " + strings.TrimPrefix(err.Error(), "safetensors: ")
			for _, open := range opens {
				f, err := open.fn(path)
				require.Nil(t, f, open.name)
				require.EqualError(t, err, want, open.name)
			}
		})
	}

	// Opened by path, errors name the file; a missing file is an error too.
	path := filepath.Join(t.TempDir(), "bad.safetensors")
	require.NoError(t, os.WriteFile(path, build(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, data8), 0o644))
	for _, open := range opens {
		_, err := open.fn(path)
		require.ErrorContains(t, err, path)
		require.ErrorContains(t, err, `tensor "w"`)
		_, err = open.fn(filepath.Join(t.TempDir(), "absent.safetensors"))
		require.ErrorContains(t, err, "absent.safetensors")
		require.ErrorIs(t, err, os.ErrNotExist)
	}

	// Unknown entry fields and whitespace padding are accepted, as the reference does.
	f, err := Parse(build(good+"   \n", data8))
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, f.Names())
	_, err = Parse(build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":true}}`, data8))
	require.NoError(t, err)
}
