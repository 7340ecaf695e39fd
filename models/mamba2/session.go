package mamba2

import (
	"errors"
	"fmt"

	"github.com/mamba2go/mamba2/cache"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/shapes"
	"gorgonia.org/tensor"
)

// Padding says on which side the padding of a ragged batch is.
type Padding uint8

const (
	// PadRight: row b's real tokens are at positions 0 … len_b−1.
	PadRight Padding = iota
	// PadLeft: row b's real tokens are at positions T−len_b … T−1.
	PadLeft
)

// ParsePadding reads "right" or "left".
func ParsePadding(s string) (Padding, error) {
	switch s {
	case "right", "":
		return PadRight, nil
	case "left":
		return PadLeft, nil
	}
	return PadRight, fmt.Errorf("padding %q: want right or left", s)
}

// Outputs selects what Feed returns.
type Outputs struct {
	Logits bool // [B,T,V] (or [B,V] with LastOnly)
	Hidden bool // final hidden states after norm_f
	// LastOnly returns logits/hidden for each row's last real token only (what generation needs;
	// it skips the vocabulary projection of every other position).
	LastOnly bool
	// PerLayer returns the hidden state after every layer (Hugging Face output_hidden_states).
	PerLayer bool
}

// Result is what one Feed returns. Tensors are float32 or float64 as the model computes.
type Result struct {
	Logits   *tensor.Dense   // [B,T,V], or [B,V] with LastOnly; nil when not asked for
	Hidden   *tensor.Dense   // [B,T,hidden], or [B,hidden] with LastOnly
	PerLayer []*tensor.Dense // NumHiddenLayers+1 entries of [B,T,hidden]
	// Consumed is how many tokens each row consumed in this call.
	Consumed []int
	lastOnly bool
	lastPos  []int // position of each row's last real token in Logits' time axis
}

// ArgmaxLast returns, for each row, the most likely next token after its last consumed token
// (−1 for a row that consumed nothing).
func (r *Result) ArgmaxLast() []int {
	if r.Logits == nil {
		return nil
	}
	sh := r.Logits.Shape()
	B, V := sh[0], sh[len(sh)-1]
	T := 1
	if !r.lastOnly {
		T = sh[1]
	}
	out := make([]int, B)
	for b := 0; b < B; b++ {
		if r.Consumed[b] == 0 {
			out[b] = -1
			continue
		}
		t := 0
		if !r.lastOnly {
			t = r.lastPos[b]
		}
		off := (b*T + t) * V
		best := 0
		switch d := r.Logits.Data().(type) {
		case []float32:
			for v := 1; v < V; v++ {
				if d[off+v] > d[off+best] {
					best = v
				}
			}
		case []float64:
			for v := 1; v < V; v++ {
				if d[off+v] > d[off+best] {
					best = v
				}
			}
		}
		out[b] = best
	}
	return out
}

// Session decodes a batch of rows with a cache it owns. Each Feed call continues every row from
// where its previous call left it: one token per row runs the Step program, several run a
// Prefill continuing from the cache (chunked prefill). A Session is not safe for concurrent use;
// use one per goroutine (sessions of one Model may run concurrently).
type Session struct {
	m       *Model
	cache   *cache.Cache
	Outputs Outputs
	progs   map[GraphSpec]*graph.Program
	order   []GraphSpec
	bound   map[*graph.Program]*cache.Cache
	step    stepBuffers
}

// stepBuffers are Step's host-side inputs and outputs, kept to avoid allocating per call.
type stepBuffers struct {
	tokens, last       []int64
	ones               []int
	tokensAny, lastAny any
	out                any
}

// maxPrograms bounds how many compiled programs (one per distinct call shape) a session keeps.
const maxPrograms = 8

// NewSession returns a session of batch rows with an empty cache, returning logits by default.
func (m *Model) NewSession(batch int) (*Session, error) {
	c, err := m.NewCache(batch)
	if err != nil {
		return nil, err
	}
	return &Session{m: m, cache: c, Outputs: Outputs{Logits: true},
		progs: map[GraphSpec]*graph.Program{}, bound: map[*graph.Program]*cache.Cache{}}, nil
}

// Model returns the session's model.
func (s *Session) Model() *Model { return s.m }

// Cache returns the session's cache (to Snapshot, Save, or read states).
func (s *Session) Cache() *cache.Cache { return s.cache }

