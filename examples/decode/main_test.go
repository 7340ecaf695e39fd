package main

import "testing"

func TestRun(t *testing.T) {
	if err := run("../../testdata/hf-mamba2/tiny"); err != nil {
		t.Fatal(err)
	}
}
