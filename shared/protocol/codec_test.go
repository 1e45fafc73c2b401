package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func batch(n int) *TelemetryBatch {
	b := &TelemetryBatch{V: 1, DeviceID: "d1", Epoch: "e1"}
	for i := range n {
		b.Records = append(b.Records, Record{
			ID: uint64(i + 1), Kind: RecordPrediction, Time: t0,
			Payload: json.RawMessage(fmt.Sprintf(`{"model":"silero-vad@1.4.0","latencyMs":%d.25,"outputs":{"output":[0.%04d]}}`, i%7, i)),
		})
	}
	return b
}

func TestCodecRoundTrip(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, n := range []int{1, 10, 500, 2000} {
		b := batch(n)
		wire, err := c.EncodeTelemetry(b)
		if err != nil {
			t.Fatal(err)
		}
		plain, _ := json.Marshal(b)
		compressed := IsCompressed(wire)
		if compressed != (len(plain) > CompressThreshold) {
			t.Errorf("%d records (%d bytes JSON): compressed=%v", n, len(plain), compressed)
		}
		t.Logf("%d records: %d bytes JSON, %d on the wire", n, len(plain), len(wire))
		for name, decode := range map[string]func([]byte) (*TelemetryBatch, error){
			"codec": c.DecodeTelemetry, "func": DecodeTelemetry,
		} {
			got, err := decode(wire)
			if err != nil {
				t.Fatalf("%s decode: %v", name, err)
			}
			re, _ := json.Marshal(got)
			if !bytes.Equal(re, plain) {
				t.Fatalf("%s: round trip differs", name)
			}
		}
	}
}

func TestCodecRefuses(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()

	// A bomb: 8 MiB of zeros compresses to a few hundred bytes.
	bomb := enc.EncodeAll(bytes.Repeat([]byte{' '}, 8<<20), nil)
	// Valid zstd, but the content is not JSON.
	notJSON := enc.EncodeAll([]byte("hello"), nil)
	// Compressed twice.
	plain, _ := json.Marshal(batch(3))
	twice := enc.EncodeAll(enc.EncodeAll(plain, nil), nil)
	// JSON of more than MaxPayloadSize is fine compressed, if under MaxDecodedSize.
	bigOK := enc.EncodeAll(mustJSON(t, batch(4000)), nil)

	for _, cs := range []struct {
		name string
		in   []byte
		want error
	}{
		{"bomb", bomb, ErrTooLarge},
		{"truncated", bigOK[:len(bigOK)/2], ErrMalformed},
		{"corrupt", corrupt(bigOK), ErrMalformed},
		{"magic only", zstdMagic[:], ErrMalformed},
		{"not JSON inside", notJSON, ErrMalformed},
		{"compressed twice", twice, ErrMalformed},
		{"big JSON compressed", bigOK, nil},
	} {
		t.Run(cs.name, func(t *testing.T) {
			_, err := c.DecodeTelemetry(cs.in)
			if !errors.Is(err, cs.want) || (err == nil) != (cs.want == nil) {
				t.Fatalf("got %v, want %v", err, cs.want)
			}
		})
	}

	// Too many records to fit once compressed: random-looking payloads.
	b := &TelemetryBatch{V: 1, DeviceID: "d1"}
	for i := range MaxRecords {
		b.Records = append(b.Records, Record{ID: uint64(i + 1), Kind: "k", Time: t0,
			Payload: json.RawMessage(fmt.Sprintf(`"%x%x%x"`, sha(i), sha(i+MaxRecords), sha(i+2*MaxRecords)))})
	}
	if _, err := c.EncodeTelemetry(b); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("EncodeTelemetry of an incompressible 4096-record batch: %v, want ErrTooLarge", err)
	}
	c.Close()
	c.Close()
	if _, err := c.EncodeTelemetry(batch(1)); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("EncodeTelemetry after Close: %v", err)
	}
}

// corrupt returns a copy of a zstd frame with bytes in its middle flipped.
func corrupt(z []byte) []byte {
	out := append([]byte{}, z...)
	for i := len(out) / 2; i < len(out)/2+16; i++ {
		out[i] ^= 0xff
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sha returns 32 pseudo-random bytes for i (xorshift; no crypto needed).
func sha(i int) []byte {
	x := uint64(i)*0x9E3779B97F4A7C15 + 1
	out := make([]byte, 32)
	for j := range out {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		out[j] = byte(x)
	}
	return out
}

// BenchmarkTelemetry compares plain JSON with the zstd codec for a batch of
// 500 prediction records, encode and decode.
func BenchmarkTelemetry(b *testing.B) {
	tb := batch(500)
	c, err := NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	plain, _ := Encode(tb)
	wire, _ := c.EncodeTelemetry(tb)
	b.Run("encode/json", func(b *testing.B) {
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			if _, err := Encode(tb); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(plain)), "wire-bytes")
	})
	b.Run("encode/zstd", func(b *testing.B) {
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			if _, err := c.EncodeTelemetry(tb); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(wire)), "wire-bytes")
	})
	b.Run("decode/json", func(b *testing.B) {
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			if _, err := DecodeTelemetry(plain); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/zstd-codec", func(b *testing.B) {
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			if _, err := c.DecodeTelemetry(wire); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/zstd-oneshot", func(b *testing.B) {
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			if _, err := DecodeTelemetry(wire); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecodeDesired compares DecodeDesired (decode + validate) with a
// bare json.Unmarshal of the same payload.
func BenchmarkDecodeDesired(b *testing.B) {
	d := desired(17, t0, 24*60*60*1e9)
	wire, err := Encode(d)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("protocol", func(b *testing.B) {
		for b.Loop() {
			if _, err := DecodeDesired(wire); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Unmarshal", func(b *testing.B) {
		for b.Loop() {
			var v DesiredState
			if err := json.Unmarshal(wire, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
