// Command regression is a small end-to-end use of the graph API: it builds a two-layer
// perceptron with Params, a mean-squared-error loss and its gradients (graph.Grad), compiles them
// once on the default backend, and trains by plain gradient descent on synthetic data, printing
// the loss as it goes down.
//
//	go run ./examples/regression
package main

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"

	"github.com/mamba2go/mamba2/backends"
	_ "github.com/mamba2go/mamba2/backends/cpu" // registers "cpu"
	"github.com/mamba2go/mamba2/graph"
	"github.com/mamba2go/mamba2/ops"
	"github.com/mamba2go/mamba2/shapes"
)

const (
	samples  = 256  // rows of synthetic data, used as one full batch
	features = 3    // inputs per row
	hidden   = 16   // width of the hidden layer
	steps    = 400  // gradient-descent steps
	rate     = 0.15 // learning rate
)

func main() {
	if _, _, err := train(os.Stdout, steps); err != nil {
		fmt.Fprintln(os.Stderr, "regression:", err)
		os.Exit(1)
	}
}

// target is the function the network learns.
func target(x []float64) float64 { return math.Sin(2*x[0]) + x[1]*x[2] - 0.5*x[2] }

// train runs the given number of steps and returns the first and the last loss.
func train(out io.Writer, steps int) (first, last float64, err error) {
	be, err := backends.New("") // $MAMBA2_BACKEND, or "cpu"
	if err != nil {
		return 0, 0, err
	}
	defer be.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	prog, weights, err := newTrainer(be, rng)
	if err != nil {
		return 0, 0, err
	}
	defer prog.Close()

	// Synthetic data: one fixed batch.
	xs, ys := make([]float64, samples*features), make([]float64, samples)
	for r := 0; r < samples; r++ {
		row := xs[r*features : (r+1)*features]
		for j := range row {
			row[j] = rng.Float64()*2 - 1
		}
		ys[r] = target(row) + 0.05*rng.NormFloat64()
	}
	if err := prog.SetInput("x", xs); err != nil {
		return 0, 0, err
	}
	if err := prog.SetInput("y", ys); err != nil {
		return 0, 0, err
	}

	// Host copies of the weights, and room for their gradients.
	host, grad := map[string][]float64{}, map[string][]float64{}
	for _, name := range weights.Names() {
		_, v, err := weights.Read(name)
		if err != nil {
			return 0, 0, err
		}
		host[name], grad[name] = v.([]float64), make([]float64, len(v.([]float64)))
	}

	// Train: run, read the loss and the gradients, step the weights on the host and write them
	// back into the buffers the program is bound to (Weights.Set would replace the buffers).
	lossv := make([]float64, 1)
	for step := 0; step <= steps; step++ {
		if err := prog.Run(); err != nil {
			return 0, 0, err
		}
		if err := prog.ReadOutput("loss", lossv); err != nil {
			return 0, 0, err
		}
		if step == 0 {
			first = lossv[0]
		}
		last = lossv[0]
		if step%50 == 0 || step == steps {
			fmt.Fprintf(out, "step %4d  loss %.5f\n", step, lossv[0])
		}
		if step == steps {
			break
		}
		for name, v := range host {
			if err := prog.ReadOutput("d"+name, grad[name]); err != nil {
				return 0, 0, err
			}
			for i := range v {
				v[i] -= rate * grad[name][i]
			}
			buf, _ := weights.Get(name)
			if err := be.Write(buf, v); err != nil {
				return 0, 0, err
			}
		}
	}
	fmt.Fprintf(out, "loss %.5f -> %.5f after %d steps of gradient descent on %s\n", first, last, steps, be.Name())
	return first, last, nil
}

// newTrainer builds y ≈ SiLU(x·W1 + b1)·W2 + b2, its mean squared error and the error's gradients
// with respect to the weights, uploads random initial weights and compiles it all on be.
func newTrainer(be backends.Backend, rng *rand.Rand) (*graph.Program, *graph.Weights, error) {
	f64 := func(dims ...int) shapes.Shape { return shapes.Make(shapes.Float64, dims...) }
	g := graph.New()
	x := g.Input("x", f64(samples, features))
	y := g.Input("y", f64(samples, 1))
	params := []*graph.Node{
		g.Param("w1", f64(features, hidden)), g.Param("b1", f64(hidden)),
		g.Param("w2", f64(hidden, 1)), g.Param("b2", f64(1)),
	}
	h := ops.SiLU(ops.Add(ops.MatMul(x, params[0]), params[1]))
	pred := ops.Add(ops.MatMul(h, params[2]), params[3])
	loss := ops.Mean(ops.Square(ops.Sub(pred, y)))
	g.Output("loss", loss)
	for i, d := range graph.Grad(loss, params...) {
		g.Output("d"+params[i].Name(), d) // outputs "dw1", "db1", …
	}

	weights := graph.NewWeights(be)
	for _, p := range params {
		v := make([]float64, p.Shape().Size())
		for i := range v {
			v[i] = rng.NormFloat64() / math.Sqrt(float64(p.Shape().Dims[0]))
		}
		if err := weights.Set(p.Name(), p.Shape(), v); err != nil {
			return nil, nil, err
		}
	}
	// Compile once: kernels and every buffer are planned here; Run allocates nothing.
	prog, err := g.Compile(be, weights) // shape errors name the op, the node, the shapes and the line
	if err != nil {
		return nil, nil, err
	}
	return prog, weights, nil
}
