package protocol

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// seedGoldens adds every golden file and a few edge cases to f's corpus.
func seedGoldens(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no goldens: %v", err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{"", "{}", "null", `{"v":1}`, `{"v":2}`, `{"v":"1"}`, `{"v":1e400}`, "[", "\x28\xb5\x2f\xfd"} {
		f.Add([]byte(s))
	}
}

// checkDecoded is what every decoder promises: an error is one of the
// sentinels, a success is a valid message that re-encodes and decodes to
// the same JSON.
func checkDecoded[T Message](t *testing.T, m T, err error, decode func([]byte) (T, error)) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrMalformed) &&
			!errors.Is(err, ErrVersion) && !errors.Is(err, ErrInvalid) {
			t.Fatalf("error outside the sentinels: %v", err)
		}
		return
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("decoded message does not validate: %v", err)
	}
	wire, err := Encode(m)
	if err != nil {
		// Re-encoding may grow past the limit (escapes); nothing else.
		if errors.Is(err, ErrTooLarge) {
			return
		}
		t.Fatalf("re-encode: %v", err)
	}
	m2, err := decode(wire)
	if err != nil {
		t.Fatalf("decode(re-encoded): %v\n%s", err, wire)
	}
	a, _ := json.Marshal(m)
	b, _ := json.Marshal(m2)
	if string(a) != string(b) {
		t.Fatalf("round trip differs:\n%s\n%s", a, b)
	}
}

// fuzzDecode fuzzes decode from the goldens, holding it to checkDecoded.
func fuzzDecode[T Message](f *testing.F, decode func([]byte) (T, error)) {
	seedGoldens(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		checkDecoded(t, m, err, decode)
	})
}

func FuzzDecodeDesired(f *testing.F) {
	seedGoldens(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeDesired(b)
		checkDecoded(t, m, err, DecodeDesired)
		if err == nil {
			var g Guard
			_ = g.Accept(m, m.IssuedAt)
		}
	})
}

func FuzzDecodeReported(f *testing.F) { fuzzDecode(f, DecodeReported) }

func FuzzDecodeEvent(f *testing.F) { fuzzDecode(f, DecodeEvent) }

func FuzzDecodeStatus(f *testing.F) { fuzzDecode(f, DecodeStatus) }

func FuzzDecodeTelemetry(f *testing.F) {
	seedGoldens(f)
	c, err := NewCodec()
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	if wire, err := c.EncodeTelemetry(batch(200)); err != nil {
		f.Fatal(err)
	} else {
		f.Add(wire)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := c.DecodeTelemetry(b)
		checkDecoded(t, m, err, DecodeTelemetry)
	})
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{
		"ef/v1/dev/d1/desired", "ef/v1/dev/jetson-0042/telemetry", "ef/v1/dev/+/status",
		"ef/v1/dev/d1/desired/x", "$share/fleetd/ef/v1/dev/+/events", "", "ef/v1/dev/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		id, kind, err := ParseTopic(topic)
		if err != nil {
			if !errors.Is(err, ErrTopic) {
				t.Fatalf("error outside ErrTopic: %v", err)
			}
			return
		}
		if err := ValidateDeviceID(id); err != nil {
			t.Fatalf("accepted device id %q: %v", id, err)
		}
		back, err := Topic(id, kind)
		if err != nil || back != topic {
			t.Fatalf("Topic(ParseTopic(%q)) = %q, %v", topic, back, err)
		}
	})
}
