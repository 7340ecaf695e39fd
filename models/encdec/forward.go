package encdec

import (
	"fmt"

	"github.com/mamba2go/mamba2/graph"
)

// Forward runs one teacher-forced forward over batch (the Eval program: decoder inputs are BOS, or
// the start position, followed by the targets shifted right) and returns, per row and target
// position, the logits (token outputs) or the predicted vector, and the batch's mean loss
// (cross-entropy or squared error per position, averaged over every target position).
func (m *Model) Forward(batch []Example) (out [][][]float64, loss float64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, f, err := m.prepare(PhaseEval, batch)
	if err != nil {
		return nil, 0, err
	}
	if err := p.Run(); err != nil {
		return nil, 0, fmt.Errorf("encdec: eval program: %w", err)
	}
	loss, err = readScalar(p, OutLoss)
	if err != nil {
		return nil, 0, err
	}
	spec := f.spec
	width := m.Config.TgtVocab + m.Config.TgtDim
	buf := make([]float64, spec.Batch*spec.Tgt*width)
	if err := readFloats(p, OutY, buf); err != nil {
		return nil, 0, err
	}
	out = make([][][]float64, spec.Batch)
	for b := range out {
		out[b] = make([][]float64, f.decLens[b])
		for t := range out[b] {
			o := (b*spec.Tgt + t) * width
			out[b][t] = buf[o : o+width : o+width]
		}
	}
	return out, loss, nil
}

// Loss returns the batch's mean loss (teacher forcing, no gradients).
func (m *Model) Loss(batch []Example) (float64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, _, err := m.prepare(PhaseEval, batch)
	if err != nil {
		return 0, err
	}
	if err := p.Run(); err != nil {
		return 0, fmt.Errorf("encdec: eval program: %w", err)
	}
	return readScalar(p, OutLoss)
}

// prepare validates a teacher-forced batch, fetches the program for its shape and sets its inputs.
// m.mu must be held.
func (m *Model) prepare(phase Phase, batch []Example) (*graph.Program, *feed, error) {
	src, tgt := splitBatch(batch)
	decIn, err := m.teacherInputs(tgt)
	if err != nil {
		return nil, nil, err
	}
	f, err := m.makeFeed(phase, src, decIn, tgt)
	if err != nil {
		return nil, nil, err
	}
	p, err := m.program(f.spec)
	if err != nil {
		return nil, nil, err
	}
	if err := f.set(p); err != nil {
		return nil, nil, err
	}
	return p, f, nil
}

// readScalar reads a scalar output as float64.
func readScalar(p *graph.Program, name string) (float64, error) {
	v := make([]float64, 1)
	if err := readFloats(p, name, v); err != nil {
		return 0, err
	}
	return v[0], nil
}

// readFloats reads a float output of any float dtype into dst.
func readFloats(p *graph.Program, name string, dst []float64) error {
	buf, err := p.OutputBuffer(name)
	if err != nil {
		return fmt.Errorf("encdec: %w", err)
	}
	host := graph.NewHostSlice(buf.Shape())
	if host == nil {
		return fmt.Errorf("encdec: output %s is not a float tensor", name)
	}
	if err := p.ReadOutput(name, host); err != nil {
		return fmt.Errorf("encdec: %w", err)
	}
	switch h := host.(type) {
	case []float32:
		if len(h) != len(dst) {
			return fmt.Errorf("encdec: output %s has %d values, want %d", name, len(h), len(dst))
		}
	case []float64:
		if len(h) != len(dst) {
			return fmt.Errorf("encdec: output %s has %d values, want %d", name, len(h), len(dst))
		}
	}
	toFloat64(dst, host)
	return nil
}
