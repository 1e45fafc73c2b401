package rollout

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/shared/configfile"
)

// Kind says what a Spec describes.
type Kind string

// Spec kinds.
const (
	// KindRollout moves one bundle version through waves (the default).
	KindRollout Kind = "rollout"
	// KindExperiment runs two versions on two cohorts for a set time
	// and compares them (A/B).
	KindExperiment Kind = "experiment"
)

// Spec is what an operator asks for: `fleetctl rollout create -f
// rollout.yaml`. ParseSpec reads it strictly from YAML (or JSON); the JSON
// field names are the YAML keys. See docs/rollouts.md for the reference.
type Spec struct {
	// Kind is "rollout" (default) or "experiment".
	Kind Kind `json:"kind,omitempty"`
	// Name is a free-text label shown in listings.
	Name string `json:"name,omitempty"`
	// Target is a label selector (inventory.ParseSelector) choosing the
	// devices; it is resolved once, when the rollout is created.
	Target string `json:"target"`
	// Bundle is the version to roll out, "name@version", a bundle in the
	// registry (rollouts only).
	Bundle string `json:"bundle,omitempty"`
	// Waves are the stages, each a cumulative share of the target
	// (rollouts only).
	Waves []Wave `json:"waves,omitempty"`
	// WaveDeadline is how long a step may wait, after its bake, for
	// enough reports before it fails as a breach ("not enough
	// evidence"); it also bounds how long a device that does not finish
	// its download counts against Limits.MaxConcurrentDownloads.
	// Default DefaultWaveDeadline.
	WaveDeadline Duration `json:"waveDeadline,omitzero"`
	// Gates are the health checks evaluated on each step.
	Gates Gates `json:"gates,omitzero"`
	// Limits pace the assignments.
	Limits Limits `json:"limits,omitzero"`
	// Shadow, if set, is a first step on which devices run the candidate
	// in shadow beside their active version before any wave installs it.
	Shadow *ShadowStep `json:"shadow,omitempty"`
	// Rollback is what a breached gate does.
	Rollback RollbackPolicy `json:"rollback,omitzero"`
	// Experiment describes an A/B experiment (kind experiment only).
	Experiment *Experiment `json:"experiment,omitempty"`
}

// Wave is one stage of a rollout. Its size is a share of the target
// (Percent) or a number of devices (Count), at least MinDevices, and
// cumulative: a wave includes the devices of the waves before it.
type Wave struct {
	// Name labels the wave in status ("canary"); default "wave N".
	Name string `json:"name,omitempty"`
	// Percent of the target devices, in (0,100]; rounded up.
	Percent *float64 `json:"percent,omitempty"`
	// Count of target devices, at least 1.
	Count *int `json:"count,omitempty"`
	// MinDevices raises a small percentage to at least this many.
	MinDevices int `json:"minDevices,omitempty"`
	// Bake is how long the wave's devices run the version before its
	// gates are evaluated; it starts once every device of the wave has
	// been assigned.
	Bake Duration `json:"bake,omitzero"`
}

// ShadowStep is the optional shadow step: a share of the target runs the
// candidate in shadow (protocol.DesiredState.Shadow) for Bake, and the
// shadowAgreement gate is evaluated on what they report.
type ShadowStep struct {
	// Percent of the target devices, in (0,100]; rounded up. The step is
	// a cumulative prefix of the cohort order, as a wave is, and may not
	// be larger than the last wave.
	Percent *float64 `json:"percent,omitempty"`
	// Count of target devices, at least 1 (instead of Percent).
	Count *int `json:"count,omitempty"`
	// MinDevices raises a small percentage to at least this many.
	MinDevices int `json:"minDevices,omitempty"`
	// Bake is how long the devices run the candidate in shadow before
	// the step's gates are evaluated.
	Bake Duration `json:"bake,omitzero"`
}

