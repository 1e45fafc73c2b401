// Package protocol is the MQTT protocol between edge agents and the fleetd
// control plane: the versioned topic tree (one subtree per device), the
// JSON payloads that travel on it, their strict decoders, and the guard the
// agent runs against replayed or stale desired states.
//
// Topic tree (see docs/protocol.md for the full specification):
//
//	ef/v1/dev/{deviceID}/desired    fleetd -> device  QoS1 retained  DesiredState
//	ef/v1/dev/{deviceID}/reported   device -> fleetd  QoS1 retained  ReportedState
//	ef/v1/dev/{deviceID}/events     device -> fleetd  QoS1           Event
//	ef/v1/dev/{deviceID}/telemetry  device -> fleetd  QoS1           TelemetryBatch (JSON or zstd)
//	ef/v1/dev/{deviceID}/status     device -> fleetd  QoS1 retained  Status (offline via last will)
//
// Every payload is a JSON object carrying its envelope version in "v".
// Decoders refuse a payload larger than MaxPayloadSize (ErrTooLarge), one
// that is not a JSON object of the expected shape (ErrMalformed), one whose
// "v" this code does not speak (ErrVersion) and one missing a required
// field or holding an out-of-range value (ErrInvalid, naming the field).
// Unknown fields are tolerated within a version so that either side can add
// optional fields without breaking the other; anything incompatible bumps
// "v" (and the topic prefix for a change to the tree).
//
// Decoders never panic on any input; each has a fuzz target.
//
// A TelemetryBatch carries outbox records whose payload schema belongs to
// their kind; the kinds the agent writes have their payload types here
// (PredictionRecord, MetricsRecord, DriftRecord, ShadowRecord), which the
// agent encodes and fleetd decodes with encoding/json, each with a
// Validate.
package protocol
