package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// Tensor is one tensor to write.
type Tensor struct {
	// Name is the header key; it must be unique, non-empty and not "__metadata__".
	Name string
	// Shape holds the dimensions; their product must equal the number of elements of Data.
	// An empty shape is a scalar of one element.
	Shape []int
	// Data holds the elements in row-major order: []float32 (stored as F32), []float64 (F64),
	// []int64 (I64), []int32 (I32) or []uint8 (U8).
	Data any
	// DType optionally stores float data as another float dtype: "F64", "F32", "F16" or "BF16"
	// (rounded to nearest, ties to even, as PyTorch's tensor.to does). Integer data must be stored
	// as its own dtype. Empty means the natural dtype of Data.
	DType string
}

// AtomicWrite writes a file through a temporary file in the same directory that replaces path
// only once fully written and synced, so a failure never leaves a partial file at path. The new
// file has mode 0644.
func AtomicWrite(path string, write func(w *bufio.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriterSize(tmp, 1<<20)
	if err = write(w); err != nil {
		return err
	}
	if err = w.Flush(); err != nil {
		return err
	}
	if err = tmp.Chmod(0o644); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Write stores tensors, in the order given, and metadata (which may be nil) as a safetensors file
// at path. The file is written atomically: on any error path is left as it was.
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	header, dtypes, err := encodeHeader(tensors, metadata)
	if err != nil {
		return errorf(path, "%v", err)
	}
	err = AtomicWrite(path, func(w *bufio.Writer) error {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
		if _, err := w.Write(n[:]); err != nil {
			return err
		}
		if _, err := w.Write(header); err != nil {
			return err
		}
		for i, t := range tensors {
			if err := writeData(w, t.Data, dtypes[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return errorf(path, "%v", err)
	}
	return nil
}

// naturalDType returns the dtype Data is stored as by default and its element count.
func naturalDType(data any) (string, int, bool) {
	switch d := data.(type) {
	case []float32:
		return F32, len(d), true
	case []float64:
		return F64, len(d), true
	case []int64:
		return I64, len(d), true
	case []int32:
		return I32, len(d), true
	case []uint8:
		return U8, len(d), true
	}
	return "", 0, false
}

// encodeHeader checks the tensors and returns the padded JSON header and each tensor's dtype.
func encodeHeader(tensors []Tensor, metadata map[string]string) ([]byte, []string, error) {
	var buf bytes.Buffer
	enc := func(v any) {
		b, _ := json.Marshal(v) // strings and string maps always marshal
		buf.Write(b)
	}
	buf.WriteByte('{')
	if len(metadata) > 0 {
		buf.WriteString(`"` + metaKey + `":{`)
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			enc(k)
			buf.WriteByte(':')
			enc(metadata[k])
		}
		buf.WriteByte('}')
	}
	seen := map[string]bool{}
	dtypes := make([]string, len(tensors))
	offset := 0
	for i, t := range tensors {
		switch {
		case t.Name == "":
			return nil, nil, fmt.Errorf("tensor %d has no name", i)
		case t.Name == metaKey:
			return nil, nil, fmt.Errorf("tensor name %q is reserved", t.Name)
		case seen[t.Name]:
			return nil, nil, fmt.Errorf("tensor %q appears twice", t.Name)
		}
		seen[t.Name] = true
		natural, n, ok := naturalDType(t.Data)
		if !ok {
			return nil, nil, fmt.Errorf("tensor %q: unsupported data type %T", t.Name, t.Data)
		}
		dt := natural
		if t.DType != "" && t.DType != natural {
			if !IsFloat(natural) || (t.DType != F64 && t.DType != F32 && t.DType != F16 && t.DType != BF16) {
				return nil, nil, fmt.Errorf("tensor %q: cannot store %T as %s", t.Name, t.Data, t.DType)
			}
			dt = t.DType
		}
		dtypes[i] = dt
		count := 1
		for _, d := range t.Shape {
			if count, ok = mulSize(count, d); !ok {
				return nil, nil, fmt.Errorf("tensor %q: bad shape %v", t.Name, t.Shape)
			}
		}
		if count != n {
			return nil, nil, fmt.Errorf("tensor %q: shape %v holds %d elements, data has %d", t.Name, t.Shape, count, n)
		}
		nbytes, ok := mulSize(n, dtypeSize[dt])
		if !ok || offset > math.MaxInt-nbytes {
			return nil, nil, fmt.Errorf("tensor %q: too large", t.Name)
		}
		if buf.Len() > 1 {
			buf.WriteByte(',')
		}
		enc(t.Name)
		buf.WriteString(`:{"dtype":"` + dt + `","shape":[`)
		for j, d := range t.Shape {
			if j > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString(strconv.Itoa(d))
		}
		fmt.Fprintf(&buf, `],"data_offsets":[%d,%d]}`, offset, offset+nbytes)
		offset += nbytes
	}
	buf.WriteByte('}')
	for buf.Len()%8 != 0 {
		buf.WriteByte(' ')
	}
	return buf.Bytes(), dtypes, nil
}

// writeData writes data as dtype dt, little-endian.
func writeData(w *bufio.Writer, data any, dt string) error {
	var b [8]byte
	le := binary.LittleEndian
	var put func(i int) []byte
	n := 0
	switch d := data.(type) {
	case []float32:
		n = len(d)
		switch dt {
		case F32:
			put = func(i int) []byte { le.PutUint32(b[:], math.Float32bits(d[i])); return b[:4] }
		case F64:
			put = func(i int) []byte { le.PutUint64(b[:], math.Float64bits(float64(d[i]))); return b[:8] }
		case F16:
			put = func(i int) []byte { le.PutUint16(b[:], Float32ToF16(d[i])); return b[:2] }
		case BF16:
			put = func(i int) []byte { le.PutUint16(b[:], Float32ToBF16(d[i])); return b[:2] }
		}
	case []float64:
		n = len(d)
		switch dt {
		case F64:
			put = func(i int) []byte { le.PutUint64(b[:], math.Float64bits(d[i])); return b[:8] }
		case F32:
			put = func(i int) []byte { le.PutUint32(b[:], math.Float32bits(float32(d[i]))); return b[:4] }
		case F16:
			put = func(i int) []byte { le.PutUint16(b[:], Float32ToF16(float32(d[i]))); return b[:2] }
		case BF16:
			put = func(i int) []byte { le.PutUint16(b[:], Float32ToBF16(float32(d[i]))); return b[:2] }
		}
	case []int64:
		n = len(d)
		put = func(i int) []byte { le.PutUint64(b[:], uint64(d[i])); return b[:8] }
	case []int32:
		n = len(d)
		put = func(i int) []byte { le.PutUint32(b[:], uint32(d[i])); return b[:4] }
	case []uint8:
		_, err := w.Write(d)
		return err
	}
	if put == nil {
		return fmt.Errorf("cannot store %T as %s", data, dt)
	}
	for i := 0; i < n; i++ {
		if _, err := w.Write(put(i)); err != nil {
			return err
		}
	}
	return nil
}
