package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/backends/cpu/kernels"
	"github.com/mamba2go/mamba2/models/mamba2"
)

// benchReport is the JSON line `mamba2 bench --json` prints.
type benchReport struct {
	Backend         string  `json:"backend"`
	Kernels         string  `json:"kernels"`
	Weights         string  `json:"weights"` // storage of the large matrices: f32, bf16, f16, int8
	Threads         int     `json:"threads"`
	Batch           int     `json:"batch"`
	Prompt          int     `json:"prompt"`
	Gen             int     `json:"gen"`
	Params          int64   `json:"params"`
	WeightBytes     int64   `json:"weight_bytes"`
	PrefillTokS     float64 `json:"prefill_tok_s"`
	DecodeTokS      float64 `json:"decode_tok_s"`
	DecodeMsP50     float64 `json:"decode_ms_p50"`
	DecodeMsP99     float64 `json:"decode_ms_p99"`
	DecodeMsFirst10 float64 `json:"decode_ms_first10"` // median of the first 10 steps
	DecodeMsLast10  float64 `json:"decode_ms_last10"`  // median of the last 10 steps
	// Medians of the first and last 100 steps: on a shared machine ten steps can fall in one
	// burst of another process's work.
	DecodeMsFirst100 float64 `json:"decode_ms_first100"`
	DecodeMsLast100  float64 `json:"decode_ms_last100"`
	// With --far: medians of steps just after the prompt and at position far, timed in turn on
	// two sessions so that both meet the same load.
	FarPosition      int     `json:"far_position,omitempty"`
	DecodeMsNearP50  float64 `json:"decode_ms_near_p50,omitempty"`
	DecodeMsFarP50   float64 `json:"decode_ms_far_p50,omitempty"`
	AllocsPerStep    float64 `json:"allocs_per_step"`
	PeakRSSBytes     int64   `json:"peak_rss_bytes"`
	MemBandwidthGBs  float64 `json:"mem_bandwidth_gb_s"`
	DecodeBoundTokS  float64 `json:"decode_bound_tok_s"`
	DecodeOfBoundPct float64 `json:"decode_pct_of_bound"`
}

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "--model DIR [--prompt 512] [--gen 64] [--threads 2] [--batch 1] [--weights f32|bf16|f16|int8] [--far POS] [--json]", stdout)
	model := fs.String("model", "", "checkpoint directory (e.g. one written by mamba2 init)")
	prompt := fs.Int("prompt", 512, "prompt length (tokens prefilled in one call)")
	gen := fs.Int("gen", 64, "number of Step calls (decoded tokens per row)")
	threads := fs.Int("threads", runtime.NumCPU(), "worker threads")
	batch := fs.Int("batch", 1, "rows decoded together")
	asJSON := fs.Bool("json", false, "print one JSON line instead of a table")
	seed := fs.Uint64("seed", 1, "seed of the random prompt")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the timed prefill and decode to this file")
	weights := fs.String("weights", "f32", weightsFlagHelp)
	far := fs.Int("far", 0, "also time gen steps at this position against gen steps just after the prompt, alternating between two sessions (0: off)")
	backend := backendFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(fs, "model"); err != nil {
		return err
	}
	for name, v := range map[string]int{"prompt": *prompt, "gen": *gen, "threads": *threads, "batch": *batch} {
		if v <= 0 {
			return fmt.Errorf("%w: --%s must be positive, got %d", errUsage, name, v)
		}
	}
	if *far < 0 || (*far > 0 && *far <= *prompt) {
		return fmt.Errorf("%w: --far must be 0 or beyond --prompt (%d), got %d", errUsage, *prompt, *far)
	}
	format, err := parseWeights(*weights)
	if err != nil {
		return err
	}
	runtime.GOMAXPROCS(max(*threads, 1))
	be, err := openBackend(*backend)
	if err != nil {
		return err
	}
	defer be.Close()
	// Host memory bounds a CPU decode; a GPU's is not measured here. The probe streams a buffer
	// of its own: run before the model is loaded and its memory handed back to the OS, it does
	// not add to the peak RSS reported below.
	var bandwidth float64
	if be.Name() == "cpu" {
		bandwidth = measureBandwidth(*threads)
		debug.FreeOSMemory()
	}
	m, err := mamba2.Load(be, *model, mamba2.Options{Weights: format})
	if err != nil {
		return fmt.Errorf("--model: %w", err)
	}
	defer m.Close()
	c := m.Config
	rep := benchReport{Backend: be.Name(), Kernels: kernelSet(be), Weights: format.String(), Threads: *threads, Batch: *batch, Prompt: *prompt, Gen: *gen}
	for _, name := range m.Weights().Names() {
		buf, _ := m.Weights().Get(name)
		n := int64(buf.Shape().Size())
		if base, isScale := strings.CutSuffix(name, mamba2.ScaleName("")); !isScale || !mamba2.Quantizable(base) {
			rep.Params += n // int8 scales are bytes to stream, not parameters
		}
		rep.WeightBytes += n * int64(buf.Shape().DType.Size())
	}

	rng := rand.New(rand.NewPCG(*seed, 0))
	rows := make([][]int, *batch)
	for b := range rows {
		for i := 0; i < *prompt; i++ {
			rows[b] = append(rows[b], rng.IntN(c.VocabSize))
		}
	}
	sess, err := m.NewSession(*batch)
	if err != nil {
		return err
	}
	defer sess.Close()
	sess.Outputs = mamba2.Outputs{Logits: true, LastOnly: true}
	// Warm-up: compile both programs and touch every buffer once.
	if _, err := sess.FeedTokens(rows); err != nil {
		return err
	}
	logits := make([]float32, *batch*c.VocabSize)
	tokens := make([]int64, *batch)
	if err := sess.Step(tokens, logits); err != nil {
		return err
	}
	if err := sess.Reset(); err != nil {
		return err
	}

	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	res, err := sess.FeedTokens(rows)
	if err != nil {
		return err
	}
	rep.PrefillTokS = float64(*prompt**batch) / time.Since(start).Seconds()
	next := res.ArgmaxLast()
	for b := range tokens {
		tokens[b] = int64(next[b])
	}

	// One untimed step warms the step program (its first run binds the cache's buffers), and a
	// collection now keeps the prefill's garbage from being collected during the timed steps
	// (a GC empties the runtime's caches, whose refills count as allocations).
	if _, err := timedStep(sess, tokens, logits); err != nil {
		return err
	}
	runtime.GC()

	times := make([]float64, *gen)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	total := time.Now()
	for i := 0; i < *gen; i++ {
		if times[i], err = timedStep(sess, tokens, logits); err != nil {
			return err
		}
	}
	elapsed := time.Since(total)
	runtime.ReadMemStats(&ms1)
	rep.AllocsPerStep = float64(ms1.Mallocs-ms0.Mallocs) / float64(*gen)
	rep.DecodeTokS = float64(*gen**batch) / elapsed.Seconds()
	// Medians, not means: one step slowed by another process would otherwise decide whether
	// latency looks position-dependent.
	rep.DecodeMsFirst10 = median(times[:min(10, len(times))])
	rep.DecodeMsLast10 = median(times[max(0, len(times)-10):])
	rep.DecodeMsFirst100 = median(times[:min(100, len(times))])
	rep.DecodeMsLast100 = median(times[max(0, len(times)-100):])
	sorted := append([]float64(nil), times...)
	sort.Float64s(sorted)
	rep.DecodeMsP50 = percentile(sorted, 0.50)
	rep.DecodeMsP99 = percentile(sorted, 0.99)
	rep.PeakRSSBytes = peakRSS() // before --far, whose second session and long prefill add memory
	if *far > 0 {
		nearMs, farMs, err := positionCheck(m, rows, *far, *gen)
		if err != nil {
			return err
		}
		rep.FarPosition, rep.DecodeMsNearP50, rep.DecodeMsFarP50 = *far, median(nearMs), median(farMs)
	}
	rep.MemBandwidthGBs = bandwidth
	if rep.WeightBytes > 0 && rep.MemBandwidthGBs > 0 {
		rep.DecodeBoundTokS = rep.MemBandwidthGBs * 1e9 / float64(rep.WeightBytes) * float64(*batch)
		rep.DecodeOfBoundPct = 100 * rep.DecodeTokS / rep.DecodeBoundTokS
	}

	if *asJSON {
		return json.NewEncoder(stdout).Encode(rep)
	}
	fmt.Fprintf(stdout, "model      %s: %d params, %.1f MB of %s weights\n", *model, rep.Params, float64(rep.WeightBytes)/1e6, rep.Weights)
	fmt.Fprintf(stdout, "backend    %s (kernels %s), %d threads, batch %d\n", rep.Backend, rep.Kernels, rep.Threads, rep.Batch)
	fmt.Fprintf(stdout, "prefill    %d tokens: %.1f tok/s\n", *prompt, rep.PrefillTokS)
	fmt.Fprintf(stdout, "decode     %d steps: %.1f tok/s (p50 %.2f ms, p99 %.2f ms; medians of the first/last 10 steps %.2f/%.2f ms, of the first/last 100 %.2f/%.2f ms)\n",
		*gen, rep.DecodeTokS, rep.DecodeMsP50, rep.DecodeMsP99, rep.DecodeMsFirst10, rep.DecodeMsLast10, rep.DecodeMsFirst100, rep.DecodeMsLast100)
	if rep.FarPosition > 0 {
		fmt.Fprintf(stdout, "position   steps just after the prompt: p50 %.2f ms; at position %d: p50 %.2f ms (in turn on two sessions)\n",
			rep.DecodeMsNearP50, rep.FarPosition, rep.DecodeMsFarP50)
	}
	if rep.MemBandwidthGBs > 0 {
		fmt.Fprintf(stdout, "bound      memory %.1f GB/s → %.1f tok/s; decode runs at %.0f%% of it\n",
			rep.MemBandwidthGBs, rep.DecodeBoundTokS, rep.DecodeOfBoundPct)
	}
	fmt.Fprintf(stdout, "memory     %.2f allocs/step, peak RSS %.1f MB\n", rep.AllocsPerStep, float64(rep.PeakRSSBytes)/1e6)
	return nil
}

