// Package mamba2 implements the Mamba2 causal language model of Hugging Face transformers
// (Mamba2ForCausalLM) on the graph engine: configuration and checkpoint loading (Hugging Face and
// original mamba_ssm layouts), the block and LM graphs, and sessions that decode with a bound
// recurrent cache.
//
// A Session is the everyday entry point:
//
//	be, _ := backends.New("")               // "cpu" unless MAMBA2_BACKEND says otherwise
//	m, _ := mamba2.Load(be, "path/to/checkpoint", mamba2.Options{})
//	s, _ := m.NewSession(1)
//	out, _ := s.FeedTokens([][]int{prompt}) // several tokens: the Prefill program
//	next := out.ArgmaxLast()                // one id per row
//	out, _ = s.FeedTokens([][]int{{next[0]}}) // one token: the Step program; no positions anywhere
package mamba2

import (
	"errors"
	"fmt"
	"sort"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/cache"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/quant"
	"github.com/mamba2go/mamba2/shapes"
	"gorgonia.org/tensor"
)

// Options tune how a model is loaded.
type Options struct {
	// DType is the compute type: shapes.Float32 (the default when zero) or shapes.Float64.
	DType shapes.DType
	// Weights is the storage format of the large matrices (see Quantizable): quant.F32 (the
	// zero value) keeps them in the compute type; quant.BF16 and quant.F16 keep them 16-bit and
	// quant.Int8 8-bit with a float32 scale per row (whose products round the activations to
	// int16 per block of 32, see ops.QuantMatMulOp), accumulated in float32. A decode step
	// streams every weight once, so halving or quartering their bytes is what speeds it up past
	// the float32 memory-bandwidth limit. Quantized models run inference only (gradients are an
	// error) and need the float32 compute type.
	Weights quant.Format
}

// Model is a loaded Mamba2 causal LM: its configuration and its weights on a backend. It is safe
// for concurrent use by many sessions.
type Model struct {
	Config  Config
	be      backends.Backend
	weights *graph.Weights
	dtype   shapes.DType
	format  quant.Format
}

// Load reads a checkpoint directory (config.json plus safetensors weights) onto be, with the
// checks and errors of LoadCheckpoint. It streams: the files' headers are read and every tensor
// checked first, then each weight is allocated on be and filled about 1 MiB at a time (through
// backends.RangeWriter; a backend without it gets each tensor in one Write), so the host never
// holds the whole checkpoint — peak memory stays near the size of the weights themselves on
// the CPU backend, and near zero beyond the file cache on a GPU. Weights are converted to float32
// as LoadCheckpoint converts them, then to the compute type, so Load and
// New(be, LoadCheckpoint(dir), opts) give the same weights.
func Load(be backends.Backend, dir string, opts Options) (*Model, error) {
	if be == nil {
		return nil, errors.New("mamba2: nil backend")
	}
	dt, err := computeDType(opts)
	if err != nil {
		return nil, err
	}
	c, tensors, closeFiles, err := openCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	defer closeFiles()
	m := &Model{Config: c, be: be, weights: graph.NewWeights(be), dtype: dt, format: opts.Weights}
	fl := newFiller(m.weights, dt, opts.Weights)
	params := c.ParamShapes()
	for _, t := range tensors {
		if err := fl.fill(t.name, params[t.name], t.read); err != nil {
			m.weights.Free()
			return nil, err
		}
	}
	return m, nil
}

// computeDType returns the compute type opts ask for (float32 when unset), checking it against
// the weight format.
func computeDType(opts Options) (shapes.DType, error) {
	dt := opts.DType
	if dt == shapes.InvalidDType {
		dt = shapes.Float32
	}
	if dt != shapes.Float32 && dt != shapes.Float64 {
		return dt, fmt.Errorf("mamba2: dtype %s: want float32 or float64", dt)
	}
	if err := checkFormat(opts.Weights, dt); err != nil {
		return dt, err
	}
	return dt, nil
}

// checkFormat checks a weight format against the compute type.
func checkFormat(f quant.Format, dt shapes.DType) error {
	if f.DType() == shapes.InvalidDType {
		return fmt.Errorf("mamba2: unknown weight format %v", f)
	}
	if f != quant.F32 && dt != shapes.Float32 {
		return fmt.Errorf("mamba2: %s weights need the float32 compute type, not %s", f, dt)
	}
	return nil
}

