package configfile

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ByteSize is a size in bytes. In a document it is a whole number or one
// with a unit: "64MiB", "512 KiB", "1GB". KB, MB, GB and TB are powers of
// 1000, KiB, MiB, GiB and TiB powers of 1024, B is bytes; units are
// case-insensitive. A negative size parses (the setting's check says what
// it needs).
type ByteSize int64

var sizeUnits = []struct {
	name string
	mult int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"b", 1},
}

// ParseByteSize parses a size as ByteSize's text form.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	lower := strings.ToLower(t)
	for _, u := range sizeUnits {
		if strings.HasSuffix(lower, u.name) {
			mult = u.mult
			t = strings.TrimSpace(t[:len(t)-len(u.name)])
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil && !isRange(err) {
		return 0, fmt.Errorf("must be a whole number of bytes with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), got %q", s)
	}
	if err != nil || n > math.MaxInt64/mult || n < math.MinInt64/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return ByteSize(n * mult), nil
}

func isRange(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalJSON reads a number of bytes or the text form.
func (b *ByteSize) UnmarshalJSON(data []byte) error {
	var n int64
	if err := json.Unmarshal(data, &n); err == nil {
		*b = ByteSize(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("a size must be a number of bytes or text such as \"64MiB\", got %s", data)
	}
	return b.UnmarshalText([]byte(s))
}

// String formats b with the largest binary unit that divides it: "64MiB",
// "1000B".
func (b ByteSize) String() string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// Duration is a time.Duration written as Go writes it, with a unit: "2s",
// "1m30s", "500ms", "24h", and "d" for days: "7d", "1.5d".
type Duration time.Duration

// ParseDuration parses s as Duration's text form.
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	bad := fmt.Errorf("must be a duration with a unit such as \"2s\" or \"500ms\", got %q (units: ns, us, ms, s, m, h, d)", s)
	if days, ok := strings.CutSuffix(t, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err != nil || !(n >= 0) || math.IsInf(n, 0) {
			return 0, bad
		}
		if n > float64(math.MaxInt64)/float64(24*time.Hour) {
			return 0, fmt.Errorf("%q is too long", s)
		}
		return Duration(n * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, bad
	}
	return Duration(d), nil
}

// D is d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String is time.Duration's form, e.g. "2s", "168h0m0s".
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText implements encoding.TextMarshaler (YAML and JSON write the
// text form).
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := ParseDuration(string(text))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// UnmarshalJSON reads the text form, or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		var n int64
		if err := json.Unmarshal(data, &n); err != nil {
			return fmt.Errorf("a duration must be text like \"90s\", got %s", data)
		}
		*d = Duration(n)
		return nil
	}
	return d.UnmarshalText([]byte(s))
}

// FileMode is a file's permission bits, written in octal: "0660". It is
// read as octal whether quoted or not, with or without a 0 or 0o prefix.
type FileMode uint32

// ParseFileMode parses s as FileMode's text form.
func ParseFileMode(s string) (FileMode, error) {
	t := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0o"), "0O")
	v, err := strconv.ParseUint(t, 8, 32)
	if err != nil || v > 0o777 {
		return 0, fmt.Errorf("must be octal permissions from 0000 to 0777 such as \"0660\", got %q", s)
	}
	return FileMode(v), nil
}

// String is the mode in octal, e.g. "0660".
func (m FileMode) String() string { return fmt.Sprintf("%04o", uint32(m)) }

// MarshalText implements encoding.TextMarshaler.
func (m FileMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *FileMode) UnmarshalText(text []byte) error {
	v, err := ParseFileMode(string(text))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// ParsePercent parses a percentage, "80%" or "12.5 %", into its number
// (80, 12.5). ok is false when s does not end in "%"; err is set when it
// does but what comes before is not a finite number.
func ParsePercent(s string) (p float64, ok bool, err error) {
	num, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !ok {
		return 0, false, nil
	}
	p, err = strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(p) || math.IsInf(p, 0) {
		return 0, true, fmt.Errorf("must be a percentage such as \"80%%\", got %q", s)
	}
	return p, true, nil
}
