package protocol

// The payload of "sample" records: the data a bundle's sampling policy
// keeps for the feature store (docs/integrations.md). Like the other
// record payloads, its JSON is a wire format: fields may be added, none
// renamed, retyped or given another meaning.

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// Bounds of a SampleRecord.
const (
	// MaxSampleRecordBytes is the largest encoded SampleRecord: the agent
	// drops (and counts) larger samples, fleetd refuses them. It leaves a
	// telemetry batch (MaxPayloadSize) room for several.
	MaxSampleRecordBytes = 64 << 10
	// MaxSampleTensors bounds the tensors of each list of a SampleRecord.
	MaxSampleTensors = 64
)

// SampleRecord is the payload of a "sample" record (RecordSample): one
// request the bundle's sampling policy picked, with the tensors the model
// was actually fed (after the pre-processor, for a raw request) and what
// it answered. The device is the batch's; the labels are the device's
// when it answered.
type SampleRecord struct {
	// Time is when the request arrived (UTC).
	Time time.Time `json:"time"`
	// Model is the bundle that answered, "name@version".
	Model string `json:"model"`
	// RequestID is the request's "id", if it had one.
	RequestID string `json:"requestId,omitempty"`
	// Raw is true for an application/octet-stream request: Inputs are
	// then the pre-processor's outputs.
	Raw bool `json:"raw,omitempty"`
	// Labels are the device's labels.
	Labels map[string]string `json:"labels,omitempty"`
	// Inputs are the model's inputs as fed to it, Outputs its outputs
	// (after the post-processor, if any), Features the pre-processor's
	// outputs that are not model inputs (raw requests only).
	Inputs   []SampleTensor `json:"inputs"`
	Outputs  []SampleTensor `json:"outputs"`
	Features []SampleTensor `json:"features,omitempty"`
}

// SampleTensor is one tensor of a SampleRecord, its elements as raw bytes
// (base64 in JSON): row-major, little endian, BOOL one byte per element,
// as the Open Inference Protocol's binary extension lays them out
// (tensor.AppendData, tensor.DataFromBytes).
type SampleTensor struct {
	Name     string          `json:"name"`
	Datatype tensor.Datatype `json:"datatype"`
	Shape    []int64         `json:"shape"`
	Data     []byte          `json:"data"`
}

// NewSampleTensor is t as a SampleTensor (its elements copied).
func NewSampleTensor(t tensor.Tensor) SampleTensor {
	return SampleTensor{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape, Data: tensor.AppendData(nil, t.Data)}
}

// Tensor decodes s's elements into a tensor.Tensor.
func (s SampleTensor) Tensor() (tensor.Tensor, error) {
	data, err := tensor.DataFromBytes(s.Datatype, s.Data)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("tensor %q: %w", s.Name, err)
	}
	return tensor.Tensor{Name: s.Name, Datatype: s.Datatype, Shape: s.Shape, Data: data}, nil
}

// DecodeSampleRecord parses and validates a "sample" record's payload:
// at most MaxSampleRecordBytes of one JSON object (ErrTooLarge,
// ErrMalformed), every field checked (ErrInvalid).
func DecodeSampleRecord(b []byte) (*SampleRecord, error) {
	return decodeObject[SampleRecord]("sample record", b, MaxSampleRecordBytes, nil)
}

// Validate checks every field of r; the error wraps ErrInvalid and names
// the field.
func (r *SampleRecord) Validate() error {
	const what = "sample record"
	if r == nil {
		return fmt.Errorf("%w: %s: nil", ErrInvalid, what)
	}
	if err := checkRequest(what, r.Time, r.Model); err != nil {
		return err
	}
	if err := checkText(what, "requestId", r.RequestID, maxText); err != nil {
		return err
	}
	if err := checkLabels(what, r.Labels); err != nil {
		return err
	}
	if len(r.Inputs) == 0 {
		return invalid(what, "inputs", "required (at least one tensor)")
	}
	if len(r.Outputs) == 0 {
		return invalid(what, "outputs", "required (at least one tensor)")
	}
	for _, l := range []struct {
		field string
		ts    []SampleTensor
	}{{"inputs", r.Inputs}, {"outputs", r.Outputs}, {"features", r.Features}} {
		if err := checkSampleTensors(what, l.field, l.ts); err != nil {
			return err
		}
	}
	return nil
}

func checkSampleTensors(what, field string, ts []SampleTensor) error {
	if len(ts) > MaxSampleTensors {
		return invalid(what, field, "%d tensors, the limit is %d", len(ts), MaxSampleTensors)
	}
	seen := make(map[string]bool, len(ts))
	for i, t := range ts {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case t.Name == "" || len(t.Name) > maxName || !utf8.ValidString(t.Name):
			return invalid(what, f+".name", "%q: must be 1 to %d bytes of UTF-8", t.Name, maxName)
		case seen[t.Name]:
			return invalid(what, f+".name", "%q given twice", t.Name)
		case !t.Datatype.Valid():
			return invalid(what, f+".datatype", "%q: not one of %v", t.Datatype, tensor.Datatypes)
		case t.Shape == nil:
			return invalid(what, f+".shape", "required ([] for a scalar)")
		}
		seen[t.Name] = true
		n := int64(1)
		for _, d := range t.Shape {
			if d < 0 || d > MaxSampleRecordBytes {
				return invalid(what, f+".shape", "%v: dimensions must be 0 to %d", t.Shape, MaxSampleRecordBytes)
			}
			if n *= d; n > MaxSampleRecordBytes {
				return invalid(what, f+".shape", "%v: more elements than a record can carry", t.Shape)
			}
		}
		if want := n * int64(t.Datatype.Size()); int64(len(t.Data)) != want {
			return invalid(what, f+".data", "%d bytes; shape %v of %s needs %d", len(t.Data), t.Shape, t.Datatype, want)
		}
	}
	return nil
}
