package main

import (
	"fmt"
	"io"

	"github.com/mamba2go/mamba2/models/mamba2"
)

func runInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("init", "--config FILE --out DIR [--seed S]", stdout)
	config := fs.String("config", "", "Hugging Face (or mamba_ssm) config.json giving the model's shape")
	out := fs.String("out", "", "directory to write config.json and model.safetensors into")
	seed := fs.Uint64("seed", 0, "random seed (the same seed gives the same weights)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(fs, "config", "out"); err != nil {
		return err
	}
	cfg, err := mamba2.LoadConfig(*config)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	ck, err := mamba2.RandomCheckpoint(cfg, *seed)
	if err != nil {
		return err
	}
	if err := mamba2.SaveCheckpoint(*out, ck); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	params := 0
	for _, t := range ck.Tensors {
		params += t.Shape().TotalSize()
	}
	fmt.Fprintf(stdout, "wrote %s: %d layers, hidden %d, vocab %d, %d parameters\n",
		*out, cfg.NumHiddenLayers, cfg.HiddenSize, cfg.VocabSize, params)
	return nil
}
