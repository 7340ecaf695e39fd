// Package graph builds symbolic computations, differentiates them, and compiles them into programs
// that run on a backend.
//
// The life of a computation has three stages:
//
//  1. Build. A Graph collects nodes: Inputs (fed on every run), Params (read-only weights bound at
//     compile time and shared between programs), States (tensors a program reads at the start of a
//     run and overwrites at its end, such as a recurrent cache) and op applications created with the
//     constructors of package ops (ops.MatMul(x, w), ops.SSD(...)). Shapes are static and inferred
//     as nodes are added. Grad adds the reverse-mode gradient of a scalar as more nodes.
//  2. Compile. Compile schedules the nodes the outputs need, compiles one backend kernel per op
//     application, and plans every intermediate buffer once by liveness. Nothing is allocated later.
//  3. Run. A Program is fed inputs, run any number of times, and read. Programs that do not share
//     state may run concurrently while sharing Weights.
//
// Errors: constructors never fail on the spot. The first invalid construction (a shape or dtype
// mismatch, nodes of two graphs mixed, a gradient through an op that has none) is recorded with the
// op, the node, the shapes involved and the caller's source line, and returned by Err and Compile.
// Run-time errors (a state bound with the wrong shape, an out-of-range index) are returned by the
// Program's methods. Nothing in this package panics on bad input.
package graph

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

type nodeKind uint8

const (
	kindOp nodeKind = iota
	kindInput
	kindParam
	kindState
)

func (k nodeKind) String() string {
	return [...]string{"op", "input", "param", "state"}[k]
}

// Node is a symbolic tensor in a Graph. It implements ops.Value.
type Node struct {
	g     *Graph
	id    int
	kind  nodeKind
	name  string // inputs, params, states; optional for op outputs
	shape shapes.Shape
	app   *application // producing op application (kindOp only)
	index int          // which output of app
}

// application is one op applied to inputs; its outputs are nodes.
type application struct {
	id      int
	op      ops.Op
	inputs  []*Node
	outputs []*Node
}

// Builder returns the node's graph as an ops.Builder (nil for a nil node).
func (n *Node) Builder() ops.Builder {
	if n == nil {
		return nil
	}
	return n.g
}

// Graph returns the graph the node belongs to.
func (n *Node) Graph() *Graph { return n.g }

// Shape returns the node's dtype and dimensions.
func (n *Node) Shape() shapes.Shape { return n.shape }

// Name returns the node's name (empty for unnamed op outputs).
func (n *Node) Name() string { return n.name }

// SetName names an op output, for error messages and debugging; it returns n.
func (n *Node) SetName(name string) *Node {
	if n.kind == kindOp {
		n.name = name
	}
	return n
}

// String describes the node: "#12 MatMul float32[2,3]" or `input "x" float32[2,3]`.
func (n *Node) String() string {
	switch n.kind {
	case kindOp:
		s := fmt.Sprintf("#%d %s %s", n.id, n.app.op.Name(), n.shape)
		if n.name != "" {
			s += fmt.Sprintf(" %q", n.name)
		}
		return s
	default:
		return fmt.Sprintf("%s %q %s", n.kind, n.name, n.shape)
	}
}

type stateDecl struct {
	read  *Node
	write *Node
}

// Graph is a symbolic computation under construction. It is not safe for concurrent use; compiled
// Programs are independent of it.
type Graph struct {
	nodes   []*Node
	apps    []*application
	inputs  map[string]*Node
	params  map[string]*Node
	states  map[string]*stateDecl
	order   []string // declaration order of inputs, params and states, for stable listings
	outputs []namedNode
	err     error
}

type namedNode struct {
	name string
	node *Node
}

// New returns an empty graph.
func New() *Graph {
	return &Graph{
		inputs: map[string]*Node{},
		params: map[string]*Node{},
		states: map[string]*stateDecl{},
	}
}

// Err returns the first construction error, or nil.
func (g *Graph) Err() error { return g.err }

// setErr records the first error, adding the caller's source location.
func (g *Graph) setErr(err error) {
	if g.err == nil {
		if loc := callerOutside(); loc != "" {
			err = fmt.Errorf("%w (at %s)", err, loc)
		}
		g.err = err
	}
}

// callerOutside returns file:line of the first stack frame outside packages graph and ops.
func callerOutside() string {
	pcs := make([]uintptr, 32)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		fn := f.Function
		if !strings.Contains(fn, "/mamba2/graph.") && !strings.Contains(fn, "/mamba2/ops.") &&
			!strings.HasPrefix(fn, "runtime.") {
			return fmt.Sprintf("%s:%d", f.File, f.Line)
		}
		if !more {
			return ""
		}
	}
}

func (g *Graph) newNode(kind nodeKind, name string, s shapes.Shape) *Node {
	n := &Node{g: g, id: len(g.nodes), kind: kind, name: name, shape: s}
	g.nodes = append(g.nodes, n)
	return n
}

// placeholder returns a node standing for a failed construction; it has a valid shape so that
// construction can continue, and Compile refuses the graph anyway.
func (g *Graph) placeholder(s shapes.Shape) *Node {
	if s.DType == shapes.InvalidDType {
		s = shapes.Make(shapes.Float32)
	}
	return g.newNode(kindInput, "<invalid>", s)
}

