package encdec

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/mamba2go/mamba2/cache"
	"github.com/mamba2go/mamba2/models/mamba2"
)

// GenerateOptions control Generate.
type GenerateOptions struct {
	// MaxLen is the most outputs generated per row (required).
	MaxLen int
	// Temperature 0 decodes greedily (argmax); above 0 it samples from softmax(logits/Temperature),
	// restricted by TopK and TopP. Token outputs only.
	Temperature float64
	// TopK keeps the K most likely tokens (0: all).
	TopK int
	// TopP keeps the smallest set of most likely tokens whose probability reaches TopP (0 or 1: all).
	TopP float64
	// Seed seeds sampling; the same seed gives the same samples.
	Seed uint64
	// IgnoreEOS keeps generating after the configuration's EOS token (token outputs).
	IgnoreEOS bool
	// Stream, when set, is called for every generated output in order (row by row within a step);
	// an error it returns stops generation and is returned.
	Stream func(Event) error
}

// Event is one generated output.
type Event struct {
	Row, Pos int
	Token    int       // token outputs
	Vector   []float64 // vector outputs
	EOS      bool      // the token is EOS: the row is finished (EOS is not part of its output)
}

// Session decodes a batch of sources step by step: Start runs the Prefill program once (encoder,
// bridge, decoder start) and every Feed runs the Step program once, with the decoder's recurrent
// state and the cross-attention memory held in a cache the session owns. No position is ever
// passed: where each row is, is part of the state. A Session is used by one goroutine at a time;
// its calls take the model's lock, so sessions of one model may be interleaved.
type Session struct {
	m        *Model
	prefill  Spec
	step     Spec
	kv       *cache.Cache
	out      []float64 // the last outputs, [B, width]
	width    int
	ids      []int64
	vecs     []float64
	ones     []int
	consumed []int
	closed   bool
}

