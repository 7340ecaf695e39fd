package graph

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
	"gorgonia.org/tensor"
)

// Spec names a program's input, output or state and gives its shape.
type Spec struct {
	Name  string
	Shape shapes.Shape
}

// step is one scheduled kernel call.
type step struct {
	app    *application
	kernel backends.Kernel
	in     []backends.Buffer
	out    []backends.Buffer
	inRef  []*Node
	outRef []*Node
	// writeBack lists the states whose new value this step computes and that nothing later
	// reads the old value of: they are written back right after it (see eagerStates).
	writeBack []*boundState
}

// Program is a compiled graph bound to a backend. It owns its intermediate buffers, its input
// buffers and (until BindState replaces them) its state buffers. A Program is used by one goroutine
// at a time; different Programs may run concurrently.
type Program struct {
	be      backends.Backend
	steps   []step
	bufOf   map[*Node]backends.Buffer
	inputs  []Spec
	inputBy map[string]*Node
	outputs []namedNode
	states  []*boundState
	stateBy map[string]*boundState
	owned   []backends.Buffer
	// snapshots are state read nodes copied at the start of a run (see Compile).
	snapshots []*Node
	snapOf    map[*Node]backends.Buffer
	dirty     bool
	closed    bool
}

type boundState struct {
	Spec
	read  *Node
	write *Node
	buf   backends.Buffer // nil until bound or given the program's own (ownStates)
	eager bool            // written back right after the step computing it, not at the end of the run
	// inPlace: the kernel producing write writes it over read's buffer, so no write-back at all.
	inPlace bool
}

