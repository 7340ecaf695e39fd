package mamba2

import (
	"fmt"
	"math"
	"strings"

	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/quant"
	"github.com/mamba2go/mamba2/shapes"
)

// Names of program inputs, outputs and states. States are per layer: ConvStateName(l), SSMStateName(l).
const (
	InputIDs    = "input_ids"     // int64 [B,T]
	InputEmbeds = "inputs_embeds" // [B,T,hidden]
	InputMask   = "mask"          // [B,T]: 1 for real tokens, 0 for padding (right padding)
	InputLens   = "lengths"       // int64 [B]: real tokens per row in this call
	InputLast   = "last_index"    // int64 [B]: b*T + (position of row b's last real token)
	OutLogits   = "logits"        // [B,T,V], or [B,V] with LastOnly
	OutHidden   = "hidden"        // [B,T,hidden] after norm_f, or [B,hidden] with LastOnly
)

// ConvStateName is the state holding layer l's conv window [B, conv_dim, K].
func ConvStateName(l int) string { return fmt.Sprintf("conv.%d", l) }

// SSMStateName is the state holding layer l's SSM state [B, H, head_dim, N].
func SSMStateName(l int) string { return fmt.Sprintf("ssm.%d", l) }

// LayerHiddenName is the output holding the hidden state after layer l (Hugging Face's
// output_hidden_states entry l; entry NumHiddenLayers is norm_f of the last one).
func LayerHiddenName(l int) string { return fmt.Sprintf("hidden.%d", l) }

// Phase says which program a graph is built for.
type Phase uint8

const (
	// Prefill consumes T tokens per row with the chunked SSD scan.
	Prefill Phase = iota
	// Step consumes exactly one token per row with the recurrent update.
	Step
)

func (p Phase) String() string {
	if p == Step {
		return "step"
	}
	return "prefill"
}

// GraphSpec selects the shape and outputs of a causal-LM graph.
type GraphSpec struct {
	Phase  Phase
	Batch  int
	Tokens int // T; must be 1 for Step
	DType  shapes.DType
	// Embeds feeds InputEmbeds instead of InputIDs.
	Embeds bool
	// Ragged adds the InputMask and InputLens inputs: rows hold fewer real tokens than T, padded on
	// the right; padding never touches the state and its outputs are zero.
	Ragged bool
	// Logits and Hidden select outputs; LastOnly returns them for each row's last real token only
	// (through the InputLast input), as generation needs.
	Logits, Hidden, LastOnly bool
	// PerLayer adds LayerHiddenName(l) outputs for l = 0..NumHiddenLayers.
	PerLayer bool
	// Weights is the storage format of the Quantizable parameters (Options.Weights); other
	// formats than quant.F32 need DType float32.
	Weights quant.Format
}

// Validate checks the spec against itself.
func (s GraphSpec) Validate() error {
	switch {
	case s.Batch <= 0:
		return fmt.Errorf("mamba2: batch size %d must be positive", s.Batch)
	case s.Tokens <= 0:
		return fmt.Errorf("mamba2: token count %d must be positive", s.Tokens)
	case s.Phase == Step && s.Tokens != 1:
		return fmt.Errorf("mamba2: a step program consumes 1 token per row, not %d", s.Tokens)
	case s.DType != shapes.Float32 && s.DType != shapes.Float64:
		return fmt.Errorf("mamba2: dtype %s: want float32 or float64", s.DType)
	case !s.Logits && !s.Hidden && !s.PerLayer:
		return fmt.Errorf("mamba2: the program has no outputs")
	}
	return checkFormat(s.Weights, s.DType)
}

// ParamShapes returns the graph's parameter names and shapes: Hugging Face names, with the conv
// weight stored as [conv_dim, K] (the checkpoint's [conv_dim, 1, K] without the unit axis).
func (c Config) ParamShapes() map[string][]int {
	m := c.ExpectedShapes()
	for l := 0; l < c.NumHiddenLayers; l++ {
		name := layerName(l, "mixer.conv1d.weight")
		m[name] = []int{c.ConvDim(), c.ConvKernel}
	}
	return m
}

