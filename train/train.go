// Package train holds model-independent training pieces: the AdamW optimizer over named float64
// parameter slices, global-norm gradient clipping, a linear warm-up + cosine decay learning-rate
// schedule, and the optimizer's checkpoint (safetensors, resumable bit for bit).
package train

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"

	"github.com/mamba2go/mamba2/safetensors"
)

// Schedule is a learning rate that rises linearly from 0 to Peak over Warmup steps, then follows a
// cosine from Peak down to Min at step Total (and stays at Min after it).
type Schedule struct {
	Peak, Min     float64
	Warmup, Total int
}

// LR returns the learning rate for step (0-based: the rate used by the step-th update).
func (s Schedule) LR(step int) float64 {
	if s.Warmup > 0 && step < s.Warmup {
		return s.Peak * float64(step+1) / float64(s.Warmup)
	}
	if s.Total <= s.Warmup || step >= s.Total {
		if step >= s.Total && s.Total > s.Warmup {
			return s.Min
		}
		return s.Peak
	}
	p := float64(step-s.Warmup) / float64(s.Total-s.Warmup)
	return s.Min + (s.Peak-s.Min)*0.5*(1+math.Cos(math.Pi*p))
}

// Validate checks the schedule.
func (s Schedule) Validate() error {
	switch {
	case !(s.Peak > 0) || math.IsInf(s.Peak, 0):
		return fmt.Errorf("train: learning rate %g must be positive and finite", s.Peak)
	case s.Min < 0 || s.Min > s.Peak:
		return fmt.Errorf("train: minimum learning rate %g must be in [0, %g]", s.Min, s.Peak)
	case s.Warmup < 0:
		return fmt.Errorf("train: warm-up steps %d must not be negative", s.Warmup)
	case s.Total <= 0:
		return fmt.Errorf("train: total steps %d must be positive", s.Total)
	}
	return nil
}

// ClipGlobalNorm scales every gradient by maxNorm/‖g‖ when the global L2 norm ‖g‖ over all of them
// exceeds maxNorm (maxNorm ≤ 0 disables clipping). It returns the norm before clipping.
func ClipGlobalNorm(grads map[string][]float64, maxNorm float64) float64 {
	var sum float64
	for _, name := range sortedKeys(grads) {
		for _, g := range grads[name] {
			sum += g * g
		}
	}
	norm := math.Sqrt(sum)
	if maxNorm > 0 && norm > maxNorm {
		s := maxNorm / norm
		for _, g := range grads {
			for i := range g {
				g[i] *= s
			}
		}
	}
	return norm
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// AdamW is Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW:
//
//	m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//	p = p − lr·(wd·p + m̂ / (√v̂ + ε)),  m̂ = m/(1−β1^t), v̂ = v/(1−β2^t)
//
// Decay is applied only to the parameters Decay reports (all when it is nil).
type AdamW struct {
	Beta1, Beta2, Eps, WeightDecay float64
	Decay                          func(name string) bool
	// Steps is the number of updates made so far (t).
	Steps int
	m, v  map[string][]float64
}

// NewAdamW returns an optimizer with PyTorch's defaults (β = 0.9, 0.999; ε = 1e-8) and the given
// weight decay.
func NewAdamW(weightDecay float64) *AdamW {
	return &AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: weightDecay}
}

// Step updates params in place from grads (the same names and lengths) with learning rate lr.
func (o *AdamW) Step(params, grads map[string][]float64, lr float64) error {
	if o.m == nil {
		o.m, o.v = map[string][]float64{}, map[string][]float64{}
	}
	for name, g := range grads {
		p, ok := params[name]
		if !ok || len(p) != len(g) {
			return fmt.Errorf("train: gradient %s has no parameter of its size", name)
		}
	}
	o.Steps++
	t := float64(o.Steps)
	c1 := 1 - math.Pow(o.Beta1, t)
	c2 := 1 - math.Pow(o.Beta2, t)
	for name, g := range grads {
		p := params[name]
		m, v := o.m[name], o.v[name]
		if m == nil {
			m, v = make([]float64, len(p)), make([]float64, len(p))
			o.m[name], o.v[name] = m, v
		}
		wd := o.WeightDecay
		if o.Decay != nil && !o.Decay(name) {
			wd = 0
		}
		b1, b2 := o.Beta1, o.Beta2
		for i, gi := range g {
			m[i] = b1*m[i] + (1-b1)*gi
			v[i] = b2*v[i] + (1-b2)*gi*gi
			upd := (m[i] / c1) / (math.Sqrt(v[i]/c2) + o.Eps)
			p[i] -= lr * (wd*p[i] + upd)
		}
	}
	return nil
}

