package tasks

import (
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/mamba2go/mamba2/models/encdec"
)

func TestTaskData(t *testing.T) {
	for _, name := range Names() {
		task, err := New(name)
		if err != nil {
			t.Fatal(err)
		}
		batch := task.Batch(7, 3, 20)
		if !reflect.DeepEqual(batch, task.Batch(7, 3, 20)) {
			t.Errorf("%s: a batch is not a function of (seed, index)", name)
		}
		if reflect.DeepEqual(batch, task.Batch(7, 4, 20)) || reflect.DeepEqual(batch, task.HeldOut(7, 20)) {
			t.Errorf("%s: different streams give the same data", name)
		}
		for _, ex := range batch {
			if ex.Src.Len() != task.Len || ex.Tgt.Len() != task.OutLen {
				t.Fatalf("%s: lengths %d → %d, want %d → %d", name, ex.Src.Len(), ex.Tgt.Len(), task.Len, task.OutLen)
			}
			src, tgt := ex.Src.Tokens, ex.Tgt.Tokens
			switch name {
			case "copy":
				if !slices.Equal(src, tgt) {
					t.Errorf("copy: %v → %v", src, tgt)
				}
			case "reverse":
				r := slices.Clone(src)
				slices.Reverse(r)
				if !slices.Equal(r, tgt) {
					t.Errorf("reverse: %v → %v", src, tgt)
				}
			case "sort":
				s := slices.Clone(src)
				sort.Ints(s)
				if !slices.Equal(s, tgt) {
					t.Errorf("sort: %v → %v", src, tgt)
				}
			case "sine":
				// The target continues the source's sine: a·sin(ωt+φ) satisfies
				// x[t+1] = 2cos(ω)·x[t] − x[t−1] for every t.
				x := append(slices.Clone(ex.Src.Vectors), ex.Tgt.Vectors...)
				c := (x[2][0] + x[0][0]) / (2 * x[1][0])
				for i := 2; i < len(x); i++ {
					if d := x[i][0] - (2*c*x[i-1][0] - x[i-2][0]); math.Abs(d) > 1e-6 {
						t.Fatalf("sine: position %d breaks the recurrence by %g", i, d)
					}
				}
			}
			for _, id := range src {
				if id < 0 || id >= task.Symbols {
					t.Errorf("%s: symbol %d outside [0, %d)", name, id, task.Symbols)
				}
			}
		}
		c := task.ModelConfig(32, 1)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: default model: %v", name, err)
		}
	}
	if _, err := New("reverz"); err == nil || !strings.Contains(err.Error(), "reverse") {
		t.Errorf("unknown task: %v", err)
	}
}

func TestScore(t *testing.T) {
	rev, _ := New("reverse")
	ex := rev.Batch(1, 0, 4)
	out := make([]encdec.Seq, 4)
	for i, e := range ex {
		out[i] = e.Tgt
	}
	out[3] = encdec.Seq{Tokens: out[3].Tokens[:11]}
	if v, err := rev.Score(ex, out); err != nil || v != 0.75 {
		t.Errorf("exact-match %v (%v), want 0.75", v, err)
	}
	sine, _ := New("sine")
	ex = sine.Batch(1, 0, 3)
	out = make([]encdec.Seq, 3)
	for i, e := range ex { // predict the last source value: the baseline itself
		last := e.Src.Vectors[len(e.Src.Vectors)-1]
		for range e.Tgt.Vectors {
			out[i].Vectors = append(out[i].Vectors, slices.Clone(last))
		}
	}
	if v, err := sine.Score(ex, out); err != nil || math.Abs(v-1) > 1e-12 {
		t.Errorf("mse-ratio of the baseline %v (%v), want 1", v, err)
	}
	if _, err := sine.Score(ex, out[:2]); err == nil {
		t.Error("scoring 2 outputs for 3 examples succeeded")
	}
}