// SetCache replaces the session's cache, e.g. by the result of Select or Merge; the batch size
// follows the new cache. The session takes ownership and frees the old cache.
func (s *Session) SetCache(c *cache.Cache) error {
	if c == nil {
		return errors.New("mamba2: SetCache(nil)")
	}
	if c.Spec().Fingerprint != s.m.Config.Fingerprint() || c.Spec().DType != s.m.dtype {
		return errors.New("mamba2: SetCache: the cache belongs to another model configuration or dtype")
	}
	if c != s.cache {
		s.cache.Free()
	}
	s.cache = c
	return nil
}

// Reset empties the cache.
func (s *Session) Reset() error { return s.cache.Reset() }

// Clone returns an independent session with a copy of the cache.
func (s *Session) Clone() (*Session, error) {
	c, err := s.cache.Clone()
	if err != nil {
		return nil, err
	}
	return &Session{m: s.m, cache: c, Outputs: s.Outputs,
		progs: map[GraphSpec]*graph.Program{}, bound: map[*graph.Program]*cache.Cache{}}, nil
}

// Close frees the session's programs and cache.
func (s *Session) Close() error {
	for _, p := range s.progs {
		p.Close()
	}
	s.progs = nil
	return s.cache.Free()
}

// Feed consumes input ids [B,T] (int64, or int) for every row.
func (s *Session) Feed(ids *tensor.Dense) (*Result, error) {
	return s.FeedPadded(ids, nil, PadRight)
}

// FeedTokens consumes rows of token ids; rows may differ in length (a ragged batch; a row may be
// empty to leave it untouched).
func (s *Session) FeedTokens(rows [][]int) (*Result, error) {
	if len(rows) != s.cache.Batch() {
		return nil, fmt.Errorf("mamba2: %d rows for a session of batch %d", len(rows), s.cache.Batch())
	}
	T := 0
	for _, r := range rows {
		T = max(T, len(r))
	}
	if T == 0 {
		return nil, errors.New("mamba2: FeedTokens with no tokens")
	}
	ids := make([]int64, len(rows)*T)
	lens := make([]int, len(rows))
	for b, r := range rows {
		for t, v := range r {
			ids[b*T+t] = int64(v)
		}
		lens[b] = len(r)
	}
	return s.feed(len(rows), T, ids, nil, lens, PadRight)
}

// FeedPadded consumes a padded batch of ids [B,T]: row b holds lengths[b] real tokens, on the side
// given by pad. nil lengths means every row is full.
func (s *Session) FeedPadded(ids *tensor.Dense, lengths []int, pad Padding) (*Result, error) {
	if ids == nil {
		return nil, errors.New("mamba2: input_ids is nil")
	}
	sh := ids.Shape()
	if len(sh) != 2 {
		return nil, fmt.Errorf("mamba2: input_ids must have rank 2 [B,T], got shape %v", sh)
	}
	var flat []int64
	switch d := ids.Data().(type) {
	case []int64:
		flat = d
	case []int:
		flat = make([]int64, len(d))
		for i, v := range d {
			flat[i] = int64(v)
		}
	case []int32:
		flat = make([]int64, len(d))
		for i, v := range d {
			flat[i] = int64(v)
		}
	default:
		return nil, fmt.Errorf("mamba2: input_ids has dtype %v, want int64", ids.Dtype())
	}
	return s.feed(sh[0], sh[1], flat, nil, lengths, pad)
}

// FeedEmbeds consumes input embeddings [B,T,hidden] instead of token ids.
func (s *Session) FeedEmbeds(x *tensor.Dense) (*Result, error) {
	return s.FeedEmbedsPadded(x, nil, PadRight)
}

// FeedEmbedsPadded is FeedPadded for input embeddings [B,T,hidden].
func (s *Session) FeedEmbedsPadded(x *tensor.Dense, lengths []int, pad Padding) (*Result, error) {
	if x == nil {
		return nil, errors.New("mamba2: inputs_embeds is nil")
	}
	sh := x.Shape()
	if len(sh) != 3 || sh[2] != s.m.Config.HiddenSize {
		return nil, fmt.Errorf("mamba2: inputs_embeds must be [B,T,%d], got shape %v", s.m.Config.HiddenSize, sh)
	}
	var data any
	switch d := x.Data().(type) {
	case []float32:
		data = convert(d, s.m.dtype)
	case []float64:
		data = convert(d, s.m.dtype)
	default:
		return nil, fmt.Errorf("mamba2: inputs_embeds has dtype %v, want float32", x.Dtype())
	}
	return s.feed(sh[0], sh[1], nil, data, lengths, pad)
}

