package mamba2_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamba2go/mamba2/models/mamba2"
	"github.com/stretchr/testify/require"
)

// goldenModelDir is the folder of a Hugging Face golden case.
func goldenModelDir(name string) string {
	return filepath.Join("..", "..", "testdata", "hf-mamba2", name)
}

// tinyConfig is testdata/hf-mamba2/tiny/config.json.
var tinyConfig = mamba2.Config{
	VocabSize: 97, HiddenSize: 64, StateSize: 16, NumHiddenLayers: 2, Expand: 2, ConvKernel: 4,
	NGroups: 1, HeadDim: 16, NumHeads: 8, ChunkSize: 8, TimeStepRank: 4,
	UseBias: false, UseConvBias: true, TieWordEmbeddings: true, RMSNorm: true, ResidualInFP32: true,
	LayerNormEpsilon: 1e-5, TimeStepMin: 0.001, TimeStepMax: 0.1, TimeStepFloor: 1e-4,
	InitializerRange: 0.1, TimeStepLimit: [2]float64{0, math.Inf(1)}, HiddenAct: "silu",
	PadTokenID: 1, BOSTokenID: 0, EOSTokenID: 2, Layout: mamba2.LayoutHF,
}

// groupsConfig is testdata/hf-mamba2/groups/config.json.
var groupsConfig = func() mamba2.Config {
	c := tinyConfig
	c.StateSize, c.NumHiddenLayers, c.NGroups, c.HeadDim, c.NumHeads, c.ChunkSize = 32, 3, 2, 8, 16, 16
	c.UseBias, c.TieWordEmbeddings = true, false
	return c
}()

func TestLoadConfigGolden(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		want                          mamba2.Config
		intermediate, convDim, inProj int
	}{
		{"tiny", tinyConfig, 128, 160, 296},
		{"groups", groupsConfig, 128, 256, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := mamba2.LoadConfig(filepath.Join(goldenModelDir(tc.name), "config.json"))
			require.NoError(t, err)
			require.Equal(t, tc.want, c)
			require.Equal(t, tc.intermediate, c.IntermediateSize())
			require.Equal(t, tc.convDim, c.ConvDim())
			require.Equal(t, tc.inProj, c.InProjSize())
		})
	}
}

func TestLoadConfig130m(t *testing.T) {
	c, err := mamba2.LoadConfig(filepath.Join("..", "..", "testdata", "configs", "mamba2-130m.json"))
	require.NoError(t, err)
	require.Equal(t, 50288, c.VocabSize)
	require.Equal(t, 768, c.HiddenSize)
	require.Equal(t, 24, c.NumHiddenLayers)
	require.Equal(t, 24, c.NumHeads)
	require.Equal(t, 64, c.HeadDim)
	require.Equal(t, 1536, c.IntermediateSize())
	require.Equal(t, 1792, c.ConvDim())
	require.Equal(t, 3352, c.InProjSize())
	require.Equal(t, 48, c.TimeStepRank, `absent time_step_rank is "auto": ceil(768/16)`)
	require.True(t, c.TieWordEmbeddings)
	require.Equal(t, [2]float64{0, math.Inf(1)}, c.TimeStepLimit)
	require.Equal(t, 0, c.PadTokenID)
	require.Equal(t, []int{3352, 768}, c.ExpectedShapes()["backbone.layers.23.mixer.in_proj.weight"])
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := mamba2.ParseConfig([]byte(`{}`))
	require.NoError(t, err)
	require.Equal(t, mamba2.Config{
		VocabSize: 32768, HiddenSize: 4096, StateSize: 128, NumHiddenLayers: 64, Expand: 2, ConvKernel: 4,
		NGroups: 8, HeadDim: 64, NumHeads: 128, ChunkSize: 256, TimeStepRank: 256,
		UseBias: false, UseConvBias: true, TieWordEmbeddings: false, RMSNorm: true, ResidualInFP32: true,
		LayerNormEpsilon: 1e-5, TimeStepMin: 0.001, TimeStepMax: 0.1, TimeStepFloor: 1e-4,
		InitializerRange: 0.1, TimeStepLimit: [2]float64{0, math.Inf(1)}, HiddenAct: "silu",
		PadTokenID: 1, BOSTokenID: 0, EOSTokenID: 2, Layout: mamba2.LayoutHF,
	}, c)
}

