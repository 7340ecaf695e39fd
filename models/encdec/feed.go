package encdec

import (
	"errors"
	"fmt"
	"math"

	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/shapes"
)

// feed holds the host values of one program run.
type feed struct {
	spec    Spec
	inputs  map[string]any
	srcLens []int
	decLens []int // decoder inputs per row
}

func (f *feed) set(p *graph.Program) error {
	for name, v := range f.inputs {
		if err := p.SetInput(name, v); err != nil {
			return fmt.Errorf("encdec: %w", err)
		}
	}
	return nil
}

// checkSeq validates one sequence against a token vocabulary (vocab > 0) or a vector width.
func checkSeq(what string, row int, s Seq, vocab, dim int, allowEmpty bool) error {
	if s.Len() == 0 && !allowEmpty {
		return fmt.Errorf("encdec: %s %d is empty", what, row)
	}
	if vocab > 0 {
		if s.Vectors != nil {
			return fmt.Errorf("encdec: %s %d holds vectors, the model expects token ids", what, row)
		}
		for t, id := range s.Tokens {
			if id < 0 || id >= vocab {
				return fmt.Errorf("encdec: %s %d position %d: token %d is outside the vocabulary [0, %d)", what, row, t, id, vocab)
			}
		}
		return nil
	}
	if s.Tokens != nil {
		return fmt.Errorf("encdec: %s %d holds token ids, the model expects vectors of %d", what, row, dim)
	}
	for t, v := range s.Vectors {
		if len(v) != dim {
			return fmt.Errorf("encdec: %s %d position %d: vector of %d values, the model expects %d", what, row, t, len(v), dim)
		}
		for _, x := range v {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("encdec: %s %d position %d: non-finite value %v", what, row, t, x)
			}
		}
	}
	return nil
}

// encodeSeqs lays rows out as a padded [B,T] int64 or [B,T,dim] float tensor.
func encodeSeqs(rows []Seq, T int, token bool, dim int, dt shapes.DType) any {
	B := len(rows)
	if token {
		out := make([]int64, B*T)
		for b, r := range rows {
			for t, id := range r.Tokens {
				out[b*T+t] = int64(id)
			}
		}
		return out
	}
	v := make([]float64, B*T*dim)
	for b, r := range rows {
		for t, x := range r.Vectors {
			copy(v[(b*T+t)*dim:], x)
		}
	}
	return hostSlice(v, dt)
}