func (g *Graph) leaf(kind nodeKind, name string, s shapes.Shape) *Node {
	if name == "" {
		g.setErr(fmt.Errorf("graph: %s needs a name", kind))
		return g.placeholder(s)
	}
	if err := s.Valid(); err != nil {
		g.setErr(fmt.Errorf("graph: %s %q: %v", kind, name, err))
		return g.placeholder(s)
	}
	if g.isDeclared(name) {
		g.setErr(fmt.Errorf("graph: %s %q: the name is already declared", kind, name))
		return g.placeholder(s)
	}
	g.order = append(g.order, name)
	return g.newNode(kind, name, s.Clone())
}

func (g *Graph) isDeclared(name string) bool {
	_, a := g.inputs[name]
	_, b := g.params[name]
	_, c := g.states[name]
	return a || b || c
}

// Input declares a tensor fed on every run.
func (g *Graph) Input(name string, s shapes.Shape) *Node {
	n := g.leaf(kindInput, name, s)
	if n.name == name {
		g.inputs[name] = n
	}
	return n
}

// Param declares a read-only weight, bound by name from Weights at compile time. Declaring the
// same name again with the same shape returns the same node.
func (g *Graph) Param(name string, s shapes.Shape) *Node {
	if p, ok := g.params[name]; ok {
		if !p.shape.Equal(s) {
			g.setErr(fmt.Errorf("graph: param %q declared as %s and again as %s", name, p.shape, s))
		}
		return p
	}
	n := g.leaf(kindParam, name, s)
	if n.name == name {
		g.params[name] = n
	}
	return n
}

// State declares a state tensor and returns the node reading its value at the start of a run.
// SetState gives the value written back at the end; a state never set keeps its value.
func (g *Graph) State(name string, s shapes.Shape) *Node {
	n := g.leaf(kindState, name, s)
	if n.name == name {
		g.states[name] = &stateDecl{read: n}
	}
	return n
}

// SetState makes v the value stored into state name at the end of each run. v must have the
// state's shape.
func (g *Graph) SetState(name string, v *Node) {
	st, ok := g.states[name]
	switch {
	case !ok:
		g.setErr(fmt.Errorf("graph: SetState(%q): no such state", name))
	case !g.owns(v):
		g.setErr(fmt.Errorf("graph: SetState(%q): value belongs to another graph", name))
	case !v.shape.Equal(st.read.shape):
		g.setErr(fmt.Errorf("graph: SetState(%q): value %s has shape %s, the state is %s",
			name, v, v.shape, st.read.shape))
	case st.write != nil:
		g.setErr(fmt.Errorf("graph: SetState(%q) called twice", name))
	default:
		st.write = v
	}
}

// Output marks v as a named result of the graph.
func (g *Graph) Output(name string, v *Node) {
	switch {
	case !g.owns(v):
		g.setErr(fmt.Errorf("graph: Output(%q): value belongs to another graph", name))
		return
	case name == "":
		g.setErr(fmt.Errorf("graph: Output needs a name"))
		return
	}
	for _, o := range g.outputs {
		if o.name == name {
			g.setErr(fmt.Errorf("graph: Output(%q) declared twice", name))
			return
		}
	}
	g.outputs = append(g.outputs, namedNode{name, v})
}

func (g *Graph) owns(v *Node) bool { return v != nil && v.g == g }

// Apply adds op applied to inputs (implements ops.Builder). Users call the constructors in package
// ops instead.
func (g *Graph) Apply(op ops.Op, inputs ...ops.Value) []ops.Value {
	nout := ops.NumOutputs(op)
	fallback := func(err error) []ops.Value {
		g.setErr(err)
		res := make([]ops.Value, nout)
		for i := range res {
			res[i] = g.placeholder(shapes.Shape{})
		}
		return res
	}
	in := make([]*Node, len(inputs))
	inShapes := make([]shapes.Shape, len(inputs))
	for i, v := range inputs {
		n, ok := v.(*Node)
		if !ok || n == nil {
			return fallback(fmt.Errorf("graph: op %s: input %d is nil", op.Name(), i))
		}
		if n.g != g {
			return fallback(fmt.Errorf("graph: op %s: input %d belongs to another graph", op.Name(), i))
		}
		in[i], inShapes[i] = n, n.shape
	}
	if g.err != nil {
		// Keep building cheaply; the graph is already invalid.
		return fallback(g.err)
	}
	outShapes, err := op.Infer(inShapes)
	if err == nil && len(outShapes) != nout {
		err = fmt.Errorf("inferred %d outputs, the op declares %d", len(outShapes), nout)
	}
	if err != nil {
		parts := make([]string, len(in))
		for i, n := range in {
			parts[i] = n.String()
		}
		return fallback(fmt.Errorf("graph: op %s on node #%d (inputs: %s): %w",
			op.Name(), len(g.nodes), strings.Join(parts, ", "), err))
	}
	app := &application{id: len(g.apps), op: op, inputs: in}
	g.apps = append(g.apps, app)
	res := make([]ops.Value, nout)
	for i, s := range outShapes {
		n := g.newNode(kindOp, "", s)
		n.app, n.index = app, i
		app.outputs = append(app.outputs, n)
		res[i] = n
	}
	return res
}
