package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/models/encdec"
	"github.com/mamba2go/mamba2/models/encdec/tasks"
	"github.com/mamba2go/mamba2/models/mamba2"
)

func runMamba2(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// wantOneLineError checks a failed command's exit status and one-line message.
func wantOneLineError(t *testing.T, contains string, args ...string) {
	t.Helper()
	code, _, stderr := runMamba2(args...)
	if code == 0 {
		t.Fatalf("%v succeeded, want an error containing %q", args, contains)
	}
	if n := strings.Count(stderr, "\n"); n != 1 {
		t.Errorf("%v: stderr has %d lines, want 1: %q", args, n, stderr)
	}
	if !strings.Contains(stderr, contains) {
		t.Errorf("%v: %q does not contain %q", args, stderr, contains)
	}
}

func TestTrainGenerateBadInput(t *testing.T) {
	dir := t.TempDir()
	wantOneLineError(t, `unknown task "reverz"`, "train", "--task", "reverz")
	wantOneLineError(t, "--steps must be positive", "train", "--task", "reverse", "--steps", "0")
	wantOneLineError(t, "--task is required", "train")
	wantOneLineError(t, "--resume needs --out", "train", "--task", "sine", "--resume")
	wantOneLineError(t, "does not exist", "train", "--task", "sine", "--resume", "--out", filepath.Join(dir, "none"))
	wantOneLineError(t, "does not exist", "generate", "--model", filepath.Join(dir, "none"), "--ids", "1 2")
	wantOneLineError(t, "no config.json", "generate", "--model", dir, "--ids", "1 2")
	wantOneLineError(t, "exactly one of", "generate", "--model", dir)

	// A trained checkpoint whose config no longer matches its weights.
	ck := filepath.Join(dir, "ck")
	if code, _, stderr := runMamba2("train", "--task", "copy", "--steps", "2", "--hidden", "16", "--eval-size", "4", "--out", ck); code != 0 {
		t.Fatalf("train: %s", stderr)
	}
	wantOneLineError(t, "already holds a checkpoint", "train", "--task", "copy", "--steps", "2", "--out", ck)
	wantOneLineError(t, "already completed", "train", "--task", "copy", "--out", ck, "--resume")
	wantOneLineError(t, `task "copy"`, "train", "--task", "sort", "--out", ck, "--resume")
	wantOneLineError(t, "outside the vocabulary", "generate", "--model", ck, "--ids", "1 2 10")
	cfg := filepath.Join(ck, encdec.ConfigFile)
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cfg, bytes.Replace(data, []byte(`"decoder_hidden_size": 16`), []byte(`"decoder_hidden_size": 32`), 1), 0o644)
	wantOneLineError(t, "has shape", "generate", "--model", ck, "--ids", "1 2")
	os.Remove(filepath.Join(ck, encdec.WeightsFile))
	wantOneLineError(t, "no model.safetensors", "generate", "--model", ck, "--ids", "1 2")
}

// stopAfter is a context whose Err reports cancellation after n calls: training checks it once per
// step, so it interrupts the run after n steps, as Ctrl-C would.
type stopAfter struct {
	context.Context
	n int
}

func (s *stopAfter) Err() error {
	if s.n--; s.n < 0 {
		return context.Canceled
	}
	return nil
}

// An interrupted run saves a complete checkpoint; resuming it ends exactly where an uninterrupted
// run does. Leftovers of a save that died half-way do not disturb the checkpoint.
func TestTrainInterruptResume(t *testing.T) {
	be, err := backends.New("cpu")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	task, _ := tasks.New("sine")
	r := demoSettings(task)
	r.model = task.ModelConfig(16, 1)
	r.opts.Steps, r.opts.Warmup = 8, 2
	r.evalEvery, r.evalSize = 8, 16
	var sink bytes.Buffer

	m, want, err := train(context.Background(), be, r, &sink, &sink)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()

	r.out = filepath.Join(t.TempDir(), "ck")
	m, _, err = train(&stopAfter{context.Background(), 5}, be, r, &sink, &sink)
	if err == nil || !strings.Contains(err.Error(), "interrupted at step 5; checkpoint saved") {
		t.Fatalf("interrupted run: %v", err)
	}
	m.Close()
	// A save that died before renaming leaves pending files behind; they are ignored.
	os.WriteFile(filepath.Join(r.out, "."+encdec.WeightsFile+".pending"), []byte("partial"), 0o644)
	r.resume = true
	m, got, err := train(context.Background(), be, r, &sink, &sink)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if got.Value != want.Value {
		t.Errorf("resumed run scores %v, uninterrupted %v", got.Value, want.Value)
	}
}

func TestGenerateCausalLM(t *testing.T) {
	c := mamba2.Config{VocabSize: 40, HiddenSize: 16, StateSize: 4, NumHiddenLayers: 2, Expand: 2,
		ConvKernel: 4, NGroups: 1, HeadDim: 8, NumHeads: 4, ChunkSize: 8, UseConvBias: true, RMSNorm: true,
		LayerNormEpsilon: 1e-5, TimeStepMin: 0.001, TimeStepMax: 0.1, TimeStepFloor: 1e-4,
		InitializerRange: 0.1, TimeStepLimit: [2]float64{0, 1e9}, HiddenAct: "silu",
		PadTokenID: -1, BOSTokenID: -1, EOSTokenID: -1}
	ck, err := mamba2.RandomCheckpoint(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := mamba2.SaveCheckpoint(dir, ck); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runMamba2("generate", "--model", dir, "--ids", "1 2 3", "--ids", "4", "--max-len", "5")
	if code != 0 {
		t.Fatalf("generate: %s", stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || len(strings.Fields(lines[0])) != 5 || len(strings.Fields(lines[1])) != 5 {
		t.Fatalf("output %q: want 2 rows of 5 ids", out)
	}
	// The first row alone gives the same ids (batched rows do not disturb each other).
	_, solo, _ := runMamba2("generate", "--model", dir, "--ids", "1 2 3", "--max-len", "5")
	if strings.TrimSpace(solo) != lines[0] {
		t.Errorf("alone %q, batched %q", strings.TrimSpace(solo), lines[0])
	}
	code, streamed, _ := runMamba2("generate", "--model", dir, "--ids", "1 2 3", "--max-len", "5", "--stream")
	if code != 0 || strings.TrimSpace(streamed) != lines[0] {
		t.Errorf("streamed %q, want %q", streamed, lines[0])
	}
	wantOneLineError(t, "tokenizer.json", "generate", "--model", dir, "--text", "hello")
	wantOneLineError(t, "for encoder–decoders", "generate", "--model", dir, "--task", "reverse")
}