// tinyJSON returns the tiny config with some keys replaced by raw JSON values (nil deletes).
func tinyJSON(t *testing.T, edits map[string]any) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(goldenModelDir("tiny"), "config.json"))
	require.NoError(t, err)
	s := strings.Replace(string(data), "Infinity", `{"__float__": "Infinity"}`, 1)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &m))
	for k, v := range edits {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	out, err := json.Marshal(m)
	require.NoError(t, err)
	return out
}

func TestParseConfigSpellings(t *testing.T) {
	inf := math.Inf(1)
	for _, tc := range []struct {
		name  string
		json  string
		limit [2]float64
	}{
		{"bare Infinity", `{"time_step_limit": [0.0, Infinity]}`, [2]float64{0, inf}},
		{"bare -Infinity", `{"time_step_limit": [-Infinity,Infinity]}`, [2]float64{math.Inf(-1), inf}},
		{"__float__ object", `{"time_step_limit": [0.0, {"__float__": "Infinity"}]}`, [2]float64{0, inf}},
		{"__float__ negative", `{"time_step_limit": [{"__float__": "-Infinity"}, 1]}`, [2]float64{math.Inf(-1), 1}},
		{"finite", `{"time_step_limit": [0.001, 0.5]}`, [2]float64{0.001, 0.5}},
		{"null is the default", `{"time_step_limit": null}`, [2]float64{0, inf}},
		{"Infinity inside strings is left alone", `{"note": "Infinity, NaN \" Infinity", "time_step_limit": [0, 2]}`, [2]float64{0, 2}},
		{"key named Infinity", `{"Infinity": Infinity, "time_step_limit": [0, 2]}`, [2]float64{0, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := mamba2.ParseConfig([]byte(tc.json))
			require.NoError(t, err)
			require.Equal(t, tc.limit, c.TimeStepLimit)
		})
	}

	// Other tolerated spellings: integral floats, token ids as null or lists, "auto" rank.
	c, err := mamba2.ParseConfig(tinyJSON(t, map[string]any{
		"hidden_size": 64.0, "pad_token_id": nil, "eos_token_id": []int{5, 6}, "bos_token_id": nil,
		"time_step_rank": "auto", "unknown_key": map[string]any{"x": 1},
	}))
	require.NoError(t, err)
	require.Equal(t, 64, c.HiddenSize)
	require.Equal(t, 1, c.PadTokenID, "absent: the default")
	require.Equal(t, 5, c.EOSTokenID)
	require.Equal(t, 4, c.TimeStepRank)
	c, err = mamba2.ParseConfig([]byte(`{"pad_token_id": null}`))
	require.NoError(t, err)
	require.Equal(t, -1, c.PadTokenID, "null: none")
}

