package mamba2

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// Checkpoint layouts: where a configuration and its weights come from.
const (
	// LayoutHF is a Hugging Face transformers checkpoint (Mamba2Config keys, HF tensor names).
	LayoutHF = "hf"
	// LayoutMambaSSM is an original state-spaces/mamba_ssm checkpoint (d_model, n_layer,
	// ssm_cfg keys; backbone.embedding.weight).
	LayoutMambaSSM = "mamba_ssm"
)

// Config is a Mamba2 causal language model's configuration, in the terms of Hugging Face's
// Mamba2Config. ParseConfig fills it from a config.json of either layout.
type Config struct {
	// VocabSize is the number of token embeddings and logits (V).
	VocabSize int
	// HiddenSize is the model width (d_model).
	HiddenSize int
	// StateSize is the SSM state size per group (N, d_state).
	StateSize int
	// NumHiddenLayers is the number of Mamba2 blocks (L).
	NumHiddenLayers int
	// Expand is the inner width factor: IntermediateSize = Expand·HiddenSize.
	Expand int
	// ConvKernel is the causal depthwise convolution width (K, d_conv).
	ConvKernel int
	// NGroups is the number of B/C groups (G); NumHeads must be a multiple of it.
	NGroups int
	// HeadDim is the width of one SSM head (P).
	HeadDim int
	// NumHeads is the number of SSM heads (H); NumHeads·HeadDim = IntermediateSize.
	NumHeads int
	// ChunkSize is the chunk length of the chunked SSD scan. It changes rounding only, not the
	// model's function.
	ChunkSize int
	// TimeStepRank is recorded for compatibility; Mamba2 has no dt projection and ignores it.
	TimeStepRank int

	// UseBias adds biases to in_proj and out_proj.
	UseBias bool
	// UseConvBias adds a bias to the convolution.
	UseConvBias bool
	// TieWordEmbeddings makes lm_head share the embedding matrix.
	TieWordEmbeddings bool
	// RMSNorm says the block norms are RMS norms. Hugging Face's model ignores it (its norms are
	// always RMS norms); a mamba_ssm checkpoint without it uses LayerNorm, which is unsupported.
	RMSNorm bool
	// ResidualInFP32 keeps the residual stream in float32 (no effect when computing in float32
	// or float64).
	ResidualInFP32 bool
	// NormBeforeGate normalises y before multiplying by silu(z). Hugging Face's model ignores it
	// (it always gates first); a mamba_ssm checkpoint with it set is unsupported.
	NormBeforeGate bool
	// RescalePrenormResidual rescales out_proj at initialisation only.
	RescalePrenormResidual bool

	// LayerNormEpsilon is the epsilon of every RMS norm.
	LayerNormEpsilon float64
	// TimeStepMin, TimeStepMax and TimeStepFloor shape the dt_bias initialisation only.
	TimeStepMin, TimeStepMax, TimeStepFloor float64
	// InitializerRange is the standard deviation of the embedding initialisation.
	InitializerRange float64
	// TimeStepLimit clamps dt after the softplus; {0, +Inf} means no clamp.
	TimeStepLimit [2]float64

	// HiddenAct is the activation after the convolution; only "silu" is supported.
	HiddenAct string

	// PadTokenID, BOSTokenID and EOSTokenID are the special tokens; -1 means none.
	PadTokenID, BOSTokenID, EOSTokenID int

	// GroupedNorm makes the gated RMS norm normalise each of the NGroups groups of the inner
	// width separately, as original mamba_ssm checkpoints do; Hugging Face normalises over the
	// whole inner width (false).
	GroupedNorm bool
	// Layout is LayoutHF or LayoutMambaSSM: where the configuration and weights come from. The
	// empty string means LayoutHF. It does not change the model's function.
	Layout string
}

// IntermediateSize returns the inner width I = Expand·HiddenSize.
func (c Config) IntermediateSize() int { return c.Expand * c.HiddenSize }

