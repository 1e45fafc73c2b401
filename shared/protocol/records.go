package protocol

// The payloads of the telemetry records (Record.Payload, by Record.Kind):
// the one declaration of each, which the edge agent encodes and fleetd
// decodes. Their JSON is a wire format like the messages': a field may be
// added, none renamed, retyped or given another meaning (see
// docs/protocol.md, Records). A reader ignores fields it does not know
// and skips kinds it does not know.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// MaxSampleValues is the most elements of a tensor a PredictionRecord
// carries as values (TensorSample.Values); larger tensors, and those with
// a NaN or an infinity, are summarized (TensorSample.Summary).
const MaxSampleValues = 16

// PredictionRecord is the payload of a "prediction" record
// (RecordPrediction): one sampled inference request of the device's
// Open Inference Protocol API.
type PredictionRecord struct {
	// Time is when the request arrived (UTC).
	Time time.Time `json:"time"`
	// Model is the bundle that answered, "name@version".
	Model string `json:"model"`
	// Provider is the bundle's execution provider ("cpu", "cuda", ...),
	// if known.
	Provider string `json:"provider,omitempty"`
	// RequestID is the request's "id", if it had one (never for a raw
	// request).
	RequestID string `json:"requestId,omitempty"`
	// Raw is true for an application/octet-stream request.
	Raw bool `json:"raw,omitempty"`
	// Code is the HTTP status answered.
	Code int `json:"code"`
	// LatencyMs is the server's time on the request in milliseconds
	// (reading and decoding the body, inference, encoding and writing the
	// answer), rounded to 3 decimals.
	LatencyMs float64 `json:"latencyMs"`
	// InferMs is the time in inference alone (pre-processor, model,
	// post-processor) in milliseconds, rounded to 3 decimals.
	InferMs float64 `json:"inferMs"`
	// Error is why the request failed ("" if it succeeded), cut to about
	// 512 bytes.
	Error string `json:"error,omitempty"`
	// Outputs are the model's outputs by tensor name; absent for a
	// failed request.
	Outputs map[string]TensorSample `json:"outputs,omitempty"`
	// Features are the pre-processor's outputs that are not model inputs
	// (the drift features) by tensor name; absent when the request
	// carried tensors or failed.
	Features map[string]TensorSample `json:"features,omitempty"`
}

// TensorSample is one tensor of a PredictionRecord. On the wire it is
// either a JSON array of the tensor's elements, flat (at most
// MaxSampleValues, all finite), or a TensorSummary object. Exactly one of
// Values and Summary is set (neither for a JSON null, which older agents
// may write for an empty tensor).
type TensorSample struct {
	// Values are the tensor's elements in row-major order.
	Values []float64
	// Float32 says that Values are FP32 elements and are written with
	// float32 precision: the shortest decimal that reads back as the same
	// float32 (0.1, not 0.10000000149011612). Decoding leaves it false.
	Float32 bool
	// Summary stands for a tensor too large, or not finite, to carry.
	Summary *TensorSummary
}

// TensorSummary stands for a tensor in a TensorSample: its datatype and
// shape and the statistics of its finite elements.
type TensorSummary struct {
	// Datatype is the tensor's Open Inference Protocol datatype.
	Datatype tensor.Datatype `json:"datatype"`
	// Shape is the tensor's shape.
	Shape []int64 `json:"shape"`
	// N is the number of elements.
	N int `json:"n"`
	// Min, Max and Mean are those of the finite elements (0 when there are
	// none, or when the elements are not numbers).
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
	// NonFinite counts the NaN and infinite elements.
	NonFinite int `json:"nonFinite,omitempty"`
}

// MarshalJSON writes s as an array of its values or as its summary.
func (s TensorSample) MarshalJSON() ([]byte, error) {
	switch {
	case s.Summary != nil:
		return json.Marshal(s.Summary)
	case s.Float32:
		var f []float32
		if s.Values != nil {
			f = make([]float32, len(s.Values))
			for i, v := range s.Values {
				f[i] = float32(v)
			}
		}
		return json.Marshal(f)
	}
	return json.Marshal(s.Values)
}

