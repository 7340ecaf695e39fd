package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mamba2go/mamba2/backends"
	"github.com/mamba2go/mamba2/models/encdec"
	"github.com/mamba2go/mamba2/models/encdec/tasks"
)

// trainRun is one training run of an encoder–decoder on a synthetic task.
type trainRun struct {
	task      *tasks.Task
	model     encdec.Config
	opts      encdec.TrainOptions
	batch     int
	seed      uint64
	evalEvery int
	evalSize  int
	saveEvery int
	out       string
	resume    bool
}

// Keys of the metadata a training checkpoint carries (trainer_state.json "extra").
const (
	extraTask  = "task"
	extraSeed  = "seed"
	extraBatch = "batch"
)

func runTrain(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("train", "--task reverse|copy|sort|sine [--steps N] [--out DIR] [flags]", stdout)
	task := fs.String("task", "", "synthetic task: "+strings.Join(tasks.Names(), ", "))
	steps := fs.Int("steps", 0, "training steps (default: the task's demo setting)")
	out := fs.String("out", "", "checkpoint directory (config.json, model.safetensors, optimizer and trainer state); empty: do not save")
	resume := fs.Bool("resume", false, "continue the training checkpoint in --out (its model and optimiser settings are kept; --task, --seed and --batch must match)")
	batch := fs.Int("batch", 0, "examples per step (default: the task's demo setting)")
	lr := fs.Float64("lr", 0, "peak learning rate (default: the task's demo setting)")
	warmup := fs.Int("warmup", -1, "linear warm-up steps (default: 5% of --steps)")
	wd := fs.Float64("weight-decay", 0.01, "AdamW weight decay (matrices only)")
	clip := fs.Float64("clip", 1, "global gradient-norm clip (0: none)")
	hidden := fs.Int("hidden", 0, "model width (default: the task's demo setting)")
	layers := fs.Int("layers", 0, "encoder and decoder depth (default: the task's demo setting)")
	bridge := fs.String("bridge", "", "bridge: prefix or cross (default: cross for token tasks, prefix for sine)")
	seed := fs.Uint64("seed", 1, "seed of the weights and the data")
	evalEvery := fs.Int("eval-every", 0, "evaluate on held-out data every N steps (default: 4 times per run)")
	evalSize := fs.Int("eval-size", 256, "held-out examples")
	saveEvery := fs.Int("save-every", 0, "also save the checkpoint every N steps (0: only at the end)")
	backend := backendFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(fs, "task"); err != nil {
		return err
	}
	t, err := tasks.New(*task)
	if err != nil {
		return fmt.Errorf("%w: --task: %v", errUsage, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	r := demoSettings(t)
	if set["steps"] {
		if *steps <= 0 {
			return fmt.Errorf("%w: --steps must be positive, got %d", errUsage, *steps)
		}
		r.opts.Steps = *steps
	}
	if set["batch"] {
		if *batch <= 0 {
			return fmt.Errorf("%w: --batch must be positive, got %d", errUsage, *batch)
		}
		r.batch = *batch
	}
	if set["lr"] {
		r.opts.LR = *lr
		r.opts.MinLR = *lr / 10
	}
	r.opts.Warmup = max(1, r.opts.Steps/20)
	if *warmup >= 0 {
		r.opts.Warmup = *warmup
	}
	r.opts.WeightDecay, r.opts.ClipNorm = *wd, *clip
	if set["hidden"] || set["layers"] {
		h, l := r.model.DecoderHidden, countKind(r.model.DecoderLayers, encdec.Mamba2)
		if set["hidden"] {
			h = *hidden
		}
		if set["layers"] {
			l = *layers
		}
		if h <= 0 || l <= 0 {
			return fmt.Errorf("%w: --hidden and --layers must be positive", errUsage)
		}
		r.model = t.ModelConfig(h, l)
	}
	if *bridge != "" {
		if r.model, err = withBridge(r.model, *bridge); err != nil {
			return fmt.Errorf("%w: --bridge: %v", errUsage, err)
		}
	}
	if err := r.model.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := r.opts.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *evalSize <= 0 {
		return fmt.Errorf("%w: --eval-size must be positive", errUsage)
	}
	if *resume && *out == "" {
		return fmt.Errorf("%w: --resume needs --out DIR", errUsage)
	}
	if !*resume && *out != "" {
		if _, err := os.Stat(filepath.Join(*out, encdec.ConfigFile)); err == nil {
			return fmt.Errorf("%w: --out %s already holds a checkpoint: continue it with --resume or choose another directory", errUsage, *out)
		}
	}
	r.seed, r.evalSize, r.saveEvery, r.out, r.resume = *seed, *evalSize, *saveEvery, *out, *resume
	r.evalEvery = *evalEvery
	if r.evalEvery <= 0 {
		r.evalEvery = max(1, r.opts.Steps/4)
	}
	be, err := openBackend(*backend)
	if err != nil {
		return err
	}
	defer be.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m, res, err := train(ctx, be, r, stdout, stderr)
	if m != nil {
		defer m.Close()
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s: %.4f\n", t.Name, res.Metric, res.Value)
	return nil
}

func countKind(kinds []string, kind string) int {
	n := 0
	for _, k := range kinds {
		if k == kind {
			n++
		}
	}
	return n
}

// withBridge switches a task model to the other bridge, adding or removing cross-attention blocks.
func withBridge(c encdec.Config, bridge string) (encdec.Config, error) {
	if bridge == c.Bridge {
		return c, nil
	}
	switch bridge {
	case encdec.BridgeCross:
		var dec []string
		for _, k := range c.DecoderLayers {
			dec = append(dec, k, encdec.Cross)
		}
		c.DecoderLayers = dec
	case encdec.BridgePrefix:
		var dec []string
		for _, k := range c.DecoderLayers {
			if k != encdec.Cross {
				dec = append(dec, k)
			}
		}
		c.DecoderLayers = dec
	default:
		return c, fmt.Errorf("%q: want prefix or cross", bridge)
	}
	c.Bridge = bridge
	return c, nil
}

// demoSettings are the tuned defaults of each task (what make demo runs).
func demoSettings(t *tasks.Task) trainRun {
	r := trainRun{task: t, batch: 32, evalSize: 256, seed: 1}
	switch t.Name {
	case "sine":
		r.model = t.ModelConfig(32, 1)
		r.opts = encdec.TrainOptions{LR: 4e-3, MinLR: 4e-4, Steps: 300}
	default:
		r.model = t.ModelConfig(64, 1)
		r.opts = encdec.TrainOptions{LR: 3e-3, MinLR: 3e-4, Steps: 400}
	}
	r.opts.Warmup = max(1, r.opts.Steps/20)
	r.opts.WeightDecay, r.opts.ClipNorm = 0.01, 1
	return r
}

// train runs r: it creates (or resumes) the model, trains with a progress bar on stderr, evaluates
// on held-out data periodically and at the end, and saves checkpoints. An interruption (ctx done)
// stops after the current step, saves a complete checkpoint when --out is set, and returns an
// error saying so.
func train(ctx context.Context, be backends.Backend, r trainRun, stdout, stderr io.Writer) (*encdec.Model, tasks.Result, error) {
	var m *encdec.Model
	var tr *encdec.Trainer
	var err error
	extra := map[string]string{extraTask: r.task.Name, extraSeed: strconv.FormatUint(r.seed, 10), extraBatch: strconv.Itoa(r.batch)}
	if r.resume {
		var saved map[string]string
		m, tr, saved, err = encdec.Resume(be, r.out, encdec.Options{})
		if err != nil {
			return nil, tasks.Result{}, err
		}
		for _, k := range []string{extraTask, extraSeed, extraBatch} {
			if saved[k] != extra[k] {
				m.Close()
				return nil, tasks.Result{}, fmt.Errorf("--resume: %s was trained with %s %q, this run asks for %q", r.out, k, saved[k], extra[k])
			}
		}
		if tr.Steps() >= tr.Options.Steps {
			m.Close()
			return nil, tasks.Result{}, fmt.Errorf("--resume: %s already completed its %d steps", r.out, tr.Options.Steps)
		}
		r.opts = tr.Options
	} else {
		if m, err = encdec.New(be, r.model, r.seed, encdec.Options{}); err != nil {
			return nil, tasks.Result{}, err
		}
		if tr, err = encdec.NewTrainer(m, r.opts); err != nil {
			m.Close()
			return nil, tasks.Result{}, err
		}
	}
	if r.out != "" {
		// Fail early on an unwritable directory.
		if err := os.MkdirAll(r.out, 0o755); err != nil {
			return m, tasks.Result{}, err
		}
	}
	held := r.task.HeldOut(r.seed, r.evalSize)
	fmt.Fprintf(stderr, "%s: %s, %d parameters, batch %d, %d steps, lr %g\n", r.task.Name, m.Config, m.NumParams(), r.batch, r.opts.Steps, r.opts.LR)
	bar := newProgress(stderr, tr.Steps(), r.opts.Steps)
	save := func() error {
		if r.out == "" {
			return nil
		}
		return tr.Save(r.out, extra)
	}
	var res tasks.Result
	for tr.Steps() < r.opts.Steps {
		if ctx.Err() != nil {
			bar.clear()
			if r.out == "" {
				return m, res, fmt.Errorf("interrupted at step %d (no --out: nothing saved)", tr.Steps())
			}
			if err := save(); err != nil {
				return m, res, fmt.Errorf("interrupted at step %d; saving failed: %w (the previous checkpoint is intact)", tr.Steps(), err)
			}
			return m, res, fmt.Errorf("interrupted at step %d; checkpoint saved in %s (continue with --resume)", tr.Steps(), r.out)
		}
		st, err := tr.TrainStep(r.task.Batch(r.seed, tr.Steps(), r.batch))
		if err != nil {
			bar.clear()
			return m, res, err
		}
		bar.update(st)
		if st.Step%r.evalEvery == 0 || st.Step == r.opts.Steps {
			if res, err = r.task.Evaluate(m, held, 256); err != nil {
				bar.clear()
				return m, res, err
			}
			bar.note(fmt.Sprintf("step %d: held-out %s %.4f (loss %.4f)", st.Step, res.Metric, res.Value, st.Loss))
		}
		if r.saveEvery > 0 && st.Step%r.saveEvery == 0 && st.Step < r.opts.Steps {
			if err := save(); err != nil {
				bar.clear()
				return m, res, err
			}
		}
	}
	bar.finish()
	if res.Metric == "" { // resumed at the last step
		if res, err = r.task.Evaluate(m, held, 256); err != nil {
			return m, res, err
		}
	}
	if err := save(); err != nil {
		return m, res, err
	}
	if r.out != "" {
		fmt.Fprintf(stderr, "saved %s\n", filepath.Clean(r.out))
	}
	return m, res, nil
}

// progress draws a progress bar (step, loss, tokens/s, ETA): redrawn in place on a terminal,
// a line every 5% of the run otherwise.
type progress struct {
	w          io.Writer
	tty        bool
	first      int
	total      int
	start      time.Time
	last       time.Time
	tokens     int
	loss       float64
	step       int
	lastLine   int
	drawnWidth int
}

func newProgress(w io.Writer, first, total int) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, tty: tty, first: first, total: total, start: time.Now(), step: first, lastLine: first}
}

func (p *progress) line() string {
	el := time.Since(p.start)
	done := p.step - p.first
	rate, eta := 0.0, "?"
	if done > 0 && el > 0 {
		rate = float64(p.tokens) / el.Seconds()
		left := time.Duration(float64(el) / float64(done) * float64(p.total-p.step))
		eta = left.Round(time.Second).String()
	}
	const width = 24
	filled := width * p.step / max(1, p.total)
	bar := strings.Repeat("#", filled) + strings.Repeat(".", width-filled)
	return fmt.Sprintf("step %*d/%d [%s] loss %.4f  %s tok/s  ETA %s", len(strconv.Itoa(p.total)), p.step, p.total, bar, p.loss, human(rate), eta)
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func (p *progress) update(st encdec.StepResult) {
	p.step, p.loss = st.Step, st.Loss
	p.tokens += st.Tokens
	if p.tty {
		if time.Since(p.last) >= 100*time.Millisecond || p.step == p.total {
			p.last = time.Now()
			s := p.line()
			fmt.Fprintf(p.w, "\r%s", s)
			if n := len(s); n < p.drawnWidth {
				fmt.Fprint(p.w, strings.Repeat(" ", p.drawnWidth-n))
			}
			p.drawnWidth = len(s)
		}
		return
	}
	if every := max(1, p.total/20); p.step-p.lastLine >= every || p.step == p.total {
		p.lastLine = p.step
		fmt.Fprintln(p.w, p.line())
	}
}

// note prints a line above the bar.
func (p *progress) note(s string) {
	p.clear()
	fmt.Fprintln(p.w, s)
}

func (p *progress) clear() {
	if p.tty && p.drawnWidth > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.drawnWidth))
		p.drawnWidth = 0
		p.last = time.Time{}
	}
}

