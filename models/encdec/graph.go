package encdec

import (
	"fmt"
	"math"

	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/models/mamba2"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

// Phase selects which program a graph is built for.
type Phase uint8

const (
	// PhaseTrain is the teacher-forced forward, the loss and the gradient of every parameter.
	PhaseTrain Phase = iota
	// PhaseEval is the teacher-forced forward and the loss, without gradients.
	PhaseEval
	// PhasePrefill runs the encoder and the bridge and prefills the decoder, writing its state.
	PhasePrefill
	// PhaseStep advances the decoder by one input per row.
	PhaseStep
)

func (p Phase) String() string {
	return [...]string{"train", "eval", "prefill", "step"}[p]
}

// Program input, output and state names.
const (
	InSrc       = "src"         // int64 [B,S] token ids, or [B,S,src_dim] vectors
	InSrcMask   = "src_mask"    // [B,S]: 1 for real source positions, 0 for padding
	InSrcRev    = "src_rev"     // int64 [B,S]: row-wise reversal index (bidirectional blocks)
	InTgtIn     = "tgt_in"      // int64 [B,T] decoder input ids (BOS first), or [B,T,tgt_dim] (position 0 ignored)
	InTargets   = "targets"     // int64 [B,T] or [B,T,tgt_dim]
	InWeights   = "loss_weight" // [B,T]: per-position loss weights (they sum to 1 over the batch)
	InDecIndex  = "dec_index"   // int64 [B,S+T]: prefix layout (ragged prefix bridge)
	InOutIndex  = "out_index"   // int64 [B,T]: where target positions sit in the prefix layout
	InDecMask   = "dec_mask"    // [B,S+T,1]: real decoder positions (ragged prefix prefill)
	InDecLens   = "dec_lens"    // int64 [B]: real decoder positions per row (ragged prefix prefill)
	InLastIndex = "last_index"  // int64 [B]: flat position of each row's last decoder input
	OutLoss     = "loss"        // scalar
	OutY        = "out"         // logits [B,T,V] / vectors [B,T,F] (train, eval); [B,V] / [B,F] (prefill, step)
	StateBias   = "cross.bias"  // [B,1,1,S]: 0 for real memory positions, −1e9 for padding
	gradPrefix  = "grad:"
)

// CrossKName and CrossVName are the states holding cross-attention block k's memory keys and
// values [B, heads, S, head_dim].
func CrossKName(k int) string { return fmt.Sprintf("cross.k.%d", k) }

// CrossVName is the state holding cross-attention block k's memory values.
func CrossVName(k int) string { return fmt.Sprintf("cross.v.%d", k) }

// GradName is the output holding the gradient of parameter name (Train programs).
func GradName(name string) string { return gradPrefix + name }

// Spec fixes the shapes of one compiled program.
type Spec struct {
	Phase Phase
	Batch int
	// Src is the (padded) source length; for a Step program of the cross bridge it is the memory
	// length, otherwise 0.
	Src int
	// Tgt is the (padded) number of decoder inputs per row (1 for Step).
	Tgt int
	// Ragged adds the inputs describing rows shorter than Src or Tgt.
	Ragged bool
	DType  shapes.DType
}

func (s Spec) validate(c Config) error {
	switch {
	case s.Batch <= 0:
		return fmt.Errorf("encdec: batch size %d must be positive", s.Batch)
	case s.Tgt <= 0:
		return fmt.Errorf("encdec: decoder length %d must be positive", s.Tgt)
	case s.Phase == PhaseStep && s.Tgt != 1:
		return fmt.Errorf("encdec: a step program consumes one input per row, not %d", s.Tgt)
	case s.Phase != PhaseStep && s.Src <= 0:
		return fmt.Errorf("encdec: source length %d must be positive", s.Src)
	case s.Phase == PhaseStep && c.Bridge == BridgeCross && s.Src <= 0:
		return fmt.Errorf("encdec: a cross-attention step program needs the memory length")
	case s.DType != shapes.Float32 && s.DType != shapes.Float64:
		return fmt.Errorf("encdec: dtype %s: want float32 or float64", s.DType)
	}
	return nil
}

// builder adds one phase of the model to a graph.
type builder struct {
	g   *graph.Graph
	c   Config
	s   Spec
	enc mamba2.Config
	dec mamba2.Config
	shp map[string][]int
}

func (b *builder) f(dims ...int) shapes.Shape { return shapes.Make(b.s.DType, dims...) }

func (b *builder) param(name string) *graph.Node {
	dims, ok := b.shp[name]
	if !ok {
		dims = []int{1} // unknown names fail at compile time ("missing from weights")
	}
	return b.g.Param(name, b.f(dims...))
}

func (b *builder) linear(x *graph.Node, w, bias string) *graph.Node {
	y := ops.MatMulT(x, b.param(w), false, true)
	if bias != "" {
		y = ops.Add(y, b.param(bias))
	}
	return y
}

// Build adds the program described by s to g: its inputs, states and outputs (see the In*, Out*
// and State* names). Train programs output the loss and GradName(p) for every parameter p.
func Build(g *graph.Graph, c Config, s Spec) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := s.validate(c); err != nil {
		return err
	}
	b := &builder{g: g, c: c, s: s, enc: c.encMamba(), dec: c.decMamba(), shp: c.ParamShapes()}
	b.build()
	return g.Err()
}

