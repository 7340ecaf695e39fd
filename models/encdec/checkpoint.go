package encdec

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/safetensors"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/mamba2go/mamba2/train"
)

// Checkpoint file names.
const (
	ConfigFile    = "config.json"
	WeightsFile   = "model.safetensors"
	OptimizerFile = "optimizer.safetensors"
	TrainerFile   = "trainer_state.json"
)

const metaStep = "step"

// checkpointShape is the shape a parameter is stored with: Hugging Face's [C,1,K] for conv weights.
func checkpointShape(name string, dims []int) []int {
	if isConvWeight(name) && len(dims) == 2 {
		return []int{dims[0], 1, dims[1]}
	}
	return dims
}

// Save writes the model to dir (created if needed): config.json and model.safetensors with every
// parameter under its name (float32 models as F32, float64 as F64). Each file is replaced
// atomically.
func (m *Model) Save(dir string) error {
	params, err := m.Params()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("encdec: %w", err)
	}
	files, err := m.writeFiles(dir, params, nil)
	if err != nil {
		return err
	}
	return commit(files)
}

// pending maps temporary files to their final paths.
type pending [][2]string

// commit renames every temporary file into place, in order.
func commit(files pending) error {
	for _, f := range files {
		if err := os.Rename(f[0], f[1]); err != nil {
			return fmt.Errorf("encdec: %w", err)
		}
	}
	return nil
}

// discard removes temporary files.
func discard(files pending) {
	for _, f := range files {
		os.Remove(f[0])
	}
}

// tmpName returns the temporary name a file is written under before commit.
func tmpName(dir, name string) string { return filepath.Join(dir, "."+name+".pending") }