// Quantizable reports whether parameter name is stored in a quantized weight format: the large
// matrices — every layer's in_proj and out_proj weights, the embeddings and lm_head — which hold
// nearly all of a model's bytes. Norm weights, the conv filter, dt_bias, A_log, D and biases stay
// in the compute type: they are small, and the recurrence is sensitive to them.
func Quantizable(name string) bool {
	switch {
	case name == EmbeddingsName, name == LMHeadName:
		return true
	case strings.HasSuffix(name, ".mixer.in_proj.weight"), strings.HasSuffix(name, ".mixer.out_proj.weight"):
		return true
	}
	return false
}

// ScaleName names the float32 per-row scales [rows] of an int8 weight.
func ScaleName(weight string) string { return weight + ".scale" }

// storedAs is the format weight name is stored in when a model's format is f.
func storedAs(name string, f quant.Format) quant.Format {
	if Quantizable(name) {
		return f
	}
	return quant.F32
}

// matrixParam declares weight name [rows, k] stored in format f (in dt when f is quant.F32) and,
// for int8, its scales; the results are the arguments QuantMatMul and QuantGather take after
// their data input.
func matrixParam(g *graph.Graph, name string, dims []int, dt shapes.DType, f quant.Format) []*graph.Node {
	if f = storedAs(name, f); f == quant.F32 {
		return []*graph.Node{g.Param(name, shapes.Make(dt, dims...))}
	}
	w := g.Param(name, shapes.Make(f.DType(), dims...))
	if f != quant.Int8 {
		return []*graph.Node{w}
	}
	return []*graph.Node{w, g.Param(ScaleName(name), shapes.Make(shapes.Float32, dims[0]))}
}

// linear is x·Wᵀ for weight name [rows, k] stored in format f.
func linear(g *graph.Graph, x *graph.Node, name string, dims []int, f quant.Format) *graph.Node {
	w := matrixParam(g, name, dims, x.Shape().DType, f)
	if storedAs(name, f) == quant.F32 {
		return ops.MatMulT(x, w[0], false, true)
	}
	return ops.QuantMatMul(x, w[0], w[1:]...)
}

func layerName(l int, suffix string) string { return fmt.Sprintf("backbone.layers.%d.%s", l, suffix) }

// Embedding and head weight names.
const (
	EmbeddingsName = "backbone.embeddings.weight"
	NormFName      = "backbone.norm_f.weight"
	LMHeadName     = "lm_head.weight"
)

// BuildCausalLM adds a Mamba2 causal LM to g and declares its inputs, states and outputs.
func BuildCausalLM(g *graph.Graph, c Config, s GraphSpec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	dt := s.DType
	B, T := s.Batch, s.Tokens
	param := func(name string) *graph.Node {
		return g.Param(name, shapes.Make(dt, c.ParamShapes()[name]...))
	}
	var h *graph.Node
	if s.Embeds {
		h = g.Input(InputEmbeds, shapes.Make(dt, B, T, c.HiddenSize))
	} else {
		ids := g.Input(InputIDs, shapes.Make(shapes.Int64, B, T))
		if storedAs(EmbeddingsName, s.Weights) == quant.F32 {
			h = ops.Gather(param(EmbeddingsName), ids)
		} else {
			table := matrixParam(g, EmbeddingsName, c.ParamShapes()[EmbeddingsName], dt, s.Weights)
			h = ops.QuantGather(table[0], ids, table[1:]...)
		}
	}
	var mask, lens *graph.Node
	if s.Ragged {
		mask = g.Input(InputMask, shapes.Make(dt, B, T, 1))
		lens = g.Input(InputLens, shapes.Make(shapes.Int64, B))
	}
	for l := 0; l < c.NumHiddenLayers; l++ {
		h = Block(g, c, BlockOptions{
			Prefix: fmt.Sprintf("backbone.layers.%d.", l), ConvState: ConvStateName(l), SSMState: SSMStateName(l),
			Phase: s.Phase, Mask: mask, Lengths: lens, Weights: s.Weights,
		}, h)
		if s.PerLayer && l < c.NumHiddenLayers-1 {
			g.Output(LayerHiddenName(l), maskOut(h, mask))
		}
	}
	hidden := ops.RMSNorm(h, param(NormFName), c.LayerNormEpsilon)
	if s.PerLayer {
		if c.NumHiddenLayers > 0 {
			// Hugging Face's last per-layer entry is the raw output of the last layer…
			g.Output(LayerHiddenName(c.NumHiddenLayers-1), maskOut(h, mask))
		}
		// …followed by the normed one.
		g.Output(LayerHiddenName(c.NumHiddenLayers), maskOut(hidden, mask))
	}
	if s.LastOnly {
		last := g.Input(InputLast, shapes.Make(shapes.Int64, B))
		hidden = ops.Gather(ops.Reshape(hidden, B*T, c.HiddenSize), last) // [B, hidden]
	} else {
		hidden = maskOut(hidden, mask)
	}
	if s.Hidden {
		g.Output(OutHidden, hidden)
	}
	if s.Logits {
		head := LMHeadName
		if c.TieWordEmbeddings {
			head = EmbeddingsName
		}
		g.Output(OutLogits, linear(g, hidden, head, c.ParamShapes()[head], s.Weights))
	}
	return g.Err()
}

