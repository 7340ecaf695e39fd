package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/mamba2go/mamba2/models/mamba2"
	"github.com/mamba2go/mamba2/quant"
	"github.com/mamba2go/mamba2/safetensors"
	"github.com/mamba2go/mamba2/shapes"
	"gorgonia.org/tensor"
)

func runLogits(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("logits", "--model DIR --input IN.safetensors --out OUT.safetensors [flags]", stdout)
	model := fs.String("model", "", "checkpoint directory (config.json + safetensors weights)")
	input := fs.String("input", "", "safetensors file with input_ids int64 [B,T] (or inputs_embeds with --embeds) and optional lengths int64 [B]")
	out := fs.String("out", "", "safetensors file to write: logits, hidden, conv_state, ssm_state")
	schedule := fs.String("schedule", "", "tokens consumed by each successive call, e.g. 13,1,1 (sum = T); 1 runs the Step program; default one prefill of all T")
	embeds := fs.Bool("embeds", false, "read inputs_embeds float32 [B,T,hidden] instead of input_ids")
	padding := fs.String("padding", "right", "side of the padding when IN holds lengths: right or left")
	dtype := fs.String("dtype", "float32", "compute type: float32 or float64")
	weights := fs.String("weights", "f32", weightsFlagHelp)
	backend := backendFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := required(fs, "model", "input", "out"); err != nil {
		return err
	}
	pad, err := mamba2.ParsePadding(*padding)
	if err != nil {
		return fmt.Errorf("%w: --padding: %v", errUsage, err)
	}
	var dt shapes.DType
	switch *dtype {
	case "float32":
		dt = shapes.Float32
	case "float64":
		dt = shapes.Float64
	default:
		return fmt.Errorf("%w: --dtype %q: want float32 or float64", errUsage, *dtype)
	}
	format, err := parseWeights(*weights)
	if err != nil {
		return err
	}
	if format != quant.F32 && dt != shapes.Float32 {
		return fmt.Errorf("%w: --weights %s needs --dtype float32", errUsage, format)
	}

	in, err := safetensors.Open(*input)
	if err != nil {
		return fmt.Errorf("--input: %w", err)
	}
	var ids, emb *tensor.Dense
	var B, T int
	if *embeds {
		data, shape, err := in.Float32("inputs_embeds")
		if err != nil {
			return fmt.Errorf("--input %s: %w", *input, err)
		}
		if len(shape) != 3 {
			return fmt.Errorf("--input %s: inputs_embeds must be [B,T,hidden], got %v", *input, shape)
		}
		B, T = shape[0], shape[1]
		emb = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))
	} else {
		data, shape, err := in.Int64("input_ids")
		if err != nil {
			return fmt.Errorf("--input %s: %w", *input, err)
		}
		if len(shape) != 2 {
			return fmt.Errorf("--input %s: input_ids must be [B,T], got %v", *input, shape)
		}
		B, T = shape[0], shape[1]
		ids = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))
	}
	if B == 0 || T == 0 {
		return fmt.Errorf("--input %s: empty input (B=%d, T=%d)", *input, B, T)
	}
	var lengths []int
	if _, ok := in.Info("lengths"); ok {
		l, shape, err := in.Int64("lengths")
		if err != nil {
			return fmt.Errorf("--input %s: %w", *input, err)
		}
		if len(shape) != 1 || shape[0] != B {
			return fmt.Errorf("--input %s: lengths must be [%d], got %v", *input, B, shape)
		}
		for b, v := range l {
			if v < 0 || v > int64(T) {
				return fmt.Errorf("--input %s: lengths[%d] = %d is outside [0, %d]", *input, b, v, T)
			}
			lengths = append(lengths, int(v))
		}
	}
	chunks, err := parseSchedule(*schedule, T)
	if err != nil {
		return err
	}

	be, err := openBackend(*backend)
	if err != nil {
		return err
	}
	defer be.Close()
	m, err := mamba2.Load(be, *model, mamba2.Options{DType: dt, Weights: format})
	if err != nil {
		return fmt.Errorf("--model: %w", err)
	}
	defer m.Close()
	sess, err := m.NewSession(B)
	if err != nil {
		return err
	}
	defer sess.Close()
	sess.Outputs = mamba2.Outputs{Logits: true, Hidden: true}

	c := m.Config
	logits := make([]float32, B*T*c.VocabSize)
	hidden := make([]float32, B*T*c.HiddenSize)
	start := 0
	for _, n := range chunks {
		var res *mamba2.Result
		lens := chunkLengths(lengths, pad, T, start, n)
		if ids != nil {
			res, err = sess.FeedPadded(sliceTime(ids, start, n), lens, pad)
		} else {
			res, err = sess.FeedEmbedsPadded(sliceTime(emb, start, n), lens, pad)
		}
		if err != nil {
			return fmt.Errorf("call at tokens %d..%d: %w", start, start+n-1, err)
		}
		place(logits, res.Logits, B, T, start, n, c.VocabSize)
		place(hidden, res.Hidden, B, T, start, n, c.HiddenSize)
		start += n
	}
	convState, ssmState, err := stackStates(sess)
	if err != nil {
		return err
	}
	L := c.NumHiddenLayers
	tensors := []safetensors.Tensor{
		{Name: "logits", Shape: []int{B, T, c.VocabSize}, Data: logits},
		{Name: "hidden", Shape: []int{B, T, c.HiddenSize}, Data: hidden},
		{Name: "conv_state", Shape: []int{L, B, c.ConvDim(), c.ConvKernel}, Data: convState},
		{Name: "ssm_state", Shape: []int{L, B, c.NumHeads, c.HeadDim, c.StateSize}, Data: ssmState},
	}
	if err := safetensors.Write(*out, tensors, map[string]string{"producer": "mamba2 logits"}); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s: logits [%d,%d,%d], %d calls\n", *out, B, T, c.VocabSize, len(chunks))
	return nil
}