// ConvDim returns the convolution's channel count I + 2·NGroups·StateSize (x, B and C).
func (c Config) ConvDim() int { return c.IntermediateSize() + 2*c.NGroups*c.StateSize }

// InProjSize returns in_proj's output width I + ConvDim + NumHeads (z, xBC and dt).
func (c Config) InProjSize() int { return c.IntermediateSize() + c.ConvDim() + c.NumHeads }

// maxElements bounds every tensor a configuration implies, so that sizes never overflow int.
const maxElements = 1 << 40

// Validate checks that c describes a model this package can run. Errors name the Hugging Face
// key at fault.
func (c Config) Validate() error {
	for _, f := range []struct {
		key string
		v   int
	}{
		{"vocab_size", c.VocabSize}, {"hidden_size", c.HiddenSize}, {"state_size", c.StateSize},
		{"num_hidden_layers", c.NumHiddenLayers}, {"expand", c.Expand}, {"conv_kernel", c.ConvKernel},
		{"n_groups", c.NGroups}, {"head_dim", c.HeadDim}, {"num_heads", c.NumHeads},
		{"chunk_size", c.ChunkSize},
	} {
		if f.v < 1 {
			return fmt.Errorf("config: %s must be at least 1, got %d", f.key, f.v)
		}
		if f.v > maxElements {
			return fmt.Errorf("config: %s = %d is too large", f.key, f.v)
		}
	}
	if c.TimeStepRank < 0 {
		return fmt.Errorf("config: time_step_rank must not be negative, got %d", c.TimeStepRank)
	}
	// Every product below is of two factors ≤ 2^40 checked against 2^40 first, so none overflows.
	for _, p := range []struct {
		what string
		a, b int
	}{
		{"expand*hidden_size", c.Expand, c.HiddenSize},
		{"num_heads*head_dim", c.NumHeads, c.HeadDim},
		{"n_groups*state_size", c.NGroups, c.StateSize},
		{"vocab_size*hidden_size", c.VocabSize, c.HiddenSize},
		{"num_heads*head_dim*state_size", c.NumHeads * c.HeadDim, c.StateSize},
	} {
		if p.a > maxElements/p.b {
			return fmt.Errorf("config: %s is too large", p.what)
		}
	}
	if c.NumHeads*c.HeadDim != c.IntermediateSize() {
		return fmt.Errorf("config: num_heads*head_dim (%d*%d=%d) must equal expand*hidden_size (%d*%d=%d)",
			c.NumHeads, c.HeadDim, c.NumHeads*c.HeadDim, c.Expand, c.HiddenSize, c.IntermediateSize())
	}
	if c.NumHeads%c.NGroups != 0 {
		return fmt.Errorf("config: num_heads (%d) must be a multiple of n_groups (%d)", c.NumHeads, c.NGroups)
	}
	if c.InProjSize() > maxElements/c.HiddenSize {
		return fmt.Errorf("config: in_proj (%d×%d) is too large", c.InProjSize(), c.HiddenSize)
	}
	lo, hi := c.TimeStepLimit[0], c.TimeStepLimit[1]
	if math.IsNaN(lo) || math.IsNaN(hi) || lo > hi {
		return fmt.Errorf("config: time_step_limit [%g, %g] must be an interval with lower bound ≤ upper bound", lo, hi)
	}
	if !(c.LayerNormEpsilon > 0) || math.IsInf(c.LayerNormEpsilon, 0) {
		return fmt.Errorf("config: layer_norm_epsilon must be positive and finite, got %g", c.LayerNormEpsilon)
	}
	if c.HiddenAct != "silu" && c.HiddenAct != "swish" {
		return fmt.Errorf("config: hidden_act %q is not supported: only \"silu\" is", c.HiddenAct)
	}
	switch c.Layout {
	case "", LayoutHF:
	case LayoutMambaSSM:
		if !c.RMSNorm {
			return fmt.Errorf("config: rms_norm = false (LayerNorm blocks) is not supported for mamba_ssm checkpoints")
		}
		if c.NormBeforeGate {
			return fmt.Errorf("config: ssm_cfg.norm_before_gate = true is not supported")
		}
	default:
		return fmt.Errorf("config: layout %q is not %q or %q", c.Layout, LayoutHF, LayoutMambaSSM)
	}
	return nil
}

