package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"unicode/utf8"
)

// File is a parsed safetensors file held in memory. Its methods are safe for concurrent use.
type File struct {
	path     string // for error messages; empty when parsed from bytes
	data     []byte // the data section
	tensors  map[string]entry
	names    []string // sorted
	metadata map[string]string
}

// entry is one validated header entry.
type entry struct {
	dtype      string
	shape      []int
	begin, end int
}

// Open reads and validates the safetensors file at path. Errors name the file.
func Open(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err) // the error names the file
	}
	return parse(path, data)
}

// Parse validates a safetensors file held in data. The returned File refers to data, which must
// not be modified afterwards.
func Parse(data []byte) (*File, error) { return parse("", data) }

func parse(path string, data []byte) (*File, error) {
	if len(data) < 8 {
		return nil, errorf(path, "file of %d bytes is too short for the 8-byte header length", len(data))
	}
	n := binary.LittleEndian.Uint64(data[:8])
	if n > uint64(len(data)-8) {
		return nil, errorf(path, "header length %d runs past the end of the file (%d bytes after the length)", n, len(data)-8)
	}
	if n > maxHeader {
		return nil, errorf(path, "header length %d exceeds the limit of %d bytes", n, maxHeader)
	}
	header := data[8 : 8+n]
	f := &File{path: path, data: data[8+n:], tensors: map[string]entry{}}
	if err := f.parseHeader(header); err != nil {
		return nil, err
	}
	return f, nil
}