// maskOut zeroes padding positions.
func maskOut(h, mask *graph.Node) *graph.Node {
	if mask == nil {
		return h
	}
	return ops.Mul(h, mask)
}

// BlockOptions places one Mamba2 block in a graph.
type BlockOptions struct {
	// Prefix is prepended to the block's parameter names ("backbone.layers.0." gives Hugging Face
	// names such as "backbone.layers.0.mixer.in_proj.weight").
	Prefix string
	// ConvState and SSMState name the block's recurrent states. When both are empty the block starts
	// from a zero state and keeps no state (training, encoders).
	ConvState, SSMState string
	// Phase Step uses the one-token recurrence (the input must have T = 1).
	Phase Phase
	// Mask [B,T,1] and Lengths int64 [B] describe right padding (both or neither).
	Mask, Lengths *graph.Node
	// Weights stores in_proj and out_proj in a quantized format (inference only; the zero value
	// quant.F32 keeps them in the input's dtype).
	Weights quant.Format
}

// BlockParamShapes returns the parameter names and shapes of one block under prefix.
func (c Config) BlockParamShapes(prefix string) map[string][]int {
	I, H, hidden := c.IntermediateSize(), c.NumHeads, c.HiddenSize
	m := map[string][]int{
		prefix + "norm.weight":           {hidden},
		prefix + "mixer.in_proj.weight":  {c.InProjSize(), hidden},
		prefix + "mixer.conv1d.weight":   {c.ConvDim(), c.ConvKernel},
		prefix + "mixer.dt_bias":         {H},
		prefix + "mixer.A_log":           {H},
		prefix + "mixer.D":               {H},
		prefix + "mixer.norm.weight":     {I},
		prefix + "mixer.out_proj.weight": {hidden, I},
	}
	if c.UseConvBias {
		m[prefix+"mixer.conv1d.bias"] = []int{c.ConvDim()}
	}
	if c.UseBias {
		m[prefix+"mixer.in_proj.bias"] = []int{c.InProjSize()}
		m[prefix+"mixer.out_proj.bias"] = []int{hidden}
	}
	return m
}

// Block adds h + mixer(RMSNorm(h)) for h [B,T,hidden] and returns the block's output.
func Block(g *graph.Graph, c Config, o BlockOptions, h *graph.Node) *graph.Node {
	shapesOf := c.BlockParamShapes(o.Prefix)
	p := func(suffix string) *graph.Node {
		return g.Param(o.Prefix+suffix, shapes.Make(h.Shape().DType, shapesOf[o.Prefix+suffix]...))
	}
	lin := func(x *graph.Node, suffix string) *graph.Node {
		return linear(g, x, o.Prefix+suffix, shapesOf[o.Prefix+suffix], o.Weights)
	}
	normed := ops.RMSNorm(h, p("norm.weight"), c.LayerNormEpsilon)
	return ops.Add(h, mixer(g, c, o, normed, p, lin))
}

