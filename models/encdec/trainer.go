package encdec

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/shapes"
	"github.com/mamba2go/mamba2/train"
)

// TrainOptions configure a Trainer.
type TrainOptions struct {
	// LR is the peak learning rate, reached after Warmup steps; a cosine then decays it to MinLR at
	// step Steps.
	LR     float64 `json:"lr"`
	MinLR  float64 `json:"min_lr"`
	Warmup int     `json:"warmup_steps"`
	Steps  int     `json:"steps"`
	// WeightDecay is AdamW's decoupled decay, applied to matrices (not to norms, biases, conv
	// weights or the SSM's A_log, D and dt_bias).
	WeightDecay float64 `json:"weight_decay"`
	// ClipNorm clips the global gradient norm (0: no clipping).
	ClipNorm float64 `json:"clip_norm"`
	Beta1    float64 `json:"beta1,omitempty"`
	Beta2    float64 `json:"beta2,omitempty"`
}

func (o TrainOptions) schedule() train.Schedule {
	return train.Schedule{Peak: o.LR, Min: o.MinLR, Warmup: o.Warmup, Total: o.Steps}
}

// Validate checks the options.
func (o TrainOptions) Validate() error {
	if o.Steps <= 0 {
		return fmt.Errorf("encdec: training needs a positive number of steps, got %d", o.Steps)
	}
	if err := o.schedule().Validate(); err != nil {
		return err
	}
	if o.WeightDecay < 0 || o.ClipNorm < 0 || math.IsNaN(o.WeightDecay) || math.IsNaN(o.ClipNorm) {
		return fmt.Errorf("encdec: weight decay %g and clip norm %g must not be negative", o.WeightDecay, o.ClipNorm)
	}
	if o.Beta1 < 0 || o.Beta1 >= 1 || o.Beta2 < 0 || o.Beta2 >= 1 {
		return fmt.Errorf("encdec: AdamW betas (%g, %g) must be in [0, 1)", o.Beta1, o.Beta2)
	}
	return nil
}

// StepResult reports one training step.
type StepResult struct {
	Step     int     // number of updates made, this one included
	Loss     float64 // the batch's mean loss before the update
	GradNorm float64 // global gradient norm before clipping
	LR       float64 // learning rate of the update
	Tokens   int     // target positions in the batch
}

// Trainer trains a Model with AdamW on host master copies of the weights. Training is
// deterministic: the same model, options and batches give the same losses, and a trainer saved
// and resumed continues exactly as if it had not stopped.
type Trainer struct {
	Model   *Model
	Options TrainOptions
	opt     *train.AdamW
	params  map[string][]float64 // master weights
	grads   map[string][]float64
	host    map[string]any // device-dtype staging slices
}

// NewTrainer starts training m from its current weights.
func NewTrainer(m *Model, o TrainOptions) (*Trainer, error) {
	if m == nil {
		return nil, errors.New("encdec: nil model")
	}
	if o.Beta1 == 0 {
		o.Beta1 = 0.9
	}
	if o.Beta2 == 0 {
		o.Beta2 = 0.999
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	opt := train.NewAdamW(o.WeightDecay)
	opt.Beta1, opt.Beta2 = o.Beta1, o.Beta2
	return newTrainer(m, o, opt)
}

func newTrainer(m *Model, o TrainOptions, opt *train.AdamW) (*Trainer, error) {
	params, err := m.Params()
	if err != nil {
		return nil, err
	}
	opt.Decay = m.Config.decays
	t := &Trainer{Model: m, Options: o, opt: opt, params: params,
		grads: map[string][]float64{}, host: map[string]any{}}
	for name, v := range params {
		t.grads[name] = make([]float64, len(v))
		t.host[name] = graph.NewHostSlice(shapes.Make(m.dtype, len(v)))
	}
	return t, nil
}

// decays reports whether AdamW's weight decay applies to parameter name.
func (c Config) decays(name string) bool {
	d := c.ParamShapes()[name]
	return len(d) >= 2 && !isConvWeight(name)
}

// Steps is the number of updates made so far.
func (t *Trainer) Steps() int { return t.opt.Steps }

// LR is the learning rate of the next update.
func (t *Trainer) LR() float64 { return t.Options.schedule().LR(t.opt.Steps) }

// TrainStep runs the Train program on batch (teacher forcing), clips the gradients, and makes one
// AdamW update of every parameter.
func (t *Trainer) TrainStep(batch []Example) (StepResult, error) {
	m := t.Model
	m.mu.Lock()
	defer m.mu.Unlock()
	p, f, err := m.prepare(PhaseTrain, batch)
	if err != nil {
		return StepResult{}, err
	}
	if err := p.Run(); err != nil {
		return StepResult{}, fmt.Errorf("encdec: train program: %w", err)
	}
	loss, err := readScalar(p, OutLoss)
	if err != nil {
		return StepResult{}, err
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return StepResult{}, fmt.Errorf("encdec: step %d: the loss is %v (lower the learning rate?)", t.opt.Steps+1, loss)
	}
	for name, g := range t.grads {
		if err := p.ReadOutput(GradName(name), t.host[name]); err != nil {
			return StepResult{}, fmt.Errorf("encdec: %w", err)
		}
		toFloat64(g, t.host[name])
	}
	norm := train.ClipGlobalNorm(t.grads, t.Options.ClipNorm)
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return StepResult{}, fmt.Errorf("encdec: step %d: the gradient norm is %v", t.opt.Steps+1, norm)
	}
	lr := t.LR()
	if err := t.opt.Step(t.params, t.grads, lr); err != nil {
		return StepResult{}, err
	}
	if err := t.upload(); err != nil {
		return StepResult{}, err
	}
	tokens := 0
	for _, n := range f.decLens {
		tokens += n
	}
	return StepResult{Step: t.opt.Steps, Loss: loss, GradNorm: norm, LR: lr, Tokens: tokens}, nil
}

// upload rounds the master weights to the device dtype (so that a float32 checkpoint holds them
// exactly) and writes them into the weight buffers.
func (t *Trainer) upload() error {
	m := t.Model
	for name, v := range t.params {
		switch h := t.host[name].(type) {
		case []float32:
			for i, x := range v {
				h[i] = float32(x)
				v[i] = float64(h[i])
			}
		case []float64:
			copy(h, v)
		}
		buf, ok := m.weights.Get(name)
		if !ok {
			return fmt.Errorf("encdec: no parameter %s", name)
		}
		if err := m.be.Write(buf, t.host[name]); err != nil {
			return fmt.Errorf("encdec: parameter %s: %w", name, err)
		}
	}
	return nil
}

// paramSizes returns each parameter's element count.
func (c Config) paramSizes() map[string]int {
	out := map[string]int{}
	for name, d := range c.ParamShapes() {
		n := 1
		for _, x := range d {
			n *= x
		}
		out[name] = n
	}
	return out
}

// describeParams lists parameter names for error messages.
func describeParams(names []string) string {
	if len(names) > 4 {
		return strings.Join(names[:4], ", ") + fmt.Sprintf(" and %d more", len(names)-4)
	}
	return strings.Join(names, ", ")
}