func (s *Session) feed(B, T int, ids []int64, embeds any, lengths []int, pad Padding) (*Result, error) {
	c := s.m.Config
	if B != s.cache.Batch() {
		return nil, fmt.Errorf("mamba2: input has batch %d, the session has %d rows", B, s.cache.Batch())
	}
	if T <= 0 {
		return nil, errors.New("mamba2: input has no tokens (T = 0)")
	}
	if !s.Outputs.Logits && !s.Outputs.Hidden && !s.Outputs.PerLayer {
		return nil, errors.New("mamba2: Session.Outputs selects nothing")
	}
	ragged := false
	lens := make([]int, B)
	for b := range lens {
		lens[b] = T
	}
	if lengths != nil {
		if len(lengths) != B {
			return nil, fmt.Errorf("mamba2: lengths has %d entries for batch %d", len(lengths), B)
		}
		for b, l := range lengths {
			if l < 0 || l > T {
				return nil, fmt.Errorf("mamba2: lengths[%d] = %d is outside [0, %d]", b, l, T)
			}
			lens[b] = l
			ragged = ragged || l != T
		}
	}
	left := ragged && pad == PadLeft
	// Bring left-padded rows to the right-padded layout the programs use.
	pos := func(b, t int) int { // padded-input position of row b's t-th real token
		if left {
			return T - lens[b] + t
		}
		return t
	}
	var in any
	if ids != nil {
		x := make([]int64, B*T)
		for b := 0; b < B; b++ {
			for t := 0; t < lens[b]; t++ {
				v := ids[b*T+pos(b, t)]
				if v < 0 || v >= int64(c.VocabSize) {
					return nil, fmt.Errorf("mamba2: input_ids[%d,%d] = %d is outside the vocabulary [0, %d)", b, pos(b, t), v, c.VocabSize)
				}
				x[b*T+t] = v
			}
		}
		in = x
	} else {
		H := c.HiddenSize
		shift := func(src, dst any) {
			switch sv := src.(type) {
			case []float32:
				dv := dst.([]float32)
				for b := 0; b < B; b++ {
					copy(dv[b*T*H:b*T*H+lens[b]*H], sv[(b*T+pos(b, 0))*H:])
				}
			case []float64:
				dv := dst.([]float64)
				for b := 0; b < B; b++ {
					copy(dv[b*T*H:b*T*H+lens[b]*H], sv[(b*T+pos(b, 0))*H:])
				}
			}
		}
		if left {
			x := graph.NewHostSlice(shapes.Make(s.m.dtype, B*T*H))
			shift(embeds, x)
			in = x
		} else {
			in = embeds
		}
	}

	spec := GraphSpec{Phase: Prefill, Batch: B, Tokens: T, DType: s.m.dtype, Embeds: ids == nil, Ragged: ragged,
		Logits: s.Outputs.Logits, Hidden: s.Outputs.Hidden, LastOnly: s.Outputs.LastOnly, PerLayer: s.Outputs.PerLayer}
	if T == 1 {
		spec.Phase = Step
	}
	p, err := s.program(spec)
	if err != nil {
		return nil, err
	}
	if s.bound[p] != s.cache {
		if err := s.cache.Bind(p); err != nil {
			return nil, err
		}
		s.bound[p] = s.cache
	}
	name := InputIDs
	if ids == nil {
		name = InputEmbeds
	}
	if err := p.SetInput(name, in); err != nil {
		return nil, err
	}
	if ragged {
		mask := graph.NewHostSlice(shapes.Make(s.m.dtype, B*T))
		l64 := make([]int64, B)
		for b := 0; b < B; b++ {
			l64[b] = int64(lens[b])
			for t := 0; t < lens[b]; t++ {
				switch mv := mask.(type) {
				case []float32:
					mv[b*T+t] = 1
				case []float64:
					mv[b*T+t] = 1
				}
			}
		}
		if err := p.SetInput(InputMask, mask); err != nil {
			return nil, err
		}
		if err := p.SetInput(InputLens, l64); err != nil {
			return nil, err
		}
	}
	if spec.LastOnly {
		last := make([]int64, B)
		for b := range last {
			last[b] = int64(b*T + max(lens[b]-1, 0))
		}
		if err := p.SetInput(InputLast, last); err != nil {
			return nil, err
		}
	}
	if err := p.Run(); err != nil {
		return nil, fmt.Errorf("mamba2: %s program: %w", spec.Phase, err)
	}
	if err := s.cache.Advance(lens); err != nil {
		return nil, err
	}
	res := &Result{Consumed: lens, lastOnly: spec.LastOnly, lastPos: make([]int, B)}
	for b := range res.lastPos {
		res.lastPos[b] = max(lens[b]-1, 0)
		if left {
			res.lastPos[b] = T - 1
		}
	}
	read := func(name string, perPosition bool) (*tensor.Dense, error) {
		t, err := p.Output(name)
		if err != nil || !left || !perPosition {
			return t, err
		}
		return unshift(t, lens), nil
	}
	if spec.Logits {
		if res.Logits, err = read(OutLogits, !spec.LastOnly); err != nil {
			return nil, err
		}
	}
	if spec.Hidden {
		if res.Hidden, err = read(OutHidden, !spec.LastOnly); err != nil {
			return nil, err
		}
	}
	if spec.PerLayer {
		for l := 0; l <= c.NumHiddenLayers; l++ {
			t, err := read(LayerHiddenName(l), true)
			if err != nil {
				return nil, err
			}
			res.PerLayer = append(res.PerLayer, t)
		}
	}
	return res, nil
}