func TestParseConfigMambaSSM(t *testing.T) {
	// The real state-spaces/mamba2-130m config.json.
	real130m := `{"d_model": 768, "d_intermediate": 0, "n_layer": 24, "vocab_size": 50277,
		"ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": true,
		"residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 16,
		"tie_embeddings": true}`
	c, err := mamba2.ParseConfig([]byte(real130m))
	require.NoError(t, err)
	require.Equal(t, mamba2.Config{
		VocabSize: 50288, HiddenSize: 768, StateSize: 128, NumHiddenLayers: 24, Expand: 2, ConvKernel: 4,
		NGroups: 1, HeadDim: 64, NumHeads: 24, ChunkSize: 256, TimeStepRank: 48,
		UseConvBias: true, TieWordEmbeddings: true, RMSNorm: true, ResidualInFP32: true,
		LayerNormEpsilon: 1e-5, TimeStepMin: 0.001, TimeStepMax: 0.1, TimeStepFloor: 1e-4,
		InitializerRange: 0.02, TimeStepLimit: [2]float64{0, math.Inf(1)}, HiddenAct: "silu",
		GroupedNorm: true, Layout: mamba2.LayoutMambaSSM,
	}, c)

	// Every ssm_cfg key is read.
	c, err = mamba2.ParseConfig([]byte(`{"d_model": 64, "n_layer": 3, "vocab_size": 100,
		"pad_vocab_size_multiple": 8, "tie_embeddings": false, "residual_in_fp32": false,
		"ssm_cfg": {"layer": "Mamba2", "d_state": 16, "d_conv": 3, "expand": 2, "headdim": 32,
		"ngroups": 2, "chunk_size": 64, "rmsnorm": true, "norm_before_gate": false,
		"dt_min": 0.002, "dt_max": 0.2, "dt_init_floor": 0.0002, "dt_limit": [0.0, Infinity],
		"bias": true, "conv_bias": false, "d_ssm": 128, "A_init_range": [1, 16]}}`))
	require.NoError(t, err)
	require.Equal(t, 104, c.VocabSize)
	require.Equal(t, 4, c.NumHeads)
	require.Equal(t, 32, c.HeadDim)
	require.Equal(t, 2, c.NGroups)
	require.Equal(t, 16, c.StateSize)
	require.Equal(t, 3, c.ConvKernel)
	require.Equal(t, 64, c.ChunkSize)
	require.Equal(t, 0.002, c.TimeStepMin)
	require.Equal(t, 0.2, c.TimeStepMax)
	require.Equal(t, 0.0002, c.TimeStepFloor)
	require.True(t, c.UseBias)
	require.False(t, c.UseConvBias)
	require.False(t, c.TieWordEmbeddings)
	require.False(t, c.ResidualInFP32)
	require.Equal(t, 3, c.NumHiddenLayers)

	for _, tc := range []struct {
		name, json, want string
	}{
		{"mamba1", `{"d_model": 64}`, `ssm_cfg.layer "Mamba1" is not supported`},
		{"mlp", `{"d_model": 64, "d_intermediate": 128, "ssm_cfg": {"layer": "Mamba2"}}`, "d_intermediate"},
		{"attention", `{"d_model": 64, "attn_layer_idx": [1], "ssm_cfg": {"layer": "Mamba2"}}`, "attn_layer_idx"},
		{"no gated norm", `{"d_model": 64, "ssm_cfg": {"layer": "Mamba2", "rmsnorm": false}}`, "ssm_cfg.rmsnorm"},
		{"layer norm", `{"d_model": 64, "rms_norm": false, "ssm_cfg": {"layer": "Mamba2"}}`, "rms_norm"},
		{"norm before gate", `{"d_model": 64, "ssm_cfg": {"layer": "Mamba2", "norm_before_gate": true}}`, "norm_before_gate"},
		{"D_has_hdim", `{"d_model": 64, "ssm_cfg": {"layer": "Mamba2", "D_has_hdim": true}}`, "D_has_hdim"},
		{"d_ssm", `{"d_model": 64, "ssm_cfg": {"layer": "Mamba2", "d_ssm": 64}}`, "ssm_cfg.d_ssm"},
		{"headdim", `{"d_model": 48, "ssm_cfg": {"layer": "Mamba2"}}`, "ssm_cfg.headdim (64) must divide expand*d_model (2*48=96)"},
		{"zero d_model", `{"d_model": 0, "ssm_cfg": {"layer": "Mamba2"}}`, "d_model"},
		{"pad multiple", `{"d_model": 64, "pad_vocab_size_multiple": 0, "ssm_cfg": {"layer": "Mamba2"}}`, "pad_vocab_size_multiple"},
		{"bad ssm_cfg", `{"d_model": 64, "ssm_cfg": [1]}`, "ssm_cfg"},
		{"bad d_state", `{"d_model": 64, "ssm_cfg": {"layer": "Mamba2", "d_state": "big"}}`, "ssm_cfg.d_state"},
		{"groups", `{"d_model": 64, "ssm_cfg": {"layer": "Mamba2", "ngroups": 3}}`, "n_groups"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mamba2.ParseConfig([]byte(tc.json))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestParseConfigInvalid(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edits map[string]any
		want  string
	}{
		{"heads*head_dim", map[string]any{"num_heads": 6}, "config: num_heads*head_dim (6*16=96) must equal expand*hidden_size (2*64=128)"},
		{"groups", map[string]any{"n_groups": 3}, "num_heads (8) must be a multiple of n_groups (3)"},
		{"zero vocab", map[string]any{"vocab_size": 0}, "vocab_size must be at least 1"},
		{"negative hidden", map[string]any{"hidden_size": -64}, "hidden_size must be at least 1"},
		{"zero state", map[string]any{"state_size": 0}, "state_size"},
		{"zero layers", map[string]any{"num_hidden_layers": 0}, "num_hidden_layers"},
		{"zero expand", map[string]any{"expand": 0}, "expand"},
		{"zero conv", map[string]any{"conv_kernel": 0}, "conv_kernel must be at least 1"},
		{"zero groups", map[string]any{"n_groups": 0}, "n_groups must be at least 1"},
		{"zero head_dim", map[string]any{"head_dim": 0}, "head_dim"},
		{"zero chunk", map[string]any{"chunk_size": 0}, "chunk_size must be at least 1"},
		{"negative rank", map[string]any{"time_step_rank": -1}, "time_step_rank"},
		{"huge", map[string]any{"vocab_size": 1 << 50}, "vocab_size = 1125899906842624 is too large"},
		{"huge product", map[string]any{"vocab_size": 1 << 39, "hidden_size": 1 << 20, "num_heads": 1 << 17}, "vocab_size*hidden_size is too large"},
		{"limit reversed", map[string]any{"time_step_limit": []float64{1, 0.5}}, "time_step_limit [1, 0.5]"},
		{"limit NaN", map[string]any{"time_step_limit": []any{0, map[string]string{"__float__": "NaN"}}}, "time_step_limit"},
		{"limit length", map[string]any{"time_step_limit": []float64{1}}, "time_step_limit: want a list of 2 numbers"},
		{"limit junk", map[string]any{"time_step_limit": []any{0, "lots"}}, "time_step_limit"},
		{"zero eps", map[string]any{"layer_norm_epsilon": 0}, "layer_norm_epsilon must be positive"},
		{"act", map[string]any{"hidden_act": "gelu"}, `hidden_act "gelu" is not supported: only "silu" is`},
		{"int type", map[string]any{"num_heads": "eight"}, `config: num_heads: want an integer, got "eight"`},
		{"fractional int", map[string]any{"num_heads": 8.5}, "num_heads: want an integer"},
		{"bool type", map[string]any{"use_bias": "yes"}, "use_bias: want true or false"},
		{"float type", map[string]any{"layer_norm_epsilon": "small"}, "layer_norm_epsilon: want a number"},
		{"string type", map[string]any{"hidden_act": 3}, "hidden_act: want a string"},
		{"token type", map[string]any{"eos_token_id": "x"}, "eos_token_id: want a token id"},
		{"model type", map[string]any{"model_type": "mamba"}, `model_type "mamba" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mamba2.ParseConfig(tinyJSON(t, tc.edits))
			require.ErrorContains(t, err, tc.want)
		})
	}
	for _, bad := range []string{``, `[]`, `null`, `{"a": }`, `{"time_step_limit": [0, Infinityy]}`} {
		_, err := mamba2.ParseConfig([]byte(bad))
		require.ErrorContains(t, err, "config: ", bad)
	}

	// LoadConfig names the file.
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	require.NoError(t, os.WriteFile(path, tinyJSON(t, map[string]any{"n_groups": 3}), 0o644))
	_, err := mamba2.LoadConfig(path)
	require.ErrorContains(t, err, path)
	require.ErrorContains(t, err, "n_groups")
	_, err = mamba2.LoadConfig(filepath.Join(dir, "absent.json"))
	require.ErrorContains(t, err, "absent.json")
}

func TestValidateLayout(t *testing.T) {
	c := tinyConfig
	c.Layout = ""
	require.NoError(t, c.Validate(), `"" means hf`)
	c.Layout = "onnx"
	require.ErrorContains(t, c.Validate(), `layout "onnx"`)
	c.Layout = mamba2.LayoutHF
	c.NormBeforeGate, c.RMSNorm = true, false
	require.NoError(t, c.Validate(), "Hugging Face ignores norm_before_gate and rms_norm")
	c.HiddenAct = "swish"
	require.NoError(t, c.Validate())
}

func TestConfigMarshalRoundTrip(t *testing.T) {
	ssm := tinyConfig
	ssm.Layout, ssm.GroupedNorm, ssm.NGroups = mamba2.LayoutMambaSSM, true, 2
	finite := groupsConfig
	finite.TimeStepLimit = [2]float64{0.01, 2.5}
	finite.PadTokenID = -1
	for _, c := range []mamba2.Config{tinyConfig, groupsConfig, ssm, finite} {
		data, err := json.MarshalIndent(c, "", "  ")
		require.NoError(t, err)
		if math.IsInf(c.TimeStepLimit[1], 1) {
			require.Contains(t, string(data), `"__float__": "Infinity"`)
			require.Equal(t, 1, strings.Count(string(data), "Infinity"))
			require.Equal(t, 1, strings.Count(string(data), `"Infinity"`), "no bare token")
		}
		back, err := mamba2.ParseConfig(data)
		require.NoError(t, err, string(data))
		want := c
		want.Layout = mamba2.LayoutHF
		require.Equal(t, want, back, string(data))
		require.Equal(t, c.Fingerprint(), back.Fingerprint())
	}
	data, err := json.Marshal(tinyConfig)
	require.NoError(t, err)
	require.Contains(t, string(data), `"model_type":"mamba2"`)
	require.Contains(t, string(data), `"architectures":["Mamba2ForCausalLM"]`)
	require.NotContains(t, string(data), "grouped_norm")
}

func TestFingerprint(t *testing.T) {
	base := tinyConfig.Fingerprint()
	require.Len(t, base, 32)
	require.Equal(t, "7b0e98e8b5f810fb1b8c4ae09923129b", base, "the fingerprint of a fixed config must never change")

	same := tinyConfig
	same.TimeStepMin, same.TimeStepMax, same.TimeStepFloor, same.InitializerRange = 1, 2, 3, 4
	same.PadTokenID, same.BOSTokenID, same.EOSTokenID, same.TimeStepRank = 7, 8, 9, 10
	same.RescalePrenormResidual, same.ChunkSize, same.Layout = true, 64, mamba2.LayoutMambaSSM
	require.Equal(t, base, same.Fingerprint(), "initialisation, tokens, chunking and layout do not change the function")

	seen := map[string]string{base: "base"}
	for name, edit := range map[string]func(c *mamba2.Config){
		"vocab":     func(c *mamba2.Config) { c.VocabSize++ },
		"hidden":    func(c *mamba2.Config) { c.HiddenSize++ },
		"state":     func(c *mamba2.Config) { c.StateSize++ },
		"layers":    func(c *mamba2.Config) { c.NumHiddenLayers++ },
		"expand":    func(c *mamba2.Config) { c.Expand++ },
		"conv":      func(c *mamba2.Config) { c.ConvKernel++ },
		"groups":    func(c *mamba2.Config) { c.NGroups++ },
		"head_dim":  func(c *mamba2.Config) { c.HeadDim++ },
		"heads":     func(c *mamba2.Config) { c.NumHeads++ },
		"bias":      func(c *mamba2.Config) { c.UseBias = true },
		"conv bias": func(c *mamba2.Config) { c.UseConvBias = false },
		"tied":      func(c *mamba2.Config) { c.TieWordEmbeddings = false },
		"rms":       func(c *mamba2.Config) { c.RMSNorm = false },
		"residual":  func(c *mamba2.Config) { c.ResidualInFP32 = false },
		"gate":      func(c *mamba2.Config) { c.NormBeforeGate = true },
		"grouped":   func(c *mamba2.Config) { c.GroupedNorm = true },
		"eps":       func(c *mamba2.Config) { c.LayerNormEpsilon = 1e-6 },
		"limit lo":  func(c *mamba2.Config) { c.TimeStepLimit[0] = 0.001 },
		"limit hi":  func(c *mamba2.Config) { c.TimeStepLimit[1] = 10 },
		"act":       func(c *mamba2.Config) { c.HiddenAct = "swish" },
	} {
		c := tinyConfig
		edit(&c)
		fp := c.Fingerprint()
		require.NotContains(t, seen, fp, "%s collides with %s", name, seen[fp])
		seen[fp] = name
	}
}
