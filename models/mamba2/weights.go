package mamba2

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/safetensors"
	"gorgonia.org/tensor"
)

// Checkpoint holds a model's weights on the host as float32 tensors under Hugging Face names.
type Checkpoint struct {
	// Config is the model's configuration.
	Config Config
	// Tensors maps each name of Config.WeightNames to its weights, shaped as Config.ExpectedShapes
	// says (the conv weight as [ConvDim, 1, ConvKernel], as in the files).
	Tensors map[string]*tensor.Dense
}

// File names inside a checkpoint directory.
const (
	ConfigFile     = "config.json"
	WeightsFile    = "model.safetensors"
	WeightsIndex   = "model.safetensors.index.json"
	pickleWeights  = "pytorch_model.bin"
	mambaSSMEmbeds = "backbone.embedding.weight" // mamba_ssm's name for EmbeddingsName
)

// ExpectedShapes returns every Hugging Face tensor name of a checkpoint for c with its shape:
// backbone.embeddings.weight [V, hidden]; per layer l, backbone.layers.l.norm.weight [hidden] and
// backbone.layers.l.mixer.{in_proj.weight [InProjSize, hidden], in_proj.bias [InProjSize] (with
// UseBias), conv1d.weight [ConvDim, 1, K], conv1d.bias [ConvDim] (with UseConvBias), dt_bias,
// A_log, D [H], norm.weight [I], out_proj.weight [hidden, I], out_proj.bias [hidden] (with
// UseBias)}; backbone.norm_f.weight [hidden]; lm_head.weight [V, hidden] unless
// TieWordEmbeddings. The map is new on each call.
func (c Config) ExpectedShapes() map[string][]int {
	V, D, I, H := c.VocabSize, c.HiddenSize, c.IntermediateSize(), c.NumHeads
	m := map[string][]int{
		EmbeddingsName: {V, D},
		NormFName:      {D},
	}
	if !c.TieWordEmbeddings {
		m[LMHeadName] = []int{V, D}
	}
	for l := 0; l < c.NumHiddenLayers; l++ {
		name := func(s string) string { return fmt.Sprintf("backbone.layers.%d.%s", l, s) }
		m[name("norm.weight")] = []int{D}
		m[name("mixer.in_proj.weight")] = []int{c.InProjSize(), D}
		m[name("mixer.conv1d.weight")] = []int{c.ConvDim(), 1, c.ConvKernel}
		m[name("mixer.dt_bias")] = []int{H}
		m[name("mixer.A_log")] = []int{H}
		m[name("mixer.D")] = []int{H}
		m[name("mixer.norm.weight")] = []int{I}
		m[name("mixer.out_proj.weight")] = []int{D, I}
		if c.UseBias {
			m[name("mixer.in_proj.bias")] = []int{c.InProjSize()}
			m[name("mixer.out_proj.bias")] = []int{D}
		}
		if c.UseConvBias {
			m[name("mixer.conv1d.bias")] = []int{c.ConvDim()}
		}
	}
	return m
}