func (b *builder) build() {
	c, s, g := b.c, b.s, b.g
	B, S, T := s.Batch, s.Src, s.Tgt
	D := c.DecoderHidden

	var mem, srcMask *graph.Node
	if s.Phase != PhaseStep {
		if c.Bridge == BridgeCross && (s.Ragged || s.Phase == PhasePrefill) {
			srcMask = g.Input(InSrcMask, b.f(B, S))
		}
		mem = b.encoder()
	}

	// Decoder inputs.
	var x *graph.Node
	if c.TokenTarget() {
		ids := g.Input(InTgtIn, shapes.Make(shapes.Int64, B, T))
		x = ops.Gather(b.param(decEmbeddings), ids)
	} else {
		in := g.Input(InTgtIn, b.f(B, T, c.TgtDim))
		if s.Phase == PhaseStep {
			x = b.linear(in, decInProjW, decInProjB)
		} else {
			bos := ops.BroadcastTo(ops.Reshape(b.param(decBOS), 1, 1, D), B, 1, D)
			if T == 1 {
				x = bos
			} else {
				x = ops.Concat(1, bos, b.linear(ops.Slice(in, 1, 1, T), decInProjW, decInProjB))
			}
		}
	}

	// Bridge.
	L := T // decoder positions per row
	var decMask, decLens *graph.Node
	if c.Bridge == BridgePrefix && s.Phase != PhaseStep {
		prefix := b.linear(mem, bridgeProjW, bridgeProjB) // [B,S,D]
		L = S + T
		if s.Ragged {
			table := ops.Concat(0, ops.Reshape(prefix, B*S, D), ops.Reshape(x, B*T, D))
			x = ops.Gather(table, g.Input(InDecIndex, shapes.Make(shapes.Int64, B, L)))
			if s.Phase == PhasePrefill {
				decMask = g.Input(InDecMask, b.f(B, L, 1))
				decLens = g.Input(InDecLens, shapes.Make(shapes.Int64, B))
			}
		} else {
			x = ops.Concat(1, prefix, x)
		}
	}
	var bias *graph.Node
	var kv [][2]*graph.Node
	if c.Bridge == BridgeCross {
		nh := c.CrossHeads
		dh := D / nh
		if s.Phase == PhaseStep {
			bias = g.State(StateBias, b.f(B, 1, 1, S))
		} else if srcMask != nil {
			bias = ops.Reshape(ops.Scale(ops.AddConst(srcMask, -1), 1e9), B, 1, 1, S)
			if s.Phase == PhasePrefill {
				g.State(StateBias, b.f(B, 1, 1, S))
				g.SetState(StateBias, bias)
			}
		}
		for k := 0; k < c.numCross(); k++ {
			var K, V *graph.Node
			if s.Phase == PhaseStep {
				K = g.State(CrossKName(k), b.f(B, nh, S, dh))
				V = g.State(CrossVName(k), b.f(B, nh, S, dh))
			} else {
				p := crossLayer(k)
				K = b.heads(b.linear(mem, p+"k_proj.weight", ""), S)
				V = b.heads(b.linear(mem, p+"v_proj.weight", ""), S)
				if s.Phase == PhasePrefill {
					g.State(CrossKName(k), b.f(B, nh, S, dh))
					g.State(CrossVName(k), b.f(B, nh, S, dh))
					g.SetState(CrossKName(k), K)
					g.SetState(CrossVName(k), V)
				}
			}
			kv = append(kv, [2]*graph.Node{K, V})
		}
	}

	// Decoder blocks.
	h := x
	stateful := s.Phase == PhasePrefill || s.Phase == PhaseStep
	phase := mamba2.Prefill
	if s.Phase == PhaseStep {
		phase = mamba2.Step
	}
	j, k := 0, 0
	for _, kind := range c.DecoderLayers {
		switch kind {
		case Mamba2:
			o := mamba2.BlockOptions{Prefix: decMambaLayer(j), Phase: phase, Mask: decMask, Lengths: decLens}
			if stateful {
				o.ConvState, o.SSMState = mamba2.ConvStateName(j), mamba2.SSMStateName(j)
			}
			h = mamba2.Block(g, b.dec, o, h)
			j++
		case Cross:
			h = b.cross(k, h, kv[k][0], kv[k][1], bias)
			k++
		}
	}

	// Positions that produce outputs.
	switch s.Phase {
	case PhaseTrain, PhaseEval:
		if c.Bridge == BridgePrefix {
			if s.Ragged {
				h = ops.Gather(ops.Reshape(h, B*L, D), g.Input(InOutIndex, shapes.Make(shapes.Int64, B, T)))
			} else {
				h = ops.Slice(h, 1, S, S+T)
			}
		}
	case PhasePrefill:
		if c.Bridge == BridgePrefix && s.Ragged {
			h = ops.Gather(ops.Reshape(h, B*L, D), g.Input(InLastIndex, shapes.Make(shapes.Int64, B)))
		} else {
			h = ops.Reshape(ops.Slice(h, 1, L-1, L), B, D)
		}
	case PhaseStep:
		h = ops.Reshape(h, B, D)
	}
	h = ops.RMSNorm(h, b.param(decNormF), c.LayerNormEpsilon)
	var y *graph.Node
	if c.TokenTarget() {
		y = ops.MatMulT(h, b.param(lmHead), false, true)
	} else {
		y = b.linear(h, decHeadW, decHeadB)
	}
	if s.Phase == PhasePrefill || s.Phase == PhaseStep || s.Phase == PhaseEval {
		g.Output(OutY, y)
	}
	if s.Phase != PhaseTrain && s.Phase != PhaseEval {
		return
	}
	w := g.Input(InWeights, b.f(B, T))
	var per *graph.Node
	if c.TokenTarget() {
		per = ops.CrossEntropy(y, g.Input(InTargets, shapes.Make(shapes.Int64, B, T)))
	} else {
		per = ops.Mean(ops.Square(ops.Sub(y, g.Input(InTargets, b.f(B, T, c.TgtDim)))), -1)
	}
	loss := ops.Sum(ops.Mul(per, w))
	g.Output(OutLoss, loss)
	if s.Phase == PhaseTrain {
		names := c.ParamNames()
		params := make([]*graph.Node, len(names))
		for i, n := range names {
			params[i] = b.param(n)
		}
		for i, d := range graph.Grad(loss, params...) {
			g.Output(GradName(names[i]), d)
		}
	}
}