// writeFiles writes the config and the weights (with meta in the weights file) as
// temporary files and returns them for commit.
func (m *Model) writeFiles(dir string, params map[string][]float64, meta map[string]string) (pending, error) {
	var files pending
	cfg, err := json.MarshalIndent(m.Config, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encdec: %w", err)
	}
	tmp := tmpName(dir, ConfigFile)
	err = safetensors.AtomicWrite(tmp, func(w *bufio.Writer) error {
		_, err := w.Write(append(cfg, '\n'))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("encdec: %w", err)
	}
	files = append(files, [2]string{tmp, filepath.Join(dir, ConfigFile)})
	md := map[string]string{"format": "pt", "model_type": ModelType}
	for k, v := range meta {
		md[k] = v
	}
	var ts []safetensors.Tensor
	for _, name := range m.Config.ParamNames() {
		v := params[name]
		var data any = v
		if m.dtype == shapes.Float32 {
			data = hostSlice(v, shapes.Float32)
		}
		ts = append(ts, safetensors.Tensor{Name: name, Shape: checkpointShape(name, m.shapes[name]), Data: data})
	}
	tmp = tmpName(dir, WeightsFile)
	if err := safetensors.Write(tmp, ts, md); err != nil {
		discard(files)
		return nil, fmt.Errorf("encdec: %w", err)
	}
	files = append(files, [2]string{tmp, filepath.Join(dir, WeightsFile)})
	return files, nil
}

// LoadConfig reads dir/config.json. A Hugging Face Mamba2 causal-LM config is refused with an error
// that says so.
func LoadConfig(dir string) (Config, error) {
	path := filepath.Join(dir, ConfigFile)
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dir); serr != nil {
				return Config{}, fmt.Errorf("encdec: checkpoint %s does not exist", dir)
			}
			return Config{}, fmt.Errorf("encdec: %s has no %s (not a checkpoint)", dir, ConfigFile)
		}
		return Config{}, fmt.Errorf("encdec: %w", err)
	}
	var probe struct {
		ModelType string `json:"model_type"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return Config{}, fmt.Errorf("encdec: %s: %v", path, err)
	}
	if probe.ModelType != ModelType {
		return Config{}, fmt.Errorf("encdec: %s: model_type %q is not an encoder–decoder (%q)", path, probe.ModelType, ModelType)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return c, nil
}

// Load reads a checkpoint written by Save (or by a Trainer) onto be. Every parameter of the
// configuration must be present with its shape, and no other tensor may be: errors name the file
// and the tensor.
func Load(be backends.Backend, dir string, opts Options) (*Model, error) {
	m, _, err := load(be, dir, opts)
	return m, err
}

func load(be backends.Backend, dir string, opts Options) (*Model, map[string]string, error) {
	c, err := LoadConfig(dir)
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, WeightsFile)
	f, err := safetensors.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("encdec: %s has no %s", dir, WeightsFile)
		}
		return nil, nil, fmt.Errorf("encdec: %w", err)
	}
	want := c.ParamShapes()
	var missing, extra []string
	for _, name := range c.ParamNames() {
		if _, ok := f.Info(name); !ok {
			missing = append(missing, name)
		}
	}
	for _, name := range f.Names() {
		if _, ok := want[name]; !ok {
			extra = append(extra, name)
		}
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("encdec: %s does not match %s: missing %s", path, ConfigFile, describeParams(missing))
	}
	if len(extra) > 0 {
		return nil, nil, fmt.Errorf("encdec: %s does not match %s: unexpected %s", path, ConfigFile, describeParams(extra))
	}
	params := map[string][]float64{}
	for _, name := range c.ParamNames() {
		info, _ := f.Info(name)
		if !slices.Equal(info.Shape, checkpointShape(name, want[name])) && !slices.Equal(info.Shape, want[name]) {
			return nil, nil, fmt.Errorf("encdec: %s: tensor %s has shape %v, %s implies %v", path, name, info.Shape, ConfigFile, checkpointShape(name, want[name]))
		}
		v, _, err := f.Float64(name)
		if err != nil {
			return nil, nil, fmt.Errorf("encdec: %w", err)
		}
		params[name] = v
	}
	m, err := NewWithParams(be, c, params, opts)
	if err != nil {
		return nil, nil, err
	}
	return m, f.Metadata(), nil
}

// trainerState is trainer_state.json.
type trainerState struct {
	Step        int               `json:"step"`
	Fingerprint string            `json:"fingerprint"`
	Options     TrainOptions      `json:"options"`
	Extra       map[string]string `json:"extra,omitempty"`
}

// Save writes a resumable checkpoint to dir: the model (config.json, model.safetensors), the
// optimizer state (optimizer.safetensors) and trainer_state.json (step, options, extra). The files
// are written in full under temporary names first and then renamed into place, trainer_state.json
// last; every file records the step, and Resume refuses a set whose steps disagree. An error or an
// interruption while writing leaves the previous checkpoint as it was.
func (t *Trainer) Save(dir string, extra map[string]string) error {
	m := t.Model
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("encdec: %w", err)
	}
	step := strconv.Itoa(t.opt.Steps)
	files, err := m.writeFiles(dir, t.params, map[string]string{metaStep: step})
	if err != nil {
		return err
	}
	tmp := tmpName(dir, OptimizerFile)
	if err := t.opt.Save(tmp, map[string]string{metaStep: step, "fingerprint": m.Config.Fingerprint()}); err != nil {
		discard(files)
		return err
	}
	files = append(files, [2]string{tmp, filepath.Join(dir, OptimizerFile)})
	st, err := json.MarshalIndent(trainerState{Step: t.opt.Steps, Fingerprint: m.Config.Fingerprint(), Options: t.Options, Extra: extra}, "", "  ")
	if err != nil {
		discard(files)
		return fmt.Errorf("encdec: %w", err)
	}
	tmp = tmpName(dir, TrainerFile)
	err = safetensors.AtomicWrite(tmp, func(w *bufio.Writer) error {
		_, err := w.Write(append(st, '\n'))
		return err
	})
	if err != nil {
		discard(files)
		return fmt.Errorf("encdec: %w", err)
	}
	files = append(files, [2]string{tmp, filepath.Join(dir, TrainerFile)})
	return commit(files)
}

// Resume loads a checkpoint written by Trainer.Save and returns the model, a trainer that continues
// exactly where the saved one stopped, and the extra metadata given to Save.
func Resume(be backends.Backend, dir string, opts Options) (*Model, *Trainer, map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(dir, TrainerFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dir); serr != nil {
				return nil, nil, nil, fmt.Errorf("encdec: checkpoint %s does not exist", dir)
			}
			return nil, nil, nil, fmt.Errorf("encdec: %s has no %s (not a training checkpoint)", dir, TrainerFile)
		}
		return nil, nil, nil, fmt.Errorf("encdec: %w", err)
	}
	var st trainerState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, nil, nil, fmt.Errorf("encdec: %s: %v", filepath.Join(dir, TrainerFile), err)
	}
	m, meta, err := load(be, dir, opts)
	if err != nil {
		return nil, nil, nil, err
	}
	fail := func(err error) (*Model, *Trainer, map[string]string, error) {
		m.Close()
		return nil, nil, nil, err
	}
	if st.Fingerprint != m.Config.Fingerprint() {
		return fail(fmt.Errorf("encdec: %s belongs to another configuration than %s", TrainerFile, ConfigFile))
	}
	if meta[metaStep] != strconv.Itoa(st.Step) {
		return fail(fmt.Errorf("encdec: %s is from step %q, %s from step %d (an incomplete checkpoint)", WeightsFile, meta[metaStep], TrainerFile, st.Step))
	}
	opt, ometa, err := train.LoadAdamW(filepath.Join(dir, OptimizerFile), m.Config.paramSizes())
	if err != nil {
		return fail(err)
	}
	if ometa[metaStep] != strconv.Itoa(st.Step) || opt.Steps != st.Step {
		return fail(fmt.Errorf("encdec: %s is from step %q, %s from step %d (an incomplete checkpoint)", OptimizerFile, ometa[metaStep], TrainerFile, st.Step))
	}
	if err := st.Options.Validate(); err != nil {
		return fail(fmt.Errorf("%w (in %s)", err, TrainerFile))
	}
	t, err := newTrainer(m, st.Options, opt)
	if err != nil {
		return fail(err)
	}
	return m, t, st.Extra, nil
}
