package config

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ByteSize is a size in bytes. In YAML it is an integer or a string with
// a unit: "64MiB", "512 KiB", "1GB" (KB, MB, GB, TB are powers of 1000;
// KiB, MiB, GiB, TiB powers of 1024; units are case-insensitive).
type ByteSize int64

var units = []struct {
	name string
	mult int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"b", 1},
}

// ParseByteSize parses a size as ByteSize's YAML form does.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	lower := strings.ToLower(t)
	for _, u := range units {
		if strings.HasSuffix(lower, u.name) {
			mult = u.mult
			t = strings.TrimSpace(t[:len(t)-len(u.name)])
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("must be a whole number of bytes with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), got %q", s)
	}
	if n > math.MaxInt64/mult || n < math.MinInt64/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("must be a size such as 1048576 or \"1MiB\"")
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalYAML implements yaml.Marshaler: an integer.
func (b ByteSize) MarshalYAML() (any, error) { return int64(b), nil }

// String formats b with the largest binary unit that divides it.
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

// Duration is a time.Duration written as a string with a unit: "2s",
// "1m30s", "500ms".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("must be a duration such as \"2s\"")
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		return fmt.Errorf("must be a duration with a unit such as \"2s\" or \"500ms\", got %q", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// String is time.Duration's form, e.g. "2s".
func (d Duration) String() string { return time.Duration(d).String() }

// FileMode is a file's permission bits, written in octal: "0660".
type FileMode uint32

// UnmarshalYAML implements yaml.Unmarshaler. The value is read as octal
// whether quoted or not, with or without a 0 or 0o prefix.
func (m *FileMode) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("must be octal permissions such as \"0660\"")
	}
	s := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(n.Value), "0o"), "0O")
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o777 {
		return fmt.Errorf("must be octal permissions from 0000 to 0777 such as \"0660\", got %q", n.Value)
	}
	*m = FileMode(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (m FileMode) MarshalYAML() (any, error) { return m.String(), nil }

// MarshalJSON implements json.Marshaler.
func (m FileMode) MarshalJSON() ([]byte, error) { return json.Marshal(m.String()) }

// String is the mode in octal, e.g. "0660".
func (m FileMode) String() string { return fmt.Sprintf("%04o", uint32(m)) }