// Gates are the health checks of a step. A nil gate is not evaluated,
// except InstallSuccess, which defaults to DefaultInstallSuccess.
type Gates struct {
	// InstallSuccess: the share of reporting devices whose install
	// succeeded must be at least Min.
	InstallSuccess *RatioGate `json:"installSuccess,omitempty"`
	// ErrorRate: inference errors / requests on the new version must be
	// at most Max.
	ErrorRate *ErrorRateGate `json:"errorRate,omitempty"`
	// LatencyP95: the median over devices of p95(new) / p95(previous
	// version on the same device) must be at most MaxRatio.
	LatencyP95 *LatencyGate `json:"latencyP95,omitempty"`
	// Drift: the median over devices of the drift score on the new
	// version must be at most MaxScore. Needs a bundle with a drift
	// profile.
	Drift *DriftGate `json:"drift,omitempty"`
	// ShadowAgreement: agreed / compared samples of the candidate run in
	// shadow must be at least Min. Needs a shadow step; evaluated on it.
	ShadowAgreement *RatioGate `json:"shadowAgreement,omitempty"`
}

// RatioGate requires a ratio of at least Min, once MinReports devices
// have reported.
type RatioGate struct {
	// Min is the lowest ratio that passes, in [0,1] (installSuccess
	// default DefaultInstallMin).
	Min *float64 `json:"min,omitempty"`
	// MinReports is how many of the step's devices must have reported
	// before the gate is evaluated (installSuccess default 80%, others
	// 50%).
	MinReports *Quota `json:"minReports,omitempty"`
}

// ErrorRateGate requires an error rate of at most Max.
type ErrorRateGate struct {
	// Max is the highest error rate (errors / requests) that passes, in
	// [0,1]; required.
	Max *float64 `json:"max,omitempty"`
	// MinReports is how many of the step's devices must have served a
	// request (default 50%).
	MinReports *Quota `json:"minReports,omitempty"`
}

// LatencyGate bounds the p95 latency relative to the previous version.
type LatencyGate struct {
	// MaxRatio is the highest p95(new) / p95(previous) that passes, above
	// 0 (1.2: at most 20% slower); required.
	MaxRatio *float64 `json:"maxRatio,omitempty"`
	// MinReports is how many of the step's devices that ran an earlier
	// version must have latency on both (default 50%).
	MinReports *Quota `json:"minReports,omitempty"`
	// Baseline is how far back before its assignment a device's records
	// of its previous version are read. Default DefaultLatencyBaseline.
	Baseline Duration `json:"baseline,omitzero"`
}

// DriftGate bounds the drift score.
type DriftGate struct {
	// MaxScore is the highest median drift score (the share of drifted
	// features) that passes, at least 0; required.
	MaxScore *float64 `json:"maxScore,omitempty"`
	// MinReports is how many of the step's devices must have reported a
	// drift window (default 50%).
	MinReports *Quota `json:"minReports,omitempty"`
}

// Limits pace the assignments of a rollout.
type Limits struct {
	// MaxConcurrentDownloads bounds the devices installing at once: a
	// device counts from its assignment until it reports a result, while
	// it is online, for at most WaveDeadline. Zero means no limit.
	MaxConcurrentDownloads int `json:"maxConcurrentDownloads,omitempty"`
	// MaintenanceWindows restrict when devices may be assigned: a device
	// matched by one or more windows' selectors is assigned only inside
	// one of them; other devices at any time. Rollbacks ignore them.
	MaintenanceWindows []MaintenanceWindow `json:"maintenanceWindows,omitempty"`
}

// MaintenanceWindow is a daily time window (UTC) for the devices its
// selector matches. A window whose end is before its start wraps
// midnight ("22:00" to "04:00").
type MaintenanceWindow struct {
	// Selector chooses the device group (empty: every device).
	Selector string `json:"selector,omitempty"`
	// Start and End bound the window, "HH:MM" in UTC; both are
	// required, and they differ.
	Start *ClockTime `json:"start,omitempty"`
	End   *ClockTime `json:"end,omitempty"`
}

// RollbackPolicy says what a breached gate does.
type RollbackPolicy struct {
	// Auto (default true) rolls every device of the rollout back to the
	// version it ran before. With false the rollout is paused with the
	// breach recorded, for an operator to decide.
	Auto *bool `json:"auto,omitempty"`
}

// AutoRollback reports whether a breach rolls back (the default).
func (p RollbackPolicy) AutoRollback() bool { return p.Auto == nil || *p.Auto }

