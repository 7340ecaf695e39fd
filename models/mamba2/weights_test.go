package mamba2_test

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/mamba2go/mamba2/models/mamba2"
	"github.com/mamba2go/mamba2/safetensors"
	"github.com/stretchr/testify/require"
	"gorgonia.org/tensor"
)

// fileTensors reads every tensor of a golden model.safetensors as float32.
func fileTensors(t *testing.T, path string) map[string][]float32 {
	t.Helper()
	f, err := safetensors.Open(path)
	require.NoError(t, err)
	out := map[string][]float32{}
	for _, name := range f.Names() {
		d, _, err := f.Float32(name)
		require.NoError(t, err)
		out[name] = d
	}
	return out
}

// goldenTensors returns a golden model's tensors, in name order, ready to write.
func goldenTensors(t *testing.T, name string) []safetensors.Tensor {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(goldenModelDir(name), "model.safetensors"))
	require.NoError(t, err)
	var out []safetensors.Tensor
	for _, n := range f.Names() {
		d, shape, err := f.Float32(n)
		require.NoError(t, err)
		out = append(out, safetensors.Tensor{Name: n, Shape: shape, Data: d})
	}
	return out
}

// writeCheckpointDir writes a checkpoint directory from a config and tensors.
func writeCheckpointDir(t *testing.T, config []byte, tensors []safetensors.Tensor) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644))
	require.NoError(t, safetensors.Write(filepath.Join(dir, "model.safetensors"), tensors, map[string]string{"format": "pt"}))
	return dir
}

func goldenConfigJSON(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(goldenModelDir(name), "config.json"))
	require.NoError(t, err)
	return data
}

func requireCheckpointEqual(t *testing.T, want map[string][]float32, ck *mamba2.Checkpoint) {
	t.Helper()
	require.Len(t, ck.Tensors, len(want))
	shapes := ck.Config.ExpectedShapes()
	for name, data := range want {
		tn, ok := ck.Tensors[name]
		require.True(t, ok, name)
		require.Equal(t, shapes[name], []int(tn.Shape()), name)
		require.Equal(t, data, tn.Data().([]float32), name)
	}
}

func TestExpectedShapes(t *testing.T) {
	m := groupsConfig.ExpectedShapes()
	require.Len(t, m, 3+11*3)
	for name, want := range map[string][]int{
		"backbone.embeddings.weight":              {97, 64},
		"lm_head.weight":                          {97, 64},
		"backbone.norm_f.weight":                  {64},
		"backbone.layers.2.norm.weight":           {64},
		"backbone.layers.0.mixer.in_proj.weight":  {400, 64},
		"backbone.layers.0.mixer.in_proj.bias":    {400},
		"backbone.layers.1.mixer.conv1d.weight":   {256, 1, 4},
		"backbone.layers.1.mixer.conv1d.bias":     {256},
		"backbone.layers.1.mixer.dt_bias":         {16},
		"backbone.layers.1.mixer.A_log":           {16},
		"backbone.layers.1.mixer.D":               {16},
		"backbone.layers.1.mixer.norm.weight":     {128},
		"backbone.layers.1.mixer.out_proj.weight": {64, 128},
		"backbone.layers.1.mixer.out_proj.bias":   {64},
		"backbone.layers.2.mixer.out_proj.weight": {64, 128},
		"backbone.layers.2.mixer.in_proj.weight":  {400, 64},
		"backbone.layers.0.mixer.conv1d.weight":   {256, 1, 4},
		"backbone.layers.0.mixer.norm.weight":     {128},
		"backbone.layers.2.mixer.conv1d.bias":     {256},
		"backbone.layers.0.mixer.dt_bias":         {16},
		"backbone.layers.2.mixer.D":               {16},
		"backbone.layers.2.mixer.in_proj.bias":    {400},
		"backbone.layers.0.mixer.out_proj.bias":   {64},
		"backbone.layers.0.norm.weight":           {64},
		"backbone.layers.1.mixer.in_proj.weight":  {400, 64},
		"backbone.layers.2.mixer.A_log":           {16},
		"backbone.layers.2.mixer.norm.weight":     {128},
		"backbone.layers.2.mixer.dt_bias":         {16},
		"backbone.layers.1.norm.weight":           {64},
		"backbone.layers.0.mixer.A_log":           {16},
		"backbone.layers.0.mixer.D":               {16},
		"backbone.layers.0.mixer.conv1d.bias":     {256},
		"backbone.layers.1.mixer.in_proj.bias":    {400},
		"backbone.layers.2.mixer.out_proj.bias":   {64},
		"backbone.layers.2.mixer.conv1d.weight":   {256, 1, 4},
		"backbone.layers.0.mixer.out_proj.weight": {64, 128},
	} {
		require.Equal(t, want, m[name], name)
	}

	tied := tinyConfig.ExpectedShapes()
	require.Len(t, tied, 2+9*2)
	require.NotContains(t, tied, "lm_head.weight")
	require.NotContains(t, tied, "backbone.layers.0.mixer.in_proj.bias")
	noConvBias := tinyConfig
	noConvBias.UseConvBias = false
	require.NotContains(t, noConvBias.ExpectedShapes(), "backbone.layers.0.mixer.conv1d.bias")

	// WeightNames is sorted and matches the golden files exactly.
	for name, c := range map[string]mamba2.Config{"tiny": tinyConfig, "groups": groupsConfig} {
		names := c.WeightNames()
		require.True(t, sort.StringsAreSorted(names))
		f, err := safetensors.Open(filepath.Join(goldenModelDir(name), "model.safetensors"))
		require.NoError(t, err)
		require.Equal(t, f.Names(), names, name)
	}

	// A fresh map each call: callers may edit it.
	m["backbone.norm_f.weight"][0] = -1
	require.Equal(t, []int{64}, groupsConfig.ExpectedShapes()["backbone.norm_f.weight"])
}

func TestLoadCheckpointGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		want mamba2.Config
	}{{"tiny", tinyConfig}, {"groups", groupsConfig}} {
		t.Run(tc.name, func(t *testing.T) {
			ck, err := mamba2.LoadCheckpoint(goldenModelDir(tc.name))
			require.NoError(t, err)
			require.Equal(t, tc.want, ck.Config)
			requireCheckpointEqual(t, fileTensors(t, filepath.Join(goldenModelDir(tc.name), "model.safetensors")), ck)
			_, hasHead := ck.Tensors["lm_head.weight"]
			require.Equal(t, !tc.want.TieWordEmbeddings, hasHead)
		})
	}
}

func TestSaveCheckpointRoundTrip(t *testing.T) {
	for _, name := range []string{"tiny", "groups"} {
		ck, err := mamba2.LoadCheckpoint(goldenModelDir(name))
		require.NoError(t, err)
		dir := filepath.Join(t.TempDir(), "new", name)
		require.NoError(t, mamba2.SaveCheckpoint(dir, ck))
		back, err := mamba2.LoadCheckpoint(dir)
		require.NoError(t, err)
		require.Equal(t, ck.Config, back.Config)
		want := map[string][]float32{}
		for n, tn := range ck.Tensors {
			want[n] = tn.Data().([]float32)
		}
		requireCheckpointEqual(t, want, back)
		f, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
		require.NoError(t, err)
		require.Equal(t, "pt", f.Metadata()["format"])
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Len(t, entries, 2, "config.json and model.safetensors only")
	}

	// A random configuration with grouped norm and no conv bias survives too (Layout becomes hf).
	c := tinyConfig
	c.NGroups, c.GroupedNorm, c.UseConvBias, c.TieWordEmbeddings, c.Layout = 2, true, false, false, mamba2.LayoutMambaSSM
	ck, err := mamba2.RandomCheckpoint(c, 7)
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, mamba2.SaveCheckpoint(dir, ck))
	back, err := mamba2.LoadCheckpoint(dir)
	require.NoError(t, err)
	c.Layout = mamba2.LayoutHF
	require.Equal(t, c, back.Config)
	require.Equal(t, ck.Tensors["lm_head.weight"].Data(), back.Tensors["lm_head.weight"].Data())
}