// kernelSet names the kernel set the backend runs (simd/blas/generic).
func kernelSet(be any) string {
	if c, ok := be.(*cpu.Backend); ok {
		return c.Kernels()
	}
	if k, ok := be.(interface{ Kernels() string }); ok {
		return k.Kernels()
	}
	return "device"
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// positionCheck times gen Step calls of a session just past the prompt rows and gen of one at
// position far (reached by feeding the prompt's tokens again, a prompt's length at a time),
// alternating between the two sessions and which goes first, so that both see the same load.
func positionCheck(m *mamba2.Model, rows [][]int, far, gen int) (near, farMs []float64, err error) {
	batch, plen := len(rows), len(rows[0])
	var sess [2]*mamba2.Session
	for i := range sess {
		s, err := m.NewSession(batch)
		if err != nil {
			return nil, nil, err
		}
		defer s.Close()
		s.Outputs = mamba2.Outputs{Logits: true, LastOnly: true}
		sess[i] = s
	}
	if _, err := sess[0].FeedTokens(rows); err != nil {
		return nil, nil, err
	}
	for pos := 0; pos < far; {
		n := min(plen, far-pos)
		chunk := make([][]int, batch)
		for b := range chunk {
			chunk[b] = rows[b][:n]
		}
		if _, err := sess[1].FeedTokens(chunk); err != nil {
			return nil, nil, err
		}
		pos += n
	}
	V := m.Config.VocabSize
	var logits [2][]float32
	var tokens [2][]int64
	for i := range logits {
		logits[i], tokens[i] = make([]float32, batch*V), make([]int64, batch)
	}
	var ms [2][]float64
	for i := 0; i < gen+1; i++ { // the first step of each is a warm-up
		for k := 0; k < 2; k++ {
			j := (i + k) % 2
			t, err := timedStep(sess[j], tokens[j], logits[j])
			if err != nil {
				return nil, nil, err
			}
			if i > 0 {
				ms[j] = append(ms[j], t)
			}
		}
	}
	return ms[0], ms[1], nil
}

// timedStep runs one Step of s on tokens, returns its time in milliseconds and sets tokens to
// each row's most likely next token.
func timedStep(s *mamba2.Session, tokens []int64, logits []float32) (float64, error) {
	t0 := time.Now()
	if err := s.Step(tokens, logits); err != nil {
		return 0, err
	}
	ms := float64(time.Since(t0).Microseconds()) / 1000
	V := len(logits) / len(tokens)
	for b := range tokens {
		tokens[b] = int64(argmax(logits[b*V : (b+1)*V]))
	}
	return ms, nil
}

// median returns the middle value of x (the mean of the two middle ones for even lengths).
func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// peakRSS reads the process's peak resident set size (Linux), or 0 where unknown.
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// measureBandwidth streams a 128 MiB buffer with the given number of goroutines and returns the
// best read bandwidth of a few passes, in GB/s.
func measureBandwidth(threads int) float64 {
	// 128 MiB: several times any last-level cache here (35.8 MiB), yet below the weights of an
	// int8 130m model, so the probe does not set the process's peak RSS.
	const n = 32 << 20 // float32s
	buf := make([]float32, n)
	for i := range buf {
		buf[i] = float32(i & 7)
	}
	best := 0.0
	sums := make([]float32, threads)
	for pass := 0; pass < 10; pass++ { // best of several: the machine may be shared
		var wg sync.WaitGroup
		start := time.Now()
		chunk := n / threads
		for t := 0; t < threads; t++ {
			wg.Add(1)
			go func(t int) {
				defer wg.Done()
				part := buf[t*chunk : (t+1)*chunk]
				sums[t] = kernels.Dot(part, part) // one stream: both operands are the same memory
			}(t)
		}
		wg.Wait()
		if gbs := float64(n*4) / time.Since(start).Seconds() / 1e9; gbs > best {
			best = gbs
		}
	}
	runtime.KeepAlive(sums)
	return best
}
