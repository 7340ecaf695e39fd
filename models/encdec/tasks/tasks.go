// Package tasks makes synthetic sequence-to-sequence data on the fly, for training and checking
// encoder–decoders: reverse, copy and sort (token sequences) and sine (continuing a sine wave,
// continuous outputs). Data is a pure function of a seed, so training runs are reproducible and
// resumable.
package tasks

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"

	"github.com/mamba2go/mamba2/models/encdec"
)

// Task describes one synthetic task.
type Task struct {
	// Name is "reverse", "copy", "sort" or "sine".
	Name string
	// Symbols is the number of source symbols (token tasks); Len the source length; OutLen the
	// number of outputs to generate.
	Symbols, Len, OutLen int
	// Metric names the held-out measure: "exact-match" (higher is better) or "mse-ratio" (lower).
	Metric string
	sample func(t *Task, rng *rand.Rand) encdec.Example
}

// Names lists the tasks.
func Names() []string { return []string{"copy", "reverse", "sine", "sort"} }

// New returns the named task with its default sizes (token tasks: 12 symbols drawn from 10; sine:
// 16 samples in, 8 out).
func New(name string) (*Task, error) {
	switch name {
	case "reverse", "copy", "sort":
		return &Task{Name: name, Symbols: 10, Len: 12, OutLen: 12, Metric: "exact-match", sample: tokenSample}, nil
	case "sine":
		return &Task{Name: name, Len: 16, OutLen: 8, Metric: "mse-ratio", sample: sineSample}, nil
	}
	return nil, fmt.Errorf("tasks: unknown task %q (tasks: %s)", name, strings.Join(Names(), ", "))
}

// Tokens reports whether the task's sequences are tokens.
func (t *Task) Tokens() bool { return t.Name != "sine" }

// BOS and EOS are the target vocabulary's start and end tokens of the token tasks (after the
// Symbols symbols).
func (t *Task) BOS() int { return t.Symbols }

// EOS is the end token of the token tasks.
func (t *Task) EOS() int { return t.Symbols + 1 }

// ModelConfig returns a small default model for the task: token tasks use a bidirectional Mamba2
// encoder and a Mamba2 decoder with cross-attention; sine uses the prefix bridge.
func (t *Task) ModelConfig(hidden, layers int) encdec.Config {
	enc := make([]string, layers)
	for i := range enc {
		enc[i] = encdec.BiMamba2
	}
	c := encdec.Config{EncoderHidden: hidden, DecoderHidden: hidden, EncoderLayers: enc,
		StateSize: 16, HeadDim: 16, Expand: 2, ConvKernel: 4, NGroups: 1, ChunkSize: 32}
	if t.Tokens() {
		c.SrcVocab = t.Symbols
		c.TgtVocab = t.Symbols + 2
		c.BOSTokenID, c.EOSTokenID = t.BOS(), t.EOS()
		c.Bridge = encdec.BridgeCross
		c.CrossHeads = 1
		for i := 0; i < layers; i++ {
			c.DecoderLayers = append(c.DecoderLayers, encdec.Mamba2, encdec.Cross)
		}
	} else {
		c.SrcDim, c.TgtDim = 1, 1
		c.Bridge = encdec.BridgePrefix
		c.EOSTokenID = -1
		for i := 0; i < layers; i++ {
			c.DecoderLayers = append(c.DecoderLayers, encdec.Mamba2)
		}
	}
	return c.WithDefaults()
}

// Sample draws one example.
func (t *Task) Sample(rng *rand.Rand) encdec.Example { return t.sample(t, rng) }

// Batch draws n examples from a stream that depends only on (seed, index): batch index of a run
// seeded with seed is the same whenever it is drawn.
func (t *Task) Batch(seed uint64, index, n int) []encdec.Example {
	rng := rand.New(rand.NewPCG(seed, uint64(index)*2+1))
	out := make([]encdec.Example, n)
	for i := range out {
		out[i] = t.Sample(rng)
	}
	return out
}