// Fingerprint returns a stable hexadecimal hash of every field that changes tensor shapes or the
// model's function: sizes, biases, tying, norms and their epsilon, the dt clamp, the activation.
// Initialisation-only fields, token ids, TimeStepRank, ChunkSize (rounding only) and Layout are
// left out. Caches and other derived files record it to refuse another model's data.
func (c Config) Fingerprint() string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	s := strings.Join([]string{
		"mamba2-config-v1",
		"vocab=" + strconv.Itoa(c.VocabSize),
		"hidden=" + strconv.Itoa(c.HiddenSize),
		"state=" + strconv.Itoa(c.StateSize),
		"layers=" + strconv.Itoa(c.NumHiddenLayers),
		"expand=" + strconv.Itoa(c.Expand),
		"conv=" + strconv.Itoa(c.ConvKernel),
		"groups=" + strconv.Itoa(c.NGroups),
		"head_dim=" + strconv.Itoa(c.HeadDim),
		"heads=" + strconv.Itoa(c.NumHeads),
		"bias=" + strconv.FormatBool(c.UseBias),
		"conv_bias=" + strconv.FormatBool(c.UseConvBias),
		"tied=" + strconv.FormatBool(c.TieWordEmbeddings),
		"rms_norm=" + strconv.FormatBool(c.RMSNorm),
		"residual_fp32=" + strconv.FormatBool(c.ResidualInFP32),
		"norm_before_gate=" + strconv.FormatBool(c.NormBeforeGate),
		"grouped_norm=" + strconv.FormatBool(c.GroupedNorm),
		"eps=" + f(c.LayerNormEpsilon),
		"dt_limit=" + f(c.TimeStepLimit[0]) + "," + f(c.TimeStepLimit[1]),
		"act=" + c.HiddenAct,
	}, ";")
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// LoadConfig reads a config.json of either layout (see ParseConfig). Errors name the file.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("mamba2: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("mamba2: %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig reads a configuration and validates it.
//
// A Hugging Face config.json (Mamba2Config keys) takes Mamba2Config's defaults for absent keys:
// num_heads 128, head_dim 64, vocab_size 32768, hidden_size 4096, state_size 128,
// num_hidden_layers 64, layer_norm_epsilon 1e-5, pad/bos/eos_token_id 1/0/2, expand 2,
// conv_kernel 4, n_groups 8, use_bias false, use_conv_bias true, hidden_act "silu",
// initializer_range 0.1, residual_in_fp32 true, time_step_rank "auto" (⌈hidden_size/16⌉),
// time_step_min 0.001, time_step_max 0.1, time_step_floor 1e-4, time_step_limit [0, Infinity],
// rescale_prenorm_residual false, rms_norm true, chunk_size 256, tie_word_embeddings false.
// The non-standard key "grouped_norm" (written by MarshalJSON) sets GroupedNorm.
//
// An original mamba_ssm config.json, recognised by its "d_model" key, reads d_model, n_layer,
// vocab_size (padded up to a multiple of pad_vocab_size_multiple, default 8), rms_norm,
// residual_in_fp32, tie_embeddings (default true) and ssm_cfg {layer: "Mamba2", d_state 128,
// d_conv 4, expand 2, headdim 64, ngroups 1, chunk_size 256, rmsnorm, norm_before_gate, dt_min,
// dt_max, dt_init_floor, dt_limit, bias, conv_bias}; it gets Layout LayoutMambaSSM, GroupedNorm,
// NumHeads = expand·d_model/headdim, layer_norm_epsilon 1e-5 and token ids 0. MLP layers
// (d_intermediate > 0), attention layers, Mamba1 layers, d_ssm and D_has_hdim are unsupported.
//
// Floats may be written as the bare tokens Infinity, -Infinity and NaN (not JSON, but what
// Python's json module writes) or as {"__float__": "Infinity"} objects. Unknown keys are ignored;
// a null value counts as absent, except that a null token id means none (-1).
func ParseConfig(data []byte) (Config, error) {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(replaceNonFinite(data), &keys); err != nil {
		return Config{}, fmt.Errorf("config: %v", err)
	}
	if keys == nil {
		return Config{}, fmt.Errorf("config: not a JSON object")
	}
	var c Config
	var err error
	if _, ok := keys["d_model"]; ok {
		c, err = parseMambaSSM(keys)
	} else {
		c, err = parseHF(keys)
	}
	if err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// parseHF reads Hugging Face Mamba2Config keys.
func parseHF(keys map[string]json.RawMessage) (Config, error) {
	r := &keyReader{m: keys}
	if mt := r.str("model_type", "mamba2"); r.err == nil && mt != "mamba2" {
		return Config{}, fmt.Errorf("config: model_type %q is not supported: only \"mamba2\" is", mt)
	}
	c := Config{
		Layout:                 LayoutHF,
		NumHeads:               r.int("num_heads", 128),
		HeadDim:                r.int("head_dim", 64),
		VocabSize:              r.int("vocab_size", 32768),
		HiddenSize:             r.int("hidden_size", 4096),
		StateSize:              r.int("state_size", 128),
		NumHiddenLayers:        r.int("num_hidden_layers", 64),
		LayerNormEpsilon:       r.float("layer_norm_epsilon", 1e-5),
		PadTokenID:             r.tokenID("pad_token_id", 1),
		BOSTokenID:             r.tokenID("bos_token_id", 0),
		EOSTokenID:             r.tokenID("eos_token_id", 2),
		Expand:                 r.int("expand", 2),
		ConvKernel:             r.int("conv_kernel", 4),
		NGroups:                r.int("n_groups", 8),
		UseBias:                r.bool("use_bias", false),
		UseConvBias:            r.bool("use_conv_bias", true),
		HiddenAct:              r.str("hidden_act", "silu"),
		InitializerRange:       r.float("initializer_range", 0.1),
		ResidualInFP32:         r.bool("residual_in_fp32", true),
		TimeStepMin:            r.float("time_step_min", 0.001),
		TimeStepMax:            r.float("time_step_max", 0.1),
		TimeStepFloor:          r.float("time_step_floor", 1e-4),
		TimeStepLimit:          r.limit("time_step_limit"),
		RescalePrenormResidual: r.bool("rescale_prenorm_residual", false),
		RMSNorm:                r.bool("rms_norm", true),
		ChunkSize:              r.int("chunk_size", 256),
		TieWordEmbeddings:      r.bool("tie_word_embeddings", false),
		NormBeforeGate:         r.bool("norm_before_gate", false),
		GroupedNorm:            r.bool("grouped_norm", false),
	}
	c.TimeStepRank = r.rank("time_step_rank", c.HiddenSize)
	return c, r.err
}

// parseMambaSSM reads an original mamba_ssm MambaConfig with a Mamba2 ssm_cfg.
func parseMambaSSM(keys map[string]json.RawMessage) (Config, error) {
	r := &keyReader{m: keys}
	dModel := r.int("d_model", 0)
	nLayer := r.int("n_layer", 64)
	vocab := r.int("vocab_size", 50277)
	padMultiple := r.int("pad_vocab_size_multiple", 8)
	dIntermediate := r.int("d_intermediate", 0)
	rmsNorm := r.bool("rms_norm", true)
	residual := r.bool("residual_in_fp32", true)
	tied := r.bool("tie_embeddings", true)
	var attn []json.RawMessage
	r.decode("attn_layer_idx", &attn)
	ssm := map[string]json.RawMessage{}
	r.decode("ssm_cfg", &ssm)
	if r.err != nil {
		return Config{}, r.err
	}
	s := &keyReader{m: ssm, prefix: "ssm_cfg."}
	layer := s.str("layer", "Mamba1")
	c := Config{
		Layout:            LayoutMambaSSM,
		GroupedNorm:       true,
		HiddenSize:        dModel,
		NumHiddenLayers:   nLayer,
		StateSize:         s.int("d_state", 128),
		ConvKernel:        s.int("d_conv", 4),
		Expand:            s.int("expand", 2),
		HeadDim:           s.int("headdim", 64),
		NGroups:           s.int("ngroups", 1),
		ChunkSize:         s.int("chunk_size", 256),
		NormBeforeGate:    s.bool("norm_before_gate", false),
		TimeStepMin:       s.float("dt_min", 0.001),
		TimeStepMax:       s.float("dt_max", 0.1),
		TimeStepFloor:     s.float("dt_init_floor", 1e-4),
		TimeStepLimit:     s.limit("dt_limit"),
		UseBias:           s.bool("bias", false),
		UseConvBias:       s.bool("conv_bias", true),
		RMSNorm:           rmsNorm,
		ResidualInFP32:    residual,
		TieWordEmbeddings: tied,
		LayerNormEpsilon:  1e-5,
		InitializerRange:  0.02,
		HiddenAct:         "silu",
		TimeStepRank:      (dModel + 15) / 16,
	}
	gatedNorm := s.bool("rmsnorm", true)
	dHasHdim := s.bool("D_has_hdim", false)
	dSSM := s.int("d_ssm", 0)
	if s.err != nil {
		return Config{}, s.err
	}
	switch {
	case layer != "Mamba2":
		return Config{}, fmt.Errorf("config: ssm_cfg.layer %q is not supported: only \"Mamba2\" is", layer)
	case dModel < 1:
		return Config{}, fmt.Errorf("config: d_model must be at least 1, got %d", dModel)
	case dIntermediate > 0:
		return Config{}, fmt.Errorf("config: d_intermediate = %d (MLP layers) is not supported", dIntermediate)
	case len(attn) > 0:
		return Config{}, fmt.Errorf("config: attn_layer_idx (attention layers) is not supported")
	case !gatedNorm:
		return Config{}, fmt.Errorf("config: ssm_cfg.rmsnorm = false (no gated norm) is not supported")
	case dHasHdim:
		return Config{}, fmt.Errorf("config: ssm_cfg.D_has_hdim = true is not supported")
	case dSSM != 0 && dSSM != c.Expand*dModel:
		return Config{}, fmt.Errorf("config: ssm_cfg.d_ssm = %d (partial SSM) is not supported", dSSM)
	case padMultiple < 1:
		return Config{}, fmt.Errorf("config: pad_vocab_size_multiple must be at least 1, got %d", padMultiple)
	case c.HeadDim < 1:
		return Config{}, fmt.Errorf("config: ssm_cfg.headdim must be at least 1, got %d", c.HeadDim)
	case c.Expand < 1 || c.Expand > maxElements/dModel:
		return Config{}, fmt.Errorf("config: ssm_cfg.expand must be at least 1 and not huge, got %d", c.Expand)
	case c.Expand*dModel%c.HeadDim != 0:
		return Config{}, fmt.Errorf("config: ssm_cfg.headdim (%d) must divide expand*d_model (%d*%d=%d)",
			c.HeadDim, c.Expand, dModel, c.Expand*dModel)
	case vocab < 1 || vocab > maxElements:
		return Config{}, fmt.Errorf("config: vocab_size must be at least 1 and not huge, got %d", vocab)
	}
	c.NumHeads = c.Expand * dModel / c.HeadDim
	if rem := vocab % padMultiple; rem != 0 {
		vocab += padMultiple - rem
	}
	c.VocabSize = vocab
	return c, nil
}

// keyReader reads typed values from a JSON object, keeping the first error, which names the key.
type keyReader struct {
	m      map[string]json.RawMessage
	prefix string // for error messages, e.g. "ssm_cfg."
	err    error
}

// raw returns the key's value, or false when it is absent or null.
func (r *keyReader) raw(key string) (json.RawMessage, bool) {
	v, ok := r.m[key]
	if !ok || r.err != nil || string(bytes.TrimSpace(v)) == "null" {
		return nil, false
	}
	return v, true
}

func (r *keyReader) fail(key, want string, v json.RawMessage) {
	s := string(v)
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	r.err = fmt.Errorf("config: %s%s: want %s, got %s", r.prefix, key, want, s)
}

// int reads an integer; integral floats such as 2.0 are accepted.
func (r *keyReader) int(key string, def int) int {
	v, ok := r.raw(key)
	if !ok {
		return def
	}
	if n, ok := parseInt(v); ok {
		return n
	}
	r.fail(key, "an integer", v)
	return def
}

func parseInt(v json.RawMessage) (int, bool) {
	s := string(bytes.TrimSpace(v))
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= math.MinInt && n <= math.MaxInt {
		return int(n), true
	}
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int(f), true
}

// tokenID reads a token id: an integer, null (none: -1) or a list (its first element).
func (r *keyReader) tokenID(key string, def int) int {
	v, ok := r.m[key]
	if !ok || r.err != nil {
		return def
	}
	switch s := bytes.TrimSpace(v); {
	case string(s) == "null":
		return -1
	case len(s) > 0 && s[0] == '[':
		var list []json.RawMessage
		if json.Unmarshal(s, &list) == nil {
			if len(list) == 0 {
				return -1
			}
			if n, ok := parseInt(list[0]); ok {
				return n
			}
		}
	default:
		if n, ok := parseInt(s); ok {
			return n
		}
	}
	r.fail(key, "a token id", v)
	return def
}

// rank reads time_step_rank: an integer or "auto" (⌈hidden/16⌉).
func (r *keyReader) rank(key string, hidden int) int {
	auto := (hidden + 15) / 16
	v, ok := r.raw(key)
	if !ok {
		return auto
	}
	var s string
	if json.Unmarshal(v, &s) == nil && s == "auto" {
		return auto
	}
	return r.int(key, auto)
}

func (r *keyReader) bool(key string, def bool) bool {
	v, ok := r.raw(key)
	if !ok {
		return def
	}
	var b bool
	if err := json.Unmarshal(v, &b); err != nil {
		r.fail(key, "true or false", v)
		return def
	}
	return b
}

func (r *keyReader) str(key string, def string) string {
	v, ok := r.raw(key)
	if !ok {
		return def
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		r.fail(key, "a string", v)
		return def
	}
	return s
}

func (r *keyReader) float(key string, def float64) float64 {
	v, ok := r.raw(key)
	if !ok {
		return def
	}
	f, ok := parseFloat(v)
	if !ok {
		r.fail(key, "a number", v)
		return def
	}
	return f
}

// limit reads a [lo, hi] pair of floats, by default [0, +Inf].
func (r *keyReader) limit(key string) [2]float64 {
	def := [2]float64{0, math.Inf(1)}
	v, ok := r.raw(key)
	if !ok {
		return def
	}
	var pair []json.RawMessage
	if err := json.Unmarshal(v, &pair); err != nil || len(pair) != 2 {
		r.fail(key, "a list of 2 numbers", v)
		return def
	}
	var out [2]float64
	for i, p := range pair {
		if out[i], ok = parseFloat(p); !ok {
			r.fail(key, "a list of 2 numbers", v)
			return def
		}
	}
	return out
}

// decode unmarshals the key's value into dst, leaving dst alone when the key is absent or null.
func (r *keyReader) decode(key string, dst any) {
	v, ok := r.raw(key)
	if !ok {
		return
	}
	if err := json.Unmarshal(v, dst); err != nil {
		r.fail(key, fmt.Sprintf("a JSON %T", dst), v)
	}
}

// Sentinels replaceNonFinite substitutes for bare non-finite tokens.
const (
	sentinelInf    = "\x00Infinity"
	sentinelNegInf = "\x00-Infinity"
	sentinelNaN    = "\x00NaN"
)

// nonFinite maps the bare tokens Python's json module writes to the JSON strings that stand for
// them after replaceNonFinite.
var nonFinite = []struct{ token, replacement string }{
	{"-Infinity", `"\u0000-Infinity"`},
	{"Infinity", `"\u0000Infinity"`},
	{"NaN", `"\u0000NaN"`},
}

// replaceNonFinite rewrites the bare tokens Infinity, -Infinity and NaN outside string literals
// as sentinel strings, so that encoding/json accepts the document. Data without them is returned
// as is.
func replaceNonFinite(data []byte) []byte {
	var out []byte
	last := 0 // data[last:] not yet copied to out
	inString, escaped := false, false
	for i := 0; i < len(data); i++ {
		ch := data[i]
		if inString {
			switch {
			case escaped:
				escaped = false
			case ch == '\\':
				escaped = true
			case ch == '"':
				inString = false
			}
			continue
		}
		if ch == '"' {
			inString = true
			continue
		}
		if ch != '-' && ch != 'I' && ch != 'N' {
			continue
		}
		if i > 0 && isIdentByte(data[i-1]) {
			continue
		}
		for _, nf := range nonFinite {
			end := i + len(nf.token)
			if !bytes.HasPrefix(data[i:], []byte(nf.token)) || (end < len(data) && isIdentByte(data[end])) {
				continue
			}
			out = append(append(out, data[last:i]...), nf.replacement...)
			last = end
			i = end - 1
			break
		}
	}
	if out == nil {
		return data
	}
	return append(out, data[last:]...)
}

func isIdentByte(b byte) bool {
	return b == '_' || b == '.' || (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')
}

// parseFloat reads a float written as a JSON number, as a sentinel or spelled-out string
// ("Infinity", "-Infinity", "NaN", "inf", "-inf", "nan"), or as {"__float__": "Infinity"}.
func parseFloat(v json.RawMessage) (float64, bool) {
	s := bytes.TrimSpace(v)
	if len(s) == 0 {
		return 0, false
	}
	switch s[0] {
	case '"':
		var str string
		if json.Unmarshal(s, &str) != nil {
			return 0, false
		}
		return namedFloat(strings.TrimPrefix(str, "\x00"))
	case '{':
		var obj map[string]json.RawMessage
		if json.Unmarshal(s, &obj) != nil || len(obj) != 1 {
			return 0, false
		}
		inner, ok := obj["__float__"]
		if !ok {
			return 0, false
		}
		var str string
		if json.Unmarshal(inner, &str) == nil {
			return namedFloat(str)
		}
		return parseFloat(inner)
	}
	f, err := strconv.ParseFloat(string(s), 64)
	if err != nil {
		return 0, false
	}
	return f, true
}

func namedFloat(s string) (float64, bool) {
	switch strings.ToLower(s) {
	case "infinity", "+infinity", "inf", "+inf":
		return math.Inf(1), true
	case "-infinity", "-inf":
		return math.Inf(-1), true
	case "nan":
		return math.NaN(), true
	}
	return 0, false
}

// jsonFloat marshals a float64 as a JSON number, or as {"__float__": "Infinity"} (also
// "-Infinity", "NaN") when it is not finite, as current transformers writes it.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsInf(v, 1):
		return []byte(`{"__float__": "Infinity"}`), nil
	case math.IsInf(v, -1):
		return []byte(`{"__float__": "-Infinity"}`), nil
	case math.IsNaN(v):
		return []byte(`{"__float__": "NaN"}`), nil
	}
	return json.Marshal(v)
}

