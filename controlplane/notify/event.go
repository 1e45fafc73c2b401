// Package notify is fleetd's outgoing events ("retraining triggers"):
// what happened to the fleet that a pipeline outside it should hear of
// (drift that persists, a gate breach, an automatic rollback, an
// experiment that concluded, a device whose install failed), queued
// durably and delivered over HTTP to the subscriptions of fleetd's
// configuration, as CloudEvents 1.0 (github.com/cloudevents/sdk-go/v2's
// HTTP binding, binary or structured mode) or, through a template, as an
// Airflow or Kubeflow Pipelines API request. docs/integrations.md is the
// operator's reference.
//
// # Durability
//
// Events are queued in a bucket ("notify") of a bbolt file the caller
// opens (fleetd: its rollouts.db). AddTx queues an event inside the
// caller's own transaction, so that an event commits with the change it
// reports or not at all (the rollout engine's history); Add queues one in
// a transaction of its own (group-committed), before fleetd acknowledges
// what caused it. Each event carries a stable id, made by the caller from
// what it reports: adding an id the store holds is a no-op, so a device
// message delivered twice, or a write retried, queues one event.
//
// # Delivery
//
// Each subscription has its own delivery loop, in event order. An attempt
// is one go-retryablehttp request (a few quick retries with exponential
// backoff on connection errors, 429 and 5xx); when it fails the
// subscription waits (exponential, up to MaxBackoff) and tries again,
// until the event is MaxAge old: then its delivery is failed. A 4xx
// answer (other than 408 and 429) fails the delivery at once. Delivery is
// at least once: a receiver deduplicates by the event id (the CloudEvents
// id, the webhook-id header, Airflow's dag_run_id). The state of every
// (event, subscription) pair is kept: pending, delivered or failed, with
// attempts, the last HTTP status and error. A restart resumes the pending
// ones.
package notify

import (
	"encoding/json"
	"time"
)

// Event types: CloudEvents "type" values, reverse-DNS under
// dev.edgefleet.
const (
	// TypeDriftPersisted: a device's drift windows of one bundle version
	// drifted N windows in a row (once per episode). Data: DriftData.
	TypeDriftPersisted = "dev.edgefleet.drift.persisted"
	// TypeGateBreached: a rollout's gate was breached. Data: GateData.
	TypeGateBreached = "dev.edgefleet.rollout.gate_breached"
	// TypeRolledBack: a rollout rolled every device back (automatically
	// on a breach, or by an operator). Data: RollbackData.
	TypeRolledBack = "dev.edgefleet.rollout.rolled_back"
	// TypeExperimentConcluded: an A/B experiment ran its duration and its
	// comparison is final. Data: ExperimentData.
	TypeExperimentConcluded = "dev.edgefleet.experiment.concluded"
	// TypeInstallFailed: a device reported an install that failed for
	// good (one event per device and failure). Data: InstallData.
	TypeInstallFailed = "dev.edgefleet.device.install_failed"
)

// Types lists the event types, in the documented order.
var Types = []string{TypeDriftPersisted, TypeGateBreached, TypeRolledBack, TypeExperimentConcluded, TypeInstallFailed}

// KnownType reports whether t is one of Types.
func KnownType(t string) bool {
	for _, k := range Types {
		if k == t {
			return true
		}
	}
	return false
}

// Event is one event, as queued.
type Event struct {
	// ID is stable: the same happening always gets the same id (see
	// the package documentation); [A-Za-z0-9._-], at most 128 bytes.
	ID string `json:"id"`
	// Type is one of Types.
	Type string `json:"type"`
	// Source is the CloudEvents source (a URI reference): the configured
	// source and "/rollouts" or "/devices".
	Source string `json:"source"`
	// Subject is the rollout id or the device id.
	Subject string `json:"subject"`
	// Time is when it happened.
	Time time.Time `json:"time"`
	// Bundles are the versions it concerns, "name@version": one, or an
	// experiment's two arms.
	Bundles []string `json:"bundles,omitempty"`
	// Labels are what a subscription's selector is matched against: the
	// device's labels, or for a rollout the equality terms of its target
	// selector.
	Labels map[string]string `json:"labels,omitempty"`
	// Data is the event's data, a JSON object (content type
	// application/json).
	Data json.RawMessage `json:"data"`
}