func (p *progress) finish() {
	if p.tty {
		p.clear()
		fmt.Fprintln(p.w, p.line())
	}
	el := time.Since(p.start)
	fmt.Fprintf(p.w, "trained %d steps in %s (%.1f ms/step)\n", p.step-p.first, el.Round(100*time.Millisecond),
		float64(el.Milliseconds())/math.Max(1, float64(p.step-p.first)))
}

// runDemo trains the two demonstration models on the CPU (sequence reversal with the
// cross-attention bridge; sine continuation with continuous outputs and the prefix bridge), shows
// a few generated examples, and ends with the two held-out scores.
func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "[flags]", stdout)
	backend := backendFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	be, err := openBackend(*backend)
	if err != nil {
		return err
	}
	defer be.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	var lines []string
	for _, name := range []string{"reverse", "sine"} {
		t, err := tasks.New(name)
		if err != nil {
			return err
		}
		r := demoSettings(t)
		r.evalEvery = r.opts.Steps
		m, res, err := train(ctx, be, r, stdout, stderr)
		if err != nil {
			if m != nil {
				m.Close()
			}
			return err
		}
		show := t.HeldOut(r.seed, 3)
		out, err := m.Generate(srcOf(show), encdec.GenerateOptions{MaxLen: t.OutLen})
		m.Close()
		if err != nil {
			return err
		}
		if len(lines) == 0 {
			fmt.Fprintln(stdout)
		}
		fmt.Fprintf(stdout, "%s (%s bridge), held-out examples:\n", name, r.model.Bridge)
		if err := printExamples(stdout, t, show, out, false); err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("%s %s: %.4f", name, res.Metric, res.Value))
	}
	fmt.Fprintf(stderr, "demo finished in %s\n", time.Since(start).Round(100*time.Millisecond))
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	return nil
}

func srcOf(examples []encdec.Example) []encdec.Seq {
	out := make([]encdec.Seq, len(examples))
	for i, e := range examples {
		out[i] = e.Src
	}
	return out
}
