package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamba2go/mamba2/safetensors"
	"github.com/stretchr/testify/require"
)

var tinyDir = filepath.Join("..", "..", "testdata", "hf-mamba2", "tiny")

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func readF32(t *testing.T, path, name string) ([]float32, []int) {
	t.Helper()
	f, err := safetensors.Open(path)
	require.NoError(t, err)
	d, s, err := f.Float32(name)
	require.NoError(t, err, name)
	return d, s
}

func maxAbs(a, b []float32) float64 {
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

func TestLogitsMatchesGolden(t *testing.T) {
	golden := filepath.Join(tinyDir, "case.safetensors")
	for _, sched := range []string{"", "13,1,1,1,1,1,1,1,1", "2,3,1,15"} {
		out := filepath.Join(t.TempDir(), "out.safetensors")
		args := []string{"logits", "--model", tinyDir, "--input", golden, "--out", out}
		if sched != "" {
			args = append(args, "--schedule", sched)
		}
		code, _, stderr := runCLI(args...)
		require.Equal(t, 0, code, stderr)
		for _, pair := range [][2]string{{"logits", "logits_full"}, {"hidden", "hidden_full"}, {"conv_state", "conv_state"}, {"ssm_state", "ssm_state"}} {
			got, gs := readF32(t, out, pair[0])
			want, ws := readF32(t, golden, pair[1])
			require.Equal(t, ws, gs, pair[0])
			require.LessOrEqual(t, maxAbs(got, want), 1e-4, "%s (schedule %q)", pair[0], sched)
		}
	}
}

// TestLogitsQuantizedWeights: --weights runs the same command with 16- and 8-bit matrices; the
// logits stay near the float32 ones (the bounds of models/mamba2's TestQuantizedWeights).
func TestLogitsQuantizedWeights(t *testing.T) {
	golden := filepath.Join(tinyDir, "case.safetensors")
	want, _ := readF32(t, golden, "logits_full")
	for _, tc := range []struct {
		format string
		tol    float64
	}{{"bf16", 0.1}, {"f16", 0.02}, {"int8", 0.35}} {
		out := filepath.Join(t.TempDir(), "out.safetensors")
		code, _, stderr := runCLI("logits", "--model", tinyDir, "--input", golden, "--out", out, "--weights", tc.format, "--schedule", "13,1,1,1,1,1,1,1,1")
		require.Equal(t, 0, code, stderr)
		got, _ := readF32(t, out, "logits")
		d := maxAbs(got, want)
		require.LessOrEqual(t, d, tc.tol, tc.format)
		require.Greater(t, d, 0.0, "%s weights gave float32's logits exactly: were they quantized?", tc.format)
	}
}

func TestLogitsEmbeds(t *testing.T) {
	golden := filepath.Join(tinyDir, "case.safetensors")
	out := filepath.Join(t.TempDir(), "out.safetensors")
	code, _, stderr := runCLI("logits", "--model", tinyDir, "--input", golden, "--out", out, "--embeds", "--schedule", "5,1,15")
	require.Equal(t, 0, code, stderr)
	got, _ := readF32(t, out, "logits")
	want, _ := readF32(t, golden, "logits_full_embeds")
	require.LessOrEqual(t, maxAbs(got, want), 1e-4)
}

func TestLogitsBadInput(t *testing.T) {
	dir := t.TempDir()
	golden := filepath.Join(tinyDir, "case.safetensors")
	corrupt := filepath.Join(dir, "corrupt.safetensors")
	data, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(corrupt, data[:len(data)/2], 0o644))
	badIDs := filepath.Join(dir, "bad-ids.safetensors")
	require.NoError(t, safetensors.Write(badIDs, []safetensors.Tensor{{Name: "input_ids", Shape: []int{1, 3}, Data: []int64{1, 97, 2}}}, nil))
	badRank := filepath.Join(dir, "bad-rank.safetensors")
	require.NoError(t, safetensors.Write(badRank, []safetensors.Tensor{{Name: "input_ids", Shape: []int{3}, Data: []int64{1, 2, 3}}}, nil))
	floatIDs := filepath.Join(dir, "float-ids.safetensors")
	require.NoError(t, safetensors.Write(floatIDs, []safetensors.Tensor{{Name: "input_ids", Shape: []int{1, 3}, Data: []float32{1, 2, 3}}}, nil))
	wrongModel := filepath.Join(dir, "model")
	require.NoError(t, os.MkdirAll(wrongModel, 0o755))
	cfg, err := os.ReadFile(filepath.Join(tinyDir, "config.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(wrongModel, "config.json"), bytes.Replace(cfg, []byte(`"num_hidden_layers": 2`), []byte(`"num_hidden_layers": 3`), 1), 0o644))
	w, err := os.ReadFile(filepath.Join(tinyDir, "model.safetensors"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(wrongModel, "model.safetensors"), w, 0o644))

	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"schedule sum", []string{"--input", golden, "--schedule", "13,1"}, 2, "sums to 14"},
		{"schedule junk", []string{"--input", golden, "--schedule", "13,x"}, 2, "not a positive integer"},
		{"missing input", []string{"--input", filepath.Join(dir, "nope.safetensors")}, 1, "nope.safetensors"},
		{"corrupt input", []string{"--input", corrupt}, 1, "corrupt.safetensors"},
		{"ids out of range", []string{"--input", badIDs}, 1, "outside the vocabulary"},
		{"ids rank", []string{"--input", badRank}, 1, "[B,T]"},
		{"ids dtype", []string{"--input", floatIDs}, 1, "input_ids"},
		{"missing model", []string{"--input", golden, "--model", filepath.Join(dir, "none")}, 1, "none"},
		{"config disagrees with weights", []string{"--input", golden, "--model", wrongModel}, 1, "backbone.layers.2"},
		{"unknown backend", []string{"--input", golden, "--backend", "nope"}, 1, "registered: cpu"},
		{"bad padding", []string{"--input", golden, "--padding", "middle"}, 2, "padding"},
		{"missing flag", []string{"--model", tinyDir}, 2, "--input is required"},
		{"unknown weight format", []string{"--input", golden, "--weights", "q4"}, 2, "valid: f32|float32, bf16|bfloat16"},
		{"quantized float64", []string{"--input", golden, "--weights", "int8", "--dtype", "float64"}, 2, "--weights int8 needs --dtype float32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "out-"+strings.ReplaceAll(tc.name, " ", "-")+".safetensors")
			args := append([]string{"logits", "--model", tinyDir, "--out", out}, tc.args...)
			code, _, stderr := runCLI(args...)
			require.Equal(t, tc.code, code, stderr)
			require.Contains(t, stderr, tc.msg)
			require.Equal(t, 1, strings.Count(strings.TrimSpace(stderr), "\n")+1, "one-line error: %q", stderr)
			_, err := os.Stat(out)
			require.True(t, os.IsNotExist(err), "no output file may be left behind")
		})
	}
}

