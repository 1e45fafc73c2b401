// Package uplink is the edge agent's MQTT connection to fleetd
// (paho.mqtt.golang, MQTT 3.1.1): it takes the device's desired state from
// the broker and brings back everything the device reports. The topics
// and payloads are shared/protocol's; docs/protocol.md is the contract.
//
// # What goes where
//
//   - Everything the device must report (telemetry records and events)
//     goes through the agent's durable outbox, so it survives offline
//     periods and restarts. Events are outbox records of kind RecordEvent
//     (AppendEvent, Uplink.Event), published one per message on the
//     events topic; every other record kind is batched into a
//     TelemetryBatch (zstd-compressed when that is smaller) on the
//     telemetry topic. Record ids are the outbox ids. A telemetry record's
//     kind must be a protocol token ([a-z0-9][a-z0-9._-]*) and its payload
//     a JSON value.
//   - Status and reported state are retained state, not history: they
//     are published directly, never queued. Status online goes out right
//     after every CONNACK, with the connection's session number; the last
//     will carries offline with the same session; Run publishes offline
//     itself before a clean disconnect (a clean DISCONNECT suppresses the
//     will). The reported state is published on every connect and,
//     debounced, whenever it changes.
//
// # Delivery guarantees
//
//   - Device to fleetd: at least once, in outbox order. The drainer sends
//     one message at a time, oldest record first, at QoS 1, and acks the
//     records in the outbox only after the broker's PUBACK for that
//     message arrived on the connection it was sent on. A timeout, a lost
//     connection, a broker restart or an agent crash leaves the records in
//     the outbox and they are sent again, so fleetd sees duplicates and
//     deduplicates by (device, epoch, record id). Nothing is skipped, with
//     one exception: a record no valid message can carry (payload not
//     JSON, kind not a protocol token, too large even alone) is dropped,
//     logged, counted (Stats.Unsendable) and reported with a
//     buffer.dropped event. The outbox's own byte bound drops oldest
//     records when it is full; those are counted in the reported
//     buffer.dropped. A PUBACK is only as good as the broker behind it:
//     the embedded broker acknowledges after fleetd stored the message,
//     while mosquitto over MQTT 3.1.1 also acknowledges a publish its ACL
//     refuses, and drops it (see docs/protocol.md).
//   - After a cut: what the outbox holds when a connection comes up is a
//     backlog. Until it is sent, the drainer alternates one message of
//     the backlog with one of the records appended since (if any), so
//     fresh telemetry waits for one message, not for the backlog; each
//     of the two streams is in id order.
//   - fleetd to device: the desired state is retained, so the device gets
//     the latest one on every subscribe. The paho handler only decodes it
//     and hands it to a worker through a size-1 slot (a newer one replaces
//     one that has not started), so the client is never blocked.
//   - Replay and expiry: the worker runs every desired state through
//     protocol.Guard. The accepted seq is written atomically to StateFile
//     before Apply starts, so a restart still refuses anything older;
//     refusals (replay, expired, not_yet_valid, malformed, invalid,
//     wrong_device, ...) are counted by reason in Stats.Refused, logged
//     and reported with a desired.refused event. The redelivered retained
//     message (same seq) is a duplicate and ignored, except when the agent
//     stopped in the middle of its Apply: then it is resumed (at most
//     three starts in all).
//   - One Apply at a time. A newer desired state that passes the guard
//     cancels the Apply in progress (install.failed, reason superseded).
//
// # Connections
//
// Every connection uses a fresh paho client with auto-reconnect off (a
// persistent session by default, Config.CleanSession to opt out); the
// uplink reconnects itself with exponential backoff and jitter
// (Config.MinBackoff to MaxBackoff, 1 s to 30 s by default). While it
// waits, it probes the brokers with plain TCP connections every
// Config.ProbeInterval (500 ms): when none answered and one does again
// (the broker restarted, the network came back), it connects at once,
// after a random part of one interval so that a fleet does not come back
// in the same instant; a broker that accepts TCP and then refuses the
// device gets the whole backoff. It re-subscribes and republishes status
// and reported state each time. This gives each connection its own last
// will (its session number) and guarantees that a publish token completes
// only on a PUBACK of its own connection. While disconnected the drainer
// waits for the next connection instead of polling.
package uplink
