package protocol

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// CompressThreshold is the size of encoded telemetry JSON above which
// Codec.EncodeTelemetry tries zstd.
const CompressThreshold = 2 << 10

// zstdMagic starts every zstd frame (RFC 8878). It is the content flag of
// a telemetry payload: JSON text never starts with it (0x28 is '(').
var zstdMagic = [4]byte{0x28, 0xB5, 0x2F, 0xFD}

// IsCompressed reports whether a telemetry payload is zstd-compressed: it
// starts with the zstd frame magic 28 B5 2F FD instead of JSON text.
func IsCompressed(b []byte) bool {
	return bytes.HasPrefix(b, zstdMagic[:])
}

// Codec encodes and decodes telemetry with reusable zstd state. It is safe
// for concurrent use; Close releases it.
type Codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// NewCodec returns a Codec. Its encoder is tuned for small devices (one
// goroutine, a 256 KiB window); its decoder refuses output over
// MaxDecodedSize.
func NewCodec() (*Codec, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithWindowSize(MaxPayloadSize),
		zstd.WithLowerEncoderMem(true),
		zstd.WithEncoderCRC(true),
	)
	if err != nil {
		return nil, fmt.Errorf("protocol: zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(MaxDecodedSize),
		zstd.WithDecoderMaxWindow(MaxDecodedSize),
		zstd.WithDecoderLowmem(true),
	)
	if err != nil {
		enc.Close()
		return nil, fmt.Errorf("protocol: zstd decoder: %w", err)
	}
	return &Codec{enc: enc, dec: dec}, nil
}

// Close releases the codec's zstd state. It is idempotent.
func (c *Codec) Close() {
	if c.enc != nil {
		c.enc.Close()
		c.dec.Close()
		c.enc, c.dec = nil, nil
	}
}

// EncodeTelemetry validates b and returns its wire form: compact JSON, or
// zstd-compressed JSON when the JSON is over CompressThreshold and
// compression makes it smaller. The result is at most MaxPayloadSize
// bytes (ErrTooLarge otherwise: send fewer records per batch), and the
// JSON at most MaxDecodedSize.
func (c *Codec) EncodeTelemetry(b *TelemetryBatch) ([]byte, error) {
	if c.enc == nil {
		return nil, errors.New("protocol: codec is closed")
	}
	if b == nil {
		return nil, errors.New("protocol: encode: nil telemetry batch")
	}
	js, err := validJSON(b)
	if err != nil {
		return nil, err
	}
	if len(js) > MaxDecodedSize {
		return nil, fmt.Errorf("%w: telemetry batch JSON is %d bytes, the limit is %d", ErrTooLarge, len(js), MaxDecodedSize)
	}
	out := js
	if len(js) > CompressThreshold {
		if z := c.enc.EncodeAll(js, make([]byte, 0, len(js)/4)); len(z) < len(js) {
			out = z
		}
	}
	if len(out) > MaxPayloadSize {
		return nil, fmt.Errorf("%w: telemetry batch of %d records is %d bytes on the wire, the limit is %d",
			ErrTooLarge, len(b.Records), len(out), MaxPayloadSize)
	}
	return out, nil
}

// DecodeTelemetry parses and validates a TelemetryBatch payload, plain JSON
// or zstd-compressed.
func (c *Codec) DecodeTelemetry(b []byte) (*TelemetryBatch, error) {
	if c.dec == nil {
		return nil, errors.New("protocol: codec is closed")
	}
	if !IsCompressed(b) {
		return decodeTelemetryJSON(b, MaxPayloadSize)
	}
	if len(b) > MaxPayloadSize {
		return nil, fmt.Errorf("%w: telemetry batch: %d bytes compressed, the limit is %d", ErrTooLarge, len(b), MaxPayloadSize)
	}
	js, err := c.dec.DecodeAll(b, nil)
	if err != nil {
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
			return nil, fmt.Errorf("%w: telemetry batch decompresses to more than %d bytes", ErrTooLarge, MaxDecodedSize)
		}
		return nil, fmt.Errorf("%w: telemetry batch: zstd: %w", ErrMalformed, err)
	}
	if IsCompressed(js) {
		return nil, fmt.Errorf("%w: telemetry batch: compressed twice", ErrMalformed)
	}
	return decodeTelemetryJSON(js, MaxDecodedSize)
}
