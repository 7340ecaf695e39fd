package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"sync"
	"unicode/utf8"
)

// File is a parsed safetensors file: either held in memory (Open, Parse) or open on disk with
// only its header read (OpenLazy), its tensors read on demand. Its methods are safe for
// concurrent use.
type File struct {
	path     string   // for error messages; empty when parsed from bytes
	data     []byte   // the data section, for a file held in memory
	r        *os.File // the open file, for a lazy file; nil otherwise
	dataOff  int64    // where the data section starts in r
	dataLen  int      // length of the data section
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

// Open reads the whole safetensors file at path into memory and validates it. Errors name the
// file. Close is a no-op on the result. OpenLazy reads only the header, which is what a loader
// of large weights wants.
func Open(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err) // the error names the file
	}
	return parse(path, data)
}

// OpenLazy opens the safetensors file at path and reads and validates its header only, with the
// same checks and errors as Open (the layout check uses the file's size). Tensor data is read
// on demand, with ReadAt, by Float32, Float64, Int64 and ReadFloat32, so memory does not grow
// with the file: ReadFloat32 decodes any range of a tensor through a small fixed buffer. The
// caller must Close the File.
func OpenLazy(path string) (*File, error) {
	r, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err) // the error names the file
	}
	f, err := openLazy(path, r)
	if err != nil {
		r.Close()
		return nil, err
	}
	return f, nil
}

func openLazy(path string, r *os.File) (*File, error) {
	st, err := r.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	size := st.Size()
	if size > math.MaxInt {
		return nil, errorf(path, "file of %d bytes is too large for this platform", size)
	}
	var lenField [8]byte
	if size >= 8 {
		if _, err := r.ReadAt(lenField[:], 0); err != nil {
			return nil, errorf(path, "reading the header length: %v", err)
		}
	}
	n, err := headerLength(path, int(size), lenField[:])
	if err != nil {
		return nil, err
	}
	header := make([]byte, n)
	if _, err := r.ReadAt(header, 8); err != nil {
		return nil, errorf(path, "reading the header: %v", err)
	}
	f := &File{path: path, r: r, dataOff: int64(8 + n), dataLen: int(size) - 8 - n, tensors: map[string]entry{}}
	if err := f.parseHeader(header); err != nil {
		return nil, err
	}
	return f, nil
}

// Parse validates a safetensors file held in data. The returned File refers to data, which must
// not be modified afterwards.
func Parse(data []byte) (*File, error) { return parse("", data) }

func parse(path string, data []byte) (*File, error) {
	var lenField []byte
	if len(data) >= 8 {
		lenField = data[:8]
	}
	n, err := headerLength(path, len(data), lenField)
	if err != nil {
		return nil, err
	}
	header := data[8 : 8+n]
	f := &File{path: path, data: data[8+n:], dataLen: len(data) - 8 - n, tensors: map[string]entry{}}
	if err := f.parseHeader(header); err != nil {
		return nil, err
	}
	return f, nil
}

// headerLength checks the 8-byte header length field (lenField, nil when the file is shorter)
// of a file of size bytes and returns the length.
func headerLength(path string, size int, lenField []byte) (int, error) {
	if size < 8 {
		return 0, errorf(path, "file of %d bytes is too short for the 8-byte header length", size)
	}
	n := binary.LittleEndian.Uint64(lenField)
	if n > uint64(size-8) {
		return 0, errorf(path, "header length %d runs past the end of the file (%d bytes after the length)", n, size-8)
	}
	if n > maxHeader {
		return 0, errorf(path, "header length %d exceeds the limit of %d bytes", n, maxHeader)
	}
	return int(n), nil
}

// Close closes a file opened with OpenLazy; its tensors cannot be read afterwards. For a file
// held in memory it does nothing, so callers can always defer it.
func (f *File) Close() error {
	if f.r == nil {
		return nil
	}
	if err := f.r.Close(); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return nil
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
	case out.end > f.dataLen:
		return entry{}, errorf(f.path, "tensor %q: data_offsets [%d, %d] run past the data section of %d bytes",
			name, out.begin, out.end, f.dataLen)
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
	if pos != f.dataLen {
		return errorf(f.path, "the tensors cover %d bytes of a data section of %d", pos, f.dataLen)
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

// lookup returns the named tensor's entry and bytes; a lazy file reads them from disk into a new
// slice.
func (f *File) lookup(name string) (entry, []byte, error) {
	e, ok := f.tensors[name]
	if !ok {
		return entry{}, nil, errorf(f.path, "no tensor named %q", name)
	}
	if f.r == nil {
		return e, f.data[e.begin:e.end], nil
	}
	b := make([]byte, e.end-e.begin)
	if err := f.readAt(name, b, e.begin); err != nil {
		return entry{}, nil, err
	}
	return e, b, nil
}

// readAt fills b from the data section of a lazy file at byte offset off.
func (f *File) readAt(name string, b []byte, off int) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := f.r.ReadAt(b, f.dataOff+int64(off)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // the file shrank after it was opened
		}
		return errorf(f.path, "tensor %q: reading %d bytes at data offset %d: %v", name, len(b), off, err)
	}
	return nil
}

