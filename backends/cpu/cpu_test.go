package cpu_test

import (
	"slices"
	"testing"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/backends/backendtest"
	"github.com/mamba2go/mamba2/backends/cpu"
)

// variants are the backends the suites run on: the registered default and explicit pool sizes
// (1: every kernel serial; 3: more workers than this machine may have cores, uneven splits).
// With -short (used with -race by `make test`) only threads=3 runs: it exercises the pool.
func variants(t *testing.T) map[string]backends.Backend {
	t.Helper()
	vs := map[string]backends.Backend{"threads=3": cpu.New(3)}
	if !testing.Short() {
		def, err := backends.New("cpu")
		if err != nil {
			t.Fatal(err)
		}
		vs["default"] = def
		vs["threads=1"] = cpu.New(1)
	}
	t.Cleanup(func() {
		for _, be := range vs {
			be.Close()
		}
	})
	return vs
}

func TestCompliance(t *testing.T) {
	for name, be := range variants(t) {
		t.Run(name, func(t *testing.T) { backendtest.Run(t, be) })
	}
}

func TestGradients(t *testing.T) {
	for name, be := range variants(t) {
		t.Run(name, func(t *testing.T) { backendtest.RunGrad(t, be) })
	}
}

// TestSuiteCoversEveryKernel fails when the cpu backend has a kernel the compliance suite has no
// forward case for: adding a kernel means adding its reference.
func TestSuiteCoversEveryKernel(t *testing.T) {
	covered := backendtest.CoveredOps()
	var missing []string
	for _, op := range cpu.Ops() {
		if !slices.Contains(covered, op) {
			missing = append(missing, op)
		}
	}
	if len(missing) > 0 {
		t.Errorf("cpu kernels without a compliance case: %v", missing)
	}
}

func TestRegistered(t *testing.T) {
	if !slices.Contains(backends.Names(), "cpu") {
		t.Fatalf("cpu not registered: %v", backends.Names())
	}
	be, err := backends.New("cpu")
	if err != nil {
		t.Fatal(err)
	}
	if be.Name() != "cpu" {
		t.Errorf("Name() = %q", be.Name())
	}
	if n := cpu.New(3).Threads(); n != 3 {
		t.Errorf("cpu.New(3).Threads() = %d", n)
	}
}