// Experiment is an A/B experiment: two versions on two deterministic
// cohorts of the target for Duration, then compared.
type Experiment struct {
	// Arms are exactly two: the first is the control (A), the second
	// the treatment (B).
	Arms []Arm `json:"arms"`
	// Duration is how long both arms run once assigned.
	Duration Duration `json:"duration"`
	// MinReports is how many devices of each arm must have reported for
	// the comparison to be made. Default DefaultExperimentMinReports.
	MinReports *Quota `json:"minReports,omitempty"`
}

// Arm is one side of an experiment.
type Arm struct {
	// Name labels the arm ("control", "candidate"); default "a" / "b".
	Name string `json:"name,omitempty"`
	// Bundle is "name@version" in the registry.
	Bundle string `json:"bundle"`
	// Percent of the target devices, in (0,100] (the arms' add up to at
	// most 100), or Count of them: one of the two.
	Percent *float64 `json:"percent,omitempty"`
	Count   *int     `json:"count,omitempty"`
}

// Duration is a time.Duration written as Go duration text ("90s",
// "1h30m", and "7d" for days) in YAML and JSON (where a number of
// nanoseconds reads too), parsed by shared/configfile as in every
// configuration document of the module. D returns the time.Duration.
type Duration = configfile.Duration

// Quota is a number of devices, absolute ("10") or a share of a step's
// devices ("80%", rounded up, at least 1).
type Quota struct {
	// N is the absolute count, when Percent is zero.
	N int
	// Percent is the share, in (0,100].
	Percent float64
}

// Of returns the quota for a step of n devices, never above n (so that a
// one-device canary needs one report) and at least 1 when n > 0.
func (q Quota) Of(n int) int {
	v := q.N
	if q.Percent > 0 {
		v = int(math.Ceil(q.Percent*float64(n)/100 - 1e-9))
	}
	v = max(v, 1)
	return min(v, n)
}

func (q Quota) String() string {
	if q.Percent > 0 {
		return strconv.FormatFloat(q.Percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(q.N)
}

// MarshalJSON writes a number or "N%".
func (q Quota) MarshalJSON() ([]byte, error) {
	if q.Percent > 0 {
		return json.Marshal(q.String())
	}
	return json.Marshal(q.N)
}

// UnmarshalJSON reads a number or "N%".
func (q *Quota) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		s = string(b)
	}
	return q.UnmarshalText([]byte(s))
}

// UnmarshalText reads a count or "N%".
func (q *Quota) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	if v, ok, err := configfile.ParsePercent(s); ok {
		if err != nil || v <= 0 || v > 100 {
			return fmt.Errorf("must be a count of devices or a percentage in (0,100]%%, got %q", s)
		}
		*q = Quota{Percent: v}
		return nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		return fmt.Errorf("must be a count of devices (at least 1) or a percentage like \"80%%\", got %q", s)
	}
	*q = Quota{N: v}
	return nil
}

// ClockTime is a time of day, "HH:MM" in UTC.
type ClockTime struct {
	// Minute is minutes since midnight, 0 to 1439.
	Minute int
}

func (c ClockTime) String() string { return fmt.Sprintf("%02d:%02d", c.Minute/60, c.Minute%60) }

// MarshalJSON writes "HH:MM".
func (c ClockTime) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }

// UnmarshalJSON reads "HH:MM".
func (c *ClockTime) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("time of day: want \"HH:MM\", got %s", b)
	}
	return c.UnmarshalText([]byte(s))
}

// UnmarshalText reads "HH:MM".
func (c *ClockTime) UnmarshalText(text []byte) error {
	s := string(text)
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || len(m) != 2 || len(h) < 1 || len(h) > 2 || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return fmt.Errorf("must be a UTC time of day \"HH:MM\" (00:00 to 23:59), got %q", s)
	}
	c.Minute = hh*60 + mm
	return nil
}

// UnmarshalText checks the kind.
func (k *Kind) UnmarshalText(text []byte) error {
	s := string(text)
	switch Kind(s) {
	case KindRollout, KindExperiment:
		*k = Kind(s)
		return nil
	}
	return fmt.Errorf("must be %q or %q, got %q", KindRollout, KindExperiment, s)
}

// UnmarshalJSON checks the kind.
func (k *Kind) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("kind: want text, got %s", b)
	}
	return k.UnmarshalText([]byte(s))
}
