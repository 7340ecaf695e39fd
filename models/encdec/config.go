// Package encdec assembles encoder–decoder models from blocks and trains and runs them on the graph
// engine.
//
// A model is described once by a Config and defined once symbolically (graph.go); it is compiled per
// phase:
//
//   - Train: a teacher-forced forward over (source, target) batches, the loss and graph.Grad of
//     every parameter. Eval is the same forward without gradients.
//   - Prefill: the encoder over a batch of sources, the bridge, and the decoder over its first
//     input(s); it writes the decoder's recurrent state (and, with the cross-attention bridge, the
//     keys and values of the encoder memory) into a cache.Cache.
//   - Step: one decoder token (or vector) per row; it reads and writes the Mamba2 states and reads
//     the memory keys/values as read-only state. No position is ever passed.
//
// Encoder blocks are Mamba2 (causal), bidirectional Mamba2 (a forward and a reversed scan, summed or
// concatenated and projected) and MLP; the source is token ids (an embedding) or vectors (a linear
// input). Decoder blocks are Mamba2, optionally interleaved with cross-attention blocks over the
// encoder memory. Two bridges join them: Prefix prefills the encoder output, projected to the
// decoder width, into the decoder before the first target; CrossAttention lets decoder blocks attend
// to the memory. Outputs are tokens (vocabulary + head, cross-entropy) or continuous vectors (a
// regression head, mean squared error; at generation each output is fed back as the next input).
//
// Mamba2 parameters carry Hugging Face names: the decoder's Mamba2 blocks are
// backbone.layers.N.{norm.weight, mixer.in_proj.weight, ...}, its embeddings
// backbone.embeddings.weight, its final norm backbone.norm_f.weight and its head lm_head.weight, so
// a prefix-bridge token decoder is a Mamba2ForCausalLM; encoder blocks are encoder.layers.N.*.
//
// Using a model:
//
//	m, _ := encdec.New(be, cfg, seed, encdec.Options{})       // or encdec.Load(be, dir, …)
//	tr, _ := encdec.NewTrainer(m, encdec.TrainOptions{LR: 3e-3, Steps: 600, ClipNorm: 1})
//	st, _ := tr.TrainStep(batch)                              // teacher forcing + AdamW
//	_ = tr.Save(dir, nil)                                     // resumable: encdec.Resume
//	out, _ := m.Generate(srcs, encdec.GenerateOptions{MaxLen: 12})
//
//	s, _ := m.Start(srcs)                 // Prefill, once per batch of sources
//	for i := 0; i < n; i++ {
//		y := s.Output(0)                  // logits, or the predicted vector
//		_ = s.FeedVectors([][]float64{y}) // one Step: no positions anywhere
//	}
//
// Library code returns errors; it never panics on bad input and never prints.
package encdec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/mamba2go/mamba2/models/mamba2"
)

// Block kinds.
const (
	Mamba2   = "mamba2"   // causal Mamba2 block (encoder or decoder)
	BiMamba2 = "bimamba2" // bidirectional Mamba2 block (encoder)
	MLP      = "mlp"      // position-wise MLP block (encoder)
	Cross    = "cross"    // cross-attention block over the encoder memory (decoder)
)

// Bridges.
const (
	BridgePrefix = "prefix" // encoder output, projected, prefilled into the decoder
	BridgeCross  = "cross"  // decoder cross-attention blocks attend to the encoder memory
)

// Bidirectional merges.
const (
	MergeSum    = "sum"    // forward + reversed mixer outputs
	MergeConcat = "concat" // [forward; reversed] projected back to the width
)

// ModelType is the "model_type" of an encoder–decoder config.json.
const ModelType = "mamba2-encdec"

// Config describes an encoder–decoder. Exactly one of SrcVocab and SrcDim is positive (token or
// vector sources), and exactly one of TgtVocab and TgtDim (token or vector outputs).
type Config struct {
	ModelType string `json:"model_type"`

	SrcVocab int `json:"src_vocab_size,omitempty"`
	SrcDim   int `json:"src_dim,omitempty"`
	TgtVocab int `json:"tgt_vocab_size,omitempty"`
	TgtDim   int `json:"tgt_dim,omitempty"`

	EncoderHidden int      `json:"encoder_hidden_size"`
	DecoderHidden int      `json:"decoder_hidden_size"`
	EncoderLayers []string `json:"encoder_layers"`
	DecoderLayers []string `json:"decoder_layers"`
	Bridge        string   `json:"bridge"`
	// BiMerge is MergeSum or MergeConcat (default sum).
	BiMerge string `json:"bidirectional_merge,omitempty"`
	// CrossHeads is the number of cross-attention heads (default 1).
	CrossHeads int `json:"cross_attention_heads,omitempty"`
	// MLPExpand is the MLP block's inner width factor (default 4).
	MLPExpand int `json:"mlp_expand,omitempty"`

	// Mamba2 hyperparameters shared by every Mamba2 block (Hugging Face Mamba2Config keys).
	StateSize        int     `json:"state_size"`
	HeadDim          int     `json:"head_dim"`
	Expand           int     `json:"expand"`
	ConvKernel       int     `json:"conv_kernel"`
	NGroups          int     `json:"n_groups"`
	ChunkSize        int     `json:"chunk_size"`
	LayerNormEpsilon float64 `json:"layer_norm_epsilon"`

	// BOSTokenID starts token decoding; EOSTokenID (or -1) stops it. Both index TgtVocab.
	BOSTokenID int `json:"bos_token_id"`
	EOSTokenID int `json:"eos_token_id"`
}