// Compile schedules what the graph's outputs and state writes need, binds Params to w (which may
// be nil when the graph has none), compiles the kernels on be and plans the buffers. State buffers
// start zeroed and owned by the program, allocated when first needed (a Run, StateBuffer or
// OutputBuffer); BindState swaps in external ones, and a state bound before then never gets one.
func (g *Graph) Compile(be backends.Backend, w *Weights) (*Program, error) {
	if g.err != nil {
		return nil, g.err
	}
	if be == nil {
		return nil, errors.New("graph: Compile: nil backend")
	}
	if len(g.outputs) == 0 && len(g.states) == 0 {
		return nil, errors.New("graph: Compile: the graph has no outputs and no states")
	}
	p := &Program{be: be, bufOf: map[*Node]backends.Buffer{}, stateBy: map[string]*boundState{}, inputBy: map[string]*Node{}, dirty: true}
	ok := false
	defer func() {
		if !ok {
			p.Close()
		}
	}()

	// Liveness: mark what the roots need.
	live := make([]bool, len(g.nodes))
	var stack []*Node
	pin := map[*Node]bool{}
	for _, o := range g.outputs {
		stack = append(stack, o.node)
		pin[o.node] = true
	}
	for _, name := range g.order {
		if st, ok := g.states[name]; ok && st.write != nil {
			stack = append(stack, st.write)
			pin[st.write] = true
		}
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if live[n.id] {
			continue
		}
		live[n.id] = true
		if n.app != nil {
			for _, o := range n.app.outputs {
				live[o.id] = true
			}
			stack = append(stack, n.app.inputs...)
		}
	}

	// Leaves: params from w, inputs and states get buffers.
	for _, name := range g.order {
		if n, ok := g.params[name]; ok {
			if !live[n.id] {
				continue
			}
			if w == nil {
				return nil, fmt.Errorf("graph: param %q %s: no weights given", name, n.shape)
			}
			buf, found := w.Get(name)
			if !found {
				return nil, fmt.Errorf("graph: param %q %s: missing from weights", name, n.shape)
			}
			if !buf.Shape().Equal(n.shape) {
				return nil, fmt.Errorf("graph: param %q: weights hold %s, the graph expects %s", name, buf.Shape(), n.shape)
			}
			p.bufOf[n] = buf
		}
		if n, ok := g.inputs[name]; ok {
			buf, err := p.alloc(n.shape)
			if err != nil {
				return nil, fmt.Errorf("graph: input %q: %w", name, err)
			}
			p.bufOf[n] = buf
			p.inputs = append(p.inputs, Spec{name, n.shape})
			p.inputBy[name] = n
		}
		if st, ok := g.states[name]; ok {
			// Its buffer comes later (ownStates): a program bound to a cache never needs one.
			bs := &boundState{Spec: Spec{name, st.read.shape}, read: st.read, write: st.write}
			p.states = append(p.states, bs)
			p.stateBy[name] = bs
			p.bufOf[st.read] = nil
		}
	}

	// Schedule live applications in creation order (which is topological).
	var sched []*application
	lastUse := map[*Node]int{}
	for _, app := range g.apps {
		if live[app.outputs[0].id] {
			for _, in := range app.inputs {
				lastUse[in] = len(sched)
			}
			sched = append(sched, app)
		}
	}

	eager := eagerStates(g, sched, lastUse)
	for _, st := range p.states {
		if eager[st.write] {
			st.eager = true
			pin[st.write] = false // its buffer is free for reuse once written back
		}
	}

	// An output may share the buffer of an input its kernel can write over (backends.InPlacer)
	// when nothing else reads that input: a state's new value then stays in the state's buffer,
	// and a Reshape copies nothing. readUses counts every read of a value.
	readUses := map[*Node]int{}
	for _, app := range sched {
		for _, in := range app.inputs {
			readUses[in]++
		}
	}
	for _, o := range g.outputs {
		readUses[o.node]++
	}
	stateOfWrite := map[*Node]*boundState{}
	for _, bs := range p.states {
		if bs.write == nil || bs.write == bs.read || bs.write.app == nil {
			continue
		}
		if _, dup := stateOfWrite[bs.write]; dup {
			stateOfWrite[bs.write] = nil // written into two states: keep the copies
			continue
		}
		stateOfWrite[bs.write] = bs
	}
	for _, bs := range p.states {
		if bs.write != nil && bs.write != bs.read && bs.write.app == nil {
			readUses[bs.write]++ // a state read (or input) copied into another state
		}
	}

	// Buffer plan: reuse a freed buffer of the same shape size and dtype.
	type key struct {
		dt shapes.DType
		n  int
	}
	free := map[key][]backends.Buffer{}
	given := map[*Node]bool{} // inputs whose buffer an output of their last step took over
	for si, app := range sched {
		st := step{app: app, inRef: app.inputs, outRef: app.outputs}
		inShapes := make([]shapes.Shape, len(app.inputs))
		for i, n := range app.inputs {
			inShapes[i] = n.shape
		}
		outShapes := make([]shapes.Shape, len(app.outputs))
		for i, n := range app.outputs {
			outShapes[i] = n.shape
		}
		var kop ops.Op = app.op
		for {
			d, ok := kop.(ops.KernelDelegate)
			if !ok {
				break
			}
			kop = d.KernelOp()
		}
		k, err := be.Compile(kop, inShapes, outShapes)
		if err != nil {
			return nil, fmt.Errorf("graph: compiling %s on backend %s: %w", app.outputs[0], be.Name(), err)
		}
		st.kernel = k
		for j, o := range app.outputs {
			if n := overwrittenInput(k, j, app); n != nil && readUses[n] == 1 {
				if bs := stateOfWrite[o]; bs != nil && n == bs.read {
					bs.inPlace = true
					pin[o] = true    // the state's own buffer: never back to the free lists
					p.bufOf[o] = nil // set with the state's buffer (bindStateBuffer)
					continue
				}
				// An intermediate value (not a graph output or a state's value) read only here.
				if n.app != nil && !pin[n] && !given[n] && n.shape.DType == o.shape.DType && n.shape.Size() == o.shape.Size() {
					given[n] = true
					p.bufOf[o] = p.bufOf[n]
					continue
				}
			}
			kk := key{o.shape.DType, o.shape.Size()}
			var buf backends.Buffer
			if l := free[kk]; len(l) > 0 && !pin[o] {
				buf, free[kk] = l[len(l)-1], l[:len(l)-1]
			} else {
				buf, err = p.alloc(o.shape)
				if err != nil {
					return nil, fmt.Errorf("graph: buffer for %s: %w", o, err)
				}
			}
			p.bufOf[o] = buf
		}
		// Release inputs whose last use is this step and outputs nobody reads.
		release := func(n *Node) {
			if n.app == nil || pin[n] || given[n] {
				return
			}
			kk := key{n.shape.DType, n.shape.Size()}
			free[kk] = append(free[kk], p.bufOf[n])
		}
		seen := map[*Node]bool{}
		for _, in := range app.inputs {
			if lastUse[in] == si && !seen[in] {
				seen[in] = true
				release(in)
			}
		}
		for _, o := range app.outputs {
			if _, used := lastUse[o]; !used {
				release(o)
			}
		}
		st.in = make([]backends.Buffer, len(app.inputs))
		st.out = make([]backends.Buffer, len(app.outputs))
		for _, bs := range p.states {
			if bs.eager && !bs.inPlace && bs.write.app == app {
				st.writeBack = append(st.writeBack, bs)
			}
		}
		p.steps = append(p.steps, st)
	}
	p.outputs = append(p.outputs, g.outputs...)

	// A state's start-of-run value that is written into another state or returned as an output
	// must survive the write-backs: keep a copy taken at the start of each run.
	overwritten := map[*Node]bool{}
	for _, st := range p.states {
		if st.write != nil && st.write != st.read {
			overwritten[st.read] = true
		}
	}
	need := map[*Node]bool{}
	for _, st := range p.states {
		if st.write != nil && st.write != st.read && overwritten[st.write] {
			need[st.write] = true
		}
	}
	for _, o := range g.outputs {
		if overwritten[o.node] {
			need[o.node] = true
		}
	}
	p.snapOf = map[*Node]backends.Buffer{}
	for _, name := range g.order {
		st, ok := g.states[name]
		if !ok || !need[st.read] {
			continue
		}
		buf, err := p.alloc(st.read.shape)
		if err != nil {
			return nil, fmt.Errorf("graph: state %q: %w", name, err)
		}
		p.snapOf[st.read] = buf
		p.snapshots = append(p.snapshots, st.read)
	}
	ok = true
	return p, nil
}

