package rollout

import (
	"context"
	"math"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/controlplane/registry"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// Inventory is the device inventory as the engine reads it: the target
// devices, their labels (maintenance windows), connection status and the
// state they report (install progress and result, active and last-known-
// good bundle). *inventory.Store implements it.
type Inventory interface {
	// List returns the devices whose effective labels sel matches.
	List(sel inventory.Selector) ([]*inventory.Device, error)
	// Get returns one device; an error wrapping inventory.ErrNotFound if
	// it is gone.
	Get(id string) (*inventory.Device, error)
}

// Bundles looks bundles up in the registry. registry.Registry implements
// it.
type Bundles interface {
	// Get returns the entry of name@version; an error wrapping
	// registry.ErrNotFound if there is none.
	Get(ctx context.Context, name, version string) (registry.Entry, error)
}

// Fleet issues desired states to devices; fleetd implements it.
type Fleet interface {
	// Assign issues a new desired state to device id: the action and
	// bundle of a (with download URLs from the registry), the shadow
	// candidate if any, the rollout id, the next seq
	// (inventory.Store.SetDesired), and publishes it retained, so that an
	// offline device gets it when it returns. It returns the desired
	// state stored. An error means nothing was stored and the engine
	// retries later; one wrapping inventory.ErrNotFound means the device
	// is gone and is not retried. Publishing may fail after storing:
	// fleetd retries the publish itself and Assign returns no error.
	Assign(ctx context.Context, id string, a Assignment) (protocol.DesiredState, error)
}

// Assignment is what the engine asks Fleet.Assign to issue.
type Assignment struct {
	// RolloutID goes into DesiredState.RolloutID.
	RolloutID string
	// Action is install (a wave, a shadow step, an experiment arm) or
	// rollback (back to the version the device ran before).
	Action protocol.Action
	// Bundle is the bundle to run (for a shadow step, the device's
	// current version, unchanged).
	Bundle protocol.BundleID
	// Shadow is the candidate to run in shadow, if any.
	Shadow *protocol.BundleID
}

// Observer reads what devices reported; fleetd implements it from the
// records it ingested (controlplane/telemetry). See Health for which
// records feed which field.
type Observer interface {
	Health(ctx context.Context, q HealthQuery) (Health, error)
}

// HealthQuery asks for the health of one bundle on one device over a time
// range.
type HealthQuery struct {
	// Device is the device id.
	Device string
	// Bundle is the bundle whose records count.
	Bundle protocol.BundleID
	// Since and Until bound the records by their time (the device's
	// clock): Since <= time < Until; a zero Until means no upper bound.
	Since, Until time.Time
}

// Health is what one device reported about one bundle over a time range,
// computed by the Observer from the device's telemetry records (kinds and
// payload types in shared/protocol, see docs/protocol.md):
//
//   - "metrics" records of the bundle (protocol.MetricsRecord, one per
//     metrics window: requests, errors, p95Ms) give Requests, Errors and
//     LatencyP95Ms;
//   - "drift" records of the bundle (protocol.DriftRecord, one per drift
//     window, with its score) give DriftScore and DriftWindows;
//   - "shadow" records whose candidate is the bundle
//     (protocol.ShadowRecord: samples compared, samples agreeing) give
//     ShadowSamples and ShadowAgreed;
//   - "prediction" records of the bundle (protocol.PredictionRecord) give
//     Output, a summary of the first value of the first output (for A/B
//     comparisons).
//
// Install progress and results are not part of Health: the engine reads
// them from the device's reported state (Inventory), which the device
// keeps current and retained.
type Health struct {
	// Requests and Errors are summed over the metrics windows.
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
	// LatencyP95Ms is the request-weighted mean of the windows' p95
	// latency in milliseconds (windows' percentiles cannot be merged
	// exactly; this is the usual approximation); 0 without requests.
	LatencyP95Ms float64 `json:"latencyP95Ms"`
	// DriftScore is the mean of the drift windows' scores; DriftWindows
	// how many there were.
	DriftScore   float64 `json:"driftScore"`
	DriftWindows int     `json:"driftWindows"`
	// ShadowSamples are the inputs the candidate ran on in shadow;
	// ShadowAgreed those on which its output agreed with the active
	// version's (within the bundle's tolerance).
	ShadowSamples int64 `json:"shadowSamples"`
	ShadowAgreed  int64 `json:"shadowAgreed"`
	// Output summarises sampled outputs.
	Output Summary `json:"output"`
}

// Summary is a streaming mean and variance (Welford), mergeable.
type Summary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	// M2 is the sum of squared deviations from the mean.
	M2 float64 `json:"m2"`
}

// Add adds one value.
func (s *Summary) Add(x float64) {
	s.Count++
	d := x - s.Mean
	s.Mean += d / float64(s.Count)
	s.M2 += d * (x - s.Mean)
}

// Merge adds the values summarised by o (Chan et al.).
func (s *Summary) Merge(o Summary) {
	if o.Count == 0 {
		return
	}
	if s.Count == 0 {
		*s = o
		return
	}
	n := s.Count + o.Count
	d := o.Mean - s.Mean
	s.Mean += d * float64(o.Count) / float64(n)
	s.M2 += o.M2 + d*d*float64(s.Count)*float64(o.Count)/float64(n)
	s.Count = n
}

// Variance is the sample variance (0 with fewer than two values).
func (s Summary) Variance() float64 {
	if s.Count < 2 {
		return 0
	}
	return s.M2 / float64(s.Count-1)
}

// SD is the sample standard deviation.
func (s Summary) SD() float64 { return math.Sqrt(s.Variance()) }
