package tasks

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mamba2go/mamba2/backends"
	_ "github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/models/encdec"
)

func env(k string, d int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return d
}

// TestTune is a tuning harness, skipped unless TUNE_TASK names a task: it trains a task model with
// settings from the environment (TUNE_HIDDEN, TUNE_LAYERS, TUNE_ENC_LAYERS, TUNE_HEADS,
// TUNE_MERGE, TUNE_STEPS, TUNE_BATCH, TUNE_LR, TUNE_EVERY) and prints held-out scores, time per
// step and the failures left at the end:
//
//	TUNE_TASK=reverse TUNE_STEPS=600 go test ./models/encdec/tasks/ -run Tune -v
func TestTune(t *testing.T) {
	name := os.Getenv("TUNE_TASK")
	if name == "" {
		t.Skip("set TUNE_TASK to run the tuning harness")
	}
	task, err := New(name)
	if err != nil {
		t.Fatal(err)
	}
	be, err := backends.New("cpu")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	c := task.ModelConfig(env("TUNE_HIDDEN", 64), env("TUNE_LAYERS", 1))
	if c.Bridge == encdec.BridgeCross {
		c.CrossHeads = env("TUNE_HEADS", 1)
	}
	if n := env("TUNE_ENC_LAYERS", 0); n > 0 {
		c.EncoderLayers = nil
		for i := 0; i < n; i++ {
			c.EncoderLayers = append(c.EncoderLayers, encdec.BiMamba2)
		}
	}
	if os.Getenv("TUNE_MERGE") != "" {
		c.BiMerge = os.Getenv("TUNE_MERGE")
	}
	m, err := encdec.New(be, c, 1, encdec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	steps := env("TUNE_STEPS", 200)
	lr, _ := strconv.ParseFloat(os.Getenv("TUNE_LR"), 64)
	if lr == 0 {
		lr = 3e-3
	}
	tr, err := encdec.NewTrainer(m, encdec.TrainOptions{LR: lr, MinLR: lr / 10, Warmup: 50, Steps: steps, ClipNorm: 1, WeightDecay: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(c.String(), m.NumParams())
	held := task.HeldOut(1, 256)
	bs := env("TUNE_BATCH", 64)
	start := time.Now()
	for s := 0; s < steps; s++ {
		r, err := tr.TrainStep(task.Batch(1, s, bs))
		if err != nil {
			t.Fatal(err)
		}
		if s%env("TUNE_EVERY", 100) == 0 || s == steps-1 {
			res, err := task.Evaluate(m, held, 256)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("step %d loss %.4f gn %.3f lr %.4g %s %.4f  %.1fs\n", s, r.Loss, r.GradNorm, r.LR, res.Metric, res.Value, time.Since(start).Seconds())
		}
	}
	fmt.Printf("%.1f ms/step\n", time.Since(start).Seconds()*1000/float64(steps))
	res, _ := task.Evaluate(m, held, 256)
	for i, o := range res.Outputs {
		if task.Tokens() && fmt.Sprint(o.Tokens) != fmt.Sprint(held[i].Tgt.Tokens) {
			fmt.Println("src", held[i].Src.Tokens, "want", held[i].Tgt.Tokens, "got", o.Tokens)
		}
	}
}
