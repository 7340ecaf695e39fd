// Command decode shows cached Mamba2 decoding with no cache position anywhere: a prompt is
// prefilled, then tokens are fed back one at a time; and the "forum question" loop, where a
// prefix of embeddings (e.g. an encoder's output) is prefilled and each continuous output is fed
// back as the next input.
package main

import (
	"fmt"
	"os"

	"github.com/mamba2go/mamba2/backends"
	_ "github.com/mamba2go/mamba2/backends/cpu"
	"github.com/mamba2go/mamba2/models/mamba2"
	"gorgonia.org/tensor"
)

func main() {
	if err := run("testdata/hf-mamba2/tiny"); err != nil {
		fmt.Fprintln(os.Stderr, "decode:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	be, err := backends.New("") // "cpu" unless MAMBA2_BACKEND says otherwise
	if err != nil {
		return err
	}
	lm, err := mamba2.Load(be, dir, mamba2.Options{})
	if err != nil {
		return err
	}
	defer lm.Close()

	// Greedy decoding: one call with the prompt (Prefill), then one token per call (Step).
	sess, err := lm.NewSession(1)
	if err != nil {
		return err
	}
	defer sess.Close()
	out, err := sess.FeedTokens([][]int{{5, 17, 42, 8}})
	if err != nil {
		return err
	}
	generated := []int{}
	for i := 0; i < 8; i++ {
		next := out.ArgmaxLast()[0]
		generated = append(generated, next)
		if out, err = sess.FeedTokens([][]int{{next}}); err != nil {
			return err
		}
	}
	fmt.Println("greedy continuation:", generated, "— the cache has consumed", sess.Cache().Lengths()[0], "tokens")

	// The forum question: prefill embeddings, then feed each output back as the next input.
	hidden := lm.Config.HiddenSize
	dec, err := lm.NewSession(1)
	if err != nil {
		return err
	}
	defer dec.Close()
	dec.Outputs = mamba2.Outputs{Hidden: true, LastOnly: true}
	prefix := tensor.New(tensor.WithShape(1, 3, hidden), tensor.WithBacking(make([]float32, 3*hidden)))
	y, err := dec.FeedEmbeds(prefix) // Prefill program over the whole prefix
	if err != nil {
		return err
	}
	var seq []*tensor.Dense
	for len(seq) < 5 {
		last := y.Hidden // [1, hidden]: the output at the last position
		seq = append(seq, last)
		next := tensor.New(tensor.WithShape(1, 1, hidden), tensor.WithBacking(last.Data()))
		if y, err = dec.FeedEmbeds(next); err != nil { // Step program: the cache knows where it is
			return err
		}
	}
	fmt.Println("fed back", len(seq), "outputs; the decoder cache has consumed", dec.Cache().Lengths()[0], "inputs")
	return nil
}
