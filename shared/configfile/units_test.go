package configfile

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{
		"0": 0, "1024": 1024, "1048576": 1 << 20, "64MiB": 64 << 20, "64 mib": 64 << 20, "512KiB": 512 << 10, "2 GiB": 2 << 30,
		"1GB": 1e9, "3MB": 3e6, "10kb": 10000, "1 kB": 1000, "7B": 7, "1TiB": 1 << 40, "2TB": 2e12, "-1": -1, " 5 ": 5,
	} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"": "must be a whole number of bytes", "MiB": "must be a whole number", "1.5GiB": "must be a whole number", "1 PiB": "must be a whole number",
		"12x": "must be a whole number", "0x10": "must be a whole number", "1e9": "must be a whole number",
		"10000000000GiB": "is too large", "9999999999999999999": "is too large",
	} {
		if _, err := ParseByteSize(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseByteSize(%q) = %v, want %q", in, err, msg)
		}
	}
	for b, want := range map[ByteSize]string{64 << 20: "64MiB", 1000: "1000B", 0: "0B", 3 << 40: "3TiB", 1536: "1536B", -2048: "-2KiB"} {
		if got := b.String(); got != want {
			t.Errorf("%d.String() = %s, want %s", int64(b), got, want)
		}
	}
	var b struct{ S, N ByteSize }
	if err := json.Unmarshal([]byte(`{"S": "2KiB", "N": 7}`), &b); err != nil || b.S != 2048 || b.N != 7 {
		t.Errorf("JSON: %+v %v", b, err)
	}
	if out, _ := json.Marshal(b); string(out) != `{"S":2048,"N":7}` {
		t.Errorf("JSON out: %s", out)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90s": 90 * time.Second, "500ms": 500 * time.Millisecond, "1m30s": 90 * time.Second, "24h": 24 * time.Hour,
		"7d": 7 * 24 * time.Hour, "1.5d": 36 * time.Hour, "0d": 0, "-5s": -5 * time.Second, " 2s ": 2 * time.Second,
	} {
		got, err := ParseDuration(in)
		if err != nil || got.D() != want {
			t.Errorf("ParseDuration(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "-1d", "week", "7", "5", "infd", "nand", "1d2h"} {
		if _, err := ParseDuration(in); err == nil || !strings.Contains(err.Error(), `must be a duration with a unit such as "2s" or "500ms", got`) {
			t.Errorf("ParseDuration(%q) = %v", in, err)
		}
	}
	if _, err := ParseDuration("1e300d"); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("ParseDuration(1e300d) = %v", err)
	}
	var d struct{ A, B Duration }
	if err := json.Unmarshal([]byte(`{"A": "1m", "B": 1000}`), &d); err != nil || d.A.D() != time.Minute || d.B != 1000 {
		t.Errorf("JSON: %+v %v", d, err)
	}
	if out, _ := json.Marshal(d); string(out) != `{"A":"1m0s","B":"1µs"}` {
		t.Errorf("JSON out: %s", out)
	}
}

func TestParseFileMode(t *testing.T) {
	for in, want := range map[string]FileMode{"0660": 0o660, "660": 0o660, "0o600": 0o600, "0": 0, "777": 0o777} {
		if got, err := ParseFileMode(in); err != nil || got != want {
			t.Errorf("ParseFileMode(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "0999", "1000", "rw", "-1"} {
		if _, err := ParseFileMode(in); err == nil {
			t.Errorf("ParseFileMode(%q) accepted", in)
		}
	}
	if s := FileMode(0o640).String(); s != "0640" {
		t.Errorf("String: %s", s)
	}
}

func TestParsePercent(t *testing.T) {
	for in, want := range map[string]float64{"80%": 80, " 12.5 %": 12.5, "0%": 0, "-3%": -3} {
		if got, ok, err := ParsePercent(in); !ok || err != nil || got != want {
			t.Errorf("ParsePercent(%q) = %v, %v, %v", in, got, ok, err)
		}
	}
	if _, ok, err := ParsePercent("80"); ok || err != nil {
		t.Errorf("ParsePercent(80): %v %v", ok, err)
	}
	for _, in := range []string{"%", "x%", "NaN%", "inf%"} {
		if _, ok, err := ParsePercent(in); !ok || err == nil {
			t.Errorf("ParsePercent(%q) accepted", in)
		}
	}
}

func FuzzParseUnits(f *testing.F) {
	for _, s := range []string{"1", "512KiB", "2 GiB", "-1", "9223372036854775807", "1e9", "7d", "1.5d", "90s", "0660", "80%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// A size reads back from its String.
		if n, err := ParseByteSize(s); err == nil {
			if back, err := ParseByteSize(n.String()); err != nil || back != n {
				t.Fatalf("ParseByteSize(%q) = %d, its String %q reads %d, %v", s, n, n.String(), back, err)
			}
		} else if !strings.Contains(err.Error(), "bytes") && !strings.Contains(err.Error(), "too large") {
			t.Fatalf("ParseByteSize(%q): %v", s, err)
		}
		if d, err := ParseDuration(s); err == nil {
			if back, err := ParseDuration(d.String()); err != nil || back != d {
				t.Fatalf("ParseDuration(%q) = %s, reads back %s, %v", s, d, back, err)
			}
		} else if !strings.Contains(err.Error(), "duration") && !strings.Contains(err.Error(), "too long") {
			t.Fatalf("ParseDuration(%q): %v", s, err)
		}
		if m, err := ParseFileMode(s); err == nil && m > 0o777 {
			t.Fatalf("ParseFileMode(%q) = %o", s, m)
		}
		if p, ok, err := ParsePercent(s); ok && err == nil && p != p {
			t.Fatalf("ParsePercent(%q) = NaN", s)
		}
	})
}