// makeFeed prepares the inputs of a Train/Eval (targets != nil) or Prefill (targets == nil) run.
// decIn holds each row's decoder inputs (token models: BOS first; vector models: position 0 is
// ignored and replaced by the learned start vector).
func (m *Model) makeFeed(phase Phase, src, decIn, targets []Seq) (*feed, error) {
	c := m.Config
	B := len(src)
	if B == 0 {
		return nil, errors.New("encdec: empty batch")
	}
	if len(decIn) != B || (targets != nil && len(targets) != B) {
		return nil, fmt.Errorf("encdec: %d sources for %d decoder rows", B, len(decIn))
	}
	f := &feed{inputs: map[string]any{}, srcLens: make([]int, B), decLens: make([]int, B)}
	S, T := 0, 0
	for b := range src {
		if err := checkSeq("source", b, src[b], c.SrcVocab, c.SrcDim, false); err != nil {
			return nil, err
		}
		if err := checkSeq("decoder input", b, decIn[b], c.TgtVocab, c.TgtDim, false); err != nil {
			return nil, err
		}
		if targets != nil {
			if err := checkSeq("target", b, targets[b], c.TgtVocab, c.TgtDim, false); err != nil {
				return nil, err
			}
			if targets[b].Len() != decIn[b].Len() {
				return nil, fmt.Errorf("encdec: row %d: %d targets for %d decoder inputs", b, targets[b].Len(), decIn[b].Len())
			}
		}
		f.srcLens[b], f.decLens[b] = src[b].Len(), decIn[b].Len()
		S, T = max(S, f.srcLens[b]), max(T, f.decLens[b])
	}
	ragged := false
	for b := range src {
		ragged = ragged || f.srcLens[b] != S || f.decLens[b] != T
	}
	if phase == PhasePrefill {
		if c.Bridge == BridgeCross {
			for b := range decIn {
				if f.decLens[b] != T {
					return nil, errors.New("encdec: prefill decoder inputs must have one length for every row with the cross-attention bridge")
				}
			}
			ragged = false // the source mask is always an input
		}
	}
	dt := m.dtype
	f.spec = Spec{Phase: phase, Batch: B, Src: S, Tgt: T, Ragged: ragged, DType: dt}
	f.inputs[InSrc] = encodeSeqs(src, S, c.TokenSource(), c.SrcDim, dt)
	f.inputs[InTgtIn] = encodeSeqs(decIn, T, c.TokenTarget(), c.TgtDim, dt)
	hasBi := false
	for _, k := range c.EncoderLayers {
		hasBi = hasBi || k == BiMamba2
	}
	if hasBi {
		rev := make([]int64, B*S)
		for b := 0; b < B; b++ {
			n := f.srcLens[b]
			for t := 0; t < S; t++ {
				if t < n {
					rev[b*S+t] = int64(b*S + n - 1 - t)
				} else {
					rev[b*S+t] = int64(b*S + t)
				}
			}
		}
		f.inputs[InSrcRev] = rev
	}
	if c.Bridge == BridgeCross && (ragged || phase == PhasePrefill) {
		mask := make([]float64, B*S)
		for b := 0; b < B; b++ {
			for t := 0; t < f.srcLens[b]; t++ {
				mask[b*S+t] = 1
			}
		}
		f.inputs[InSrcMask] = hostSlice(mask, dt)
	}
	if c.Bridge == BridgePrefix && ragged {
		L := S + T
		idx := make([]int64, B*L)
		outIdx := make([]int64, B*T)
		mask := make([]float64, B*L)
		lens := make([]int64, B)
		last := make([]int64, B)
		for b := 0; b < B; b++ {
			ns, nt := f.srcLens[b], f.decLens[b]
			for p := 0; p < L; p++ {
				switch {
				case p < ns:
					idx[b*L+p] = int64(b*S + p)
				case p < ns+nt:
					idx[b*L+p] = int64(B*S + b*T + p - ns)
				default:
					idx[b*L+p] = int64(b * S)
				}
				if p < ns+nt {
					mask[b*L+p] = 1
				}
			}
			for t := 0; t < T; t++ {
				outIdx[b*T+t] = int64(b*L + ns + min(t, nt-1))
			}
			lens[b] = int64(ns + nt)
			last[b] = int64(b*L + ns + nt - 1)
		}
		f.inputs[InDecIndex] = idx
		if phase == PhasePrefill {
			f.inputs[InDecMask] = hostSlice(mask, dt)
			f.inputs[InDecLens] = lens
			f.inputs[InLastIndex] = last
		} else {
			f.inputs[InOutIndex] = outIdx
		}
	}
	if targets != nil {
		f.inputs[InTargets] = encodeSeqs(targets, T, c.TokenTarget(), c.TgtDim, dt)
		total := 0
		for _, n := range f.decLens {
			total += n
		}
		w := make([]float64, B*T)
		for b := 0; b < B; b++ {
			for t := 0; t < f.decLens[b]; t++ {
				w[b*T+t] = 1 / float64(total)
			}
		}
		f.inputs[InWeights] = hostSlice(w, dt)
	}
	return f, nil
}

// teacherInputs validates targets and returns the decoder inputs of teacher forcing: BOS (or the
// start position) then the targets shifted right by one.
func (m *Model) teacherInputs(targets []Seq) ([]Seq, error) {
	c := m.Config
	out := make([]Seq, len(targets))
	for b, t := range targets {
		if err := checkSeq("target", b, t, c.TgtVocab, c.TgtDim, false); err != nil {
			return nil, err
		}
		n := t.Len()
		if c.TokenTarget() {
			ids := make([]int, n)
			ids[0] = c.BOSTokenID
			copy(ids[1:], t.Tokens[:n-1])
			out[b] = Seq{Tokens: ids}
		} else {
			vs := make([][]float64, n)
			vs[0] = make([]float64, c.TgtDim)
			copy(vs[1:], t.Vectors[:n-1])
			out[b] = Seq{Vectors: vs}
		}
	}
	return out, nil
}

// splitBatch returns the sources and targets of a batch.
func splitBatch(batch []Example) (src, tgt []Seq) {
	src, tgt = make([]Seq, len(batch)), make([]Seq, len(batch))
	for i, e := range batch {
		src[i], tgt[i] = e.Src, e.Tgt
	}
	return src, tgt
}
