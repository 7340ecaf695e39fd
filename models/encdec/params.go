package encdec

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
)

// Parameter-name prefixes and names outside the Mamba2 blocks.
const (
	encEmbeddings = "encoder.embeddings.weight"
	encInProjW    = "encoder.in_proj.weight"
	encInProjB    = "encoder.in_proj.bias"
	encNormF      = "encoder.norm_f.weight"
	bridgeProjW   = "bridge.proj.weight"
	bridgeProjB   = "bridge.proj.bias"
	decEmbeddings = "backbone.embeddings.weight" // Hugging Face Mamba2 name
	decInProjW    = "decoder.in_proj.weight"
	decInProjB    = "decoder.in_proj.bias"
	decBOS        = "decoder.bos"
	decNormF      = "backbone.norm_f.weight" // Hugging Face Mamba2 name
	lmHead        = "lm_head.weight"         // Hugging Face Mamba2 name
	decHeadW      = "decoder.head.weight"
	decHeadB      = "decoder.head.bias"
)

func encLayer(i int) string      { return fmt.Sprintf("encoder.layers.%d.", i) }
func decMambaLayer(j int) string { return fmt.Sprintf("backbone.layers.%d.", j) }
func crossLayer(k int) string    { return fmt.Sprintf("decoder.cross.%d.", k) }

// ParamShapes returns every parameter's name and its shape in the graph (a Mamba2 conv weight is
// [conv_dim, K]; checkpoints store it as Hugging Face's [conv_dim, 1, K]).
func (c Config) ParamShapes() map[string][]int {
	E, D := c.EncoderHidden, c.DecoderHidden
	m := map[string][]int{encNormF: {E}, decNormF: {D}}
	if c.TokenSource() {
		m[encEmbeddings] = []int{c.SrcVocab, E}
	} else {
		m[encInProjW] = []int{E, c.SrcDim}
		m[encInProjB] = []int{E}
	}
	add := func(src map[string][]int) {
		for k, v := range src {
			m[k] = v
		}
	}
	enc := c.encMamba()
	for i, kind := range c.EncoderLayers {
		p := encLayer(i)
		switch kind {
		case Mamba2:
			add(enc.BlockParamShapes(p))
		case BiMamba2:
			add(enc.BlockParamShapes(p + "forward."))
			add(enc.BlockParamShapes(p + "backward."))
			if c.BiMerge == MergeConcat {
				m[p+"merge.weight"] = []int{E, 2 * E}
			}
		case MLP:
			M := c.MLPExpand * E
			m[p+"norm.weight"] = []int{E}
			m[p+"mlp.fc1.weight"] = []int{M, E}
			m[p+"mlp.fc1.bias"] = []int{M}
			m[p+"mlp.fc2.weight"] = []int{E, M}
			m[p+"mlp.fc2.bias"] = []int{E}
		}
	}
	if c.Bridge == BridgePrefix {
		m[bridgeProjW] = []int{D, E}
		m[bridgeProjB] = []int{D}
	}
	if c.TokenTarget() {
		m[decEmbeddings] = []int{c.TgtVocab, D}
		m[lmHead] = []int{c.TgtVocab, D}
	} else {
		m[decInProjW] = []int{D, c.TgtDim}
		m[decInProjB] = []int{D}
		m[decBOS] = []int{D}
		m[decHeadW] = []int{c.TgtDim, D}
		m[decHeadB] = []int{c.TgtDim}
	}
	dec := c.decMamba()
	j, k := 0, 0
	for _, kind := range c.DecoderLayers {
		switch kind {
		case Mamba2:
			add(dec.BlockParamShapes(decMambaLayer(j)))
			j++
		case Cross:
			p := crossLayer(k)
			m[p+"norm.weight"] = []int{D}
			m[p+"q_proj.weight"] = []int{D, D}
			m[p+"k_proj.weight"] = []int{D, E}
			m[p+"v_proj.weight"] = []int{D, E}
			m[p+"o_proj.weight"] = []int{D, D}
			k++
		}
	}
	return m
}

// ParamNames returns the parameter names, sorted.
func (c Config) ParamNames() []string {
	m := c.ParamShapes()
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// isConvWeight reports whether name is a Mamba2 conv weight (stored [C,1,K] in checkpoints).
func isConvWeight(name string) bool { return strings.HasSuffix(name, "mixer.conv1d.weight") }

// initParams draws initial values for every parameter, following Hugging Face's Mamba2
// initialisation for the Mamba2 blocks (dt_bias the inverse softplus of dt ~ logU[0.001, 0.1],
// A_log = ln(1..H), D = 1, conv and linear weights kaiming-uniform U(±1/√fan_in), norms 1) and
// U(±1/√fan_in) for every other linear weight, N(0,1) for embeddings, zero biases. The out
// projections of residual blocks are scaled by 1/√(number of blocks), as GPT-2 does. The same seed
// gives the same values.
func (c Config) initParams(seed uint64) map[string][]float64 {
	rng := rand.New(rand.NewPCG(seed, 0x656e6364656331))
	shp := c.ParamShapes()
	names := c.ParamNames()
	residual := float64(len(c.EncoderLayers) + len(c.DecoderLayers))
	out := make(map[string][]float64, len(names))
	for _, name := range names {
		dims := shp[name]
		n := 1
		for _, d := range dims {
			n *= d
		}
		v := make([]float64, n)
		uniform := func(bound float64) {
			for i := range v {
				v[i] = (rng.Float64()*2 - 1) * bound
			}
		}
		fanIn := 1
		if len(dims) >= 2 {
			fanIn = dims[len(dims)-1]
		}
		switch {
		case name == encEmbeddings || name == decEmbeddings:
			for i := range v {
				v[i] = rng.NormFloat64()
			}
		case name == decBOS:
			for i := range v {
				v[i] = rng.NormFloat64() * 0.1
			}
		case strings.HasSuffix(name, "conv1d.weight"), strings.HasSuffix(name, "conv1d.bias"):
			uniform(1 / math.Sqrt(float64(c.ConvKernel)))
		case strings.HasSuffix(name, "dt_bias"):
			lo, hi := math.Log(0.001), math.Log(0.1)
			for i := range v {
				dt := math.Max(math.Exp(rng.Float64()*(hi-lo)+lo), 1e-4)
				v[i] = dt + math.Log(-math.Expm1(-dt))
			}
		case strings.HasSuffix(name, "A_log"):
			for i := range v {
				v[i] = math.Log(float64(i + 1))
			}
		case strings.HasSuffix(name, ".D"), strings.HasSuffix(name, "norm.weight"), strings.HasSuffix(name, "norm_f.weight"):
			for i := range v {
				v[i] = 1
			}
		case strings.HasSuffix(name, "out_proj.weight"), strings.HasSuffix(name, "o_proj.weight"),
			strings.HasSuffix(name, "fc2.weight"), strings.HasSuffix(name, "merge.weight"):
			uniform(1 / math.Sqrt(float64(fanIn)) / math.Sqrt(residual))
		case len(dims) >= 2:
			uniform(1 / math.Sqrt(float64(fanIn)))
		default: // biases
		}
		out[name] = v
	}
	return out
}