func TestHelp(t *testing.T) {
	code, stdout, _ := runCLI("logits", "--help")
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "--schedule")
	code, stdout, _ = runCLI("help")
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "logits")
	code, _, stderr := runCLI("frobnicate")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "unknown command")
}

// TestLogitsRaggedMatchesSolo: with lengths in IN, every row's logits and states equal its run alone.
func TestLogitsRaggedMatchesSolo(t *testing.T) {
	golden := filepath.Join(tinyDir, "case.safetensors")
	f, err := safetensors.Open(golden)
	require.NoError(t, err)
	ids, s, err := f.Int64("input_ids")
	require.NoError(t, err)
	B, T := s[0], s[1]
	lens := []int64{21, 9}
	dir := t.TempDir()
	// Solo runs: row b cut to its length.
	solo := make([][]float32, B)
	soloSSM := make([][]float32, B)
	for b := 0; b < B; b++ {
		in := filepath.Join(dir, "solo.safetensors")
		require.NoError(t, safetensors.Write(in, []safetensors.Tensor{{Name: "input_ids", Shape: []int{1, int(lens[b])}, Data: ids[b*T : b*T+int(lens[b])]}}, nil))
		out := filepath.Join(dir, "solo-out.safetensors")
		code, _, stderr := runCLI("logits", "--model", tinyDir, "--input", in, "--out", out)
		require.Equal(t, 0, code, stderr)
		solo[b], _ = readF32(t, out, "logits")
		soloSSM[b], _ = readF32(t, out, "ssm_state")
	}
	for _, pad := range []string{"right", "left"} {
		for _, sched := range []string{"", "5,1,1,14", "10,11"} {
			padded := make([]int64, B*T)
			for b := 0; b < B; b++ {
				off := 0
				if pad == "left" {
					off = T - int(lens[b])
				}
				copy(padded[b*T+off:b*T+off+int(lens[b])], ids[b*T:b*T+int(lens[b])])
			}
			in := filepath.Join(dir, "in.safetensors")
			require.NoError(t, safetensors.Write(in, []safetensors.Tensor{
				{Name: "input_ids", Shape: []int{B, T}, Data: padded},
				{Name: "lengths", Shape: []int{B}, Data: lens},
			}, nil))
			out := filepath.Join(dir, "out.safetensors")
			args := []string{"logits", "--model", tinyDir, "--input", in, "--out", out, "--padding", pad}
			if sched != "" {
				args = append(args, "--schedule", sched)
			}
			code, _, stderr := runCLI(args...)
			require.Equal(t, 0, code, stderr)
			got, gs := readF32(t, out, "logits")
			ssm, ss := readF32(t, out, "ssm_state")
			V := gs[2]
			per := ss[2] * ss[3] * ss[4]
			for b := 0; b < B; b++ {
				L := int(lens[b])
				off := 0
				if pad == "left" {
					off = T - L
				}
				require.LessOrEqual(t, maxAbs(got[(b*T+off)*V:(b*T+off+L)*V], solo[b]), 1e-4, "row %d %s %q", b, pad, sched)
				for l := 0; l < ss[0]; l++ {
					require.LessOrEqual(t, maxAbs(ssm[(l*B+b)*per:(l*B+b+1)*per], soloSSM[b][l*per:(l+1)*per]), 1e-4, "ssm row %d layer %d", b, l)
				}
			}
		}
	}
}

// TestCUDAUnavailable: on a machine without a GPU, --backend cuda is a one-line error naming what
// is missing and suggesting --backend cpu.
func TestCUDAUnavailable(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.safetensors")
	code, _, stderr := runCLI("logits", "--backend", "cuda", "--model", tinyDir,
		"--input", filepath.Join(tinyDir, "case.safetensors"), "--out", out)
	if code == 0 {
		t.Skip("a CUDA device is present")
	}
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "--backend cpu")
	require.Contains(t, stderr, "unavailable")
	require.Equal(t, 1, strings.Count(strings.TrimSpace(stderr), "\n")+1)
	_, err := os.Stat(out)
	require.True(t, os.IsNotExist(err))
}
