package train

import (
	"math"
	"path/filepath"
	"reflect"
	"testing"
)

func TestSchedule(t *testing.T) {
	s := Schedule{Peak: 1, Min: 0.1, Warmup: 4, Total: 14}
	for _, c := range []struct {
		step int
		want float64
	}{{0, 0.25}, {3, 1}, {4, 1}, {9, 0.55}, {14, 0.1}, {100, 0.1}} {
		if got := s.LR(c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("LR(%d) = %g, want %g", c.step, got, c.want)
		}
	}
	for i := 4; i < 14; i++ {
		if s.LR(i+1) > s.LR(i) {
			t.Errorf("the cosine rises at step %d", i)
		}
	}
	for _, bad := range []Schedule{{Peak: 0, Total: 1}, {Peak: 1, Total: 0}, {Peak: 1, Min: 2, Total: 1}, {Peak: 1, Warmup: -1, Total: 1}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

func TestClip(t *testing.T) {
	g := map[string][]float64{"a": {3}, "b": {4, 0}}
	if n := ClipGlobalNorm(g, 10); n != 5 || g["a"][0] != 3 {
		t.Errorf("norm %g, values %v: no clipping expected", n, g)
	}
	if n := ClipGlobalNorm(g, 1); n != 5 || math.Abs(g["a"][0]-0.6) > 1e-15 || math.Abs(g["b"][0]-0.8) > 1e-15 {
		t.Errorf("norm %g, values %v: want 5 and (0.6, 0.8)", n, g)
	}
}

// AdamW against the update written out by hand (torch.optim.AdamW's formula).
func TestAdamW(t *testing.T) {
	o := NewAdamW(0.1)
	o.Decay = func(name string) bool { return name == "w" }
	p := map[string][]float64{"w": {1, -2}, "b": {0.5}}
	gs := []map[string][]float64{{"w": {0.1, -0.3}, "b": {2}}, {"w": {-0.2, 0.1}, "b": {-1}}}
	want := map[string][]float64{"w": {1, -2}, "b": {0.5}}
	m := map[string][]float64{"w": {0, 0}, "b": {0}}
	v := map[string][]float64{"w": {0, 0}, "b": {0}}
	for step, g := range gs {
		lr := 0.01 * float64(step+1)
		if err := o.Step(p, g, lr); err != nil {
			t.Fatal(err)
		}
		k := float64(step + 1)
		for name := range want {
			wd := 0.0
			if name == "w" {
				wd = 0.1
			}
			for i := range want[name] {
				m[name][i] = 0.9*m[name][i] + 0.1*g[name][i]
				v[name][i] = 0.999*v[name][i] + 0.001*g[name][i]*g[name][i]
				mh := m[name][i] / (1 - math.Pow(0.9, k))
				vh := v[name][i] / (1 - math.Pow(0.999, k))
				want[name][i] -= lr * (wd*want[name][i] + mh/(math.Sqrt(vh)+1e-8))
			}
		}
	}
	for name := range want {
		for i := range want[name] {
			if math.Abs(p[name][i]-want[name][i]) > 1e-15 {
				t.Errorf("%s[%d] = %.17g, want %.17g", name, i, p[name][i], want[name][i])
			}
		}
	}
	if err := o.Step(p, map[string][]float64{"x": {1}}, 0.1); err == nil {
		t.Error("a gradient without a parameter was accepted")
	}

	// Save and load: the restored optimizer continues identically.
	path := filepath.Join(t.TempDir(), "opt.safetensors")
	if err := o.Save(path, map[string]string{"step": "2"}); err != nil {
		t.Fatal(err)
	}
	o2, meta, err := LoadAdamW(path, map[string]int{"w": 2, "b": 1})
	if err != nil {
		t.Fatal(err)
	}
	if meta["step"] != "2" || o2.Steps != o.Steps || o2.WeightDecay != 0.1 {
		t.Errorf("loaded steps %d, metadata %v", o2.Steps, meta)
	}
	o2.Decay = o.Decay
	p2 := map[string][]float64{"w": append([]float64(nil), p["w"]...), "b": append([]float64(nil), p["b"]...)}
	g := map[string][]float64{"w": {0.3, 0.3}, "b": {0.1}}
	o.Step(p, g, 0.01)
	o2.Step(p2, g, 0.01)
	if !reflect.DeepEqual(p, p2) {
		t.Errorf("continued %v, restored %v", p, p2)
	}
	if _, _, err := LoadAdamW(path, map[string]int{"w": 3, "b": 1}); err == nil {
		t.Error("moments of the wrong size were accepted")
	}
	if _, _, err := LoadAdamW(path, map[string]int{"w": 2}); err == nil {
		t.Error("moments of an unknown parameter were accepted")
	}
}
