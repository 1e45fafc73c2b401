// Package outbox is the edge agent's durable queue of everything it must
// report to fleetd: prediction samples, events, telemetry and drift windows.
// It keeps them in one bbolt file while the link is down and hands them to
// the uplink oldest first when it is up.
//
// # Durability contract
//
//   - Append returns a nil error only after the transaction holding the
//     record has been committed and fsynced (bbolt with sync on; never
//     NoSync). A crash or power cut after that cannot lose the record,
//     except through the byte bound below or an Ack.
//   - An Append whose context ends before the record was taken into a
//     commit returns an error wrapping ctx.Err() and the record is not
//     stored; once taken, Append waits for that commit (one fsync) and
//     reports its outcome. Any other error also means not stored.
//   - Concurrent Appends (and Acks) are group-committed: one writer
//     goroutine commits everything that queued up while the previous commit
//     was being fsynced, up to Options.MaxBatch requests, in one bbolt
//     transaction. Throughput grows with the number of concurrent callers
//     while the latency of a lone caller stays one commit.
//   - Every record gets an id from a persisted sequence: ids increase by
//     one per record, are never reused after a restart (even when the
//     outbox is empty) and, for a new file, start at the current time in
//     microseconds, so a recreated file does not reissue old ids. The
//     uplink sends the id and fleetd deduplicates on (device, id):
//     delivery is at-least-once, and Ack is idempotent so that a record
//     acknowledged twice is harmless.
//   - The stored records are bounded by Options.MaxBytes. An Append that
//     would exceed it deletes the oldest records in the same transaction,
//     adds them to the persisted Stats.Dropped counter and logs (first drop
//     after Open, then at most once per 1000 drops): nothing is lost
//     silently. A record larger than MaxBytes or a payload over
//     Options.MaxRecordBytes is refused with ErrTooLarge.
//   - The counters of Stats are written in the same transaction as the
//     records they count, so they survive restarts and crashes exactly.
//     Open checks them against the stored records and repairs and logs any
//     disagreement.
//   - Only one process may hold the file: a second Open fails with
//     ErrLocked. Close commits every queued request before closing.
package outbox
