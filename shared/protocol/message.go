package protocol

import (
	"encoding/json"
	"time"
)

const (
	// Version is the payload envelope version ("v") this code writes and
	// the only one it reads.
	Version = 1
	// MaxPayloadSize is the largest MQTT payload of any kind, as it travels
	// (compressed telemetry counts compressed).
	MaxPayloadSize = 256 << 10
	// MaxDecodedSize is the largest a compressed telemetry payload may
	// decompress to.
	MaxDecodedSize = 4 << 20
	// MaxRecords is the most records one TelemetryBatch may hold.
	MaxRecords = 4096
	// MaxLabels is the most labels a ReportedState may carry.
	MaxLabels = 64
)

// Message is one of the payload types of this package: DesiredState,
// ReportedState, Event, TelemetryBatch or Status.
type Message interface {
	// Validate checks every field; the error wraps ErrVersion or
	// ErrInvalid and names the field.
	Validate() error
	message()
}

// Action is what a DesiredState asks the device to do.
type Action string

const (
	// ActionInstall makes Bundle the active bundle: download, verify,
	// unpack into the inactive slot, smoke test and activate (or just
	// activate when the slot already holds it).
	ActionInstall Action = "install"
	// ActionRollback returns to Bundle, the version the device ran before
	// (normally its last-known-good slot). It is an install in every
	// respect but the events it produces and that no new download should
	// be needed; a gate breach or an operator sends it.
	ActionRollback Action = "rollback"
)

// BundleRef names a bundle and says where to fetch it and how to check it.
type BundleRef struct {
	// Name is the bundle's name ([a-z0-9][a-z0-9._-]*, as in the manifest).
	Name string `json:"name"`
	// Version is its semantic version without a leading v.
	Version string `json:"version"`
	// URL is where to download the .bundle file (http or https; the
	// agent resumes with range requests).
	URL string `json:"url"`
	// SigURL is where to download its detached signature (.bundle.sig).
	SigURL string `json:"sigUrl"`
	// SHA256 is the lowercase hex SHA-256 of the .bundle file.
	SHA256 string `json:"sha256"`
	// Size is the size of the .bundle file in bytes.
	Size int64 `json:"size"`
}

// ID returns "name@version".
func (b BundleRef) ID() string { return b.Name + "@" + b.Version }

// BundleID names a bundle without saying where it lives.
type BundleID struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// ID returns "name@version".
func (b BundleID) ID() string { return b.Name + "@" + b.Version }

// Shadow is a candidate bundle the device runs beside the active one on
// the same inputs, reporting agreement without serving its answers.
type Shadow struct {
	Bundle BundleRef `json:"bundle"`
}

// DesiredState is what fleetd wants a device to run. It is published
// retained at QoS 1 on ef/v1/dev/{id}/desired by fleetd only. The agent
// runs it through a Guard before acting on it.
type DesiredState struct {
	// V is the envelope version (Version).
	V int `json:"v"`
	// DeviceID is the device the instruction is for; it must match the
	// topic and the device.
	DeviceID string `json:"deviceId"`
	// Seq increases strictly with every desired state fleetd issues to
	// the device, so that a replayed older one is refused.
	Seq uint64 `json:"seq"`
	// IssuedAt is when fleetd issued it.
	IssuedAt time.Time `json:"issuedAt"`
	// ExpiresAt is when it stops being valid; fleetd re-issues (new seq,
	// new expiry) well before that.
	ExpiresAt time.Time `json:"expiresAt"`
	// Action is install or rollback.
	Action Action `json:"action"`
	// Bundle is the bundle to run.
	Bundle BundleRef `json:"bundle"`
	// Shadow is an optional candidate to run in shadow.
	Shadow *Shadow `json:"shadow,omitempty"`
	// RolloutID is the rollout that issued it, if any.
	RolloutID string `json:"rolloutId,omitempty"`
}

// BufferStats describes the agent's outbox.
type BufferStats struct {
	// Records and Bytes are what the outbox holds now.
	Records int64 `json:"records"`
	Bytes   int64 `json:"bytes"`
	// Dropped counts records dropped (oldest first) because the outbox
	// was full, since the outbox was created.
	Dropped uint64 `json:"dropped"`
}

// InstallPhase is a step of an install.
type InstallPhase string

// Install phases. Consumers must treat a phase they do not know as opaque
// (a newer agent may report more).
const (
	PhaseDownloading InstallPhase = "downloading"
	PhaseVerifying   InstallPhase = "verifying"
	PhaseUnpacking   InstallPhase = "unpacking"
	PhaseSmokeTest   InstallPhase = "smoke-testing"
	PhaseActivating  InstallPhase = "activating"
	PhaseSucceeded   InstallPhase = "succeeded"
	// PhaseFailed is final: the agent does not try this seq again.
	PhaseFailed     InstallPhase = "failed"
	PhaseRolledBack InstallPhase = "rolled-back"
	// PhaseRetrying: an attempt failed for a reason that may pass (a
	// download cut, a full disk, the broker); the agent tries again at
	// NextAttemptAt.
	PhaseRetrying InstallPhase = "retrying"
)

