package backendtest

import (
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
)

func mul(a, b *graph.Node) *graph.Node { return ops.Mul(a, b) }
func add(a, b *graph.Node) *graph.Node { return ops.Add(a, b) }
func sumAll(a *graph.Node) *graph.Node { return ops.Sum(a) }
