package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/models/encdec"
	"github.com/mamba2go/mamba2/models/encdec/tasks"
	"github.com/mamba2go/mamba2/models/mamba2"
	"github.com/mamba2go/mamba2/quant"
)

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " | ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

var _ flag.Value = (*listFlag)(nil)

func runGenerate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("generate", "--model DIR (--ids \"1 2 3\" ... | --vectors \"0.1 0.2 ...\" ... | --task NAME) [flags]", stdout)
	model := fs.String("model", "", "checkpoint directory: an encoder–decoder from mamba2 train, or a Hugging Face Mamba2 causal LM")
	var ids, vecs listFlag
	fs.Var(&ids, "ids", "one input row of token ids separated by spaces (repeat for a batch; rows may differ in length): the source of an encoder–decoder, the prompt of a causal LM")
	fs.Var(&vecs, "vectors", "one source row of vectors for a vector encoder–decoder: positions separated by spaces, components by commas (repeatable)")
	text := fs.String("text", "", "a text prompt (needs the checkpoint's tokenizer.json)")
	task := fs.String("task", "", "draw --n held-out sources of this synthetic task and score the outputs (encoder–decoders)")
	n := fs.Int("n", 5, "examples drawn with --task")
	taskSeed := fs.Uint64("task-seed", 1, "seed of the --task held-out stream (training uses the same held-out set for its --seed)")
	maxLen := fs.Int("max-len", 32, "most outputs per row (with --task: the task's output length)")
	temp := fs.Float64("temperature", 0, "sampling temperature (0: greedy)")
	topK := fs.Int("top-k", 0, "sample among the k most likely tokens (0: all)")
	topP := fs.Float64("top-p", 0, "sample among the most likely tokens of total probability p (0: all)")
	seed := fs.Uint64("seed", 0, "sampling seed")
	ignoreEOS := fs.Bool("ignore-eos", false, "keep generating after EOS")
	stream := fs.Bool("stream", false, "print outputs as they are generated (one input row)")
	weights := fs.String("weights", "f32", weightsFlagHelp+" (causal LMs)")
	backend := backendFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(fs, "model"); err != nil {
		return err
	}
	if *maxLen <= 0 {
		return fmt.Errorf("%w: --max-len must be positive, got %d", errUsage, *maxLen)
	}
	format, err := parseWeights(*weights)
	if err != nil {
		return err
	}
	opts := encdec.GenerateOptions{MaxLen: *maxLen, Temperature: *temp, TopK: *topK, TopP: *topP, Seed: *seed, IgnoreEOS: *ignoreEOS}
	if *temp < 0 || *topK < 0 || *topP < 0 || *topP > 1 {
		return fmt.Errorf("%w: --temperature and --top-k must not be negative, --top-p must be in [0, 1]", errUsage)
	}
	inputs := 0
	for _, given := range []bool{len(ids) > 0, len(vecs) > 0, *text != "", *task != ""} {
		if given {
			inputs++
		}
	}
	if inputs != 1 {
		return fmt.Errorf("%w: give exactly one of --ids, --vectors, --text and --task", errUsage)
	}
	kind, err := checkpointKind(*model)
	if err != nil {
		return err
	}
	be, err := openBackend(*backend)
	if err != nil {
		return err
	}
	defer be.Close()
	if kind != encdec.ModelType {
		if len(vecs) > 0 || *task != "" {
			return fmt.Errorf("%w: %s is a causal LM: --vectors and --task are for encoder–decoders", errUsage, *model)
		}
		return generateLM(be, *model, ids, *text, format, opts, *stream, stdout)
	}
	if *text != "" {
		return fmt.Errorf("%w: --text is for causal LMs with a tokenizer; an encoder–decoder takes --ids or --vectors", errUsage)
	}
	if format != quant.F32 {
		return fmt.Errorf("%w: --weights %s is for causal LMs; an encoder–decoder runs in float32", errUsage, format)
	}
	m, err := encdec.Load(be, *model, encdec.Options{})
	if err != nil {
		return err
	}
	defer m.Close()
	var src []encdec.Seq
	var examples []encdec.Example
	var t *tasks.Task
	switch {
	case *task != "":
		if t, err = tasks.New(*task); err != nil {
			return fmt.Errorf("%w: --task: %v", errUsage, err)
		}
		if *n <= 0 {
			return fmt.Errorf("%w: --n must be positive", errUsage)
		}
		examples = t.HeldOut(*taskSeed, *n)
		for _, e := range examples {
			src = append(src, e.Src)
		}
		opts.MaxLen = t.OutLen
	case len(ids) > 0:
		for _, row := range ids {
			toks, err := parseIDs(row)
			if err != nil {
				return fmt.Errorf("%w: --ids %q: %v", errUsage, row, err)
			}
			src = append(src, encdec.Seq{Tokens: toks})
		}
	default:
		for _, row := range vecs {
			v, err := parseVectors(row)
			if err != nil {
				return fmt.Errorf("%w: --vectors %q: %v", errUsage, row, err)
			}
			src = append(src, encdec.Seq{Vectors: v})
		}
	}
	if *stream {
		if len(src) != 1 {
			return fmt.Errorf("%w: --stream needs exactly one input row", errUsage)
		}
		opts.Stream = func(e encdec.Event) error {
			if !e.EOS {
				fmt.Fprint(stdout, formatOut(e.Token, e.Vector)+" ")
			}
			return nil
		}
	}
	out, err := m.Generate(src, opts)
	if err != nil {
		return err
	}
	if *stream {
		fmt.Fprintln(stdout)
		return nil
	}
	if t == nil {
		for _, o := range out {
			fmt.Fprintln(stdout, formatSeq(o))
		}
		return nil
	}
	return printExamples(stdout, t, examples, out, true)
}