// Float32 returns the named tensor's elements as float32, with its shape. Any float dtype is
// accepted and converted as PyTorch's tensor.float() would: F32, F16, BF16 and the F8 types
// exactly, F64 rounded to nearest (ties to even). Integer dtypes are an error.
func (f *File) Float32(name string) ([]float32, []int, error) {
	if e, ok := f.tensors[name]; ok && !IsFloat(e.dtype) {
		return nil, nil, errorf(f.path, "tensor %q: dtype %s is not a floating-point type", name, e.dtype)
	}
	e, b, err := f.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]float32, len(b)/dtypeSize[e.dtype])
	decodeFloat32(e.dtype, out, b)
	return out, append([]int{}, e.shape...), nil
}

// readChunk is the size of the buffer ReadFloat32 reads a lazy file through.
const readChunk = 256 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, readChunk); return &b }}

// ReadFloat32 decodes the named tensor's elements [offset, offset+len(dst)) (row-major order)
// into dst, converting any float dtype exactly as Float32 does. It lets a loader fill a large
// weight piece by piece without holding the tensor, or the file, in memory: a lazy file is read
// through a fixed buffer of 256 KiB. A range outside the tensor and integer dtypes are errors
// naming the file and the tensor.
func (f *File) ReadFloat32(name string, dst []float32, offset int) error {
	e, ok := f.tensors[name]
	if !ok {
		return errorf(f.path, "no tensor named %q", name)
	}
	if !IsFloat(e.dtype) {
		return errorf(f.path, "tensor %q: dtype %s is not a floating-point type", name, e.dtype)
	}
	size := dtypeSize[e.dtype]
	n := (e.end - e.begin) / size
	if offset < 0 || offset > n || len(dst) > n-offset {
		return errorf(f.path, "tensor %q: elements [%d, %d) are outside its %d elements", name, offset, offset+len(dst), n)
	}
	begin := e.begin + offset*size
	if f.r == nil {
		decodeFloat32(e.dtype, dst, f.data[begin:begin+len(dst)*size])
		return nil
	}
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	per := readChunk / size
	for i := 0; i < len(dst); i += per {
		k := min(per, len(dst)-i)
		b := (*bp)[:k*size]
		if err := f.readAt(name, b, begin+i*size); err != nil {
			return err
		}
		decodeFloat32(e.dtype, dst[i:i+k], b)
	}
	return nil
}

// decodeFloat32 converts len(dst) little-endian elements of a float dtype in b into dst.
func decodeFloat32(dtype string, dst []float32, b []byte) {
	le := binary.LittleEndian
	switch dtype {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(le.Uint64(b[8*i:])))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToFloat32(le.Uint16(b[2*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToFloat32(le.Uint16(b[2*i:]))
		}
	case F8E5M2:
		for i := range dst {
			dst[i] = F8E5M2ToFloat32(b[i])
		}
	case F8E4M3:
		for i := range dst {
			dst[i] = F8E4M3ToFloat32(b[i])
		}
	}
}

// Float64 returns the named tensor's elements as float64, with its shape. Any float dtype is
// accepted; every conversion is exact. Integer dtypes are an error.
func (f *File) Float64(name string) ([]float64, []int, error) {
	if e, ok := f.tensors[name]; ok && !IsFloat(e.dtype) {
		return nil, nil, errorf(f.path, "tensor %q: dtype %s is not a floating-point type", name, e.dtype)
	}
	e, b, err := f.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]float64, len(b)/dtypeSize[e.dtype])
	if e.dtype == F64 {
		for i := range out {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
		return out, append([]int{}, e.shape...), nil
	}
	f32 := make([]float32, len(out))
	decodeFloat32(e.dtype, f32, b)
	for i, v := range f32 {
		out[i] = float64(v)
	}
	return out, append([]int{}, e.shape...), nil
}

// Int64 returns the named tensor's elements as int64, with its shape. Integer dtypes (I64, I32,
// I16, I8, U64, U32, U16, U8) and BOOL (0 or 1) are accepted; a U64 value above MaxInt64 and
// float dtypes are errors.
func (f *File) Int64(name string) ([]int64, []int, error) {
	if e, ok := f.tensors[name]; ok && !IsInt(e.dtype) {
		return nil, nil, errorf(f.path, "tensor %q: dtype %s is not an integer type", name, e.dtype)
	}
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