// eagerStates returns the state write nodes that can be written back right after the step
// computing them instead of at the end of the run. A program would otherwise hold every state's
// new value until the end: with a state per layer, a second copy of the whole recurrent cache
// (18 MiB for mamba2-130m in every compiled program). Written back early, the buffer is free
// again for the next layer's new state. That is safe when no later step reads the state's old
// value and nothing else needs either value at the end of the run: the write is computed by a
// step, is no graph output, no other state's value and no state's read; the read is no graph
// output and no state's write (those cases need the start-of-run snapshots of Compile).
func eagerStates(g *Graph, sched []*application, lastUse map[*Node]int) map[*Node]bool {
	stepOf := make(map[*application]int, len(sched))
	for i, app := range sched {
		stepOf[app] = i
	}
	output := map[*Node]bool{}
	for _, o := range g.outputs {
		output[o.node] = true
	}
	writers := map[*Node]int{}
	reads := map[*Node]bool{}
	for _, st := range g.states {
		reads[st.read] = true
		if st.write != nil {
			writers[st.write]++
		}
	}
	eager := map[*Node]bool{}
	for _, st := range g.states {
		w, r := st.write, st.read
		if w == nil || w == r || w.app == nil {
			continue
		}
		i, scheduled := stepOf[w.app]
		if !scheduled || output[w] || output[r] || writers[w] > 1 || reads[w] || writers[r] > 0 {
			continue
		}
		if last, used := lastUse[r]; used && last > i {
			continue
		}
		eager[w] = true
	}
	return eager
}

// overwrittenInput returns the input that output j of app's kernel k can be written over
// (backends.InPlacer), or nil.
func overwrittenInput(k backends.Kernel, j int, app *application) *Node {
	ip, ok := k.(backends.InPlacer)
	if !ok {
		return nil
	}
	if i := ip.InPlace(j); i >= 0 && i < len(app.inputs) {
		return app.inputs[i]
	}
	return nil
}

// buffers of reused shapes carry the shape of their first user; kernels see only the data.
func (p *Program) alloc(s shapes.Shape) (backends.Buffer, error) {
	b, err := p.be.Alloc(s)
	if err != nil {
		return nil, err
	}
	p.owned = append(p.owned, b)
	return b, nil
}

// Backend returns the backend the program runs on.
func (p *Program) Backend() backends.Backend { return p.be }

// Inputs lists the inputs to feed.
func (p *Program) Inputs() []Spec { return append([]Spec(nil), p.inputs...) }