// printExamples shows source, target and output of task examples and, with score, the task's
// metric over them.
func printExamples(w io.Writer, t *tasks.Task, examples []encdec.Example, out []encdec.Seq, score bool) error {
	good := 0
	for i, e := range examples {
		mark := ""
		if t.Tokens() {
			if slices.Equal(out[i].Tokens, e.Tgt.Tokens) {
				good++
				mark = "  ✓"
			} else {
				mark = "  ✗"
			}
		}
		fmt.Fprintf(w, "source  %s\ntarget  %s\noutput  %s%s\n\n", formatSeq(e.Src), formatSeq(e.Tgt), formatSeq(out[i]), mark)
	}
	if !score {
		return nil
	}
	v, err := t.Score(examples, out)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s %s: %.4f (%d examples)\n", t.Name, t.Metric, v, len(examples))
	return nil
}

// checkpointKind reads DIR/config.json's model_type ("mamba2-encdec", or another string for
// causal-LM checkpoints).
func checkpointKind(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, encdec.ConfigFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dir); serr != nil {
				return "", fmt.Errorf("--model: checkpoint %s does not exist", dir)
			}
			return "", fmt.Errorf("--model: %s has no %s (not a checkpoint)", dir, encdec.ConfigFile)
		}
		return "", fmt.Errorf("--model: %w", err)
	}
	var probe struct {
		ModelType string `json:"model_type"`
	}
	// A config that is not JSON is reported by the loader that reads it in full.
	_ = json.Unmarshal(data, &probe)
	return probe.ModelType, nil
}

// generateLM continues token-id prompts with a Hugging Face Mamba2 causal LM: one prefill of the
// (ragged) prompts, then one step per token.
func generateLM(be backends.Backend, dir string, rows []string, text string, format quant.Format, o encdec.GenerateOptions, stream bool, w io.Writer) error {
	if text != "" {
		if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
			return fmt.Errorf("--text: %s has no tokenizer.json; pass token ids with --ids", dir)
		}
		return fmt.Errorf("--text: this build has no tokenizer for %s; pass token ids with --ids", filepath.Join(dir, "tokenizer.json"))
	}
	lm, err := mamba2.Load(be, dir, mamba2.Options{Weights: format})
	if err != nil {
		return err
	}
	defer lm.Close()
	var prompts [][]int
	for _, r := range rows {
		p, err := parseIDs(r)
		if err != nil {
			return fmt.Errorf("%w: --ids %q: %v", errUsage, r, err)
		}
		for _, id := range p {
			if id >= lm.Config.VocabSize {
				return fmt.Errorf("%w: --ids %q: token %d is outside the vocabulary [0, %d)", errUsage, r, id, lm.Config.VocabSize)
			}
		}
		prompts = append(prompts, p)
	}
	if stream && len(prompts) != 1 {
		return fmt.Errorf("%w: --stream needs exactly one input row", errUsage)
	}
	B := len(prompts)
	s, err := lm.NewSession(B)
	if err != nil {
		return err
	}
	defer s.Close()
	s.Outputs = mamba2.Outputs{Logits: true, LastOnly: true}
	res, err := s.FeedTokens(prompts)
	if err != nil {
		return err
	}
	rng := encdec.NewRand(o.Seed)
	eos := lm.Config.EOSTokenID
	out := make([][]int, B)
	done := make([]bool, B)
	V := lm.Config.VocabSize
	logits := make([]float64, V)
	next := make([][]int, B)
	for step := 0; step < o.MaxLen; step++ {
		active := 0
		flat := res.Logits.Data()
		for b := 0; b < B; b++ {
			switch d := flat.(type) {
			case []float32:
				for v := 0; v < V; v++ {
					logits[v] = float64(d[b*V+v])
				}
			case []float64:
				copy(logits, d[b*V:(b+1)*V])
			}
			tok := encdec.PickToken(logits, o, rng)
			next[b] = []int{tok}
			if done[b] {
				next[b] = []int{max(eos, 0)}
				continue
			}
			if tok == eos && !o.IgnoreEOS {
				done[b] = true
				continue
			}
			out[b] = append(out[b], tok)
			active++
			if stream {
				fmt.Fprintf(w, "%d ", tok)
			}
		}
		if active == 0 || step == o.MaxLen-1 {
			break
		}
		if res, err = s.FeedTokens(next); err != nil {
			return err
		}
	}
	if stream {
		fmt.Fprintln(w)
		return nil
	}
	for _, r := range out {
		fmt.Fprintln(w, formatSeq(encdec.Seq{Tokens: r}))
	}
	return nil
}

func parseIDs(s string) ([]int, error) {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
		v, err := strconv.Atoi(f)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%q is not a token id", f)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("no token ids")
	}
	return out, nil
}

func parseVectors(s string) ([][]float64, error) {
	var out [][]float64
	for _, pos := range strings.Fields(s) {
		var v []float64
		for _, c := range strings.Split(pos, ",") {
			x, err := strconv.ParseFloat(c, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not a number", c)
			}
			v = append(v, x)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("no vectors")
	}
	return out, nil
}

func formatOut(tok int, vec []float64) string {
	if vec == nil {
		return strconv.Itoa(tok)
	}
	parts := make([]string, len(vec))
	for i, x := range vec {
		parts[i] = strconv.FormatFloat(x, 'f', 3, 64)
	}
	return strings.Join(parts, ",")
}

func formatSeq(s encdec.Seq) string {
	parts := make([]string, s.Len())
	for i := range parts {
		if s.Vectors != nil {
			parts[i] = formatOut(0, s.Vectors[i])
		} else {
			parts[i] = formatOut(s.Tokens[i], nil)
		}
	}
	return strings.Join(parts, " ")
}