// parseHeader decodes and validates the JSON header into f.
func (f *File) parseHeader(header []byte) error {
	if !utf8.Valid(header) {
		return errorf(f.path, "header is not valid UTF-8")
	}
	if len(header) == 0 || header[0] != '{' {
		return errorf(f.path, "header does not start with '{'")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	if _, err := dec.Token(); err != nil {
		return errorf(f.path, "header: %v", err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return errorf(f.path, "header: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return errorf(f.path, "header: key %v is not a string", tok)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return errorf(f.path, "header: value of %q: %v", name, err)
		}
		if name == metaKey {
			if f.metadata != nil {
				return errorf(f.path, "header: %s appears twice", metaKey)
			}
			if err := f.parseMetadata(raw); err != nil {
				return err
			}
			continue
		}
		if _, dup := f.tensors[name]; dup {
			return errorf(f.path, "header: tensor %q appears twice", name)
		}
		e, err := f.parseEntry(name, raw)
		if err != nil {
			return err
		}
		f.tensors[name] = e
		f.names = append(f.names, name)
	}
	if _, err := dec.Token(); err != nil {
		return errorf(f.path, "header: %v", err)
	}
	if rest := header[dec.InputOffset():]; len(bytes.TrimLeft(rest, " \t\r\n")) != 0 {
		return errorf(f.path, "header: unexpected data after the JSON object")
	}
	if f.metadata == nil {
		f.metadata = map[string]string{}
	}
	sort.Strings(f.names)
	return f.checkLayout()
}

// parseMetadata decodes the "__metadata__" object, which must map strings to strings.
func (f *File) parseMetadata(raw json.RawMessage) error {
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return errorf(f.path, "header: %s must be an object of strings", metaKey)
	}
	f.metadata = m
	return nil
}

// parseEntry decodes and checks one tensor entry against the data section.
func (f *File) parseEntry(name string, raw json.RawMessage) (entry, error) {
	var e struct {
		DType       *string           `json:"dtype"`
		Shape       []json.RawMessage `json:"shape"`
		DataOffsets []json.RawMessage `json:"data_offsets"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return entry{}, errorf(f.path, "tensor %q: bad header entry: %v", name, err)
	}
	switch {
	case e.DType == nil:
		return entry{}, errorf(f.path, "tensor %q: no dtype", name)
	case e.Shape == nil:
		return entry{}, errorf(f.path, "tensor %q: no shape", name)
	case len(e.DataOffsets) != 2:
		return entry{}, errorf(f.path, "tensor %q: data_offsets must hold 2 numbers, not %d", name, len(e.DataOffsets))
	}
	size, ok := dtypeSize[*e.DType]
	if !ok {
		return entry{}, errorf(f.path, "tensor %q: unknown dtype %q", name, *e.DType)
	}
	out := entry{dtype: *e.DType, shape: make([]int, len(e.Shape))}
	count := 1
	for i, r := range e.Shape {
		d, err := parseIndex(r)
		if err != nil {
			return entry{}, errorf(f.path, "tensor %q: shape[%d]: %v", name, i, err)
		}
		out.shape[i] = d
		if count, ok = mulSize(count, d); !ok {
			return entry{}, errorf(f.path, "tensor %q: shape %v has too many elements", name, out.shape[:i+1])
		}
	}
	nbytes, ok := mulSize(count, size)
	if !ok {
		return entry{}, errorf(f.path, "tensor %q: shape %v of %s is too large", name, out.shape, out.dtype)
	}
	var err error
	if out.begin, err = parseIndex(e.DataOffsets[0]); err != nil {
		return entry{}, errorf(f.path, "tensor %q: data_offsets[0]: %v", name, err)
	}
	if out.end, err = parseIndex(e.DataOffsets[1]); err != nil {
		return entry{}, errorf(f.path, "tensor %q: data_offsets[1]: %v", name, err)
	}
	switch {
	case out.begin > out.end:
		return entry{}, errorf(f.path, "tensor %q: data_offsets [%d, %d] end before they begin", name, out.begin, out.end)
	case out.end > len(f.data):
		return entry{}, errorf(f.path, "tensor %q: data_offsets [%d, %d] run past the data section of %d bytes",
			name, out.begin, out.end, len(f.data))
	case out.end-out.begin != nbytes:
		return entry{}, errorf(f.path, "tensor %q: data_offsets [%d, %d] hold %d bytes, but %s %v needs %d",
			name, out.begin, out.end, out.end-out.begin, out.dtype, out.shape, nbytes)
	}
	return out, nil
}

// parseIndex reads a JSON number that must be a non-negative integer no larger than MaxInt.
func parseIndex(raw json.RawMessage) (int, error) {
	s := string(bytes.TrimSpace(raw))
	if s == "" || s[0] == '"' {
		return 0, strconvError(s, "is not a number")
	}
	if s[0] == '-' {
		return 0, strconvError(s, "is negative")
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, strconvError(s, "is not a non-negative integer that fits in an int")
	}
	if v > math.MaxInt {
		return 0, strconvError(s, "is too large")
	}
	return int(v), nil
}

type numberError struct{ text, why string }

func (e *numberError) Error() string { return strconv.Quote(e.text) + " " + e.why }

func strconvError(text, why string) error {
	if len(text) > 40 {
		text = text[:40] + "…"
	}
	return &numberError{text, why}
}

// checkLayout requires the tensors to tile the data section exactly: no overlaps, no gaps, no
// trailing bytes, as the reference implementation requires.
func (f *File) checkLayout() error {
	order := append([]string(nil), f.names...)
	sort.SliceStable(order, func(i, j int) bool {
		a, b := f.tensors[order[i]], f.tensors[order[j]]
		if a.begin != b.begin {
			return a.begin < b.begin
		}
		return a.end < b.end
	})
	pos, prev := 0, ""
	for _, name := range order {
		e := f.tensors[name]
		switch {
		case e.begin < pos:
			return errorf(f.path, "tensor %q: data_offsets [%d, %d] overlap tensor %q, which ends at %d",
				name, e.begin, e.end, prev, pos)
		case e.begin > pos:
			return errorf(f.path, "tensor %q: data_offsets [%d, %d] leave a gap of %d bytes before them",
				name, e.begin, e.end, e.begin-pos)
		}
		pos, prev = e.end, name
	}
	if pos != len(f.data) {
		return errorf(f.path, "the tensors cover %d bytes of a data section of %d", pos, len(f.data))
	}
	return nil
}

// Names returns the names of the file's tensors, sorted.
func (f *File) Names() []string { return append([]string(nil), f.names...) }

// Info returns the dtype and shape of the named tensor, and whether the file holds it.
func (f *File) Info(name string) (TensorInfo, bool) {
	e, ok := f.tensors[name]
	if !ok {
		return TensorInfo{}, false
	}
	return TensorInfo{DType: e.dtype, Shape: append([]int{}, e.shape...)}, true
}

// Metadata returns a copy of the header's "__metadata__" map (empty when the file has none).
func (f *File) Metadata() map[string]string {
	m := make(map[string]string, len(f.metadata))
	for k, v := range f.metadata {
		m[k] = v
	}
	return m
}

// lookup returns the named tensor's entry and bytes.
func (f *File) lookup(name string) (entry, []byte, error) {
	e, ok := f.tensors[name]
	if !ok {
		return entry{}, nil, errorf(f.path, "no tensor named %q", name)
	}
	return e, f.data[e.begin:e.end], nil
}

// Float32 returns the named tensor's elements as float32, with its shape. Any float dtype is
// accepted and converted as PyTorch's tensor.float() would: F32, F16, BF16 and the F8 types
// exactly, F64 rounded to nearest (ties to even). Integer dtypes are an error.
func (f *File) Float32(name string) ([]float32, []int, error) {
	e, b, err := f.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	n := len(b) / dtypeSize[e.dtype]
	out := make([]float32, n)
	le := binary.LittleEndian
	switch e.dtype {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
	case F64:
		for i := range out {
			out[i] = float32(math.Float64frombits(le.Uint64(b[8*i:])))
		}
	case F16:
		for i := range out {
			out[i] = F16ToFloat32(le.Uint16(b[2*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = BF16ToFloat32(le.Uint16(b[2*i:]))
		}
	case F8E5M2:
		for i := range out {
			out[i] = F8E5M2ToFloat32(b[i])
		}
	case F8E4M3:
		for i := range out {
			out[i] = F8E4M3ToFloat32(b[i])
		}
	default:
		return nil, nil, errorf(f.path, "tensor %q: dtype %s is not a floating-point type", name, e.dtype)
	}
	return out, append([]int{}, e.shape...), nil
}

// Float64 returns the named tensor's elements as float64, with its shape. Any float dtype is
// accepted; every conversion is exact. Integer dtypes are an error.
func (f *File) Float64(name string) ([]float64, []int, error) {
	e, b, err := f.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	if e.dtype == F64 {
		out := make([]float64, len(b)/8)
		for i := range out {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
		return out, append([]int{}, e.shape...), nil
	}
	if !IsFloat(e.dtype) {
		return nil, nil, errorf(f.path, "tensor %q: dtype %s is not a floating-point type", name, e.dtype)
	}
	f32, shape, err := f.Float32(name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]float64, len(f32))
	for i, v := range f32 {
		out[i] = float64(v)
	}
	return out, shape, nil
}

// Int64 returns the named tensor's elements as int64, with its shape. Integer dtypes (I64, I32,
// I16, I8, U64, U32, U16, U8) and BOOL (0 or 1) are accepted; a U64 value above MaxInt64 and
// float dtypes are errors.
func (f *File) Int64(name string) ([]int64, []int, error) {
	e, b, err := f.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	n := len(b) / dtypeSize[e.dtype]
	out := make([]int64, n)
	le := binary.LittleEndian
	switch e.dtype {
	case I64:
		for i := range out {
			out[i] = int64(le.Uint64(b[8*i:]))
		}
	case U64:
		for i := range out {
			v := le.Uint64(b[8*i:])
			if v > math.MaxInt64 {
				return nil, nil, errorf(f.path, "tensor %q: U64 element %d = %d does not fit in int64", name, i, v)
			}
			out[i] = int64(v)
		}
	case I32:
		for i := range out {
			out[i] = int64(int32(le.Uint32(b[4*i:])))
		}
	case U32:
		for i := range out {
			out[i] = int64(le.Uint32(b[4*i:]))
		}
	case I16:
		for i := range out {
			out[i] = int64(int16(le.Uint16(b[2*i:])))
		}
	case U16:
		for i := range out {
			out[i] = int64(le.Uint16(b[2*i:]))
		}
	case I8:
		for i := range out {
			out[i] = int64(int8(b[i]))
		}
	case U8:
		for i := range out {
			out[i] = int64(b[i])
		}
	case Bool:
		for i := range out {
			if b[i] != 0 {
				out[i] = 1
			}
		}
	default:
		return nil, nil, errorf(f.path, "tensor %q: dtype %s is not an integer type", name, e.dtype)
	}
	return out, append([]int{}, e.shape...), nil
}
