package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// validator is the pointer side of a payload type (a Message or a record
// payload), for the generic decoder.
type validator[T any] interface {
	*T
	Validate() error
}

// decode parses b (at most limit bytes) as a JSON object into a new T and
// validates it. A newer version of a message may change a field's type:
// when the JSON does not fit T, an envelope version "v" other than
// Version is an ErrVersion rather than ErrMalformed.
func decode[T any, P validator[T]](what string, b []byte, limit int) (*T, error) {
	return decodeObject[T, P](what, b, limit, probeVersion)
}

// decodeObject parses b (at most limit bytes) as a JSON object into a new
// T and validates it. probe, if not nil, may explain JSON that does not
// fit T better than ErrMalformed.
func decodeObject[T any, P validator[T]](what string, b []byte, limit int, probe func(what string, b []byte) error) (*T, error) {
	if len(b) > limit {
		return nil, fmt.Errorf("%w: %s: %d bytes, the limit is %d", ErrTooLarge, what, len(b), limit)
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%w: %s: not a JSON object", ErrMalformed, what)
	}
	m := new(T)
	if err := json.Unmarshal(b, m); err != nil {
		if probe != nil {
			if perr := probe(what, b); perr != nil {
				return nil, perr
			}
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, what, err)
	}
	if err := P(m).Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// probeVersion returns an ErrVersion if b is an object whose "v" is an
// integer other than Version, nil otherwise.
func probeVersion(what string, b []byte) error {
	var probe struct {
		V json.RawMessage `json:"v"`
	}
	if json.Unmarshal(b, &probe) != nil || len(probe.V) == 0 {
		return nil
	}
	var v int
	if json.Unmarshal(probe.V, &v) != nil || v == Version || v == 0 {
		return nil
	}
	return checkVersion(what, v)
}

// DecodeDesired parses and validates a DesiredState payload.
func DecodeDesired(b []byte) (*DesiredState, error) {
	return decode[DesiredState]("desired state", b, MaxPayloadSize)
}

// DecodeReported parses and validates a ReportedState payload.
func DecodeReported(b []byte) (*ReportedState, error) {
	return decode[ReportedState]("reported state", b, MaxPayloadSize)
}

// DecodeEvent parses and validates an Event payload.
func DecodeEvent(b []byte) (*Event, error) {
	return decode[Event]("event", b, MaxPayloadSize)
}

// DecodeStatus parses and validates a Status payload.
func DecodeStatus(b []byte) (*Status, error) {
	return decode[Status]("status", b, MaxPayloadSize)
}

// DecodeTelemetry parses and validates a TelemetryBatch payload, plain
// JSON or zstd-compressed (see IsCompressed). It builds a zstd decoder for
// a compressed payload each time; a consumer decoding many should keep a
// Codec.
func DecodeTelemetry(b []byte) (*TelemetryBatch, error) {
	if !IsCompressed(b) {
		return decodeTelemetryJSON(b, MaxPayloadSize)
	}
	c, err := NewCodec()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.DecodeTelemetry(b)
}

func decodeTelemetryJSON(b []byte, limit int) (*TelemetryBatch, error) {
	return decode[TelemetryBatch]("telemetry batch", b, limit)
}

// Encode validates m and returns its wire form: compact JSON of at most
// MaxPayloadSize bytes. Use Codec.EncodeTelemetry to compress telemetry.
func Encode(m Message) ([]byte, error) {
	if m == nil {
		return nil, errors.New("protocol: encode: nil message")
	}
	b, err := validJSON(m)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxPayloadSize {
		return nil, fmt.Errorf("%w: encoded %T is %d bytes, the limit is %d", ErrTooLarge, m, len(b), MaxPayloadSize)
	}
	return b, nil
}

// validJSON validates m and returns its compact JSON.
func validJSON(m Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode %T: %w", m, err)
	}
	return b, nil
}
