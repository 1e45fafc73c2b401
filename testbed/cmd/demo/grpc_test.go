package main

import (
	"encoding/json"
	"math"
	"strconv"
	"testing"
)

// TestRestNumber: the gRPC check compares the REST answer, read into
// api.Response's float64, with restNumber of the gRPC answer's float32. It
// must tell neighbouring float32 apart, including where narrowing the
// float64 would not.
func TestRestNumber(t *testing.T) {
	var xs []float32
	for _, u := range []uint32{
		363742205,                 // 7.038531e-26: its decimal, read as a float64, narrows to the next float32
		1, 0x007fffff, 0x00800000, // subnormals and the smallest normal
		math.Float32bits(0.1), math.Float32bits(0.5), math.Float32bits(0.9999999), math.Float32bits(1),
		0x7f7ffffe, // below the largest
	} {
		xs = append(xs, math.Float32frombits(u-1), math.Float32frombits(u), math.Float32frombits(u+1))
	}
	for _, x := range xs {
		f := restNumber(x)
		var got []float64 // as the agent writes it (agent/api/encode.go)
		if err := json.Unmarshal([]byte("["+strconv.FormatFloat(float64(x), 'g', -1, 32)+"]"), &got); err != nil || got[0] != f {
			t.Errorf("restNumber(%v) = %v, encoding/json reads %v (%v)", x, f, got, err)
		}
		for _, y := range []float32{math.Nextafter32(x, 0), math.Nextafter32(x, math.MaxFloat32)} {
			if y != x && restNumber(y) == f {
				t.Errorf("restNumber(%v) == restNumber(%v) = %v", x, y, f)
			}
		}
	}
	if x := math.Float32frombits(363742205); float32(restNumber(x)) == x {
		t.Errorf("narrowing restNumber(%v) gives it back; the example no longer shows why the check compares float64", x)
	}
}
