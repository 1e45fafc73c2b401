package api

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// checkFloat compares decoder.float with strconv.ParseFloat on s.
func checkFloat(t *testing.T, s string) {
	t.Helper()
	for _, bits := range []int{32, 64} {
		want, err := strconv.ParseFloat(s, bits)
		d := decoder{b: []byte(s)}
		got, ok, serr := d.float(top("x"), bits)
		if serr != nil || d.i != len(s) {
			t.Fatalf("scanning %q: %v at %d", s, serr, d.i)
		}
		if ok != (err == nil) || (ok && math.Float64bits(got) != math.Float64bits(want)) {
			t.Fatalf("float(%q, %d) = %v, %v; strconv: %v, %v", s, bits, got, ok, want, err)
		}
	}
}

func TestParseFloat(t *testing.T) {
	for _, s := range []string{
		"0", "-0", "0.0", "1", "-1", "0.5", "1e22", "1e23", "1e-22", "1e-23", "123456789012345", "1234567890123456",
		"3.4028235e38", "3.4028236e38", "3.4028234663852886e38", "1e39", "-1e39", "1.4e-45", "7e-46", "1e-50",
		"1.7976931348623157e308", "1.8e308", "4.9e-324", "2e-324", "0.000000000000000000000000000001",
		"9007199254740993", "16777217", "16777216.5", "0.1", "0.2", "0.3", "1e0", "1E+2", "1e-0", "100e-2",
		"33554431", "33554433", "1.00000005960464477539062", "1.0000000596046448", "0.06908741", "1e1000", "1e-1000",
		"0e1000", "-0.0e-5",
	} {
		checkFloat(t, s)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		var s string
		switch r.IntN(4) {
		case 0: // float32 data as clients write it
			s = strconv.FormatFloat(float64(math.Float32frombits(r.Uint32())), 'g', -1, 32)
		case 1:
			s = strconv.FormatFloat(math.Float64frombits(r.Uint64()), 'g', -1, 64)
		case 2: // numbers near float32 midpoints
			f := math.Float32frombits(r.Uint32()&^(0xff<<23) | (uint32(100+r.IntN(56)) << 23))
			mid := (float64(f) + float64(math.Nextafter32(f, float32(math.Inf(1))))) / 2
			s = strconv.FormatFloat(mid, 'g', 15+r.IntN(3), 64)
		default: // short decimals
			s = strconv.FormatFloat(float64(r.IntN(2000000)-1000000)/math.Pow(10, float64(r.IntN(12))), 'f', -1, 64)
		}
		if s == "NaN" || s == "+Inf" || s == "-Inf" {
			continue
		}
		checkFloat(t, s)
	}
}
