package api

import "github.com/edgefleet/edgefleet/controlplane/rollout"

// Rollout routes (docs/rollouts.md):
//
//	GET  /api/v1/rollouts                      RolloutList, newest first
//	POST /api/v1/rollouts[?dryRun=true]        body: the spec, YAML or JSON
//	                                           201 rollout.Rollout (dry run: 200 rollout.Plan);
//	                                           400 with every spec problem, 409 on an overlap
//	GET  /api/v1/rollouts/{id}[?devices=true]  RolloutStatus
//	GET  /api/v1/rollouts/{id}/history         RolloutHistory
//	POST /api/v1/rollouts/{id}/{action}        RolloutAction; action is pause, resume,
//	                                           abort, promote or rollback; answers
//	                                           rollout.Rollout (for promote --arm: the new one)

// RolloutList is GET /api/v1/rollouts.
type RolloutList struct {
	Rollouts []*rollout.Rollout `json:"rollouts"`
}

// RolloutStatus is GET /api/v1/rollouts/{id}: the rollout, a running
// experiment's live comparison in Comparison, and with ?devices=true
// every target device with what it reports now.
type RolloutStatus struct {
	rollout.Rollout
	DeviceList []rollout.DeviceStatus `json:"deviceList,omitempty"`
}

// RolloutHistory is GET /api/v1/rollouts/{id}/history.
type RolloutHistory struct {
	ID     string          `json:"id"`
	Events []rollout.Event `json:"events"`
}

// RolloutAction is the body of POST /api/v1/rollouts/{id}/{action} (may
// be empty).
type RolloutAction struct {
	// Note is kept in the rollout's history.
	Note string `json:"note,omitempty"`
	// Arm and Spec promote an experiment's arm into a new rollout
	// (action promote on an experiment): Spec is the rollout spec, YAML
	// or JSON text; its target and bundle default to the experiment's
	// target and the arm's version.
	Arm  string `json:"arm,omitempty"`
	Spec string `json:"spec,omitempty"`
}