// heads reshapes [B,n,D] to [B,heads,n,D/heads].
func (b *builder) heads(x *graph.Node, n int) *graph.Node {
	B, nh := b.s.Batch, b.c.CrossHeads
	dh := b.c.DecoderHidden / nh
	if nh == 1 {
		return ops.Reshape(x, B, 1, n, dh)
	}
	return ops.Transpose(ops.Reshape(x, B, n, nh, dh), 0, 2, 1, 3)
}

// cross adds h + o_proj(attention(q_proj(RMSNorm(h)), K, V)).
func (b *builder) cross(k int, h, K, V, bias *graph.Node) *graph.Node {
	c := b.c
	B, T, D := b.s.Batch, h.Shape().Dims[1], c.DecoderHidden
	nh := c.CrossHeads
	dh := D / nh
	p := crossLayer(k)
	x := ops.RMSNorm(h, b.param(p+"norm.weight"), c.LayerNormEpsilon)
	q := b.heads(b.linear(x, p+"q_proj.weight", ""), T)
	scores := ops.Scale(ops.MatMulT(q, K, false, true), 1/math.Sqrt(float64(dh))) // [B,nh,T,S]
	if bias != nil {
		scores = ops.Add(scores, bias)
	}
	ctx := ops.MatMul(ops.Softmax(scores, -1), V) // [B,nh,T,dh]
	if nh > 1 {
		ctx = ops.Transpose(ctx, 0, 2, 1, 3)
	}
	ctx = ops.Reshape(ctx, B, T, D)
	return ops.Add(h, b.linear(ctx, p+"o_proj.weight", ""))
}

