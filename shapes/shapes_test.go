package shapes

import (
	"strings"
	"testing"
)

func TestDTypes(t *testing.T) {
	for _, c := range []struct {
		dt             DType
		name           string
		size           int
		float, storage bool
	}{
		{Float32, "float32", 4, true, false},
		{Float64, "float64", 8, true, false},
		{Int64, "int64", 8, false, false},
		{BFloat16, "bfloat16", 2, false, true},
		{Float16, "float16", 2, false, true},
		{Int8, "int8", 1, false, true},
	} {
		if c.dt.String() != c.name || c.dt.Size() != c.size || c.dt.IsFloat() != c.float ||
			c.dt.IsStorage() != c.storage || !c.dt.Known() {
			t.Errorf("%d: String %q Size %d IsFloat %v IsStorage %v Known %v; want %q %d %v %v true",
				c.dt, c.dt, c.dt.Size(), c.dt.IsFloat(), c.dt.IsStorage(), c.dt.Known(), c.name, c.size, c.float, c.storage)
		}
		if err := Make(c.dt, 2, 3).Valid(); err != nil {
			t.Errorf("%s[2,3]: %v", c.name, err)
		}
		if s := Make(c.dt, 2, 3).String(); s != c.name+"[2,3]" {
			t.Errorf("String %q", s)
		}
	}
	for _, dt := range []DType{InvalidDType, Int8 + 1, 255} {
		if dt.Known() || dt.IsStorage() || dt.IsFloat() || dt.Size() != 0 {
			t.Errorf("dtype %d is known", dt)
		}
		if err := Make(dt, 2).Valid(); err == nil || !strings.Contains(err.Error(), "invalid dtype") {
			t.Errorf("dtype %d: Valid = %v", dt, err)
		}
	}
	if err := Make(BFloat16, 2, 0).Valid(); err == nil {
		t.Error("a zero dimension is valid")
	}
}
