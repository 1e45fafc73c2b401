package rollout

import (
	"time"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// State is where a rollout (or experiment) is in its life.
type State string

// Rollout states. Running, paused, rolling_back and completed are active:
// the rollout holds its devices, and no other rollout may target them.
const (
	// StateRunning: assigning, baking or waiting for evidence.
	StateRunning State = "running"
	// StatePaused: an operator paused it, or a gate was breached with
	// rollback.auto false. Nothing is assigned or evaluated; bake and
	// deadline clocks stop.
	StatePaused State = "paused"
	// StateRollingBack: rollback instructions are being issued.
	StateRollingBack State = "rolling_back"
	// StateCompleted: an experiment ran its duration; its comparison is
	// final and it waits for the operator to promote an arm, roll back
	// or abort.
	StateCompleted State = "completed"
	// StateSucceeded: every step passed.
	StateSucceeded State = "succeeded"
	// StateRolledBack: every device of the rollout was told to return to
	// the version it ran before.
	StateRolledBack State = "rolled_back"
	// StateAborted: stopped by an operator; devices were left as they
	// were.
	StateAborted State = "aborted"
	// StatePromoted: an experiment whose arm was promoted into a rollout
	// (Rollout.PromotedTo).
	StatePromoted State = "promoted"
)

// Active reports whether a rollout in state s holds its devices.
func (s State) Active() bool {
	switch s {
	case StateRunning, StatePaused, StateRollingBack, StateCompleted:
		return true
	}
	return false
}

// StepKind says what a step does.
type StepKind string

// Step kinds.
const (
	StepShadow     StepKind = "shadow"
	StepWave       StepKind = "wave"
	StepExperiment StepKind = "experiment"
)

// Step is one resolved step of a rollout: its share of the target turned
// into a number of devices.
type Step struct {
	Name string   `json:"name"`
	Kind StepKind `json:"kind"`
	// Size is the number of devices the step covers, cumulative: the
	// first Size devices of the cohort order.
	Size int      `json:"size"`
	Bake Duration `json:"bake"`
}

// Rollout is a rollout's (or experiment's) status, as persisted.
type Rollout struct {
	ID string `json:"id"`
	// Spec is the spec as created, defaults filled in.
	Spec *Spec `json:"spec"`
	// Bundle is the version rolled out (zero for an experiment).
	Bundle protocol.BundleID `json:"bundle,omitzero"`
	// Lineage is where Bundle's model came from (the training run), from
	// the registry at creation.
	Lineage *bundle.Lineage `json:"lineage,omitempty"`
	// Arms are the experiment's versions, in arm order.
	Arms  []protocol.BundleID `json:"arms,omitempty"`
	State State               `json:"state"`
	// Reason says why it is in State (the breach, an operator's note).
	Reason  string    `json:"reason,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Devices is the number of target devices (resolved at creation).
	Devices int    `json:"devices"`
	Steps   []Step `json:"steps"`
	// Step is the index of the current step; len(Steps) once done.
	Step int `json:"step"`
	// StepStarted is when the current step began.
	StepStarted time.Time `json:"stepStarted,omitzero"`
	// BakeStart is when every device of the current step had been
	// assigned; BakeUntil when its gates are first evaluated; Deadline
	// when it fails for want of evidence. Absolute times, so that a
	// restart keeps them; shifted by the time spent paused.
	BakeStart time.Time `json:"bakeStart,omitzero"`
	BakeUntil time.Time `json:"bakeUntil,omitzero"`
	Deadline  time.Time `json:"deadline,omitzero"`
	// PausedAt is when it was paused.
	PausedAt time.Time `json:"pausedAt,omitzero"`
	// Promoted: an operator promoted the current step (bake and gates
	// skipped once its devices are assigned).
	Promoted bool `json:"promoted,omitempty"`
	// Breach is the gate that failed, if one did.
	Breach *Breach `json:"breach,omitempty"`
	// Gates is the latest evaluation of the current step's gates.
	Gates []GateResult `json:"gates,omitempty"`
	// Progress counts devices by what they report.
	Progress Progress `json:"progress"`
	// LastError is the latest error talking to the fleet or the
	// observer (retried), cleared by the next success.
	LastError string `json:"lastError,omitempty"`
	// From is the experiment this rollout was promoted from.
	From string `json:"from,omitempty"`
	// PromotedTo is the rollout an experiment's arm was promoted into.
	PromotedTo string `json:"promotedTo,omitempty"`
	// Comparison is an experiment's comparison, final once completed.
	Comparison *Comparison `json:"comparison,omitempty"`
}

// CurrentStep returns the current step, or nil once done.
func (r *Rollout) CurrentStep() *Step {
	if r.Step < 0 || r.Step >= len(r.Steps) {
		return nil
	}
	return &r.Steps[r.Step]
}

// Gate names, as in the spec.
const (
	GateInstallSuccess  = "installSuccess"
	GateErrorRate       = "errorRate"
	GateLatencyP95      = "latencyP95"
	GateDrift           = "drift"
	GateShadowAgreement = "shadowAgreement"
)

// GateStatus is the outcome of one gate's evaluation.
type GateStatus string

// Gate outcomes.
const (
	GatePass GateStatus = "pass"
	// GateBreach: enough reports, and the value is on the wrong side.
	GateBreach GateStatus = "breach"
	// GateWaiting: fewer reports than MinReports so far.
	GateWaiting GateStatus = "waiting"
	// GateSkipped: the gate does not apply to this step (e.g. latency on
	// a step where no device ran an earlier version).
	GateSkipped GateStatus = "skipped"
)

// GateResult is one gate's evaluation on a step.
type GateResult struct {
	Gate   string     `json:"gate"`
	Status GateStatus `json:"status"`
	// Value is what was measured; Threshold the limit it is held to
	// (a minimum for installSuccess and shadowAgreement, a maximum for
	// the others).
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	// Reports is how many devices contributed; MinReports how many are
	// needed.
	Reports    int `json:"reports"`
	MinReports int `json:"minReports"`
	// Detail says more ("3 of 40 installs failed").
	Detail string `json:"detail,omitempty"`
}

// Breach is the gate that stopped a rollout.
type Breach struct {
	GateResult
	// Step and StepName are where it happened.
	Step     int    `json:"step"`
	StepName string `json:"stepName"`
	// Evidence is true for "not enough evidence": the wave deadline
	// passed with fewer reports than MinReports.
	Evidence bool      `json:"evidence,omitempty"`
	At       time.Time `json:"at"`
}

// Progress counts a rollout's devices.
type Progress struct {
	// Assigned devices were sent the rollout's desired state.
	Assigned int `json:"assigned"`
	// Installing report progress, or have not reported yet.
	Installing int `json:"installing"`
	// Installed report the version (or, in a shadow step, the shadow)
	// running; Failed report a failed install or went back.
	Installed int `json:"installed"`
	Failed    int `json:"failed"`
	// Shadowing devices run the candidate in shadow.
	Shadowing int `json:"shadowing,omitempty"`
	// Removed devices left the inventory.
	Removed int `json:"removed,omitempty"`
	// RollbackSent devices were told to roll back; RollbackSkipped had
	// nothing to return to; RolledBack report the previous version
	// active again (counted at the latest tick or Get).
	RollbackSent    int `json:"rollbackSent,omitempty"`
	RollbackSkipped int `json:"rollbackSkipped,omitempty"`
	// Waiting says what the current step waits for, if anything.
	Waiting string `json:"waiting,omitempty"`
}

// Mode is what a device was asked to do by the rollout.
type Mode string

// Device modes.
const (
	ModeNone    Mode = ""
	ModeShadow  Mode = "shadow"
	ModeInstall Mode = "install"
)

// DevicePhase is a device's progress in a rollout, from what it reports.
type DevicePhase string

// Device phases.
const (
	PhaseUnassigned DevicePhase = ""
	// PhaseAssigning: about to be sent (recorded before Fleet.Assign, so
	// that a crash in between re-sends with the same previous version).
	PhaseAssigning DevicePhase = "assigning"
	// PhaseAssigned: sent, nothing reported about it yet.
	PhaseAssigned   DevicePhase = "assigned"
	PhaseInstalling DevicePhase = "installing"
	PhaseInstalled  DevicePhase = "installed"
	PhaseFailed     DevicePhase = "failed"
	// PhaseRemoved: the device left the inventory.
	PhaseRemoved DevicePhase = "removed"
	// PhaseSkipped: not asked to run the candidate in shadow, because it
	// runs no version (nothing to shadow) or already runs the candidate.
	PhaseSkipped DevicePhase = "skipped"
)

// RollbackState is a device's rollback.
type RollbackState string

// Rollback states.
const (
	RollbackNone    RollbackState = ""
	RollbackSent    RollbackState = "sent"
	RollbackSkipped RollbackState = "skipped"
)

// Device is one target device of a rollout.
type Device struct {
	ID string `json:"id"`
	// Order is the device's position in the cohort order.
	Order int `json:"order"`
	// Arm is the experiment arm (0 or 1).
	Arm   int         `json:"arm,omitempty"`
	Mode  Mode        `json:"mode,omitempty"`
	Phase DevicePhase `json:"phase,omitempty"`
	// Previous is the version the device ran before the rollout (its
	// reported active bundle when first assigned), nil if none;
	// PreviousKnown says it was recorded.
	Previous      *protocol.BundleID `json:"previous,omitempty"`
	PreviousKnown bool               `json:"previousKnown,omitempty"`
	// Seq is the desired state issued; AssignedAt when.
	Seq        uint64    `json:"seq,omitempty"`
	AssignedAt time.Time `json:"assignedAt,omitzero"`
	// InstalledAt is when the engine first saw it running the version.
	InstalledAt time.Time `json:"installedAt,omitzero"`
	// Error is the install error the device reported.
	Error    string        `json:"error,omitempty"`
	Rollback RollbackState `json:"rollback,omitempty"`
	// RollbackSeq is the rollback desired state issued.
	RollbackSeq uint64 `json:"rollbackSeq,omitempty"`
	// Note explains a skipped rollback.
	Note string `json:"note,omitempty"`
}

// DeviceStatus is a Device with what it reports now.
type DeviceStatus struct {
	Device
	// Active is the bundle the device reports active now.
	Active *protocol.BundleID `json:"active,omitempty"`
	Online bool               `json:"online"`
}

// EventType says what a history event records.
type EventType string

// History event types.
const (
	EventCreated      EventType = "created"
	EventStepStarted  EventType = "step.started"
	EventStepBaking   EventType = "step.baking"
	EventStepPassed   EventType = "step.passed"
	EventStepSkipped  EventType = "step.skipped"
	EventStepPromoted EventType = "step.promoted"
	EventBreach       EventType = "gate.breached"
	EventPaused       EventType = "paused"
	EventResumed      EventType = "resumed"
	EventAborted      EventType = "aborted"
	EventRollback     EventType = "rollback.started"
	EventRolledBack   EventType = "rolled_back"
	EventSucceeded    EventType = "succeeded"
	EventCompleted    EventType = "completed"
	EventPromotedTo   EventType = "promoted"
	EventError        EventType = "error"
)

// Event is one entry of a rollout's history.
type Event struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	Type EventType `json:"type"`
	// Step is the step it concerns (-1: none).
	Step    int    `json:"step"`
	Message string `json:"message,omitempty"`
	// Gates are the gate results at the time (step.passed, breaches).
	Gates  []GateResult `json:"gates,omitempty"`
	Breach *Breach      `json:"breach,omitempty"`
}
