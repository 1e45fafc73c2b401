package outbox

import (
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"
)

// Record is one entry of the outbox as returned by Peek.
type Record struct {
	// ID is unique for the device and increases with every Append; the
	// uplink sends it as the deduplication key.
	ID uint64
	// Kind says what the payload is (e.g. "prediction", "event", "telemetry").
	Kind string
	// Time is when Append was called, in UTC.
	Time time.Time
	// Payload is the caller's bytes, unchanged. Peek returns a copy that the
	// caller owns.
	Payload []byte
}

// MaxKindLen is the longest Kind accepted by Append, in bytes.
const MaxKindLen = 255

// Value layout (version 1), the key being the 8-byte big-endian ID:
//
//	byte    version (1)
//	uvarint len(kind)
//	[]byte  kind
//	int64   time, Unix nanoseconds, big-endian
//	[]byte  payload (rest of the value)
const (
	valueVersion = 1
	keyLen       = 8
)

// encodedLen is the length of the value encodeValue produces.
func encodedLen(kind string, payloadLen int) int {
	return 1 + uvarintLen(uint64(len(kind))) + len(kind) + 8 + payloadLen
}

// encodeValue returns the stored value of a record. It is called by Append,
// in the caller's goroutine, so that the single writer only copies bytes.
func encodeValue(kind string, t time.Time, payload []byte) []byte {
	v := make([]byte, 0, encodedLen(kind, len(payload)))
	v = append(v, valueVersion)
	v = binary.AppendUvarint(v, uint64(len(kind)))
	v = append(v, kind...)
	v = binary.BigEndian.AppendUint64(v, uint64(t.UnixNano()))
	return append(v, payload...)
}

// decodeValue parses a stored value. The returned payload aliases v.
func decodeValue(v []byte) (kind string, t time.Time, payload []byte, err error) {
	if len(v) == 0 {
		return "", time.Time{}, nil, fmt.Errorf("%w: empty record value", ErrCorrupt)
	}
	if v[0] != valueVersion {
		return "", time.Time{}, nil, fmt.Errorf("%w: record encoding version %d, want %d", ErrCorrupt, v[0], valueVersion)
	}
	rest := v[1:]
	n, w := binary.Uvarint(rest)
	if w <= 0 {
		return "", time.Time{}, nil, fmt.Errorf("%w: bad kind length", ErrCorrupt)
	}
	rest = rest[w:]
	if n == 0 || n > MaxKindLen || n > uint64(len(rest)) {
		return "", time.Time{}, nil, fmt.Errorf("%w: kind length %d out of range (1..%d, %d bytes left)", ErrCorrupt, n, MaxKindLen, len(rest))
	}
	kind, rest = string(rest[:n]), rest[n:]
	if !utf8.ValidString(kind) {
		return "", time.Time{}, nil, fmt.Errorf("%w: kind is not valid UTF-8", ErrCorrupt)
	}
	if len(rest) < 8 {
		return "", time.Time{}, nil, fmt.Errorf("%w: truncated time (%d bytes, want 8)", ErrCorrupt, len(rest))
	}
	t = time.Unix(0, int64(binary.BigEndian.Uint64(rest))).UTC()
	return kind, t, rest[8:], nil
}

// checkKind validates a Kind given to Append.
func checkKind(kind string) error {
	switch {
	case kind == "":
		return fmt.Errorf("%w: empty kind", ErrInvalid)
	case len(kind) > MaxKindLen:
		return fmt.Errorf("%w: kind is %d bytes, limit is %d", ErrInvalid, len(kind), MaxKindLen)
	case !utf8.ValidString(kind):
		return fmt.Errorf("%w: kind %q is not valid UTF-8", ErrInvalid, kind)
	}
	return nil
}

func idKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, keyLen), id)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}