// UnmarshalJSON reads an array of numbers into Values, an object into
// Summary and null into neither; anything else is an error.
func (s *TensorSample) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return fmt.Errorf("protocol: tensor sample: empty")
	case string(b) == "null":
		return nil
	case b[0] == '[':
		v, err := parseNumbers(b)
		if err != nil {
			return fmt.Errorf("protocol: tensor sample: %w", err)
		}
		*s = TensorSample{Values: v}
	case b[0] == '{':
		var sum TensorSummary
		if err := json.Unmarshal(b, &sum); err != nil {
			return fmt.Errorf("protocol: tensor sample: %w", err)
		}
		*s = TensorSample{Summary: &sum}
	default:
		return fmt.Errorf("protocol: tensor sample: want an array of numbers or a summary object, not %.16q", b)
	}
	return nil
}

// parseNumbers reads a JSON array of numbers, b, without the reflection
// and second validation pass of json.Unmarshal (the rollout engine reads
// the outputs of up to 100,000 prediction records per device and query).
// Anything but numbers in b is an error.
func parseNumbers(b []byte) ([]float64, error) {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	bad := func() ([]float64, error) {
		return nil, fmt.Errorf("want an array of numbers, not %.32q", b)
	}
	if len(b) < 2 || b[0] != '[' || b[len(b)-1] != ']' {
		return bad()
	}
	out := []float64{}
	i, end := 1, len(b)-1
	for i < end && isSpace(b[i]) {
		i++
	}
	if i == end {
		return out, nil
	}
	for {
		if c := b[i]; c != '-' && (c < '0' || c > '9') {
			return bad()
		}
		j := i
		for j < end && (b[j] >= '0' && b[j] <= '9' || b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
			j++
		}
		v, err := strconv.ParseFloat(string(b[i:j]), 64)
		if err != nil {
			return nil, fmt.Errorf("number %q: %w", b[i:j], err)
		}
		out = append(out, v)
		for j < end && isSpace(b[j]) {
			j++
		}
		if j == end {
			return out, nil
		}
		if b[j] != ',' {
			return bad()
		}
		j++
		for j < end && isSpace(b[j]) {
			j++
		}
		if j == end {
			return bad() // a trailing comma
		}
		i = j
	}
}

// MetricsRecord is the payload of a "metrics" record (RecordMetrics): one
// bundle's inference requests over one metrics window (all of them, not
// only the sampled ones).
type MetricsRecord struct {
	// Window is the window's length as a Go duration ("1m0s"), rounded to
	// the millisecond.
	Window string `json:"window"`
	// Start and End bound the window (UTC).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Model is the bundle, "name@version".
	Model string `json:"model"`
	// Provider is its execution provider, if known.
	Provider string `json:"provider,omitempty"`
	// Requests counts the requests the bundle answered in the window.
	Requests uint64 `json:"requests"`
	// Errors counts the failed requests; ClientErrors those that were the
	// caller's fault (4xx).
	Errors       uint64 `json:"errors"`
	ClientErrors uint64 `json:"clientErrors"`
	// Raw counts the application/octet-stream requests.
	Raw uint64 `json:"raw,omitempty"`
	// P50Ms and P95Ms are the median and 95th percentile (nearest rank)
	// of the requests' latency, MaxMs its maximum, in milliseconds (as
	// PredictionRecord.LatencyMs; percentiles of a uniform sample of at
	// most 4096 requests).
	P50Ms float64 `json:"p50Ms"`
	P95Ms float64 `json:"p95Ms"`
	MaxMs float64 `json:"maxMs"`
	// InferP50Ms and InferP95Ms are the same of the inference time (as
	// PredictionRecord.InferMs).
	InferP50Ms float64 `json:"inferP50Ms"`
	InferP95Ms float64 `json:"inferP95Ms"`
	// SampleRate is the share of requests sent as prediction records
	// (0 to 1).
	SampleRate float64 `json:"sampleRate"`
	// SamplesDropped counts prediction samples lost since the agent
	// started (queue full or outbox failure).
	SamplesDropped uint64 `json:"samplesDropped"`
	// Buffer is the device's outbox when the window closed.
	Buffer BufferStats `json:"buffer"`
}