// New uploads a checkpoint's weights to be.
func New(be backends.Backend, ck *Checkpoint, opts Options) (*Model, error) {
	if be == nil {
		return nil, errors.New("mamba2: nil backend")
	}
	if ck == nil {
		return nil, errors.New("mamba2: nil checkpoint")
	}
	c := ck.Config
	if err := c.Validate(); err != nil {
		return nil, err
	}
	dt, err := computeDType(opts)
	if err != nil {
		return nil, err
	}
	m := &Model{Config: c, be: be, weights: graph.NewWeights(be), dtype: dt, format: opts.Weights}
	fl := newFiller(m.weights, dt, opts.Weights)
	params := c.ParamShapes()
	names := make([]string, 0, len(params))
	for name := range params {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		dims := params[name]
		t, ok := ck.Tensors[name]
		if !ok {
			if name == LMHeadName && c.TieWordEmbeddings {
				continue
			}
			m.weights.Free()
			return nil, fmt.Errorf("mamba2: checkpoint has no tensor %s", name)
		}
		s, data, err := graph.FromDense(t)
		if err != nil {
			m.weights.Free()
			return nil, fmt.Errorf("mamba2: tensor %s: %w", name, err)
		}
		if s.Size() != shapes.Make(dt, dims...).Size() {
			m.weights.Free()
			return nil, fmt.Errorf("mamba2: tensor %s has shape %v, the config expects %v", name, s.Dims, dims)
		}
		if err := fl.fill(name, dims, hostReader(name, data)); err != nil {
			m.weights.Free()
			return nil, err
		}
	}
	return m, nil
}

// hostReader reads a host tensor's elements as float32 for filler.fill (float64 data rounded to
// nearest, as PyTorch's tensor.float() does).
func hostReader(name string, data any) func(dst []float32, offset int) error {
	return func(dst []float32, offset int) error {
		switch d := data.(type) {
		case []float32:
			copy(dst, d[offset:offset+len(dst)])
		case []float64:
			for i, v := range d[offset : offset+len(dst)] {
				dst[i] = float32(v)
			}
		default:
			return fmt.Errorf("mamba2: tensor %s: host data %T is not float32 or float64", name, data)
		}
		return nil
	}
}

// convert returns host data as the compute dtype.
func convert(data any, dt shapes.DType) any {
	switch d := data.(type) {
	case []float32:
		if dt == shapes.Float32 {
			return d
		}
		out := make([]float64, len(d))
		for i, v := range d {
			out[i] = float64(v)
		}
		return out
	case []float64:
		if dt == shapes.Float64 {
			return d
		}
		out := make([]float32, len(d))
		for i, v := range d {
			out[i] = float32(v)
		}
		return out
	}
	return data
}

// Backend returns the backend the model runs on.
func (m *Model) Backend() backends.Backend { return m.be }

// DType returns the compute type.
func (m *Model) DType() shapes.DType { return m.dtype }

// WeightFormat returns the storage format of the large matrices (Options.Weights).
func (m *Model) WeightFormat() quant.Format { return m.format }

// Weights returns the model's weights on the backend.
func (m *Model) Weights() *graph.Weights { return m.weights }

// CacheSpec describes the recurrent state of one row: per layer the conv window [conv_dim, K] and
// the SSM state [heads, head_dim, state].
func (m *Model) CacheSpec() cache.Spec {
	c := m.Config
	spec := cache.Spec{DType: m.dtype, Fingerprint: c.Fingerprint()}
	for l := 0; l < c.NumHiddenLayers; l++ {
		spec.Tensors = append(spec.Tensors,
			cache.TensorSpec{Name: ConvStateName(l), Dims: []int{c.ConvDim(), c.ConvKernel}},
			cache.TensorSpec{Name: SSMStateName(l), Dims: []int{c.NumHeads, c.HeadDim, c.StateSize}})
	}
	return spec
}

// NewCache returns a zeroed cache for batch rows.
func (m *Model) NewCache(batch int) (*cache.Cache, error) {
	return cache.New(m.be, m.CacheSpec(), batch)
}

// Compile builds and compiles the causal-LM graph for spec (its DType and Weights are set to the
// model's).
func (m *Model) Compile(spec GraphSpec) (*graph.Program, error) {
	spec.DType = m.dtype
	spec.Weights = m.format
	g := graph.New()
	if err := BuildCausalLM(g, m.Config, spec); err != nil {
		return nil, err
	}
	return g.Compile(m.be, m.weights)
}

// Close frees the weights.
func (m *Model) Close() error { return m.weights.Free() }

// Forward runs one prefill over input ids [B,T] (int64) from an empty cache and returns logits
// [B,T,V] and the final hidden states [B,T,hidden]: the uncached forward.
func (m *Model) Forward(ids *tensor.Dense) (*Result, error) {
	s, err := m.NewSession(ids.Shape()[0])
	if err != nil {
		return nil, err
	}
	defer s.Close()
	s.Outputs = Outputs{Logits: true, Hidden: true}
	return s.Feed(ids)
}
