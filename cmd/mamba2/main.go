// Command mamba2 runs Mamba2 models on the graph engine.
//
//	mamba2 logits   --model DIR --input IN.safetensors --out OUT.safetensors [--schedule N1,N2,...]
//	mamba2 help
//
// Every command takes --backend cpu|cuda (default $MAMBA2_BACKEND, else cpu) and --help. Errors are
// one line on stderr and a non-zero exit status; no partial output file is ever left behind.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"logits":   {"run a Mamba2 checkpoint over token ids or embeddings and write logits and states", runLogits},
		"init":     {"write a randomly initialised checkpoint for a config (Hugging Face layout)", runInit},
		"bench":    {"measure prefill and decode speed of a checkpoint", runBench},
		"train":    {"train an encoder–decoder on a synthetic task (reverse, copy, sort, sine)", runTrain},
		"generate": {"generate with a trained encoder–decoder or a Hugging Face Mamba2 causal LM", runGenerate},
		"demo":     {"train and evaluate the reverse and sine encoder–decoders (make demo)", runDemo},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks errors caused by how the command was called (exit status 2).
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		usage(stdout, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "mamba2: unknown command %q (commands: %s)\n", args[0], strings.Join(names(cmds), ", "))
		return 2
	}
	err := cmd.run(args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "mamba2 %s: %v\n", args[0], oneLine(err))
		return 2
	default:
		fmt.Fprintf(stderr, "mamba2 %s: %v\n", args[0], oneLine(err))
		return 1
	}
}

func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

func names(cmds map[string]command) []string {
	var n []string
	for k := range cmds {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "mamba2 — Mamba2 models on a compute-graph engine with CPU and CUDA backends")
	fmt.Fprintln(w, "\nUsage: mamba2 COMMAND [flags]   (mamba2 COMMAND --help for its flags)\n\nCommands:")
	for _, n := range names(cmds) {
		fmt.Fprintf(w, "  %-9s %s\n", n, cmds[n].summary)
	}
}

// newFlags returns a flag set that reports errors instead of exiting and prints help to stdout.
func newFlags(name, synopsis string, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mamba2 "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: mamba2 %s %s\n\nFlags:\n", name, synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			kind, help := flag.UnquoteUsage(f)
			if kind != "" {
				kind = " " + kind
			}
			def := ""
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(stdout, "  --%s%s\n        %s%s\n", f.Name, kind, help, def)
		})
	}
	return fs
}

// parseFlags parses args; --help prints usage and returns flag.ErrHelp; other problems are usage
// errors. Positional arguments are refused.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err // the flag package has printed the usage
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// required checks that string flags were given.
func required(fs *flag.FlagSet, names ...string) error {
	for _, n := range names {
		if f := fs.Lookup(n); f != nil && f.Value.String() == "" {
			return fmt.Errorf("%w: --%s is required", errUsage, n)
		}
	}
	return nil
}