// encoder returns the memory [B,S,E] after the encoder's final norm.
func (b *builder) encoder() *graph.Node {
	c, s, g := b.c, b.s, b.g
	B, S, E := s.Batch, s.Src, c.EncoderHidden
	var h *graph.Node
	if c.TokenSource() {
		h = ops.Gather(b.param(encEmbeddings), g.Input(InSrc, shapes.Make(shapes.Int64, B, S)))
	} else {
		h = b.linear(g.Input(InSrc, b.f(B, S, c.SrcDim)), encInProjW, encInProjB)
	}
	var rev *graph.Node
	for i, kind := range c.EncoderLayers {
		p := encLayer(i)
		switch kind {
		case Mamba2:
			h = mamba2.Block(g, b.enc, mamba2.BlockOptions{Prefix: p}, h)
		case BiMamba2:
			if rev == nil {
				rev = g.Input(InSrcRev, shapes.Make(shapes.Int64, B, S))
			}
			reverse := func(x *graph.Node) *graph.Node { return ops.Gather(ops.Reshape(x, B*S, E), rev) }
			fwd := ops.Sub(mamba2.Block(g, b.enc, mamba2.BlockOptions{Prefix: p + "forward."}, h), h)
			hr := reverse(h)
			bwd := reverse(ops.Sub(mamba2.Block(g, b.enc, mamba2.BlockOptions{Prefix: p + "backward."}, hr), hr))
			if c.BiMerge == MergeConcat {
				h = ops.Add(h, ops.MatMulT(ops.Concat(-1, fwd, bwd), b.param(p+"merge.weight"), false, true))
			} else {
				h = ops.Add(h, ops.Add(fwd, bwd))
			}
		case MLP:
			x := ops.RMSNorm(h, b.param(p+"norm.weight"), c.LayerNormEpsilon)
			x = ops.SiLU(b.linear(x, p+"mlp.fc1.weight", p+"mlp.fc1.bias"))
			h = ops.Add(h, b.linear(x, p+"mlp.fc2.weight", p+"mlp.fc2.bias"))
		}
	}
	return ops.RMSNorm(h, b.param(encNormF), c.LayerNormEpsilon)
}