// Outputs lists the named outputs.
func (p *Program) Outputs() []Spec {
	res := make([]Spec, len(p.outputs))
	for i, o := range p.outputs {
		res[i] = Spec{o.name, o.node.shape}
	}
	return res
}

// States lists the bound states.
func (p *Program) States() []Spec {
	res := make([]Spec, len(p.states))
	for i, s := range p.states {
		res[i] = s.Spec
	}
	return res
}

func (p *Program) input(name string) (*Node, error) {
	if n, ok := p.inputBy[name]; ok {
		return n, nil
	}
	names := make([]string, len(p.inputs))
	for i, s := range p.inputs {
		names[i] = s.Name
	}
	return nil, fmt.Errorf("program has no input %q (inputs: %s)", name, strings.Join(names, ", "))
}

// InputBuffer returns the buffer backing input name, for callers that fill it directly.
func (p *Program) InputBuffer(name string) (backends.Buffer, error) {
	n, err := p.input(name)
	if err != nil {
		return nil, err
	}
	return p.bufOf[n], nil
}

// SetInput copies host data (a slice of the input's dtype and size: []float32, []float64,
// []int64, or []uint16 and []int8 for the storage dtypes, see backends.Backend.Write) into input
// name.
func (p *Program) SetInput(name string, data any) error {
	buf, err := p.InputBuffer(name)
	if err != nil {
		return err
	}
	if err := p.be.Write(buf, data); err != nil {
		return fmt.Errorf("input %q %s: %w", name, buf.Shape(), err)
	}
	return nil
}

// BindState makes the program read and write state name in buf from now on. buf must have the
// state's shape; the program's own buffer for it is no longer used.
func (p *Program) BindState(name string, buf backends.Buffer) error {
	st, ok := p.stateBy[name]
	if !ok {
		names := make([]string, len(p.states))
		for i, s := range p.states {
			names[i] = s.Name
		}
		return fmt.Errorf("program has no state %q (states: %s)", name, strings.Join(names, ", "))
	}
	if buf == nil {
		return fmt.Errorf("state %q: nil buffer", name)
	}
	if !buf.Shape().Equal(st.Shape) {
		return fmt.Errorf("state %q bound with shape %s, the program expects %s", name, buf.Shape(), st.Shape)
	}
	p.bindStateBuffer(st, buf)
	return nil
}

func (p *Program) bindStateBuffer(st *boundState, buf backends.Buffer) {
	st.buf = buf
	p.bufOf[st.read] = buf
	if st.inPlace {
		p.bufOf[st.write] = buf
	}
	p.dirty = true
}

// ownStates gives every state not bound yet a zeroed buffer of the program's own. They are
// allocated on first need rather than at Compile so that programs whose states a cache binds
// (every model session) hold no second copy of the state, 18.9 MB per compiled program for the
// 130m shape: on the CPU its pages were never touched and so never resident, but they counted
// in the Go heap (and its GC target), and a GPU backend's allocations are real.
func (p *Program) ownStates() error {
	for _, st := range p.states {
		if st.buf != nil {
			continue
		}
		buf, err := p.alloc(st.Shape)
		if err != nil {
			return fmt.Errorf("graph: state %q: %w", st.Name, err)
		}
		p.bindStateBuffer(st, buf)
	}
	return nil
}

// StateBuffer returns the buffer currently bound to state name (the program's own, zeroed, if
// none was bound).
func (p *Program) StateBuffer(name string) (backends.Buffer, error) {
	st, ok := p.stateBy[name]
	if !ok {
		return nil, fmt.Errorf("program has no state %q", name)
	}
	if err := p.ownStates(); err != nil {
		return nil, err
	}
	return st.buf, nil
}