// unshift moves right-padded per-position outputs [B,T,F] back to left-padded positions.
func unshift(t *tensor.Dense, lens []int) *tensor.Dense {
	sh := t.Shape()
	B, T, F := sh[0], sh[1], sh[2]
	move := func(src, dst any) {
		for b := 0; b < B; b++ {
			o := (b*T + T - lens[b]) * F
			switch sv := src.(type) {
			case []float32:
				copy(dst.([]float32)[o:o+lens[b]*F], sv[b*T*F:])
			case []float64:
				copy(dst.([]float64)[o:o+lens[b]*F], sv[b*T*F:])
			}
		}
	}
	var out any
	switch t.Data().(type) {
	case []float32:
		out = make([]float32, B*T*F)
	case []float64:
		out = make([]float64, B*T*F)
	}
	move(t.Data(), out)
	return tensor.New(tensor.WithShape(B, T, F), tensor.WithBacking(out))
}

// program returns the compiled program for spec, compiling it on first use.
func (s *Session) program(spec GraphSpec) (*graph.Program, error) {
	if p, ok := s.progs[spec]; ok {
		return p, nil
	}
	p, err := s.m.Compile(spec)
	if err != nil {
		return nil, err
	}
	if len(s.order) >= maxPrograms {
		old := s.order[0]
		s.order = s.order[1:]
		s.progs[old].Close()
		delete(s.bound, s.progs[old])
		delete(s.progs, old)
	}
	s.progs[spec] = p
	s.order = append(s.order, spec)
	return p, nil
}

// Step consumes one token per row (tokens[b] for row b) with the Step program and writes each
// row's next-token logits into logits (B·V values, row-major). It is the allocation-free decode
// path: after its first call it does not allocate.
func (s *Session) Step(tokens []int64, logits []float32) error {
	B := s.cache.Batch()
	V := s.m.Config.VocabSize
	if len(tokens) != B {
		return fmt.Errorf("mamba2: Step got %d tokens for %d rows", len(tokens), B)
	}
	if len(logits) != B*V {
		return fmt.Errorf("mamba2: Step needs a logits buffer of %d·%d = %d values, got %d", B, V, B*V, len(logits))
	}
	for b, v := range tokens {
		if v < 0 || v >= int64(V) {
			return fmt.Errorf("mamba2: Step: token %d of row %d is outside the vocabulary [0, %d)", v, b, V)
		}
	}
	spec := GraphSpec{Phase: Step, Batch: B, Tokens: 1, DType: s.m.dtype, Logits: true, LastOnly: true}
	p, err := s.program(spec)
	if err != nil {
		return err
	}
	if s.bound[p] != s.cache {
		if err := s.cache.Bind(p); err != nil {
			return err
		}
		s.bound[p] = s.cache
	}
	st := &s.step
	if len(st.last) != B {
		// Host buffers, boxed once: converting a slice to an interface allocates.
		st.tokens = make([]int64, B)
		st.last = make([]int64, B)
		st.ones = make([]int, B)
		for b := range st.last {
			st.last[b] = int64(b)
			st.ones[b] = 1
		}
		st.tokensAny, st.lastAny = st.tokens, st.last
		st.out = graph.NewHostSlice(shapes.Make(s.m.dtype, B*V))
	}
	copy(st.tokens, tokens)
	if err := p.SetInput(InputIDs, st.tokensAny); err != nil {
		return err
	}
	if err := p.SetInput(InputLast, st.lastAny); err != nil {
		return err
	}
	if err := p.Run(); err != nil {
		return fmt.Errorf("mamba2: step program: %w", err)
	}
	if err := p.ReadOutput(OutLogits, st.out); err != nil {
		return err
	}
	switch o := st.out.(type) {
	case []float32:
		copy(logits, o)
	case []float64:
		for i, v := range o {
			logits[i] = float32(v)
		}
	}
	return s.cache.Advance(st.ones)
}
