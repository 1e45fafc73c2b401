package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"golang.org/x/mod/semver"
)

// Field length limits (bytes).
const (
	maxName    = 128
	maxVersion = 64
	maxURL     = 2048
	maxToken   = 64
	maxText    = MaxTextBytes
	maxData    = 64 << 10
	maxLabelK  = 63
	maxLabelV  = 255
)

// invalid returns an ErrInvalid naming the message type and field.
func invalid(what, field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: field %q: %s", ErrInvalid, what, field, fmt.Sprintf(format, args...))
}

func checkVersion(what string, v int) error {
	switch v {
	case Version:
		return nil
	case 0:
		return invalid(what, "v", "required (the envelope version, %d)", Version)
	}
	return fmt.Errorf("%w: %s: v=%d, this code speaks v=%d", ErrVersion, what, v, Version)
}

// checkEnvelope checks the fields every message starts with: the envelope
// version and the device id.
func checkEnvelope(what string, v int, deviceID string) error {
	if err := checkVersion(what, v); err != nil {
		return err
	}
	return checkDeviceID(what, deviceID)
}

func checkDeviceID(what, id string) error {
	if id == "" {
		return invalid(what, "deviceId", "required")
	}
	if err := ValidateDeviceID(id); err != nil {
		return invalid(what, "deviceId", "%v", err)
	}
	return nil
}