// GateData is the data of TypeGateBreached.
type GateData struct {
	Rollout    string  `json:"rollout"`
	Bundle     string  `json:"bundle"`
	BundleName string  `json:"bundleName"`
	Version    string  `json:"version"`
	Gate       string  `json:"gate"`
	Value      float64 `json:"value"`
	Threshold  float64 `json:"threshold"`
	Reports    int     `json:"reports"`
	MinReports int     `json:"minReports"`
	// Step is the step's index (0-based); StepName its name.
	Step     int    `json:"step"`
	StepName string `json:"stepName"`
	// Evidence: the wave deadline passed without enough reports.
	Evidence bool `json:"evidence,omitempty"`
	// Action is what the rollout does about it: "rollback" or "pause"
	// (rollback.auto false).
	Action  string `json:"action"`
	Message string `json:"message"`
	// Lineage is the training run of the bundle's model, if known.
	Lineage any `json:"lineage,omitempty"`
}

// RollbackData is the data of TypeRolledBack.
type RollbackData struct {
	Rollout    string `json:"rollout"`
	Bundle     string `json:"bundle,omitempty"`
	BundleName string `json:"bundleName,omitempty"`
	Version    string `json:"version,omitempty"`
	// Automatic: a gate breach caused it (Gate names it), not an
	// operator.
	Automatic bool   `json:"automatic"`
	Gate      string `json:"gate,omitempty"`
	Reason    string `json:"reason"`
	// DevicesSent were told to roll back; DevicesSkipped had nothing to
	// return to.
	DevicesSent    int `json:"devicesSent"`
	DevicesSkipped int `json:"devicesSkipped"`
	Lineage        any `json:"lineage,omitempty"`
}

// ExperimentData is the data of TypeExperimentConcluded.
type ExperimentData struct {
	Rollout string `json:"rollout"`
	// Arms are the arms' versions, "name@version", control first.
	Arms []string `json:"arms"`
	// Winner is the arm the tests favour ("" when none does).
	Winner  string `json:"winner,omitempty"`
	Verdict string `json:"verdict"`
	// Comparison is the final comparison (rollout.Comparison).
	Comparison any `json:"comparison,omitempty"`
}

// InstallData is the data of TypeInstallFailed.
type InstallData struct {
	Device     string `json:"device"`
	Bundle     string `json:"bundle,omitempty"`
	BundleName string `json:"bundleName,omitempty"`
	Version    string `json:"version,omitempty"`
	Rollout    string `json:"rollout,omitempty"`
	// Seq is the desired state the install applied.
	Seq uint64 `json:"seq,omitempty"`
	// Reason is the device's short cause (download, signature,
	// smoke-failed, ...); Message its detail.
	Reason  string            `json:"reason,omitempty"`
	Message string            `json:"message,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// DriftData is the data of TypeDriftPersisted.
type DriftData struct {
	Device     string `json:"device"`
	Bundle     string `json:"bundle"`
	BundleName string `json:"bundleName"`
	Version    string `json:"version"`
	// Windows is how many windows in a row drifted (events.driftWindows);
	// Since and Until bound them.
	Windows int       `json:"windows"`
	Since   time.Time `json:"since"`
	Until   time.Time `json:"until"`
	// Scores are the windows' drift scores (the share of drifted
	// features), oldest first; DriftShare the score a window needs to
	// count as drifted.
	Scores     []float64 `json:"scores"`
	DriftShare float64   `json:"driftShare"`
	// FeatureScores are, per feature that drifted in any of the windows,
	// the share of the windows in which it drifted (0 to 1).
	FeatureScores map[string]float64 `json:"featureScores"`
	Labels        map[string]string  `json:"labels,omitempty"`
}