// Progress counts bytes done out of a total (0 when unknown).
type Progress struct {
	Done  int64 `json:"done"`
	Total int64 `json:"total,omitempty"`
}

// InstallStatus is the progress or result of the latest install.
type InstallStatus struct {
	// Seq is the desired state being applied.
	Seq uint64 `json:"seq"`
	// Bundle is the bundle being installed.
	Bundle BundleID `json:"bundle"`
	// Phase is the current step, or the result.
	Phase InstallPhase `json:"phase"`
	// Progress is the download progress, if downloading.
	Progress *Progress `json:"progress,omitempty"`
	// Error says why the install (or its last attempt) failed.
	Error string `json:"error,omitempty"`
	// Reason is the failure's short machine-readable cause (an Event
	// reason: download, no-space, signature, ...).
	Reason string `json:"reason,omitempty"`
	// Attempt counts the attempts at Seq so far, 1 for the first (since
	// the agent started; 0 from an agent that does not count).
	Attempt int `json:"attempt,omitempty"`
	// NextAttemptAt is when the agent tries again (PhaseRetrying only).
	NextAttemptAt *time.Time `json:"nextAttemptAt,omitempty"`
	// Time is when the phase was entered.
	Time time.Time `json:"time"`
}

// ReportedState is what the device says about itself. It is published
// retained at QoS 1 on ef/v1/dev/{id}/reported whenever it changes (and on
// every connect), so fleetd always holds the latest.
type ReportedState struct {
	// V is the envelope version (Version).
	V int `json:"v"`
	// DeviceID is the reporting device; it must match the topic.
	DeviceID string `json:"deviceId"`
	// Time is when the state was assembled.
	Time time.Time `json:"time"`
	// AgentVersion is the agent's semantic version.
	AgentVersion string `json:"agentVersion"`
	// Labels are the device's labels (rollout selectors match them).
	Labels map[string]string `json:"labels,omitempty"`
	// Active is the bundle serving now, if any.
	Active *BundleID `json:"active,omitempty"`
	// LastKnownGood is the bundle a rollback returns to, if any.
	LastKnownGood *BundleID `json:"lastKnownGood,omitempty"`
	// Shadow is the candidate running in shadow, if any.
	Shadow *BundleID `json:"shadow,omitempty"`
	// Provider is the execution provider in use ("cpu", "cuda", ...).
	Provider string `json:"provider,omitempty"`
	// AppliedSeq is the seq of the last desired state the agent accepted
	// (0 before the first).
	AppliedSeq uint64 `json:"appliedSeq"`
	// Install is the progress or result of the latest install.
	Install *InstallStatus `json:"install,omitempty"`
	// Buffer describes the outbox.
	Buffer BufferStats `json:"buffer"`
	// LastError is the latest install or rollback that failed on the
	// device, cleared by the next one that succeeds.
	LastError *LastError `json:"lastError,omitempty"`
}

// MaxTextBytes bounds free-text fields (error messages) in payloads.
const MaxTextBytes = 4096

// Truncate cuts free text to at most n bytes without splitting a UTF-8
// sequence, and marks a cut with "…" (three bytes more).
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// LastError says why the device's latest install or rollback failed.
type LastError struct {
	Time time.Time `json:"time"`
	// Op is "install", "rollback" or "recover" (a fallback at start).
	Op string `json:"op"`
	// Bundle is the version concerned ("name@version"), when known.
	Bundle string `json:"bundle,omitempty"`
	// Error is the message, truncated to the protocol's text limit.
	Error string `json:"error"`
}

// EventType says what happened. Consumers must ignore types they do not
// know (a newer agent may send more).
type EventType string

// Event types.
const (
	EventAgentStarted     EventType = "agent.started"
	EventInstallStarted   EventType = "install.started"
	EventInstallProgress  EventType = "install.progress"
	EventInstallSucceeded EventType = "install.succeeded"
	EventInstallFailed    EventType = "install.failed"
	// EventInstallRetrying: an attempt failed for a transient reason and
	// the agent tries again; Data has "attempt" and "nextAttemptAt".
	EventInstallRetrying EventType = "install.retrying"
	// EventDesiredRefused: a desired state was refused; Reason is one of
	// the Reason constants (replay, expired, not_yet_valid, invalid, ...).
	EventDesiredRefused EventType = "desired.refused"
	// EventRollbackSucceeded / EventRollbackFailed: the device returned
	// (or failed to return) from From to Bundle, because it was told to
	// (Reason "instructed") or on its own (e.g. "smoke-failed").
	EventRollbackSucceeded EventType = "rollback.succeeded"
	EventRollbackFailed    EventType = "rollback.failed"
	// EventProviderFallback: the preferred execution provider could not
	// be created and the agent fell back to the next one.
	EventProviderFallback EventType = "provider.fallback"
	// EventBufferDropped: the outbox was full and dropped its oldest
	// records; Progress.Done counts them.
	EventBufferDropped EventType = "buffer.dropped"
)

