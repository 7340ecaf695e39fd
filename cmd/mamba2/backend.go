package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/mamba2go/mamba2/backends"
	_ "github.com/mamba2go/mamba2/backends/cpu"
	_ "github.com/mamba2go/mamba2/backends/cuda"
	"github.com/mamba2go/mamba2/quant"
)

// backendFlag adds --backend to fs.
func backendFlag(fs *flag.FlagSet) *string {
	def := os.Getenv(backends.EnvBackend)
	if def == "" {
		def = backends.DefaultName
	}
	return fs.String("backend", def, "compute backend: cpu or cuda (default from $"+backends.EnvBackend+")")
}

// openBackend creates the named backend with an error that says what to do instead.
// weightsFlagHelp documents --weights, shared by the commands that load a causal LM.
const weightsFlagHelp = "storage of the large weight matrices: f32, bf16, f16 or int8 (per-row scales, activations rounded to int16 per block of 32); quantized weights run inference only, in float32"

// parseWeights reads --weights.
func parseWeights(s string) (quant.Format, error) {
	f, err := quant.ParseFormat(s)
	if err != nil {
		return f, fmt.Errorf("%w: --weights: %v", errUsage, err)
	}
	return f, nil
}

func openBackend(name string) (backends.Backend, error) {
	be, err := backends.New(name)
	if err != nil {
		if errors.Is(err, backends.ErrUnknownBackend) {
			return nil, fmt.Errorf("--backend: %w", err)
		}
		return nil, fmt.Errorf("--backend %s: %w (use --backend cpu)", name, err)
	}
	return be, nil
}