// mixer is Mamba2Mixer.torch_forward: in_proj → conv → SSD → gated norm → out_proj.
func mixer(g *graph.Graph, c Config, o BlockOptions, u *graph.Node, p func(string) *graph.Node, lin func(*graph.Node, string) *graph.Node) *graph.Node {
	B, T, dtype := u.Shape().Dims[0], u.Shape().Dims[1], u.Shape().DType
	I, H, P, N, G := c.IntermediateSize(), c.NumHeads, c.HeadDim, c.StateSize, c.NGroups
	convDim := c.ConvDim()
	stateful := o.ConvState != "" || o.SSMState != ""
	mask, lens := o.Mask, o.Lengths

	proj := lin(u, "mixer.in_proj.weight") // [B,T,in_proj]
	if c.UseBias {
		proj = ops.Add(proj, p("mixer.in_proj.bias"))
	}
	z := ops.Slice(proj, -1, 0, I)
	xBC := ops.Slice(proj, -1, I, I+convDim)
	dtRaw := ops.Slice(proj, -1, I+convDim, I+convDim+H) // [B,T,H]

	var convState *graph.Node
	if stateful {
		convState = g.State(o.ConvState, shapes.Make(dtype, B, convDim, c.ConvKernel))
	} else {
		convState = ops.Full(u, 0, B, convDim, c.ConvKernel)
	}
	var convBias *graph.Node
	if c.UseConvBias {
		convBias = p("mixer.conv1d.bias")
	} else {
		convBias = ops.Full(u, 0, convDim)
	}
	var newConv *graph.Node
	if lens != nil {
		xBC, newConv = ops.CausalConv1DLen(xBC, p("mixer.conv1d.weight"), convBias, convState, lens)
	} else {
		xBC, newConv = ops.CausalConv1D(xBC, p("mixer.conv1d.weight"), convBias, convState)
	}
	if stateful {
		g.SetState(o.ConvState, newConv)
	}
	xBC = ops.SiLU(xBC)
	x := ops.Slice(xBC, -1, 0, I)
	bm := ops.Slice(xBC, -1, I, I+G*N)
	cm := ops.Slice(xBC, -1, I+G*N, I+2*G*N)

	dt := ops.Softplus(ops.Add(dtRaw, p("mixer.dt_bias")))
	if lo, hi := c.TimeStepLimit[0], c.TimeStepLimit[1]; lo != 0 || !math.IsInf(hi, 1) {
		dt = ops.Clamp(dt, lo, hi)
	}
	if mask != nil {
		dt = ops.Mul(dt, mask) // no decay and no update at padding
	}
	A := ops.Neg(ops.Exp(p("mixer.A_log")))
	var ssmState *graph.Node
	if stateful {
		ssmState = g.State(o.SSMState, shapes.Make(dtype, B, H, P, N))
	} else {
		ssmState = ops.Full(u, 0, B, H, P, N)
	}
	var y, newSSM *graph.Node
	if o.Phase == Step {
		y, newSSM = ops.SSDStep(ops.Reshape(x, B, H, P), ops.Reshape(dt, B, H), A,
			ops.Reshape(bm, B, G, N), ops.Reshape(cm, B, G, N), p("mixer.D"), ssmState)
	} else {
		y, newSSM = ops.SSD(ops.Reshape(x, B, T, H, P), dt, A,
			ops.Reshape(bm, B, T, G, N), ops.Reshape(cm, B, T, G, N), p("mixer.D"), ssmState, c.ChunkSize)
	}
	if stateful {
		g.SetState(o.SSMState, newSSM)
	}
	y = ops.Reshape(y, B, T, I)
	groups := 1
	if c.GroupedNorm {
		groups = G
	}
	y = ops.GatedRMSNorm(y, z, p("mixer.norm.weight"), c.LayerNormEpsilon, groups)
	out := lin(y, "mixer.out_proj.weight")
	if c.UseBias {
		out = ops.Add(out, p("mixer.out_proj.bias"))
	}
	return out
}