// HeldOut draws n examples from a stream disjoint from every Batch stream of the same seed.
func (t *Task) HeldOut(seed uint64, n int) []encdec.Example {
	rng := rand.New(rand.NewPCG(seed^0x68656c646f7574, 0))
	out := make([]encdec.Example, n)
	for i := range out {
		out[i] = t.Sample(rng)
	}
	return out
}

func tokenSample(t *Task, rng *rand.Rand) encdec.Example {
	src := make([]int, t.Len)
	for i := range src {
		src[i] = rng.IntN(t.Symbols)
	}
	tgt := slices.Clone(src)
	switch t.Name {
	case "reverse":
		slices.Reverse(tgt)
	case "sort":
		sort.Ints(tgt)
	}
	return encdec.Example{Src: encdec.Seq{Tokens: src}, Tgt: encdec.Seq{Tokens: tgt}}
}

// sineSample draws A·sin(ω·t + φ) with A ∈ [0.5, 1.5], ω ∈ [0.15, 0.6] rad per sample and
// φ ∈ [0, 2π): Len samples in, the next OutLen out.
func sineSample(t *Task, rng *rand.Rand) encdec.Example {
	a := 0.5 + rng.Float64()
	w := 0.15 + 0.45*rng.Float64()
	phi := 2 * math.Pi * rng.Float64()
	src := make([][]float64, t.Len)
	tgt := make([][]float64, t.OutLen)
	for i := range src {
		src[i] = []float64{a * math.Sin(w*float64(i)+phi)}
	}
	for i := range tgt {
		tgt[i] = []float64{a * math.Sin(w*float64(t.Len+i)+phi)}
	}
	return encdec.Example{Src: encdec.Seq{Vectors: src}, Tgt: encdec.Seq{Vectors: tgt}}
}

// Result is a held-out evaluation.
type Result struct {
	Metric string
	Value  float64
	// Outputs are the generated sequences, one per example.
	Outputs []encdec.Seq
}

// Evaluate generates greedily for every example (in batches of batch) and scores the outputs
// (see Score).
func (t *Task) Evaluate(m *encdec.Model, examples []encdec.Example, batch int) (Result, error) {
	if len(examples) == 0 {
		return Result{}, fmt.Errorf("tasks: no held-out examples")
	}
	if batch <= 0 {
		batch = len(examples)
	}
	res := Result{Metric: t.Metric}
	for lo := 0; lo < len(examples); lo += batch {
		hi := min(lo+batch, len(examples))
		src := make([]encdec.Seq, hi-lo)
		for i := range src {
			src[i] = examples[lo+i].Src
		}
		out, err := m.Generate(src, encdec.GenerateOptions{MaxLen: t.OutLen})
		if err != nil {
			return Result{}, err
		}
		res.Outputs = append(res.Outputs, out...)
	}
	var err error
	res.Value, err = t.Score(examples, res.Outputs)
	return res, err
}

// Score measures outputs against examples: exact-match is the fraction of outputs equal to their
// target as a whole; mse-ratio is the mean squared error over every output value divided by that
// of repeating the last source value.
func (t *Task) Score(examples []encdec.Example, outputs []encdec.Seq) (float64, error) {
	if len(outputs) != len(examples) || len(examples) == 0 {
		return 0, fmt.Errorf("tasks: %d outputs for %d examples", len(outputs), len(examples))
	}
	var good int
	var se, base float64
	for i, o := range outputs {
		ex := examples[i]
		if t.Tokens() {
			if slices.Equal(o.Tokens, ex.Tgt.Tokens) {
				good++
			}
			continue
		}
		if len(o.Vectors) != len(ex.Tgt.Vectors) {
			return 0, fmt.Errorf("tasks: output %d has %d vectors, the target %d", i, len(o.Vectors), len(ex.Tgt.Vectors))
		}
		last := ex.Src.Vectors[len(ex.Src.Vectors)-1]
		for p, want := range ex.Tgt.Vectors {
			for d := range want {
				e := o.Vectors[p][d] - want[d]
				r := last[d] - want[d]
				se += e * e
				base += r * r
			}
		}
	}
	if t.Tokens() {
		return float64(good) / float64(len(examples)), nil
	}
	return se / base, nil
}
