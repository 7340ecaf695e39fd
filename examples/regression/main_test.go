package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

func TestTrainingReducesLoss(t *testing.T) {
	first, last, err := train(io.Discard, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !(last < first/10) {
		t.Fatalf("loss %.4f -> %.4f after 100 steps: expected at least a tenfold drop", first, last)
	}
}

// TestReadmeInSync: the README's "Using the graph API" sample is newTrainer, verbatim, so that the
// README shows code that compiles and runs.
func TestReadmeInSync(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	start := strings.Index(s, "func newTrainer(")
	if start < 0 {
		t.Fatal("main.go has no newTrainer")
	}
	end := strings.Index(s[start:], "\n}\n")
	fn := s[start : start+end+2]
	if !strings.Contains(string(readme), fn) {
		t.Errorf("README.md does not contain newTrainer from examples/regression/main.go verbatim; copy it:\n%s", fn)
	}
}