// Run executes the program once: kernels in schedule order, then the state write-backs. A state
// whose old value nothing reads any more is written back as soon as its new value is computed
// (see eagerStates), which a caller sees only if a kernel fails: the run's error then leaves
// such states updated and the others not.
func (p *Program) Run() error {
	if p.closed {
		return errors.New("graph: Run on a closed program")
	}
	if err := p.ownStates(); err != nil {
		return err
	}
	if p.dirty {
		for i := range p.steps {
			st := &p.steps[i]
			for j, n := range st.inRef {
				st.in[j] = p.bufOf[n]
			}
			for j, n := range st.outRef {
				st.out[j] = p.bufOf[n]
			}
		}
		p.dirty = false
	}
	for _, n := range p.snapshots {
		if err := p.be.Copy(p.snapOf[n], p.bufOf[n]); err != nil {
			return fmt.Errorf("graph: snapshot of state %q: %w", n.name, err)
		}
	}
	for i := range p.steps {
		st := &p.steps[i]
		if err := st.kernel.Run(st.in, st.out); err != nil {
			return fmt.Errorf("graph: running %s: %w", st.outRef[0], err)
		}
		for _, bs := range st.writeBack {
			if err := p.be.Copy(bs.buf, st.out[bs.write.index]); err != nil {
				return fmt.Errorf("graph: writing state %q: %w", bs.Name, err)
			}
		}
	}
	for _, st := range p.states {
		if st.write == nil || st.write == st.read || st.eager || st.inPlace {
			continue
		}
		src := p.bufOf[st.write]
		if snap, ok := p.snapOf[st.write]; ok {
			src = snap
		}
		if err := p.be.Copy(st.buf, src); err != nil {
			return fmt.Errorf("graph: writing state %q: %w", st.Name, err)
		}
	}
	return nil
}

func (p *Program) output(name string) (*Node, error) {
	for _, o := range p.outputs {
		if o.name == name {
			return o.node, nil
		}
	}
	names := make([]string, len(p.outputs))
	for i, o := range p.outputs {
		names[i] = o.name
	}
	return nil, fmt.Errorf("program has no output %q (outputs: %s)", name, strings.Join(names, ", "))
}

// OutputBuffer returns the buffer holding output name after Run. It is overwritten by the next Run.
func (p *Program) OutputBuffer(name string) (backends.Buffer, error) {
	n, err := p.output(name)
	if err != nil {
		return nil, err
	}
	if snap, ok := p.snapOf[n]; ok {
		return snap, nil
	}
	if err := p.ownStates(); err != nil { // an output may be a state's value
		return nil, err
	}
	return p.bufOf[n], nil
}

// ReadOutput copies output name into dst (a host slice of its dtype and size).
func (p *Program) ReadOutput(name string, dst any) error {
	buf, err := p.OutputBuffer(name)
	if err != nil {
		return err
	}
	n, _ := p.output(name)
	if buf.Shape().Size() != n.shape.Size() {
		return fmt.Errorf("output %q: internal size mismatch", name)
	}
	if err := p.be.Read(dst, buf); err != nil {
		return fmt.Errorf("output %q %s: %w", name, n.shape, err)
	}
	return nil
}

// Output returns output name as a new host tensor.
func (p *Program) Output(name string) (*tensor.Dense, error) {
	n, err := p.output(name)
	if err != nil {
		return nil, err
	}
	data := NewHostSlice(n.shape)
	if err := p.ReadOutput(name, data); err != nil {
		return nil, err
	}
	return ToDense(n.shape, data)
}

// RunDense is a convenience: it sets every input from a host tensor, runs, and returns every
// output as a new host tensor.
func (p *Program) RunDense(inputs map[string]*tensor.Dense) (map[string]*tensor.Dense, error) {
	for name, t := range inputs {
		s, data, err := FromDense(t)
		if err != nil {
			return nil, fmt.Errorf("input %q: %w", name, err)
		}
		n, err := p.input(name)
		if err != nil {
			return nil, err
		}
		if !s.Equal(n.shape) {
			return nil, fmt.Errorf("input %q: got %s, the program expects %s", name, s, n.shape)
		}
		if err := p.SetInput(name, data); err != nil {
			return nil, err
		}
	}
	if err := p.Run(); err != nil {
		return nil, err
	}
	res := map[string]*tensor.Dense{}
	for _, o := range p.outputs {
		t, err := p.Output(o.name)
		if err != nil {
			return nil, err
		}
		res[o.name] = t
	}
	return res, nil
}

// Close frees the buffers the program owns (not bound states or weights).
func (p *Program) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	var first error
	for _, st := range p.steps {
		// Kernels that hold device scratch release it with Close.
		if c, ok := st.kernel.(io.Closer); ok {
			if err := c.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	for _, b := range p.owned {
		if err := p.be.Free(b); err != nil && first == nil {
			first = err
		}
	}
	p.owned = nil
	return first
}
