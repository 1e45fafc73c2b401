package outbox

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValueRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		kind    string
		t       time.Time
		payload []byte
	}{
		{"prediction", time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC), []byte(`{"y":0.5}`)},
		{"e", time.Unix(0, 0).UTC(), nil},
		{strings.Repeat("k", MaxKindLen), time.Unix(0, -1).UTC(), make([]byte, 1000)},
		{"télémétrie", time.Date(2262, 4, 11, 0, 0, 0, 0, time.UTC), []byte{0}},
	} {
		v := encodeValue(tc.kind, tc.t, tc.payload)
		if len(v) != encodedLen(tc.kind, len(tc.payload)) {
			t.Errorf("%q: encoded %d bytes, encodedLen says %d", tc.kind, len(v), encodedLen(tc.kind, len(tc.payload)))
		}
		kind, tm, payload, err := decodeValue(v)
		if err != nil {
			t.Fatalf("%q: decode: %v", tc.kind, err)
		}
		if kind != tc.kind || !tm.Equal(tc.t) || !bytes.Equal(payload, tc.payload) {
			t.Errorf("round trip of %q %v %q = %q %v %q", tc.kind, tc.t, tc.payload, kind, tm, payload)
		}
	}
}

func TestDecodeValueErrors(t *testing.T) {
	valid := encodeValue("event", time.Unix(1, 0), []byte("p"))
	for _, tc := range []struct {
		name  string
		v     []byte
		wants string
	}{
		{"empty", nil, "empty"},
		{"version", append([]byte{2}, valid[1:]...), "version 2"},
		{"bad varint", []byte{1, 0x80}, "kind length"},
		{"zero kind", []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "kind length 0"},
		{"kind past end", []byte{1, 10, 'a'}, "kind length 10"},
		{"kind too long", append([]byte{1, 0x80, 0x02}, make([]byte, 300)...), "kind length 256"},
		{"kind not UTF-8", []byte{1, 1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, "UTF-8"},
		{"truncated time", valid[:len(valid)-3], "truncated time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := decodeValue(tc.v)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.wants) {
				t.Fatalf("decode(%x) = %v, want ErrCorrupt mentioning %q", tc.v, err, tc.wants)
			}
		})
	}
}

func FuzzDecodeValue(f *testing.F) {
	f.Add(encodeValue("prediction", time.Unix(1700000000, 5), []byte(`{"x":[1,2,3]}`)))
	f.Add(encodeValue("e", time.Unix(0, 0), nil))
	f.Add([]byte{1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Add([]byte{1, 1, 'k'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, v []byte) {
		kind, tm, payload, err := decodeValue(v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if checkKind(kind) != nil {
			t.Fatalf("decoded kind %q that Append would refuse", kind)
		}
		// What decodes re-encodes to something that decodes the same.
		k2, t2, p2, err := decodeValue(encodeValue(kind, tm, payload))
		if err != nil || k2 != kind || !t2.Equal(tm) || !bytes.Equal(p2, payload) {
			t.Fatalf("re-encode of %q %v %x gave %q %v %x %v", kind, tm, payload, k2, t2, p2, err)
		}
	})
}