// WithDefaults fills zero optional fields.
func (c Config) WithDefaults() Config {
	if c.ModelType == "" {
		c.ModelType = ModelType
	}
	if c.BiMerge == "" {
		c.BiMerge = MergeSum
	}
	if c.CrossHeads == 0 {
		c.CrossHeads = 1
	}
	if c.MLPExpand == 0 {
		c.MLPExpand = 4
	}
	if c.StateSize == 0 {
		c.StateSize = 16
	}
	if c.HeadDim == 0 {
		c.HeadDim = 16
	}
	if c.Expand == 0 {
		c.Expand = 2
	}
	if c.ConvKernel == 0 {
		c.ConvKernel = 4
	}
	if c.NGroups == 0 {
		c.NGroups = 1
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = 64
	}
	if c.LayerNormEpsilon == 0 {
		c.LayerNormEpsilon = 1e-5
	}
	return c
}

// Validate checks the configuration; errors name the config.json key at fault.
func (c Config) Validate() error {
	if c.ModelType != ModelType {
		return fmt.Errorf("encdec: model_type %q is not %q", c.ModelType, ModelType)
	}
	if (c.SrcVocab > 0) == (c.SrcDim > 0) || c.SrcVocab < 0 || c.SrcDim < 0 {
		return fmt.Errorf("encdec: exactly one of src_vocab_size (%d) and src_dim (%d) must be positive", c.SrcVocab, c.SrcDim)
	}
	if (c.TgtVocab > 0) == (c.TgtDim > 0) || c.TgtVocab < 0 || c.TgtDim < 0 {
		return fmt.Errorf("encdec: exactly one of tgt_vocab_size (%d) and tgt_dim (%d) must be positive", c.TgtVocab, c.TgtDim)
	}
	for _, f := range []struct {
		key string
		v   int
	}{
		{"encoder_hidden_size", c.EncoderHidden}, {"decoder_hidden_size", c.DecoderHidden},
		{"state_size", c.StateSize}, {"head_dim", c.HeadDim}, {"expand", c.Expand},
		{"conv_kernel", c.ConvKernel}, {"n_groups", c.NGroups}, {"chunk_size", c.ChunkSize},
		{"cross_attention_heads", c.CrossHeads}, {"mlp_expand", c.MLPExpand},
	} {
		if f.v < 1 || f.v > 1<<20 {
			return fmt.Errorf("encdec: %s must be in [1, 2^20], got %d", f.key, f.v)
		}
	}
	if c.SrcVocab > 1<<24 || c.TgtVocab > 1<<24 || c.SrcDim > 1<<20 || c.TgtDim > 1<<20 {
		return fmt.Errorf("encdec: vocabulary or vector sizes are too large")
	}
	if !(c.LayerNormEpsilon > 0) || math.IsInf(c.LayerNormEpsilon, 0) {
		return fmt.Errorf("encdec: layer_norm_epsilon must be positive and finite, got %g", c.LayerNormEpsilon)
	}
	if len(c.EncoderLayers) == 0 {
		return fmt.Errorf("encdec: encoder_layers is empty")
	}
	if len(c.DecoderLayers) == 0 {
		return fmt.Errorf("encdec: decoder_layers is empty")
	}
	for i, k := range c.EncoderLayers {
		if k != Mamba2 && k != BiMamba2 && k != MLP {
			return fmt.Errorf("encdec: encoder_layers[%d] = %q: want %q, %q or %q", i, k, Mamba2, BiMamba2, MLP)
		}
	}
	crosses, mambas := 0, 0
	for i, k := range c.DecoderLayers {
		switch k {
		case Mamba2:
			mambas++
		case Cross:
			crosses++
		default:
			return fmt.Errorf("encdec: decoder_layers[%d] = %q: want %q or %q", i, k, Mamba2, Cross)
		}
	}
	if mambas == 0 {
		return fmt.Errorf("encdec: decoder_layers has no %q block", Mamba2)
	}
	switch c.Bridge {
	case BridgePrefix:
		if crosses > 0 {
			return fmt.Errorf("encdec: decoder_layers has %q blocks but bridge is %q", Cross, c.Bridge)
		}
	case BridgeCross:
		if crosses == 0 {
			return fmt.Errorf("encdec: bridge %q needs at least one %q block in decoder_layers", c.Bridge, Cross)
		}
	default:
		return fmt.Errorf("encdec: bridge %q: want %q or %q", c.Bridge, BridgePrefix, BridgeCross)
	}
	if c.BiMerge != MergeSum && c.BiMerge != MergeConcat {
		return fmt.Errorf("encdec: bidirectional_merge %q: want %q or %q", c.BiMerge, MergeSum, MergeConcat)
	}
	if c.DecoderHidden%c.CrossHeads != 0 {
		return fmt.Errorf("encdec: decoder_hidden_size %d is not divisible by cross_attention_heads %d", c.DecoderHidden, c.CrossHeads)
	}
	for _, w := range []struct {
		key string
		v   int
	}{{"encoder_hidden_size", c.EncoderHidden}, {"decoder_hidden_size", c.DecoderHidden}} {
		inner := c.Expand * w.v
		if inner%c.HeadDim != 0 {
			return fmt.Errorf("encdec: expand*%s (%d) is not divisible by head_dim %d", w.key, inner, c.HeadDim)
		}
		if (inner/c.HeadDim)%c.NGroups != 0 {
			return fmt.Errorf("encdec: the %d heads of %s are not divisible by n_groups %d", inner/c.HeadDim, w.key, c.NGroups)
		}
	}
	if c.TgtVocab > 0 {
		if c.BOSTokenID < 0 || c.BOSTokenID >= c.TgtVocab {
			return fmt.Errorf("encdec: bos_token_id %d is outside the target vocabulary [0, %d)", c.BOSTokenID, c.TgtVocab)
		}
		if c.EOSTokenID < -1 || c.EOSTokenID >= c.TgtVocab {
			return fmt.Errorf("encdec: eos_token_id %d is outside the target vocabulary [0, %d) (-1 for none)", c.EOSTokenID, c.TgtVocab)
		}
	}
	return nil
}