// tokenJSON marshals a token id, -1 (none) as null.
func tokenJSON(id int) any {
	if id < 0 {
		return nil
	}
	return id
}

// MarshalJSON writes c as a Hugging Face config.json (Mamba2Config keys, plus "grouped_norm"
// when GroupedNorm is set), with non-finite floats as {"__float__": "Infinity"} objects.
// ParseConfig reads the result back to c, except that Layout becomes LayoutHF: the weights a
// saved configuration goes with carry Hugging Face names.
func (c Config) MarshalJSON() ([]byte, error) {
	type hfConfig struct {
		Architectures          []string     `json:"architectures"`
		ModelType              string       `json:"model_type"`
		VocabSize              int          `json:"vocab_size"`
		HiddenSize             int          `json:"hidden_size"`
		StateSize              int          `json:"state_size"`
		NumHiddenLayers        int          `json:"num_hidden_layers"`
		Expand                 int          `json:"expand"`
		ConvKernel             int          `json:"conv_kernel"`
		NGroups                int          `json:"n_groups"`
		HeadDim                int          `json:"head_dim"`
		NumHeads               int          `json:"num_heads"`
		ChunkSize              int          `json:"chunk_size"`
		TimeStepRank           int          `json:"time_step_rank"`
		UseBias                bool         `json:"use_bias"`
		UseConvBias            bool         `json:"use_conv_bias"`
		TieWordEmbeddings      bool         `json:"tie_word_embeddings"`
		RMSNorm                bool         `json:"rms_norm"`
		ResidualInFP32         bool         `json:"residual_in_fp32"`
		NormBeforeGate         bool         `json:"norm_before_gate"`
		RescalePrenormResidual bool         `json:"rescale_prenorm_residual"`
		GroupedNorm            bool         `json:"grouped_norm,omitempty"`
		LayerNormEpsilon       jsonFloat    `json:"layer_norm_epsilon"`
		TimeStepMin            jsonFloat    `json:"time_step_min"`
		TimeStepMax            jsonFloat    `json:"time_step_max"`
		TimeStepFloor          jsonFloat    `json:"time_step_floor"`
		TimeStepLimit          [2]jsonFloat `json:"time_step_limit"`
		InitializerRange       jsonFloat    `json:"initializer_range"`
		HiddenAct              string       `json:"hidden_act"`
		PadTokenID             any          `json:"pad_token_id"`
		BOSTokenID             any          `json:"bos_token_id"`
		EOSTokenID             any          `json:"eos_token_id"`
		UseCache               bool         `json:"use_cache"`
	}
	return json.Marshal(hfConfig{
		Architectures: []string{"Mamba2ForCausalLM"}, ModelType: "mamba2",
		VocabSize: c.VocabSize, HiddenSize: c.HiddenSize, StateSize: c.StateSize,
		NumHiddenLayers: c.NumHiddenLayers, Expand: c.Expand, ConvKernel: c.ConvKernel,
		NGroups: c.NGroups, HeadDim: c.HeadDim, NumHeads: c.NumHeads, ChunkSize: c.ChunkSize,
		TimeStepRank: c.TimeStepRank, UseBias: c.UseBias, UseConvBias: c.UseConvBias,
		TieWordEmbeddings: c.TieWordEmbeddings, RMSNorm: c.RMSNorm, ResidualInFP32: c.ResidualInFP32,
		NormBeforeGate: c.NormBeforeGate, RescalePrenormResidual: c.RescalePrenormResidual,
		GroupedNorm: c.GroupedNorm, LayerNormEpsilon: jsonFloat(c.LayerNormEpsilon),
		TimeStepMin: jsonFloat(c.TimeStepMin), TimeStepMax: jsonFloat(c.TimeStepMax),
		TimeStepFloor:    jsonFloat(c.TimeStepFloor),
		TimeStepLimit:    [2]jsonFloat{jsonFloat(c.TimeStepLimit[0]), jsonFloat(c.TimeStepLimit[1])},
		InitializerRange: jsonFloat(c.InitializerRange), HiddenAct: c.HiddenAct,
		PadTokenID: tokenJSON(c.PadTokenID), BOSTokenID: tokenJSON(c.BOSTokenID),
		EOSTokenID: tokenJSON(c.EOSTokenID), UseCache: true,
	})
}