func TestSaveCheckpointErrors(t *testing.T) {
	base, err := mamba2.LoadCheckpoint(goldenModelDir("tiny"))
	require.NoError(t, err)
	clone := func() *mamba2.Checkpoint {
		ck := &mamba2.Checkpoint{Config: base.Config, Tensors: map[string]*tensor.Dense{}}
		for n, tn := range base.Tensors {
			ck.Tensors[n] = tn
		}
		return ck
	}
	for _, tc := range []struct {
		name string
		edit func(ck *mamba2.Checkpoint)
		want string
	}{
		{"nil", nil, "nil checkpoint"},
		{"invalid config", func(ck *mamba2.Checkpoint) { ck.Config.NGroups = 3 }, "n_groups"},
		{"missing", func(ck *mamba2.Checkpoint) { delete(ck.Tensors, "backbone.norm_f.weight") }, "no tensor backbone.norm_f.weight"},
		{"extra", func(ck *mamba2.Checkpoint) {
			ck.Tensors["backbone.layers.9.norm.weight"] = ck.Tensors["backbone.norm_f.weight"]
		}, "unexpected tensor backbone.layers.9.norm.weight"},
		{"shape", func(ck *mamba2.Checkpoint) {
			ck.Tensors["backbone.norm_f.weight"] = tensor.New(tensor.WithShape(2, 32), tensor.WithBacking(make([]float32, 64)))
		}, "tensor backbone.norm_f.weight: checkpoint has [2 32], config expects [64]"},
		{"dtype", func(ck *mamba2.Checkpoint) {
			ck.Tensors["backbone.norm_f.weight"] = tensor.New(tensor.WithShape(64), tensor.WithBacking(make([]int64, 64)))
		}, "backbone.norm_f.weight"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ck *mamba2.Checkpoint
			if tc.edit != nil {
				ck = clone()
				tc.edit(ck)
			}
			dir := filepath.Join(t.TempDir(), "out")
			require.ErrorContains(t, mamba2.SaveCheckpoint(dir, ck), tc.want)
			_, err := os.Stat(dir)
			require.True(t, os.IsNotExist(err), "nothing written")
		})
	}
	// A tied checkpoint carrying lm_head.weight anyway saves without it.
	ck := clone()
	ck.Tensors["lm_head.weight"] = ck.Tensors["backbone.embeddings.weight"]
	dir := t.TempDir()
	require.NoError(t, mamba2.SaveCheckpoint(dir, ck))
	f, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
	require.NoError(t, err)
	_, ok := f.Info("lm_head.weight")
	require.False(t, ok)
}