// DriftRecord is the payload of a "drift" record (RecordDrift): the
// predictions one bundle version answered over one drift window,
// summarized against the bundle's reference profile (docs/drift.md).
// fleetd merges the summaries of many windows and devices; Score serves
// the rollout engine's drift gate.
type DriftRecord struct {
	// Model is the bundle, "name@version".
	Model string `json:"model"`
	// Profile is the reference profile's ID (drift.Profile.ID).
	Profile string `json:"profile"`
	// Start and End bound the window (UTC).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Predictions counts the inference calls of the window; Errors those
	// that failed.
	Predictions uint64 `json:"predictions"`
	Errors      uint64 `json:"errors"`
	// Score is the window's share of drifted features among those tested
	// (drift.Report's Share, 0 to 1), absent when no feature had enough
	// values to be tested.
	Score *float64 `json:"score,omitempty"`
	// Tested counts the features tested.
	Tested int `json:"tested"`
	// Drifted names the drifted features, in the profile's order.
	Drifted []string `json:"drifted,omitempty"`
	// Summary is the window's drift.Summary as a JSON string
	// (drift.Summary.MarshalBase64JSON; drift.DecodeSummary reads it as
	// is).
	Summary json.RawMessage `json:"summary"`
}

// ShadowRecord is the payload of a "shadow" record (RecordShadow): one
// shadow candidate's comparison with the active bundle over one window.
type ShadowRecord struct {
	// Candidate is the shadow bundle, "name@version".
	Candidate string `json:"candidate"`
	// Active is the bundle that answered the requests compared.
	Active string `json:"active"`
	// Start and End bound the window (UTC).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Samples counts the requests run on both bundles.
	Samples uint64 `json:"samples"`
	// Agreed counts the samples on which the candidate's outputs agreed
	// with the active bundle's.
	Agreed uint64 `json:"agreed"`
	// Errors counts the samples the candidate failed (counted in Samples,
	// not in Agreed).
	Errors uint64 `json:"errors"`
	// Dropped counts the sampled requests not compared because the
	// comparison queue was full.
	Dropped uint64 `json:"dropped"`
	// Agreement is Agreed/Samples, absent without samples.
	Agreement *float64 `json:"agreement,omitempty"`
	// LatencyP50Ms and LatencyP95Ms are the median and 95th percentile of
	// the candidate's inference time (pre-processor, model,
	// post-processor) in milliseconds.
	LatencyP50Ms float64 `json:"latencyP50Ms"`
	LatencyP95Ms float64 `json:"latencyP95Ms"`
	// ActiveP95Ms is the active bundle's 95th percentile on the same
	// requests.
	ActiveP95Ms float64 `json:"activeP95Ms"`
	// MaxAbsDiff is the largest difference between two numeric output
	// elements compared one by one.
	MaxAbsDiff float64 `json:"maxAbsDiff"`
}

// checkBundleID checks a "name@version" field.
func checkBundleID(what, field, s string) error {
	if s == "" {
		return invalid(what, field, "required")
	}
	name, version, ok := strings.Cut(s, "@")
	if !ok {
		return invalid(what, field, "%q: must be name@version", s)
	}
	if !isToken(name, maxName) {
		return invalid(what, field, "%q: the name must match [a-z0-9][a-z0-9._-]* (at most %d bytes)", s, maxName)
	}
	if !isSemver(version) {
		return invalid(what, field, "%q: the version is not a semantic version like 1.4.0 (no leading v)", s)
	}
	return nil
}

// checkRequest checks the fields of a record about one request: when it
// arrived and the bundle that answered.
func checkRequest(what string, t time.Time, model string) error {
	if t.IsZero() {
		return invalid(what, "time", "required")
	}
	return checkBundleID(what, "model", model)
}

