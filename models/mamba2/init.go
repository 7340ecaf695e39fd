package mamba2

import (
	"math"
	"math/rand/v2"
	"sort"
	"strings"

	"gorgonia.org/tensor"
)

// RandomCheckpoint returns freshly initialised weights for c in Hugging Face layout, following
// Mamba2PreTrainedModel._init_weights: embeddings ~ N(0, initializer_range); linear and conv
// weights with PyTorch's default kaiming-uniform U(±1/√fan_in) (linear biases zero, conv bias
// U(±1/√fan_in)); dt_bias the inverse softplus of dt ~ exp(U(ln time_step_min, ln time_step_max))
// floored at time_step_floor; A_log = ln(1..H); D and every norm weight 1. The same seed gives
// the same weights.
func RandomCheckpoint(c Config, seed uint64) (*Checkpoint, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 0x6d616d6261))
	shapesByName := c.ExpectedShapes()
	names := make([]string, 0, len(shapesByName))
	for n := range shapesByName {
		names = append(names, n)
	}
	sort.Strings(names) // deterministic draw order
	ck := &Checkpoint{Config: c, Tensors: map[string]*tensor.Dense{}}
	for _, name := range names {
		dims := shapesByName[name]
		n := 1
		for _, d := range dims {
			n *= d
		}
		data := make([]float32, n)
		uniform := func(bound float64) {
			for i := range data {
				data[i] = float32((rng.Float64()*2 - 1) * bound)
			}
		}
		switch {
		case name == EmbeddingsName:
			for i := range data {
				data[i] = float32(rng.NormFloat64() * c.InitializerRange)
			}
		case strings.HasSuffix(name, "proj.weight") || name == LMHeadName:
			uniform(1 / math.Sqrt(float64(dims[1])))
		case strings.HasSuffix(name, "conv1d.weight"), strings.HasSuffix(name, "conv1d.bias"):
			uniform(1 / math.Sqrt(float64(c.ConvKernel)))
		case strings.HasSuffix(name, "dt_bias"):
			lo, hi := math.Log(c.TimeStepMin), math.Log(c.TimeStepMax)
			for i := range data {
				dt := math.Max(math.Exp(rng.Float64()*(hi-lo)+lo), c.TimeStepFloor)
				data[i] = float32(dt + math.Log(-math.Expm1(-dt)))
			}
		case strings.HasSuffix(name, "A_log"):
			for i := range data {
				data[i] = float32(math.Log(float64(i + 1)))
			}
		case strings.HasSuffix(name, ".D"), strings.HasSuffix(name, "norm.weight"), name == NormFName:
			for i := range data {
				data[i] = 1
			}
		default: // linear biases
		}
		ck.Tensors[name] = tensor.New(tensor.WithShape(dims...), tensor.WithBacking(data))
	}
	return ck, nil
}