// parseSchedule reads "13,1,1" into chunk sizes that must sum to T; empty means one chunk.
func parseSchedule(s string, T int) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return []int{T}, nil
	}
	var chunks []int
	sum := 0
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%w: --schedule %q: %q is not a positive integer", errUsage, s, part)
		}
		chunks = append(chunks, n)
		sum += n
	}
	if sum != T {
		return nil, fmt.Errorf("%w: --schedule %q sums to %d, the input has T = %d tokens", errUsage, s, sum, T)
	}
	return chunks, nil
}

// chunkLengths gives each row's real-token count within padded positions [start, start+n).
func chunkLengths(lengths []int, pad mamba2.Padding, T, start, n int) []int {
	if lengths == nil {
		return nil
	}
	out := make([]int, len(lengths))
	for b, L := range lengths {
		lo, hi := 0, L // real positions of the row
		if pad == mamba2.PadLeft {
			lo, hi = T-L, T
		}
		out[b] = max(0, min(hi, start+n)-max(lo, start))
	}
	return out
}

// sliceTime copies positions [start, start+n) of the time axis (axis 1).
func sliceTime(t *tensor.Dense, start, n int) *tensor.Dense {
	sh := t.Shape()
	B, T := sh[0], sh[1]
	F := 1
	for _, d := range sh[2:] {
		F *= d
	}
	dims := append([]int{B, n}, sh[2:]...)
	switch d := t.Data().(type) {
	case []int64:
		out := make([]int64, B*n*F)
		for b := 0; b < B; b++ {
			copy(out[b*n*F:(b+1)*n*F], d[(b*T+start)*F:])
		}
		return tensor.New(tensor.WithShape(dims...), tensor.WithBacking(out))
	case []float32:
		out := make([]float32, B*n*F)
		for b := 0; b < B; b++ {
			copy(out[b*n*F:(b+1)*n*F], d[(b*T+start)*F:])
		}
		return tensor.New(tensor.WithShape(dims...), tensor.WithBacking(out))
	}
	return t
}

// place copies a call's per-position output [B,n,F] into dst [B,T,F] at time offset start.
func place(dst []float32, src *tensor.Dense, B, T, start, n, F int) {
	if src == nil {
		return
	}
	for b := 0; b < B; b++ {
		for t := 0; t < n; t++ {
			o := (b*T + start + t) * F
			i := (b*n + t) * F
			switch d := src.Data().(type) {
			case []float32:
				copy(dst[o:o+F], d[i:i+F])
			case []float64:
				for f := 0; f < F; f++ {
					dst[o+f] = float32(d[i+f])
				}
			}
		}
	}
}

// stackStates returns the session's conv and SSM states as [L, B, ...] float32 arrays.
func stackStates(s *mamba2.Session) (conv, ssm []float32, err error) {
	c := s.Model().Config
	for l := 0; l < c.NumHiddenLayers; l++ {
		for _, name := range []string{mamba2.ConvStateName(l), mamba2.SSMStateName(l)} {
			_, data, err := s.Cache().Read(name)
			if err != nil {
				return nil, nil, err
			}
			var f []float32
			switch d := data.(type) {
			case []float32:
				f = d
			case []float64:
				f = make([]float32, len(d))
				for i, v := range d {
					f[i] = float32(v)
				}
			}
			if name == mamba2.ConvStateName(l) {
				conv = append(conv, f...)
			} else {
				ssm = append(ssm, f...)
			}
		}
	}
	return conv, ssm, nil
}