// checkSpan checks the start and end of a window.
func checkSpan(what string, start, end time.Time) error {
	if start.IsZero() {
		return invalid(what, "start", "required")
	}
	if end.IsZero() {
		return invalid(what, "end", "required")
	}
	if end.Before(start) {
		return invalid(what, "end", "before start")
	}
	return nil
}

// measure is a field holding a duration in milliseconds, or another
// measure that must be finite and not negative.
type measure struct {
	field string
	v     float64
}

func checkMeasures(what string, ms ...measure) error {
	for _, m := range ms {
		if math.IsNaN(m.v) || math.IsInf(m.v, 0) || m.v < 0 {
			return invalid(what, m.field, "%v: must be finite and >= 0", m.v)
		}
	}
	return nil
}

func checkShare(what, field string, v float64) error {
	if !(v >= 0 && v <= 1) {
		return invalid(what, field, "%v: must be 0 to 1", v)
	}
	return nil
}

// checkSamples checks the tensors of a PredictionRecord.
func checkSamples(what, field string, m map[string]TensorSample) error {
	for name, s := range m {
		f := field + "." + name
		if name == "" || len(name) > maxName || !utf8.ValidString(name) {
			return invalid(what, field, "tensor name %q: must be 1 to %d bytes of UTF-8", name, maxName)
		}
		switch {
		case s.Summary != nil && s.Values != nil:
			return invalid(what, f, "values and a summary")
		case len(s.Values) > MaxSampleValues:
			return invalid(what, f, "%d values, the limit is %d (larger tensors are summarized)", len(s.Values), MaxSampleValues)
		case s.Summary != nil:
			sum := s.Summary
			if sum.N < 0 || sum.NonFinite < 0 || sum.NonFinite > sum.N {
				return invalid(what, f, "n %d, nonFinite %d: want 0 <= nonFinite <= n", sum.N, sum.NonFinite)
			}
			for _, d := range sum.Shape {
				if d < 0 {
					return invalid(what, f+".shape", "%v: dimensions must be >= 0", sum.Shape)
				}
			}
			for _, v := range []float64{sum.Min, sum.Max, sum.Mean} {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return invalid(what, f, "min, max and mean must be finite")
				}
			}
		}
		for _, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return invalid(what, f, "values must be finite (a tensor with NaN or infinities is summarized)")
			}
		}
	}
	return nil
}

// Validate checks every field of r; the error wraps ErrInvalid and names
// the field.
func (r *PredictionRecord) Validate() error {
	const what = "prediction record"
	if r == nil {
		return fmt.Errorf("%w: %s: nil", ErrInvalid, what)
	}
	if err := checkRequest(what, r.Time, r.Model); err != nil {
		return err
	}
	if err := checkOptToken(what, "provider", r.Provider); err != nil {
		return err
	}
	if err := checkText(what, "requestId", r.RequestID, maxText); err != nil {
		return err
	}
	if r.Code < 100 || r.Code > 599 {
		return invalid(what, "code", "%d: not an HTTP status", r.Code)
	}
	if err := checkMeasures(what, measure{"latencyMs", r.LatencyMs}, measure{"inferMs", r.InferMs}); err != nil {
		return err
	}
	if err := checkText(what, "error", r.Error, maxText); err != nil {
		return err
	}
	if err := checkSamples(what, "outputs", r.Outputs); err != nil {
		return err
	}
	return checkSamples(what, "features", r.Features)
}