// isToken reports whether s is 1..max bytes of [a-z0-9._-] starting with a
// letter or digit: the syntax of enumerated values (types, phases,
// kinds, reasons), so that unknown values from a newer peer still parse.
func isToken(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// checkEither checks a required field whose value must be a or b.
func checkEither[T ~string](what, field string, v, a, b T) error {
	switch v {
	case a, b:
		return nil
	case "":
		return invalid(what, field, "required (%q or %q)", a, b)
	}
	return invalid(what, field, "%q: must be %q or %q", v, a, b)
}

// checkToken checks a required enumerated value (isToken).
func checkToken(what, field, s string) error {
	if s == "" {
		return invalid(what, field, "required")
	}
	return checkOptToken(what, field, s)
}

// checkOptToken checks an optional enumerated value (isToken).
func checkOptToken(what, field, s string) error {
	if s != "" && !isToken(s, maxToken) {
		return invalid(what, field, "%q: must match [a-z0-9][a-z0-9._-]*", s)
	}
	return nil
}

// isIdent reports whether s is 1..max bytes of [A-Za-z0-9._-] starting
// with a letter or digit (rollout ids, epochs).
func isIdent(s string, maxLen int) bool {
	return s != "" && len(s) <= maxLen && badIdentByte(s) < 0
}

func checkText(what, field, s string, maxLen int) error {
	if len(s) > maxLen {
		return invalid(what, field, "%d bytes, the limit is %d", len(s), maxLen)
	}
	if !utf8.ValidString(s) {
		return invalid(what, field, "not valid UTF-8")
	}
	return nil
}

// isSemver reports whether s is a full semantic version without a leading
// v: MAJOR.MINOR.PATCH[-pre][+build].
func isSemver(s string) bool {
	if s == "" || len(s) > maxVersion || s[0] == 'v' || !semver.IsValid("v"+s) {
		return false
	}
	core, _, _ := strings.Cut(s, "+")
	core, _, _ = strings.Cut(core, "-")
	return strings.Count(core, ".") == 2
}

func checkName(what, field, s string) error {
	if s == "" {
		return invalid(what, field, "required")
	}
	if !isToken(s, maxName) {
		return invalid(what, field, "%q: must match [a-z0-9][a-z0-9._-]* (at most %d bytes)", s, maxName)
	}
	return nil
}

func checkSemver(what, field, s string) error {
	if s == "" {
		return invalid(what, field, "required")
	}
	if !isSemver(s) {
		return invalid(what, field, "%q is not a semantic version like 1.4.0 (no leading v)", s)
	}
	return nil
}

func checkURL(what, field, s string) error {
	if s == "" {
		return invalid(what, field, "required")
	}
	if len(s) > maxURL {
		return invalid(what, field, "%d bytes, the limit is %d", len(s), maxURL)
	}
	u, err := url.Parse(s)
	if err != nil {
		return invalid(what, field, "%v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return invalid(what, field, "%q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return invalid(what, field, "%q: no host", s)
	}
	return nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (b *BundleRef) validate(what, field string) error {
	if err := checkName(what, field+".name", b.Name); err != nil {
		return err
	}
	if err := checkSemver(what, field+".version", b.Version); err != nil {
		return err
	}
	if err := checkURL(what, field+".url", b.URL); err != nil {
		return err
	}
	if err := checkURL(what, field+".sigUrl", b.SigURL); err != nil {
		return err
	}
	if b.SHA256 == "" {
		return invalid(what, field+".sha256", "required")
	}
	if !isSHA256(b.SHA256) {
		return invalid(what, field+".sha256", "must be 64 lowercase hex digits")
	}
	if b.Size <= 0 {
		return invalid(what, field+".size", "required, must be > 0")
	}
	return nil
}

func (b *BundleID) validate(what, field string) error {
	if err := checkName(what, field+".name", b.Name); err != nil {
		return err
	}
	return checkSemver(what, field+".version", b.Version)
}

func (b *BufferStats) validate(what, field string) error {
	if b.Records < 0 {
		return invalid(what, field+".records", "must be >= 0")
	}
	if b.Bytes < 0 {
		return invalid(what, field+".bytes", "must be >= 0")
	}
	return nil
}

func (p *Progress) validate(what, field string) error {
	if p.Done < 0 {
		return invalid(what, field+".done", "must be >= 0")
	}
	if p.Total < 0 {
		return invalid(what, field+".total", "must be >= 0")
	}
	return nil
}

// Validate checks every field of d; the error wraps ErrVersion or
// ErrInvalid and names the field. Validity does not mean acceptable now:
// that is the Guard's job.
func (d *DesiredState) Validate() error {
	const what = "desired state"
	if d == nil {
		return fmt.Errorf("%w: %s: nil", ErrInvalid, what)
	}
	if err := checkEnvelope(what, d.V, d.DeviceID); err != nil {
		return err
	}
	if d.Seq == 0 {
		return invalid(what, "seq", "required, must be > 0")
	}
	if d.IssuedAt.IsZero() {
		return invalid(what, "issuedAt", "required")
	}
	if d.ExpiresAt.IsZero() {
		return invalid(what, "expiresAt", "required")
	}
	if !d.ExpiresAt.After(d.IssuedAt) {
		return invalid(what, "expiresAt", "must be after issuedAt")
	}
	if err := checkEither(what, "action", d.Action, ActionInstall, ActionRollback); err != nil {
		return err
	}
	if err := d.Bundle.validate(what, "bundle"); err != nil {
		return err
	}
	if d.Shadow != nil {
		if err := d.Shadow.Bundle.validate(what, "shadow.bundle"); err != nil {
			return err
		}
	}
	return checkRolloutID(what, d.RolloutID)
}

// Validate checks every field of r; the error wraps ErrVersion or
// ErrInvalid and names the field.
func (r *ReportedState) Validate() error {
	const what = "reported state"
	if r == nil {
		return fmt.Errorf("%w: %s: nil", ErrInvalid, what)
	}
	if err := checkEnvelope(what, r.V, r.DeviceID); err != nil {
		return err
	}
	if r.Time.IsZero() {
		return invalid(what, "time", "required")
	}
	if err := checkSemver(what, "agentVersion", r.AgentVersion); err != nil {
		return err
	}
	if err := checkLabels(what, r.Labels); err != nil {
		return err
	}
	for _, b := range []struct {
		field string
		id    *BundleID
	}{{"active", r.Active}, {"lastKnownGood", r.LastKnownGood}, {"shadow", r.Shadow}} {
		if b.id != nil {
			if err := b.id.validate(what, b.field); err != nil {
				return err
			}
		}
	}
	if err := checkOptToken(what, "provider", r.Provider); err != nil {
		return err
	}
	if in := r.Install; in != nil {
		if in.Seq == 0 {
			return invalid(what, "install.seq", "required, must be > 0")
		}
		if err := in.Bundle.validate(what, "install.bundle"); err != nil {
			return err
		}
		if err := checkToken(what, "install.phase", string(in.Phase)); err != nil {
			return err
		}
		if in.Progress != nil {
			if err := in.Progress.validate(what, "install.progress"); err != nil {
				return err
			}
		}
		if err := checkText(what, "install.error", in.Error, maxText); err != nil {
			return err
		}
		if err := checkOptToken(what, "install.reason", in.Reason); err != nil {
			return err
		}
		if in.Attempt < 0 {
			return invalid(what, "install.attempt", "%d: must be >= 0", in.Attempt)
		}
		if in.NextAttemptAt != nil && in.Phase != PhaseRetrying {
			return invalid(what, "install.nextAttemptAt", "only with phase %q, not %q", PhaseRetrying, in.Phase)
		}
		if in.Time.IsZero() {
			return invalid(what, "install.time", "required")
		}
	}
	if e := r.LastError; e != nil {
		if e.Time.IsZero() {
			return invalid(what, "lastError.time", "required")
		}
		if !isToken(e.Op, maxToken) {
			return invalid(what, "lastError.op", "%q: must match [a-z0-9][a-z0-9._-]*", e.Op)
		}
		for _, f := range []struct{ field, s string }{{"lastError.bundle", e.Bundle}, {"lastError.error", e.Error}} {
			if err := checkText(what, f.field, f.s, maxText); err != nil {
				return err
			}
		}
	}
	return r.Buffer.validate(what, "buffer")
}

func isLabelKey(k string) bool {
	if k == "" || len(k) > maxLabelK {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-' || c == '/') && i > 0:
		default:
			return false
		}
	}
	return true
}

func checkRolloutID(what, id string) error {
	if id != "" && !isIdent(id, maxName) {
		return invalid(what, "rolloutId", "%q: must match [A-Za-z0-9][A-Za-z0-9._-]* (at most %d bytes)", id, maxName)
	}
	return nil
}

func checkEpoch(what, epoch string) error {
	if epoch != "" && !isIdent(epoch, MaxDeviceIDLen) {
		return invalid(what, "epoch", "%q: must match [A-Za-z0-9][A-Za-z0-9._-]* (at most %d bytes)", epoch, MaxDeviceIDLen)
	}
	return nil
}

// Validate checks every field of e; the error wraps ErrVersion or
// ErrInvalid and names the field.
func (e *Event) Validate() error {
	const what = "event"
	if e == nil {
		return fmt.Errorf("%w: %s: nil", ErrInvalid, what)
	}
	if err := checkEnvelope(what, e.V, e.DeviceID); err != nil {
		return err
	}
	if err := checkEpoch(what, e.Epoch); err != nil {
		return err
	}
	if e.ID == 0 {
		return invalid(what, "id", "required, must be > 0")
	}
	if e.Time.IsZero() {
		return invalid(what, "time", "required")
	}
	if err := checkToken(what, "type", string(e.Type)); err != nil {
		return err
	}
	if err := checkRolloutID(what, e.RolloutID); err != nil {
		return err
	}
	if e.Bundle != nil {
		if err := e.Bundle.validate(what, "bundle"); err != nil {
			return err
		}
	}
	if e.From != nil {
		if err := e.From.validate(what, "from"); err != nil {
			return err
		}
	}
	if err := checkOptToken(what, "reason", e.Reason); err != nil {
		return err
	}
	if err := checkText(what, "message", e.Message, maxText); err != nil {
		return err
	}
	if e.Progress != nil {
		if err := e.Progress.validate(what, "progress"); err != nil {
			return err
		}
	}
	if len(e.Data) > 0 {
		if len(e.Data) > maxData {
			return invalid(what, "data", "%d bytes, the limit is %d", len(e.Data), maxData)
		}
		if t := bytes.TrimLeft(e.Data, " \t\r\n"); len(t) == 0 || t[0] != '{' || !json.Valid(t) {
			return invalid(what, "data", "must be a JSON object")
		}
	}
	return nil
}

// Validate checks every field of b; the error wraps ErrVersion or
// ErrInvalid and names the field.
func (b *TelemetryBatch) Validate() error {
	const what = "telemetry batch"
	if b == nil {
		return fmt.Errorf("%w: %s: nil", ErrInvalid, what)
	}
	if err := checkEnvelope(what, b.V, b.DeviceID); err != nil {
		return err
	}
	if err := checkEpoch(what, b.Epoch); err != nil {
		return err
	}
	if len(b.Records) == 0 {
		return invalid(what, "records", "required, at least one record")
	}
	if len(b.Records) > MaxRecords {
		return invalid(what, "records", "%d records, the limit is %d", len(b.Records), MaxRecords)
	}
	var prev uint64
	for i := range b.Records {
		r := &b.Records[i]
		field := fmt.Sprintf("records[%d]", i)
		if r.ID == 0 {
			return invalid(what, field+".id", "required, must be > 0")
		}
		if r.ID <= prev {
			return invalid(what, field+".id", "%d is not above the previous record's %d (records go in increasing id order)", r.ID, prev)
		}
		prev = r.ID
		if err := checkToken(what, field+".kind", r.Kind); err != nil {
			return err
		}
		if r.Time.IsZero() {
			return invalid(what, field+".time", "required")
		}
		p := bytes.TrimSpace(r.Payload)
		if len(p) == 0 || bytes.Equal(p, []byte("null")) {
			return invalid(what, field+".payload", "required")
		}
		if !json.Valid(p) {
			return invalid(what, field+".payload", "not valid JSON")
		}
	}
	return nil
}

// Validate checks every field of s; the error wraps ErrVersion or
// ErrInvalid and names the field.
func (s *Status) Validate() error {
	const what = "status"
	if s == nil {
		return fmt.Errorf("%w: %s: nil", ErrInvalid, what)
	}
	if err := checkEnvelope(what, s.V, s.DeviceID); err != nil {
		return err
	}
	if err := checkEither(what, "state", s.State, StateOnline, StateOffline); err != nil {
		return err
	}
	if s.Session == 0 {
		return invalid(what, "session", "required, must be > 0")
	}
	if s.AgentVersion != "" && !isSemver(s.AgentVersion) {
		return invalid(what, "agentVersion", "%q is not a semantic version like 1.4.0", s.AgentVersion)
	}
	if err := checkOptToken(what, "reason", s.Reason); err != nil {
		return err
	}
	return nil
}

// checkLabels checks a record's device labels: at most MaxLabels, each
// key a label key and each value short printable text.
func checkLabels(what string, labels map[string]string) error {
	if len(labels) > MaxLabels {
		return invalid(what, "labels", "%d labels, the limit is %d", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if !isLabelKey(k) {
			return invalid(what, "labels", "key %q: must be 1 to %d bytes of [A-Za-z0-9._/-], starting with a letter or digit", k, maxLabelK)
		}
		if err := checkText(what, "labels."+k, v, maxLabelV); err != nil {
			return err
		}
	}
	return nil
}
