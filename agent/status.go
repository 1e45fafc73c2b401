package agent

import (
	"fmt"
	"maps"
	"net/url"
	"os"
	"time"

	"github.com/edgefleet/edgefleet/agent/slot"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/version"
)

// eventTimeout bounds the append of one event.
const eventTimeout = 10 * time.Second

// Status is what `edge-agent status` shows and GET /agent/v1/status
// returns.
type Status struct {
	AgentVersion string            `json:"agentVersion"`
	DeviceID     string            `json:"deviceId"`
	Labels       map[string]string `json:"labels,omitempty"`
	// Running is true when a running daemon answered; false when the CLI
	// read the data directory itself.
	Running   bool      `json:"running"`
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	// Ready is the API's readiness: the active model is loaded.
	Ready   bool   `json:"ready"`
	DataDir string `json:"dataDir"`
	Socket  string `json:"socket"`

	Active        *slot.Slot `json:"active"`
	LastKnownGood *slot.Slot `json:"lastKnownGood"`
	// Provider is the active model's execution provider, when served.
	Provider string `json:"provider,omitempty"`
	// Degraded says why the active bundle is not served, if it is not.
	Degraded string `json:"degraded,omitempty"`
	// Generation counts the store's commits; LastError is the last
	// failed install or rollback (nil after a success); History is the
	// store's recent installs, rollbacks and failures, oldest first.
	Generation uint64        `json:"generation"`
	LastError  *slot.Failure `json:"lastError"`
	History    []slot.Event  `json:"history,omitempty"`

	Trust       TrustStatus      `json:"trust"`
	Buffer      BufferStatus     `json:"buffer"`
	Predictions *PredictionStats `json:"predictions,omitempty"`
	// Samples is the served bundle's data sampling (sample.go), if any.
	Samples *SampleStats `json:"samples,omitempty"`
	// Shadow is the candidate running in shadow, if any.
	Shadow *ShadowStatus `json:"shadow,omitempty"`
	Uplink *UplinkStatus `json:"uplink,omitempty"`
}

// TrustStatus lists the publisher keys installs are checked against.
type TrustStatus struct {
	// Keys are the keys' fingerprints (bundle.TrustRoot.KeyIDs).
	Keys []string `json:"keys,omitempty"`
	// Error says why installs are refused, if they are.
	Error string `json:"error,omitempty"`
}

// BufferStatus is the outbox's state (outbox.Stats): what it holds now and
// its lifetime counters, which survive restarts.
type BufferStatus struct {
	Records  int    `json:"records"`
	Bytes    int64  `json:"bytes"`
	Appended uint64 `json:"appended"`
	Acked    uint64 `json:"acked"`
	Dropped  uint64 `json:"dropped"`
}

// PredictionStats count prediction samples since the agent started.
type PredictionStats struct {
	// Observed counts inference requests that reached a model.
	Observed uint64 `json:"observed"`
	// Sampled were appended to the outbox; Dropped found the sample
	// queue full; Failed could not be appended.
	Sampled uint64 `json:"sampled"`
	Dropped uint64 `json:"dropped"`
	Failed  uint64 `json:"failed"`
	// SampleRate is buffer.predictionSampleRate.
	SampleRate float64 `json:"sampleRate"`
}

// UplinkStatus is the MQTT uplink's state.
type UplinkStatus struct {
	Broker      string `json:"broker"`
	Connected   bool   `json:"connected"`
	Session     uint64 `json:"session"`
	AcceptedSeq uint64 `json:"acceptedSeq"`
	Applied     uint64 `json:"applied"`
	ApplyFailed uint64 `json:"applyFailed"`
	Records     uint64 `json:"recordsSent"`
}