// Event is something that happened on the device. Events are outbox
// records published one per message at QoS 1 on ef/v1/dev/{id}/events;
// (DeviceID, Epoch, ID) identifies one for deduplication.
type Event struct {
	// V is the envelope version (Version).
	V int `json:"v"`
	// DeviceID is the device; it must match the topic.
	DeviceID string `json:"deviceId"`
	// Epoch identifies the outbox instance the ID comes from (a new epoch
	// when the outbox is recreated and ids start over).
	Epoch string `json:"epoch,omitempty"`
	// ID is the outbox record id, unique within (DeviceID, Epoch).
	ID uint64 `json:"id"`
	// Time is when it happened.
	Time time.Time `json:"time"`
	// Type says what happened.
	Type EventType `json:"type"`
	// Seq is the desired state it relates to, if any.
	Seq uint64 `json:"seq,omitempty"`
	// RolloutID is the rollout it relates to, if any.
	RolloutID string `json:"rolloutId,omitempty"`
	// Bundle is the bundle it concerns (for a rollback: the one returned to).
	Bundle *BundleID `json:"bundle,omitempty"`
	// From is the bundle left behind by a rollback or an install.
	From *BundleID `json:"from,omitempty"`
	// Reason is a short machine-readable cause (for refusals, a Reason
	// constant).
	Reason string `json:"reason,omitempty"`
	// Message is a human-readable detail.
	Message string `json:"message,omitempty"`
	// Progress counts bytes (install.progress) or records (buffer.dropped).
	Progress *Progress `json:"progress,omitempty"`
	// Data holds type-specific details as a JSON object.
	Data json.RawMessage `json:"data,omitempty"`
}

// Record kinds of telemetry. Consumers must skip kinds they do not know.
const (
	RecordPrediction = "prediction"
	RecordMetrics    = "metrics"
	RecordDrift      = "drift"
	RecordShadow     = "shadow"
	// RecordSample is a bundle's data sample for the feature store
	// (SampleRecord).
	RecordSample = "sample"
)

// Record is one outbox record in a TelemetryBatch.
type Record struct {
	// ID is the outbox record id, unique within (deviceId, epoch) and
	// increasing in the order records were appended.
	ID uint64 `json:"id"`
	// Kind says what Payload holds (a Record* constant).
	Kind string `json:"kind"`
	// Time is when the record was appended.
	Time time.Time `json:"time"`
	// Payload is the record itself, any JSON value; its schema belongs to
	// the kind.
	Payload json.RawMessage `json:"payload"`
}

// TelemetryBatch is a batch of outbox records, published at QoS 1 on
// ef/v1/dev/{id}/telemetry. The agent deletes the records only after the
// broker acknowledged the publish, so fleetd may see a record more than
// once and deduplicates by (DeviceID, Epoch, Record.ID).
type TelemetryBatch struct {
	// V is the envelope version (Version).
	V int `json:"v"`
	// DeviceID is the device; it must match the topic.
	DeviceID string `json:"deviceId"`
	// Epoch identifies the outbox instance the record ids come from.
	Epoch string `json:"epoch,omitempty"`
	// Records are 1 to MaxRecords records in increasing ID order.
	Records []Record `json:"records"`
}

// State is a device's connection state.
type State string

// Connection states.
const (
	StateOnline  State = "online"
	StateOffline State = "offline"
)

// Status is a device's connection state, published retained at QoS 1 on
// ef/v1/dev/{id}/status: online by the agent right after it connects,
// offline by the broker from the agent's last will when the connection is
// lost (and by the agent itself before a clean disconnect).
type Status struct {
	// V is the envelope version (Version).
	V int `json:"v"`
	// DeviceID is the device; it must match the topic.
	DeviceID string `json:"deviceId"`
	// State is online or offline.
	State State `json:"state"`
	// Session identifies the connection: it increases strictly with every
	// connection the agent makes, and the online message and the last
	// will of one connection carry the same value. A consumer ignores a
	// status whose session is below the latest it has seen, so that the
	// will of a connection the broker noticed late cannot mark a
	// reconnected device offline.
	Session uint64 `json:"session"`
	// Time is when the agent connected (for the will, too: a will is
	// written at connect time).
	Time time.Time `json:"time,omitzero"`
	// AgentVersion is the agent's semantic version.
	AgentVersion string `json:"agentVersion,omitempty"`
	// Reason says why the device went offline, if known.
	Reason string `json:"reason,omitempty"`
}

func (*DesiredState) message()   {}
func (*ReportedState) message()  {}
func (*Event) message()          {}
func (*TelemetryBatch) message() {}
func (*Status) message()         {}