// Start runs the Prefill program over a batch of sources (of any lengths) and returns a session
// whose Outputs are each row's first output: logits over the target vocabulary (token outputs)
// or the first predicted vector.
func (m *Model) Start(src []Seq) (*Session, error) {
	c := m.Config
	if len(src) == 0 {
		return nil, errors.New("encdec: no sources")
	}
	B := len(src)
	start := make([]Seq, B)
	for b := range start {
		if c.TokenTarget() {
			start[b] = Seq{Tokens: []int{c.BOSTokenID}}
		} else {
			start[b] = Seq{Vectors: [][]float64{make([]float64, c.TgtDim)}}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := m.makeFeed(PhasePrefill, src, start, nil)
	if err != nil {
		return nil, err
	}
	s := &Session{m: m, prefill: f.spec, step: Spec{Phase: PhaseStep, Batch: B, Tgt: 1, DType: m.dtype},
		width: c.TgtVocab + c.TgtDim, ids: make([]int64, B), vecs: make([]float64, B*c.TgtDim),
		ones: make([]int, B), consumed: make([]int, B)}
	s.out = make([]float64, B*s.width)
	for b := range s.ones {
		s.ones[b] = 1
	}
	if c.Bridge == BridgeCross {
		s.step.Src = f.spec.Src
	}
	// Compile both programs up front so that a bad configuration fails here.
	if _, err := m.program(s.step); err != nil {
		return nil, err
	}
	p, err := m.program(s.prefill)
	if err != nil {
		return nil, err
	}
	if s.kv, err = cache.New(m.be, m.cacheSpec(s.step.Src), B); err != nil {
		return nil, fmt.Errorf("encdec: %w", err)
	}
	if err := s.kv.Bind(p); err != nil {
		s.kv.Free()
		return nil, fmt.Errorf("encdec: %w", err)
	}
	if err := f.set(p); err != nil {
		s.kv.Free()
		return nil, err
	}
	if err := p.Run(); err != nil {
		s.kv.Free()
		return nil, fmt.Errorf("encdec: prefill program: %w", err)
	}
	for b := range s.consumed {
		s.consumed[b] = f.decLens[b]
		if c.Bridge == BridgePrefix {
			s.consumed[b] += f.srcLens[b]
		}
	}
	if err := s.kv.Advance(s.consumed); err != nil {
		s.kv.Free()
		return nil, fmt.Errorf("encdec: %w", err)
	}
	if err := readFloats(p, OutY, s.out); err != nil {
		s.kv.Free()
		return nil, err
	}
	return s, nil
}

// Batch is the number of rows.
func (s *Session) Batch() int { return s.prefill.Batch }

// Output returns row b's latest output: logits over the target vocabulary, or a vector. The slice
// is overwritten by the next Feed.
func (s *Session) Output(b int) []float64 { return s.out[b*s.width : (b+1)*s.width : (b+1)*s.width] }

// Cache returns the session's recurrent state (decoder conv and SSM states per Mamba2 block, and
// the memory keys/values of the cross-attention blocks) with the decoder positions each row has
// consumed.
func (s *Session) Cache() *cache.Cache { return s.kv }

// FeedTokens runs one Step with one token per row (token outputs).
func (s *Session) FeedTokens(ids []int) error {
	c := s.m.Config
	if !c.TokenTarget() {
		return errors.New("encdec: FeedTokens on a model with vector outputs (use FeedVectors)")
	}
	if len(ids) != s.Batch() {
		return fmt.Errorf("encdec: %d tokens for a session of %d rows", len(ids), s.Batch())
	}
	for b, id := range ids {
		if id < 0 || id >= c.TgtVocab {
			return fmt.Errorf("encdec: row %d: token %d is outside the vocabulary [0, %d)", b, id, c.TgtVocab)
		}
		s.ids[b] = int64(id)
	}
	return s.run(s.ids)
}

// FeedVectors runs one Step with one vector per row (vector outputs): typically each row's last
// output, fed back.
func (s *Session) FeedVectors(v [][]float64) error {
	c := s.m.Config
	if c.TokenTarget() {
		return errors.New("encdec: FeedVectors on a model with token outputs (use FeedTokens)")
	}
	if len(v) != s.Batch() {
		return fmt.Errorf("encdec: %d vectors for a session of %d rows", len(v), s.Batch())
	}
	for b, x := range v {
		if err := checkSeq("input row", b, Seq{Vectors: [][]float64{x}}, 0, c.TgtDim, false); err != nil {
			return err
		}
		copy(s.vecs[b*c.TgtDim:], x)
	}
	return s.run(hostSlice(s.vecs, s.m.dtype))
}

func (s *Session) run(in any) error {
	if s.closed {
		return errors.New("encdec: the session is closed")
	}
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	p, err := m.program(s.step)
	if err != nil {
		return err
	}
	// Programs are shared by every session of the model: bind this one's state each time.
	if err := s.kv.Bind(p); err != nil {
		return fmt.Errorf("encdec: %w", err)
	}
	if err := p.SetInput(InTgtIn, in); err != nil {
		return fmt.Errorf("encdec: %w", err)
	}
	if err := p.Run(); err != nil {
		return fmt.Errorf("encdec: step program: %w", err)
	}
	if err := s.kv.Advance(s.ones); err != nil {
		return fmt.Errorf("encdec: %w", err)
	}
	return readFloats(p, OutY, s.out)
}

// Close frees the session's cache.
func (s *Session) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	return s.kv.Free()
}

// Generate decodes an output for each source: one Prefill run (Start), then one Step run per
// output (Feed). Sources may differ in length. Token outputs stop at EOS (not included) or MaxLen;
// vector outputs are fed back as the next input for MaxLen steps. Stream must not call the
// model's methods.
func (m *Model) Generate(src []Seq, o GenerateOptions) ([]Seq, error) {
	c := m.Config
	switch {
	case len(src) == 0:
		return nil, errors.New("encdec: Generate: no sources")
	case o.MaxLen <= 0:
		return nil, fmt.Errorf("encdec: Generate: max length %d must be positive", o.MaxLen)
	case o.Temperature < 0 || math.IsNaN(o.Temperature) || math.IsInf(o.Temperature, 0):
		return nil, fmt.Errorf("encdec: Generate: temperature %g must be finite and not negative", o.Temperature)
	case o.TopK < 0:
		return nil, fmt.Errorf("encdec: Generate: top-k %d must not be negative", o.TopK)
	case o.TopP < 0 || o.TopP > 1 || math.IsNaN(o.TopP):
		return nil, fmt.Errorf("encdec: Generate: top-p %g must be in [0, 1]", o.TopP)
	}
	s, err := m.Start(src)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	B := len(src)
	out := make([]Seq, B)
	done := make([]bool, B)
	rng := NewRand(o.Seed)
	var probs []float64
	var order []int
	ids := make([]int, B)
	vecs := make([][]float64, B)
	for pos := 0; pos < o.MaxLen; pos++ {
		active := 0
		for b := 0; b < B; b++ {
			if done[b] {
				continue
			}
			row := s.Output(b)
			ev := Event{Row: b, Pos: pos}
			if c.TokenTarget() {
				var tok int
				if o.Temperature == 0 {
					tok = argmax(row)
				} else {
					tok, probs, order = sample(row, o, rng, probs, order)
				}
				ev.Token = tok
				ids[b] = tok
				if tok == c.EOSTokenID && !o.IgnoreEOS {
					ev.EOS = true
					done[b] = true
				} else {
					out[b].Tokens = append(out[b].Tokens, tok)
				}
			} else {
				v := append([]float64(nil), row...)
				ev.Vector = v
				vecs[b] = v
				out[b].Vectors = append(out[b].Vectors, v)
			}
			if o.Stream != nil {
				if err := o.Stream(ev); err != nil {
					return out, err
				}
			}
			if !done[b] {
				active++
			}
		}
		if active == 0 || pos == o.MaxLen-1 {
			break
		}
		if c.TokenTarget() {
			err = s.FeedTokens(ids)
		} else {
			err = s.FeedVectors(vecs)
		}
		if err != nil {
			return nil, err
		}
	}
	for b := range out {
		if c.TokenTarget() && out[b].Tokens == nil {
			out[b].Tokens = []int{}
		}
	}
	return out, nil
}

// cacheSpec describes the decoder state of one row: per Mamba2 block the conv window and SSM
// state; with the cross-attention bridge, per cross block the memory keys and values
// [heads, S, head_dim] and the memory mask bias [1,1,S].
func (m *Model) cacheSpec(S int) cache.Spec {
	c := m.Config
	dec := c.decMamba()
	spec := cache.Spec{DType: m.dtype, Fingerprint: fmt.Sprintf("%s/S=%d", c.Fingerprint(), S)}
	for j := 0; j < c.numDecoderMamba(); j++ {
		spec.Tensors = append(spec.Tensors,
			cache.TensorSpec{Name: mamba2.ConvStateName(j), Dims: []int{dec.ConvDim(), dec.ConvKernel}},
			cache.TensorSpec{Name: mamba2.SSMStateName(j), Dims: []int{dec.NumHeads, dec.HeadDim, dec.StateSize}})
	}
	if c.Bridge == BridgeCross {
		nh := c.CrossHeads
		dh := c.DecoderHidden / nh
		for k := 0; k < c.numCross(); k++ {
			spec.Tensors = append(spec.Tensors,
				cache.TensorSpec{Name: CrossKName(k), Dims: []int{nh, S, dh}},
				cache.TensorSpec{Name: CrossVName(k), Dims: []int{nh, S, dh}})
		}
		spec.Tensors = append(spec.Tensors, cache.TensorSpec{Name: StateBias, Dims: []int{1, 1, S}})
	}
	return spec
}

// PickToken chooses a token from logits as Generate does: argmax when o.Temperature is 0, otherwise
// a sample from softmax(logits/o.Temperature) restricted by o.TopK and o.TopP, drawn with rng.
func PickToken(logits []float64, o GenerateOptions, rng *rand.Rand) int {
	if o.Temperature <= 0 || len(logits) == 0 {
		return argmax(logits)
	}
	tok, _, _ := sample(logits, o, rng, nil, nil)
	return tok
}

// NewRand returns the sampling generator Generate uses for seed.
func NewRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x67656e)) }