// Status returns the agent's state. It needs Open or Run.
func (a *Agent) Status() (Status, error) {
	if err := a.checkOpen(); err != nil {
		return Status{}, err
	}
	st := a.store.State()
	s := Status{
		AgentVersion:  version.Version,
		DeviceID:      a.cfg.DeviceID,
		Labels:        maps.Clone(a.cfg.Labels),
		DataDir:       a.cfg.DataDir,
		Socket:        a.cfg.API.Socket,
		Active:        st.Active,
		LastKnownGood: st.LastKnownGood,
		Generation:    st.Generation,
		LastError:     st.LastError,
		History:       st.History,
		Trust:         TrustStatus{Keys: a.trustIDs},
	}
	if a.trustErr != nil {
		s.Trust.Error = a.trustErr.Error()
	}
	ob := a.ob.Stats()
	s.Buffer = BufferStatus{Records: ob.Records, Bytes: ob.Bytes, Appended: ob.Appended, Acked: ob.Acked, Dropped: ob.Dropped}
	if a.isServing() {
		s.Running = true
		s.PID = os.Getpid()
		s.StartedAt = a.started.UTC()
		s.Ready = a.reg.Ready()
		s.Provider = a.provider()
		a.modelMu.Lock()
		s.Degraded = a.degraded
		a.modelMu.Unlock()
		ps := a.tel.stats()
		s.Predictions = &ps
		s.Samples = a.samples.stats()
		s.Shadow = a.shadowStatus()
	}
	if a.up != nil {
		us := a.up.Stats()
		s.Uplink = &UplinkStatus{
			Broker: redact(a.cfg.Uplink.Broker), Connected: us.Connected, Session: us.Session,
			AcceptedSeq: us.AcceptedSeq, Applied: us.Applied, ApplyFailed: us.ApplyFailed, Records: us.Records,
		}
	}
	return s, nil
}

// Reported implements uplink.Agent: the device's state for fleetd.
func (a *Agent) Reported() protocol.ReportedState {
	r := protocol.ReportedState{
		AgentVersion: version.Version,
		Labels:       maps.Clone(a.cfg.Labels),
		Provider:     a.provider(),
		Shadow:       a.shadowID(),
	}
	if a.store != nil {
		if s, ok := a.store.Active(); ok {
			r.Active = bundleID(s)
		}
		if s, ok := a.store.LastKnownGood(); ok {
			r.LastKnownGood = bundleID(s)
		}
		if f := a.store.State().LastError; f != nil {
			r.LastError = &protocol.LastError{Time: f.Time, Op: f.Op, Bundle: f.ID, Error: protocol.Truncate(f.Error, protocol.MaxTextBytes-len("…"))}
		}
	}
	if a.ob != nil {
		st := a.ob.Stats()
		r.Buffer = protocol.BufferStats{Records: int64(st.Records), Bytes: st.Bytes, Dropped: st.Dropped}
	}
	return r
}

// provider is the served model's execution provider, "" if none.
func (a *Agent) provider() string {
	a.modelMu.Lock()
	defer a.modelMu.Unlock()
	if a.serving == nil {
		return ""
	}
	return a.serving.Provider()
}

func (a *Agent) activeID() *protocol.BundleID {
	if s, ok := a.store.Active(); ok {
		return bundleID(s)
	}
	return nil
}

func (a *Agent) activeString() string {
	if s, ok := a.store.Active(); ok {
		return s.ID
	}
	return ""
}

func (a *Agent) lkgString() string {
	if s, ok := a.store.LastKnownGood(); ok {
		return s.ID
	}
	return ""
}

// statusLine is systemd's STATUS=: what is served.
func (a *Agent) statusLine() string {
	a.modelMu.Lock()
	m, degraded := a.serving, a.degraded
	a.modelMu.Unlock()
	switch {
	case m != nil:
		man := m.Manifest()
		return fmt.Sprintf("serving %s on %s (%s)", man.ID(), m.Provider(), a.cfg.API.Socket)
	case degraded != "":
		return "degraded: " + degraded
	}
	return fmt.Sprintf("no bundle installed; API on %s", a.cfg.API.Socket)
}

// redact removes credentials and the query (presigned URL signatures) from
// a URL for logs and events; anything else is returned as is.
func redact(src string) string {
	u, err := url.Parse(src)
	if err != nil || u.Host == "" {
		return src
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	u.Fragment = ""
	return u.String()
}