func TestLoadCheckpointSharded(t *testing.T) {
	want, err := mamba2.LoadCheckpoint(goldenModelDir("groups"))
	require.NoError(t, err)
	tensors := goldenTensors(t, "groups")
	config := goldenConfigJSON(t, "groups")

	// shardDir splits the tensors over two shard files by layer and writes the index.
	shardDir := func(t *testing.T, edit func(weightMap map[string]string)) string {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644))
		files := map[string][]safetensors.Tensor{}
		weightMap := map[string]string{}
		for _, tn := range tensors {
			file := "model-00001-of-00002.safetensors"
			if strings.HasPrefix(tn.Name, "backbone.layers.2.") || !strings.HasPrefix(tn.Name, "backbone.layers.") {
				file = "model-00002-of-00002.safetensors"
			}
			files[file] = append(files[file], tn)
			weightMap[tn.Name] = file
		}
		for file, ts := range files {
			require.NoError(t, safetensors.Write(filepath.Join(dir, file), ts, map[string]string{"format": "pt"}))
		}
		if edit != nil {
			edit(weightMap)
		}
		index, err := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 479232}, "weight_map": weightMap})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), index, 0o644))
		return dir
	}

	ck, err := mamba2.LoadCheckpoint(shardDir(t, nil))
	require.NoError(t, err)
	require.Equal(t, want.Config, ck.Config)
	wantData := map[string][]float32{}
	for n, tn := range want.Tensors {
		wantData[n] = tn.Data().([]float32)
	}
	requireCheckpointEqual(t, wantData, ck)

	for _, tc := range []struct {
		name string
		edit func(m map[string]string)
		want []string
	}{
		{"missing shard", func(m map[string]string) { m["lm_head.weight"] = "model-00003-of-00003.safetensors" },
			[]string{"model-00003-of-00003.safetensors", "is missing", "lm_head.weight"}},
		{"wrong shard", func(m map[string]string) { m["lm_head.weight"] = "model-00001-of-00002.safetensors" },
			[]string{"model-00001-of-00002.safetensors", "tensor lm_head.weight", "does not hold it"}},
		{"unmapped tensor", func(m map[string]string) { delete(m, "lm_head.weight") },
			[]string{"model.safetensors.index.json", "missing tensor lm_head.weight"}},
		{"unexpected in index", func(m map[string]string) { m["extra.weight"] = "model-00001-of-00002.safetensors" },
			[]string{"model.safetensors.index.json", "unexpected tensor extra.weight"}},
		{"escaping path", func(m map[string]string) { m["lm_head.weight"] = "../elsewhere.safetensors" },
			[]string{"tensor lm_head.weight", `"../elsewhere.safetensors" is not a file inside`}},
		{"empty", func(m map[string]string) {
			for k := range m {
				delete(m, k)
			}
		}, []string{"empty or missing weight_map"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadBoth(t, shardDir(t, tc.edit))
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}

	// A shard holding a tensor the index maps elsewhere.
	dir := shardDir(t, nil)
	extra := append(goldenTensors(t, "groups")[:0:0], tensors...)
	require.NoError(t, safetensors.Write(filepath.Join(dir, "model-00001-of-00002.safetensors"), extra, nil))
	err = loadBoth(t, dir)
	require.ErrorContains(t, err, "is not mapped to this file by the index")

	// A corrupt index.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), []byte("{"), 0o644))
	err = loadBoth(t, dir)
	require.ErrorContains(t, err, "model.safetensors.index.json")
}

func TestLoadCheckpointHalfPrecision(t *testing.T) {
	for _, dtype := range []string{safetensors.BF16, safetensors.F16, safetensors.F64} {
		t.Run(dtype, func(t *testing.T) {
			tensors := goldenTensors(t, "tiny")
			want := map[string][]float32{}
			for i := range tensors {
				tensors[i].DType = dtype
				d := tensors[i].Data.([]float32)
				w := make([]float32, len(d))
				for j, v := range d {
					switch dtype {
					case safetensors.BF16:
						w[j] = safetensors.BF16ToFloat32(safetensors.Float32ToBF16(v))
					case safetensors.F16:
						w[j] = safetensors.F16ToFloat32(safetensors.Float32ToF16(v))
					default:
						w[j] = v
					}
				}
				want[tensors[i].Name] = w
			}
			dir := writeCheckpointDir(t, goldenConfigJSON(t, "tiny"), tensors)
			ck, err := mamba2.LoadCheckpoint(dir)
			require.NoError(t, err)
			requireCheckpointEqual(t, want, ck)
			if dtype == safetensors.BF16 {
				// bfloat16 keeps 8 significant bits: the weights moved, but little.
				d0 := ck.Tensors["backbone.embeddings.weight"].Data().([]float32)
				orig := tensors[0].Data.([]float32)
				for i := range d0 {
					require.InDelta(t, orig[i], d0[i], math.Abs(float64(orig[i]))/128+1e-30)
				}
			}
		})
	}
}

func TestLoadCheckpointMambaSSM(t *testing.T) {
	config := []byte(`{"d_model": 64, "d_intermediate": 0, "n_layer": 2, "vocab_size": 90,
		"ssm_cfg": {"layer": "Mamba2", "d_state": 16, "headdim": 16, "ngroups": 2, "chunk_size": 8},
		"attn_layer_idx": [], "attn_cfg": {}, "rms_norm": true, "residual_in_fp32": true,
		"fused_add_norm": true, "pad_vocab_size_multiple": 16, "tie_embeddings": true}`)
	c, err := mamba2.ParseConfig(config)
	require.NoError(t, err)
	require.Equal(t, 96, c.VocabSize)
	ck, err := mamba2.RandomCheckpoint(c, 3)
	require.NoError(t, err)
	var tensors []safetensors.Tensor
	for _, name := range c.WeightNames() {
		fileName := name
		if name == "backbone.embeddings.weight" {
			fileName = "backbone.embedding.weight"
		}
		tn := ck.Tensors[name]
		tensors = append(tensors, safetensors.Tensor{Name: fileName, Shape: tn.Shape(), Data: tn.Data()})
	}
	// mamba_ssm state dicts of tied models carry lm_head.weight as well: it is ignored.
	tensors = append(tensors, safetensors.Tensor{Name: "lm_head.weight", Shape: []int{96, 64}, Data: make([]float32, 96*64)})
	back, err := mamba2.LoadCheckpoint(writeCheckpointDir(t, config, tensors))
	require.NoError(t, err)
	require.Equal(t, c, back.Config)
	require.Equal(t, mamba2.LayoutMambaSSM, back.Config.Layout)
	require.True(t, back.Config.GroupedNorm)
	want := map[string][]float32{}
	for n, tn := range ck.Tensors {
		want[n] = tn.Data().([]float32)
	}
	requireCheckpointEqual(t, want, back)

	// Both spellings of the embeddings at once are refused.
	both := append(tensors, safetensors.Tensor{Name: "backbone.embeddings.weight", Shape: []int{96, 64}, Data: make([]float32, 96*64)})
	err = loadBoth(t, writeCheckpointDir(t, config, both))
	require.ErrorContains(t, err, "are the same weight")
}

func TestLoadCheckpointErrors(t *testing.T) {
	tiny := goldenTensors(t, "tiny")
	tinyCfg := goldenConfigJSON(t, "tiny")
	withLayers := func(n int) []byte { return tinyJSON(t, map[string]any{"num_hidden_layers": n}) }
	replace := func(name string, tn safetensors.Tensor) []safetensors.Tensor {
		out := append([]safetensors.Tensor(nil), tiny...)
		for i := range out {
			if out[i].Name == name {
				out[i] = tn
			}
		}
		return out
	}
	const inProj = "backbone.layers.0.mixer.in_proj.weight"
	for _, tc := range []struct {
		name    string
		config  []byte
		tensors []safetensors.Tensor
		want    []string
	}{
		{"config has more layers", withLayers(3), tiny,
			[]string{"model.safetensors: missing tensor backbone.layers.2.mixer.A_log (and 8 more)", "config: 3 layers"}},
		{"config has fewer layers", withLayers(1), tiny,
			[]string{"model.safetensors: unexpected tensor backbone.layers.1.mixer.A_log (and 8 more)"}},
		{"unexpected tensor", tinyCfg, append(append([]safetensors.Tensor(nil), tiny...),
			safetensors.Tensor{Name: "extra", Shape: []int{1}, Data: []float32{1}}),
			[]string{"unexpected tensor extra"}},
		{"untied config, tied weights", tinyJSON(t, map[string]any{"tie_word_embeddings": false}), tiny,
			[]string{"missing tensor lm_head.weight", "tie_word_embeddings=false"}},
		{"misshaped", tinyCfg, replace(inProj, safetensors.Tensor{Name: inProj, Shape: []int{295, 64}, Data: make([]float32, 295*64)}),
			[]string{"model.safetensors: tensor " + inProj + ": file has [295 64], config expects [296 64]"}},
		{"groups config, tiny weights", goldenConfigJSON(t, "groups"), tiny,
			[]string{"missing tensor backbone.layers.0.mixer.in_proj.bias"}},
		{"integer weights", tinyCfg, replace(inProj, safetensors.Tensor{Name: inProj, Shape: []int{296, 64}, Data: make([]int64, 296*64)}),
			[]string{"tensor " + inProj + ": dtype I64 is not a floating-point type"}},
		{"bad config", tinyJSON(t, map[string]any{"n_groups": 3}), tiny,
			[]string{"config.json", "n_groups"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeCheckpointDir(t, tc.config, tc.tensors)
			err := loadBoth(t, dir)
			require.Error(t, err)
			require.ErrorContains(t, err, dir)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}

	t.Run("truncated file", func(t *testing.T) {
		dir := writeCheckpointDir(t, tinyCfg, tiny)
		path := filepath.Join(dir, "model.safetensors")
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, data[:len(data)-100], 0o644))
		err = loadBoth(t, dir)
		require.ErrorContains(t, err, path)
		require.ErrorContains(t, err, "backbone.norm_f.weight", "the last tensor runs past the end")
	})
	t.Run("no config", func(t *testing.T) {
		dir := writeCheckpointDir(t, tinyCfg, tiny)
		require.NoError(t, os.Remove(filepath.Join(dir, "config.json")))
		err := loadBoth(t, dir)
		require.ErrorContains(t, err, filepath.Join(dir, "config.json"))
	})
	t.Run("no weights", func(t *testing.T) {
		dir := writeCheckpointDir(t, tinyCfg, tiny)
		require.NoError(t, os.Remove(filepath.Join(dir, "model.safetensors")))
		err := loadBoth(t, dir)
		require.ErrorContains(t, err, fmt.Sprintf("%s: no model.safetensors or model.safetensors.index.json", dir))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), []byte("pickle"), 0o644))
		err = loadBoth(t, dir)
		require.ErrorContains(t, err, "pytorch_model.bin (a PyTorch pickle)")
	})
}

// TestLoadCheckpointShuffled checks that the tensor order inside a file does not matter.
func TestLoadCheckpointShuffled(t *testing.T) {
	tensors := goldenTensors(t, "groups")
	rand.New(rand.NewPCG(5, 5)).Shuffle(len(tensors), func(i, j int) { tensors[i], tensors[j] = tensors[j], tensors[i] })
	ck, err := mamba2.LoadCheckpoint(writeCheckpointDir(t, goldenConfigJSON(t, "groups"), tensors))
	require.NoError(t, err)
	requireCheckpointEqual(t, fileTensors(t, filepath.Join(goldenModelDir("groups"), "model.safetensors")), ck)
}