// Metadata keys of an optimizer checkpoint.
const (
	metaSteps = "adamw.steps"
	metaBeta1 = "adamw.beta1"
	metaBeta2 = "adamw.beta2"
	metaEps   = "adamw.eps"
	metaWD    = "adamw.weight_decay"
)

// Save writes the optimizer's moments (tensors "exp_avg.NAME" and "exp_avg_sq.NAME", float64) and
// hyperparameters, plus extra metadata, to a safetensors file, atomically.
func (o *AdamW) Save(path string, extra map[string]string) error {
	meta := map[string]string{
		metaSteps: strconv.Itoa(o.Steps),
		metaBeta1: strconv.FormatFloat(o.Beta1, 'g', -1, 64),
		metaBeta2: strconv.FormatFloat(o.Beta2, 'g', -1, 64),
		metaEps:   strconv.FormatFloat(o.Eps, 'g', -1, 64),
		metaWD:    strconv.FormatFloat(o.WeightDecay, 'g', -1, 64),
	}
	for k, v := range extra {
		meta[k] = v
	}
	var ts []safetensors.Tensor
	for _, name := range sortedKeys(o.m) {
		ts = append(ts,
			safetensors.Tensor{Name: "exp_avg." + name, Shape: []int{len(o.m[name])}, Data: o.m[name]},
			safetensors.Tensor{Name: "exp_avg_sq." + name, Shape: []int{len(o.v[name])}, Data: o.v[name]})
	}
	if len(ts) == 0 {
		// A file with no tensors is valid; keep one marker so readers see a non-empty header.
		ts = append(ts, safetensors.Tensor{Name: "adamw.empty", Shape: []int{1}, Data: []float64{0}})
	}
	if err := safetensors.Write(path, ts, meta); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	return nil
}

// LoadAdamW reads an optimizer written by Save and returns it with the file's metadata. sizes
// gives each parameter's length: moments of unknown parameters or of the wrong size are errors.
func LoadAdamW(path string, sizes map[string]int) (*AdamW, map[string]string, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("train: %w", err)
	}
	meta := f.Metadata()
	num := func(key string) (float64, error) {
		s, ok := meta[key]
		if !ok {
			return 0, fmt.Errorf("train: %s: metadata %q is missing", path, key)
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("train: %s: metadata %q: %v", path, key, err)
		}
		return v, nil
	}
	o := &AdamW{m: map[string][]float64{}, v: map[string][]float64{}}
	var steps float64
	for _, kv := range []struct {
		key string
		dst *float64
	}{{metaSteps, &steps}, {metaBeta1, &o.Beta1}, {metaBeta2, &o.Beta2}, {metaEps, &o.Eps}, {metaWD, &o.WeightDecay}} {
		if *kv.dst, err = num(kv.key); err != nil {
			return nil, nil, err
		}
	}
	o.Steps = int(steps)
	for _, n := range f.Names() {
		var name string
		var dst map[string][]float64
		switch {
		case n == "adamw.empty":
			continue
		case len(n) > len("exp_avg_sq.") && n[:len("exp_avg_sq.")] == "exp_avg_sq.":
			name, dst = n[len("exp_avg_sq."):], o.v
		case len(n) > len("exp_avg.") && n[:len("exp_avg.")] == "exp_avg.":
			name, dst = n[len("exp_avg."):], o.m
		default:
			return nil, nil, fmt.Errorf("train: %s: unexpected tensor %s", path, n)
		}
		size, ok := sizes[name]
		if !ok {
			return nil, nil, fmt.Errorf("train: %s: optimizer state for unknown parameter %s", path, name)
		}
		data, _, err := f.Float64(n)
		if err != nil {
			return nil, nil, fmt.Errorf("train: %w", err)
		}
		if len(data) != size {
			return nil, nil, fmt.Errorf("train: %s: %s has %d values, the parameter has %d", path, n, len(data), size)
		}
		dst[name] = data
	}
	for name := range o.m {
		if _, ok := o.v[name]; !ok {
			return nil, nil, fmt.Errorf("train: %s: exp_avg.%s without exp_avg_sq", path, name)
		}
	}
	if len(o.m) != len(o.v) {
		return nil, nil, errors.New("train: " + path + ": exp_avg and exp_avg_sq differ")
	}
	return o, meta, nil
}
