// Package agent is the edge agent daemon as a library: it puts together
// the bundle store (agent/slot), the model runtime (shared/model), the local
// inference API (agent/api), the durable outbox (agent/outbox) and the MQTT
// uplink (agent/uplink), and runs them under systemd.
//
// # Lifecycle
//
// New checks the configuration. Run first listens on every listen address
// (api.tcp and metrics.listen if configured, then the unix socket
// api.socket, replacing a stale socket left by an agent that is gone): one
// it cannot listen on stops it with a *ListenError naming the address and
// its key, before anything is written under the data directory (unless Open
// opened it already). Then it opens the outbox and the bundle store under
// the data directory, serves the local API on those listeners, loads the
// active bundle's model, starts the uplink when a broker is configured and
// then tells systemd READY=1. It serves until its context ends, then shuts
// down in order: STOPPING=1, stop accepting API requests and drain those in
// flight, stop the uplink (it publishes offline), flush the prediction
// samples and the last metrics window and close the outbox, close the model
// and release the store. Close does the same for an agent that was only
// opened (Open: the CLI's path when no daemon runs) and is idempotent.
//
// # systemd
//
// READY=1 is sent once the API listens and the active model, if there is
// one, is loaded and has passed its smoke test. STATUS= says what is served.
// With WatchdogSec set, WATCHDOG=1 is sent at half the interval, each time
// after the agent's own unix socket answered /v2/health/live: a server that
// stopped answering is restarted by systemd. Outside systemd all of this is
// a no-op.
//
// # Installs
//
// Install (local: the CLI and the admin API) and Apply (the uplink's desired
// state) both go through the slot store with one activate callback: check
// the bundle's minAgentVersion, model.Load, Smoke; the loaded model is kept
// pending and goes into service (atomically, through the api.Registry) only
// when the store has committed the new version. The model it replaces is
// closed once the requests using it are done. A failed install changes
// nothing but the store's last error. One install or rollback runs at a
// time.
//
// Local installs and rollbacks, and a rollback the agent decides itself
// (the active bundle fails to load at start), are recorded as events in the
// outbox; for desired states the uplink records them.
//
// # Telemetry
//
// Every inference request that reached a model is counted into a metrics
// window per bundle (requests, errors, latency p50/p95/max), appended to
// the outbox as a "metrics" record every metrics interval. A fraction of
// them (buffer.predictionSampleRate) is appended as "prediction" records:
// time, bundle, latency, error, a summary of the outputs and the
// pre-processor's features. The request path never waits for the outbox:
// samples go through a bounded queue to one appender; what does not fit is
// dropped and counted.
//
// # Shadow
//
// A desired state may name a shadow candidate beside the bundle to run
// (protocol.DesiredState.Shadow). Apply installs the active bundle as
// usual, then fetches and verifies the candidate through the slot store
// without activating it (slot.Store.Unpack, into DATA/shadow), loads it
// and runs its smoke test. From then on a share of the active model's
// successful requests (WithShadowRate) is run on the candidate too, on
// the same inputs, by one goroutine fed through a bounded queue: clients
// always get the active model's answer and never wait for the candidate.
// The outputs are compared (the same top class for class probabilities,
// every element within the candidate's smoke tolerance otherwise) and
// every shadow window (WithShadowWindow) a "shadow" record goes to the
// outbox: candidate, samples, agreed, the candidate's latency. The
// candidate is reported in the reported state, restored at start, and
// stopped and removed when a desired state no longer names it.
//
// # Admin API
//
// The unix socket also serves a small admin API for the CLI, outside the
// Open Inference Protocol's /v2 tree (and never on TCP):
//
//	GET  /agent/v1/status     Status
//	POST /agent/v1/install    InstallRequest as JSON, or multipart/form-data
//	                          with the files "bundle" and "sig" (and an
//	                          optional "options" InstallRequest part)
//	POST /agent/v1/rollback   back to the last-known-good version
//
// Errors are {"error": "...", "reason": "..."}, reason one of the Reason*
// constants.
package agent