func argmax(v []float64) int {
	best := 0
	for i := 1; i < len(v); i++ {
		if v[i] > v[best] {
			best = i
		}
	}
	return best
}

// sample draws a token from softmax(logits/T) restricted to the top-k and top-p set. probs and
// order are scratch space, returned for reuse.
func sample(logits []float64, o GenerateOptions, rng *rand.Rand, probs []float64, order []int) (int, []float64, []int) {
	n := len(logits)
	probs = append(probs[:0], logits...)
	order = order[:0]
	for i := 0; i < n; i++ {
		order = append(order, i)
	}
	sort.SliceStable(order, func(a, b int) bool { return logits[order[a]] > logits[order[b]] })
	keep := n
	if o.TopK > 0 && o.TopK < keep {
		keep = o.TopK
	}
	mx := logits[order[0]]
	var sum float64
	for i := 0; i < keep; i++ {
		j := order[i]
		probs[j] = math.Exp((logits[j] - mx) / o.Temperature)
		sum += probs[j]
	}
	if o.TopP > 0 && o.TopP < 1 {
		acc := 0.0
		for i := 0; i < keep; i++ {
			acc += probs[order[i]] / sum
			if acc >= o.TopP {
				keep = i + 1
				break
			}
		}
		sum = 0
		for i := 0; i < keep; i++ {
			sum += probs[order[i]]
		}
	}
	r := rng.Float64() * sum
	for i := 0; i < keep; i++ {
		r -= probs[order[i]]
		if r <= 0 {
			return order[i], probs, order
		}
	}
	return order[keep-1], probs, order
}