// Validate checks every field of r; the error wraps ErrInvalid and names
// the field.
func (r *MetricsRecord) Validate() error {
	const what = "metrics record"
	if r == nil {
		return fmt.Errorf("%w: %s: nil", ErrInvalid, what)
	}
	if d, err := time.ParseDuration(r.Window); err != nil || d < 0 {
		return invalid(what, "window", "%q: must be a duration like 1m0s", r.Window)
	}
	if err := checkSpan(what, r.Start, r.End); err != nil {
		return err
	}
	if err := checkBundleID(what, "model", r.Model); err != nil {
		return err
	}
	if err := checkOptToken(what, "provider", r.Provider); err != nil {
		return err
	}
	if r.Errors > r.Requests {
		return invalid(what, "errors", "%d: more than the %d requests", r.Errors, r.Requests)
	}
	if r.ClientErrors > r.Errors {
		return invalid(what, "clientErrors", "%d: more than the %d errors", r.ClientErrors, r.Errors)
	}
	if r.Raw > r.Requests {
		return invalid(what, "raw", "%d: more than the %d requests", r.Raw, r.Requests)
	}
	if err := checkMeasures(what, measure{"p50Ms", r.P50Ms}, measure{"p95Ms", r.P95Ms}, measure{"maxMs", r.MaxMs},
		measure{"inferP50Ms", r.InferP50Ms}, measure{"inferP95Ms", r.InferP95Ms}); err != nil {
		return err
	}
	if err := checkShare(what, "sampleRate", r.SampleRate); err != nil {
		return err
	}
	return r.Buffer.validate(what, "buffer")
}

// Validate checks every field of r but the summary's content (that is
// drift.DecodeSummary's job): the error wraps ErrInvalid and names the
// field.
func (r *DriftRecord) Validate() error {
	const what = "drift record"
	if r == nil {
		return fmt.Errorf("%w: %s: nil", ErrInvalid, what)
	}
	if err := checkBundleID(what, "model", r.Model); err != nil {
		return err
	}
	if r.Profile == "" {
		return invalid(what, "profile", "required")
	}
	if !isIdent(r.Profile, maxName) {
		return invalid(what, "profile", "%q: must match [A-Za-z0-9][A-Za-z0-9._-]* (at most %d bytes)", r.Profile, maxName)
	}
	if err := checkSpan(what, r.Start, r.End); err != nil {
		return err
	}
	if r.Errors > r.Predictions {
		return invalid(what, "errors", "%d: more than the %d predictions", r.Errors, r.Predictions)
	}
	if r.Tested < 0 {
		return invalid(what, "tested", "%d: must be >= 0", r.Tested)
	}
	if r.Score != nil {
		if err := checkShare(what, "score", *r.Score); err != nil {
			return err
		}
		if r.Tested == 0 {
			return invalid(what, "score", "without tested features")
		}
	}
	if len(r.Drifted) > r.Tested {
		return invalid(what, "drifted", "%d features, more than the %d tested", len(r.Drifted), r.Tested)
	}
	for _, f := range r.Drifted {
		if f == "" || len(f) > maxName || !utf8.ValidString(f) {
			return invalid(what, "drifted", "feature name %q: must be 1 to %d bytes of UTF-8", f, maxName)
		}
	}
	if len(r.Summary) < 2 || r.Summary[0] != '"' {
		return invalid(what, "summary", "required, a JSON string")
	}
	return nil
}

// Validate checks every field of r; the error wraps ErrInvalid and names
// the field.
func (r *ShadowRecord) Validate() error {
	const what = "shadow record"
	if r == nil {
		return fmt.Errorf("%w: %s: nil", ErrInvalid, what)
	}
	if err := checkBundleID(what, "candidate", r.Candidate); err != nil {
		return err
	}
	if err := checkBundleID(what, "active", r.Active); err != nil {
		return err
	}
	if err := checkSpan(what, r.Start, r.End); err != nil {
		return err
	}
	if r.Agreed > r.Samples || r.Errors > r.Samples-r.Agreed {
		return invalid(what, "agreed", "%d agreed and %d errors: more than the %d samples", r.Agreed, r.Errors, r.Samples)
	}
	switch {
	case r.Agreement == nil && r.Samples > 0:
		return invalid(what, "agreement", "required with samples")
	case r.Agreement != nil && r.Samples == 0:
		return invalid(what, "agreement", "without samples")
	case r.Agreement != nil:
		if err := checkShare(what, "agreement", *r.Agreement); err != nil {
			return err
		}
	}
	return checkMeasures(what, measure{"latencyP50Ms", r.LatencyP50Ms}, measure{"latencyP95Ms", r.LatencyP95Ms},
		measure{"activeP95Ms", r.ActiveP95Ms}, measure{"maxAbsDiff", r.MaxAbsDiff})
}