// WeightNames returns the names of ExpectedShapes, sorted.
func (c Config) WeightNames() []string {
	m := c.ExpectedShapes()
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LoadCheckpoint reads a checkpoint directory: config.json (either layout, see ParseConfig) and
// the weights, from model.safetensors or from the shards that model.safetensors.index.json
// lists ({"weight_map": {tensor: file}}). Float weights of any precision (F32, F16, BF16, F64,
// F8) are converted to float32. A mamba_ssm checkpoint's backbone.embedding.weight is renamed to
// backbone.embeddings.weight; a tied checkpoint's lm_head.weight is ignored.
//
// Every expected tensor must be present with its expected shape and no other tensor may be:
// errors name the file and the tensor (a missing tensor, an unexpected one, a misshaped one, one
// that is not a float, a missing shard, a corrupt file). Load checks the same and streams the
// weights to a backend without holding them on the host.
func LoadCheckpoint(dir string) (*Checkpoint, error) {
	c, tensors, closeFiles, err := openCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	defer closeFiles()
	ck := &Checkpoint{Config: c, Tensors: make(map[string]*tensor.Dense, len(tensors))}
	for _, t := range tensors {
		data := make([]float32, t.size())
		if err := t.read(data, 0); err != nil {
			return nil, err
		}
		ck.Tensors[t.name] = tensor.New(tensor.WithShape(t.dims...), tensor.WithBacking(data))
	}
	return ck, nil
}

// fileTensor is one checked tensor of a checkpoint's files, ready to read.
type fileTensor struct {
	name     string // Hugging Face name
	dims     []int  // its shape, as ExpectedShapes says (and the file has)
	fileName string // its name in the file
	file     *safetensors.File
}

func (t fileTensor) size() int {
	n := 1
	for _, d := range t.dims {
		n *= d
	}
	return n
}

// read decodes the tensor's elements [offset, offset+len(dst)) into dst as float32.
func (t fileTensor) read(dst []float32, offset int) error {
	if err := t.file.ReadFloat32(t.fileName, dst, offset); err != nil {
		return fmt.Errorf("mamba2: %w", err)
	}
	return nil
}

// openCheckpoint reads dir's config, opens its weights files reading only their headers, and
// checks every tensor (names against the config, index against the shards, dtype and shape)
// before any weight is read. It returns the tensors to keep, in file order, and a function that
// closes the files, which the caller must call once done reading.
func openCheckpoint(dir string) (Config, []fileTensor, func(), error) {
	c, err := LoadConfig(filepath.Join(dir, ConfigFile))
	if err != nil {
		return Config{}, nil, nil, err
	}
	plan, err := planWeights(dir)
	if err != nil {
		return Config{}, nil, nil, err
	}
	tensors, err := plan.open(c)
	if err != nil {
		plan.close()
		return Config{}, nil, nil, err
	}
	return c, tensors, plan.close, nil
}

// open checks the planned names against c, then opens every shard (header only), matches it
// against the index and checks each kept tensor's dtype and shape.
func (p *weightPlan) open(c Config) ([]fileTensor, error) {
	if err := p.check(c); err != nil {
		return nil, err
	}
	expected := c.ExpectedShapes()
	var tensors []fileTensor
	for _, sh := range p.shards {
		if sh.file == nil {
			f, err := safetensors.OpenLazy(sh.path)
			if err != nil {
				return nil, fmt.Errorf("mamba2: %w", err)
			}
			sh.file = f
			if err := sh.matchIndex(f, p.source); err != nil {
				return nil, err
			}
		}
		for _, fileName := range sh.names {
			name, keep := c.hfName(fileName)
			if !keep {
				continue
			}
			info, _ := sh.file.Info(fileName)
			if !safetensors.IsFloat(info.DType) {
				return nil, fmt.Errorf("mamba2: %s: tensor %s: dtype %s is not a floating-point type", sh.path, fileName, info.DType)
			}
			if want := expected[name]; !slices.Equal(info.Shape, want) {
				return nil, fmt.Errorf("mamba2: %s: tensor %s: file has %v, config expects %v", sh.path, fileName, info.Shape, want)
			}
			tensors = append(tensors, fileTensor{name: name, dims: info.Shape, fileName: fileName, file: sh.file})
		}
	}
	return tensors, nil
}

// close closes the shards' open files.
func (p *weightPlan) close() {
	for _, sh := range p.shards {
		if sh.file != nil {
			sh.file.Close() // read-only: closing cannot lose data
			sh.file = nil
		}
	}
}

// hfName maps a tensor name in c's checkpoint files to its Hugging Face name, and says whether
// the tensor is kept (a tied checkpoint's lm_head.weight is not).
func (c Config) hfName(fileName string) (string, bool) {
	if c.Layout == LayoutMambaSSM && fileName == mambaSSMEmbeds {
		return EmbeddingsName, true
	}
	if fileName == LMHeadName && c.TieWordEmbeddings {
		return "", false
	}
	return fileName, true
}

// weightPlan lists where a checkpoint's tensors are.
type weightPlan struct {
	source string // the single weights file or the index, for errors about the whole set
	shards []*shard
}

// shard is one weights file and the tensor names it holds.
type shard struct {
	path  string
	names []string          // sorted
	file  *safetensors.File // opened by OpenLazy (header only), or nil before weightPlan.open
}

// planWeights finds a directory's weights files. A single weights file is opened (header only)
// here; the caller must close the plan.
func planWeights(dir string) (*weightPlan, error) {
	single := filepath.Join(dir, WeightsFile)
	f, err := safetensors.OpenLazy(single)
	if err == nil {
		return &weightPlan{source: single, shards: []*shard{{path: single, names: f.Names(), file: f}}}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("mamba2: %w", err)
	}
	index := filepath.Join(dir, WeightsIndex)
	data, err := os.ReadFile(index)
	if errors.Is(err, fs.ErrNotExist) {
		if _, perr := os.Stat(filepath.Join(dir, pickleWeights)); perr == nil {
			return nil, fmt.Errorf("mamba2: %s: only %s (a PyTorch pickle) is there, which is not supported: convert it to %s",
				dir, pickleWeights, WeightsFile)
		}
		return nil, fmt.Errorf("mamba2: %s: no %s or %s", dir, WeightsFile, WeightsIndex)
	}
	if err != nil {
		return nil, fmt.Errorf("mamba2: %w", err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("mamba2: %s: %v", index, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("mamba2: %s: empty or missing weight_map", index)
	}
	byFile := map[string]*shard{}
	for name, file := range idx.WeightMap {
		if !filepath.IsLocal(file) {
			return nil, fmt.Errorf("mamba2: %s: tensor %s: shard %q is not a file inside the checkpoint directory", index, name, file)
		}
		p := filepath.Join(dir, file)
		if byFile[p] == nil {
			byFile[p] = &shard{path: p}
		}
		byFile[p].names = append(byFile[p].names, name)
	}
	plan := &weightPlan{source: index}
	for _, sh := range byFile {
		sort.Strings(sh.names)
		plan.shards = append(plan.shards, sh)
	}
	sort.Slice(plan.shards, func(i, j int) bool { return plan.shards[i].path < plan.shards[j].path })
	for _, sh := range plan.shards { // fail before reading any shard
		if _, err := os.Stat(sh.path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("mamba2: %s: shard %s, which holds tensor %s, is missing", index, sh.path, sh.names[0])
			}
			return nil, fmt.Errorf("mamba2: %w", err)
		}
	}
	return plan, nil
}

// matchIndex requires a shard to hold exactly the tensors the index maps to it.
func (sh *shard) matchIndex(f *safetensors.File, index string) error {
	for _, name := range sh.names {
		if _, ok := f.Info(name); !ok {
			return fmt.Errorf("mamba2: %s: tensor %s: the index %s maps it here, but the file does not hold it", sh.path, name, index)
		}
	}
	if extra := f.Names(); len(extra) != len(sh.names) {
		for _, name := range extra {
			if _, found := slices.BinarySearch(sh.names, name); !found {
				return fmt.Errorf("mamba2: %s: tensor %s is not mapped to this file by the index %s", sh.path, name, index)
			}
		}
	}
	return nil
}

// check compares the planned tensor names with the ones c expects.
func (p *weightPlan) check(c Config) error {
	expected := c.ExpectedShapes()
	present := map[string]string{} // HF name → name in the file
	var unexpected []string
	for _, sh := range p.shards {
		for _, fileName := range sh.names {
			name, keep := c.hfName(fileName)
			if !keep {
				continue
			}
			if other, dup := present[name]; dup {
				return fmt.Errorf("mamba2: %s: tensors %s and %s are the same weight", p.source, other, fileName)
			}
			present[name] = fileName
			if _, ok := expected[name]; !ok {
				unexpected = append(unexpected, fileName)
			}
		}
	}
	if len(unexpected) > 0 {
		sort.Strings(unexpected)
		return fmt.Errorf("mamba2: %s: unexpected tensor %s%s (config: %d layers, use_bias=%t, use_conv_bias=%t, tie_word_embeddings=%t)",
			p.source, unexpected[0], andMore(len(unexpected)-1), c.NumHiddenLayers, c.UseBias, c.UseConvBias, c.TieWordEmbeddings)
	}
	var missing []string
	for name := range expected {
		if _, ok := present[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("mamba2: %s: missing tensor %s%s (config: %d layers, use_bias=%t, use_conv_bias=%t, tie_word_embeddings=%t)",
			p.source, missing[0], andMore(len(missing)-1), c.NumHiddenLayers, c.UseBias, c.UseConvBias, c.TieWordEmbeddings)
	}
	return nil
}

func andMore(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (and %d more)", n)
}

// SaveCheckpoint writes ck to dir (created if needed) as a Hugging Face checkpoint: config.json
// (Config.MarshalJSON) and model.safetensors holding the weights under Hugging Face names, sorted,
// with metadata {"format": "pt"}. Each file is replaced atomically. Every expected tensor must be
// present with its shape and float32 or float64 data (stored as F32 or F64); a tied
// checkpoint's lm_head.weight is skipped, any other extra tensor is an error.
func SaveCheckpoint(dir string, ck *Checkpoint) error {
	if ck == nil {
		return errors.New("mamba2: nil checkpoint")
	}
	c := ck.Config
	if err := c.Validate(); err != nil {
		return fmt.Errorf("mamba2: %w", err)
	}
	expected := c.ExpectedShapes()
	for name := range ck.Tensors {
		if _, ok := expected[name]; !ok && !(name == LMHeadName && c.TieWordEmbeddings) {
			return fmt.Errorf("mamba2: checkpoint has unexpected tensor %s", name)
		}
	}
	names := c.WeightNames()
	tensors := make([]safetensors.Tensor, 0, len(names))
	for _, name := range names {
		t, ok := ck.Tensors[name]
		if !ok || t == nil {
			return fmt.Errorf("mamba2: checkpoint has no tensor %s", name)
		}
		s, data, err := graph.FromDense(t)
		if err != nil {
			return fmt.Errorf("mamba2: tensor %s: %w", name, err)
		}
		if !slices.Equal(s.Dims, expected[name]) {
			return fmt.Errorf("mamba2: tensor %s: checkpoint has %v, config expects %v", name, s.Dims, expected[name])
		}
		switch data.(type) {
		case []float32, []float64:
		default:
			return fmt.Errorf("mamba2: tensor %s: %T is not float32 or float64 data", name, data)
		}
		tensors = append(tensors, safetensors.Tensor{Name: name, Shape: s.Dims, Data: data})
	}
	cfg, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("mamba2: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mamba2: %w", err)
	}
	if err := safetensors.Write(filepath.Join(dir, WeightsFile), tensors, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("mamba2: %w", err)
	}
	path := filepath.Join(dir, ConfigFile)
	err = safetensors.AtomicWrite(path, func(w *bufio.Writer) error {
		if _, err := w.Write(cfg); err != nil {
			return err
		}
		return w.WriteByte('\n')
	})
	if err != nil {
		return fmt.Errorf("mamba2: %s: %w", path, err)
	}
	return nil
}
