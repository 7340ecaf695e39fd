package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/mamba2go/mamba2/backends"
	_ "github.com/mamba2go/mamba2/backends/cpu"
	_ "github.com/mamba2go/mamba2/backends/cuda"
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