// TokenSource reports whether sources are token ids.
func (c Config) TokenSource() bool { return c.SrcVocab > 0 }

// TokenTarget reports whether outputs are token ids.
func (c Config) TokenTarget() bool { return c.TgtVocab > 0 }

// MambaConfig returns the Hugging Face Mamba2 configuration of a Mamba2 stack of the given width,
// vocabulary and depth (the decoder's is a Mamba2ForCausalLM configuration).
func (c Config) MambaConfig(hidden, vocab, layers int) mamba2.Config {
	inner := c.Expand * hidden
	return mamba2.Config{
		VocabSize: max(vocab, 1), HiddenSize: hidden, StateSize: c.StateSize, NumHiddenLayers: max(layers, 1),
		Expand: c.Expand, ConvKernel: c.ConvKernel, NGroups: c.NGroups, HeadDim: c.HeadDim,
		NumHeads: inner / c.HeadDim, ChunkSize: c.ChunkSize, TimeStepRank: (hidden + 15) / 16,
		UseConvBias: true, RMSNorm: true, ResidualInFP32: true,
		LayerNormEpsilon: c.LayerNormEpsilon, TimeStepMin: 0.001, TimeStepMax: 0.1, TimeStepFloor: 1e-4,
		InitializerRange: 0.1, TimeStepLimit: [2]float64{0, math.Inf(1)}, HiddenAct: "silu",
		PadTokenID: -1, BOSTokenID: -1, EOSTokenID: -1, Layout: mamba2.LayoutHF,
	}
}

func (c Config) encMamba() mamba2.Config { return c.MambaConfig(c.EncoderHidden, c.SrcVocab, 1) }
func (c Config) decMamba() mamba2.Config {
	return c.MambaConfig(c.DecoderHidden, c.TgtVocab, c.numDecoderMamba())
}

func (c Config) numDecoderMamba() int {
	n := 0
	for _, k := range c.DecoderLayers {
		if k == Mamba2 {
			n++
		}
	}
	return n
}

func (c Config) numCross() int { return len(c.DecoderLayers) - c.numDecoderMamba() }

// Fingerprint is a stable hash of everything that changes parameter shapes or the model's function.
func (c Config) Fingerprint() string {
	b, _ := json.Marshal(c.WithDefaults())
	sum := sha256.Sum256(append([]byte("encdec-config-v1;"), b...))
	return hex.EncodeToString(sum[:16])
}

// ParseConfig reads a config.json written by MarshalJSON (or by hand) and validates it.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return Config{}, fmt.Errorf("encdec: config: %v", err)
	}
	if c.ModelType == "" {
		return Config{}, fmt.Errorf("encdec: config: no model_type (want %q)", ModelType)
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// String is a one-line summary.
func (c Config) String() string {
	src, tgt := "vec"+strconv.Itoa(c.SrcDim), "vec"+strconv.Itoa(c.TgtDim)
	if c.TokenSource() {
		src = "tok" + strconv.Itoa(c.SrcVocab)
	}
	if c.TokenTarget() {
		tgt = "tok" + strconv.Itoa(c.TgtVocab)
	}
	return fmt.Sprintf("%s→%s enc[%d: %s] dec[%d: %s] bridge=%s", src, tgt, c.EncoderHidden,
		strings.Join(c.EncoderLayers, ","), c.DecoderHidden, strings.Join(c.DecoderLayers, ","), c.Bridge)
}
