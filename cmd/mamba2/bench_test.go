package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBenchJSON runs the benchmark on the tiny golden checkpoint with each weight format and
// checks that the JSON line carries every figure the speed issue asks for, consistent with each
// other (the values themselves are timings, which tests do not judge).
func TestBenchJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("streams a 128 MiB bandwidth probe per run")
	}
	var f32Bytes int64
	for _, w := range []string{"f32", "bf16", "f16", "int8"} {
		code, stdout, stderr := runCLI("bench", "--model", tinyDir, "--prompt", "9", "--gen", "120", "--threads", "2", "--weights", w, "--json")
		require.Equal(t, 0, code, stderr)
		var rep map[string]any
		require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
		num := func(k string) float64 {
			v, ok := rep[k].(float64)
			require.True(t, ok, "%s: field %q missing or not a number", w, k)
			return v
		}
		require.Equal(t, "cpu", rep["backend"], w)
		require.Equal(t, w, rep["weights"])
		require.NotEmpty(t, rep["kernels"], w)
		for _, k := range []string{"prefill_tok_s", "decode_tok_s", "decode_ms_p50", "decode_ms_p99", "decode_ms_first10",
			"decode_ms_last10", "decode_ms_first100", "decode_ms_last100", "params", "weight_bytes", "peak_rss_bytes",
			"mem_bandwidth_gb_s", "decode_bound_tok_s", "decode_pct_of_bound"} {
			require.Greater(t, num(k), 0.0, "%s: %s", w, k)
		}
		require.GreaterOrEqual(t, num("allocs_per_step"), 0.0, w)
		require.LessOrEqual(t, num("decode_ms_p50"), num("decode_ms_p99"), w)
		require.Equal(t, 9.0, num("prompt"))
		require.Equal(t, 120.0, num("gen"))
		bound := num("mem_bandwidth_gb_s") * 1e9 / num("weight_bytes")
		require.InDelta(t, bound, num("decode_bound_tok_s"), bound*1e-6, w)
		require.InDelta(t, 100*num("decode_tok_s")/bound, num("decode_pct_of_bound"), 1e-6*num("decode_pct_of_bound"), w)
		bytes := int64(num("weight_bytes"))
		if w == "f32" {
			f32Bytes = bytes
			require.Equal(t, 4*int64(num("params")), bytes)
		} else {
			require.Less(t, bytes, f32Bytes, "%s weights take fewer bytes than float32", w)
		}
	}
	code, stdout, _ := runCLI("bench", "--model", tinyDir, "--prompt", "9", "--gen", "3", "--threads", "2")
	require.Equal(t, 0, code)
	for _, line := range []string{"prefill", "decode", "first/last 100", "bound", "peak RSS"} {
		require.Contains(t, stdout, line)
	}
	require.NotContains(t, stdout, "position")

	// --far: steps at a far position timed against steps after the prompt.
	code, stdout, stderr := runCLI("bench", "--model", tinyDir, "--prompt", "9", "--gen", "5", "--threads", "2", "--far", "40", "--json")
	require.Equal(t, 0, code, stderr)
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
	require.Equal(t, 40.0, rep["far_position"])
	for _, k := range []string{"decode_ms_near_p50", "decode_ms_far_p50"} {
		v, ok := rep[k].(float64)
		require.True(t, ok && v > 0, "%s = %v", k, rep[k])
	}
	code, stdout, _ = runCLI("bench", "--model", tinyDir, "--prompt", "9", "--gen", "3", "--threads", "2", "--far", "23")
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "at position 23")
}

// TestBenchBadInput: wrong flags give an error naming the flag and a non-zero exit, without
// running anything.
func TestBenchBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bench"}, "--model"},
		{[]string{"bench", "--model", tinyDir, "--gen", "0"}, "--gen"},
		{[]string{"bench", "--model", tinyDir, "--prompt", "-3"}, "--prompt"},
		{[]string{"bench", "--model", tinyDir, "--weights", "q4"}, "--weights"},
		{[]string{"bench", "--model", tinyDir, "--prompt", "20", "--far", "20"}, "--far"},
		{[]string{"bench", "--model", tinyDir, "--far", "-1"}, "--far"},
		{[]string{"bench", "--model", "/nonexistent/model"}, "--model"},
	} {
		code, stdout, stderr := runCLI(c.args...)
		require.NotEqual(t, 0, code, strings.Join(c.args, " "))
		require.Contains(t, stderr, c.want, strings.Join(c.args, " "))
		require.Empty(t, stdout, strings.Join(c.args, " "))
	}
}
