// Package rollout is fleetd's rollout engine: it moves a bundle version
// through staged waves of devices, gates each wave on what the devices
// report (install success, error rate, p95 latency against the version
// each device ran before, drift, shadow agreement), rolls every device of
// the rollout back to its previous version when a gate is breached, and
// runs A/B experiments (two versions on two cohorts, compared with
// significance tests). docs/rollouts.md is the user's reference.
//
// # Pieces
//
//   - Spec, ParseSpec (strict YAML/JSON, errors as *FieldError naming the
//     field path) and Spec.Validate: what an operator asks for.
//   - Engine: New over a bbolt database, Plan (dry run), Create, the
//     operator actions (Pause, Resume, Abort, Promote, Rollback,
//     PromoteExperiment), Get, List, History, Devices, Compare, and Run
//     (or Tick) to advance the active rollouts.
//   - The fleet it drives, as interfaces fleetd implements: Inventory
//     (*inventory.Store), Bundles (registry.Registry), Fleet (issue a
//     desired state) and Observer (Health per device and bundle;
//     RecordObserver computes it from controlplane/telemetry records).
//
// # Cohorts
//
// A rollout's target devices are resolved once, at creation, and ordered
// by CohortOrder (a hash of device id and rollout id); every step covers a
// prefix of that order, so later waves include earlier ones and a restart
// picks the same devices.
//
// # Persistence
//
// Everything lives in one top-level bucket ("rollouts") of the bbolt file
// the caller opens: rollout records with absolute bake and deadline times,
// one record per target device (previous version, desired seq, phase,
// rollback), the history, and the holds (which active rollout owns which
// device). Assignments and rollbacks are written before they are sent, so
// a crash in between re-sends them with the same previous version. New
// over the same file resumes the active rollouts where they were.
package rollout
