// Package slot is the edge agent's on-disk store of installed bundles:
// verified, unpacked bundle directories, one atomic active pointer and a
// last-known-good to roll back to without a download.
//
// # Layout
//
// Under the agent's data directory:
//
//	state.json                      the commit point (see State)
//	lock                            flock'd while a Store is open
//	bundles/NAME@VERSION-RANDOM/    unpacked, verified bundle directories
//	bundles/.staging-RANDOM/        an install being unpacked
//	downloads/HASH-FILE[.part]      bundles and signatures being downloaded
//
// The active and last-known-good directories are the two slots ("A/B");
// anything else under bundles/ is left over from an interrupted install
// and is removed by Open, as are temp state files, finished downloads and
// partial downloads older than Options.PartMaxAge (younger ones are
// resumed by the next Install of the same URL).
//
// # Commit point
//
// state.json is replaced atomically (temp file, fsync, rename, fsync of
// the directory) and is the only place that says which version is
// active. An install unpacks (the unpacker fsyncs every file and the
// directory) and renames the new directory into place, calls the
// activate callback, and only then commits state.json; a crash at any
// moment therefore leaves either the old or the new version active, with
// its directory complete. Directories are removed only after a commit no
// longer refers to them.
//
// state.json (schemaVersion 1; dirs relative to the data directory):
//
//	{
//	  "schemaVersion": 1,
//	  "generation": 7,                       // commits so far
//	  "updatedAt": "2025-05-01T10:00:00Z",
//	  "active":        {"id": "vad@1.4.0", "name": "vad", "version": "1.4.0",
//	                    "dir": "bundles/vad@1.4.0-3f2a9c01d4e5", "installedAt": "..."},
//	  "lastKnownGood": {... or null},
//	  "lastError":     {"time": "...", "op": "install", "id": "vad@1.5.0",
//	                    "source": "https://registry/vad-1.5.0.bundle?REDACTED",
//	                    "error": "slot: activation failed: ..."} or null,
//	  "history":       [{"time": "...", "op": "install|rollback|failed|recover",
//	                     "id": "...", "error": "..."}]  // oldest first, bounded
//	}
//
// # Use by the agent
//
// At start: Open(dataDir, Options{Trust, Limits, Fetch, AgentVersion,
// Logger}); if Active() returns a slot, load it (ReadManifest(slot.Dir),
// or Verify to re-hash it first) and serve; report State().
//
// On new desired state: Install(ctx, Request{Bundle: url, Sig: sigURL,
// ID: "name@version", Size, SHA256, AllowDowngrade: isRollback}, activate)
// where activate runs model.Load and Smoke and keeps the loaded model as
// pending (returning an error, after closing it, if the smoke test
// fails). When Install returns nil, swap the pending model into service
// and close the old one; when it returns an error, nothing changed but
// State().LastError: close the pending model, if any, and keep serving.
// When the requested version is the last-known-good, Rollback(ctx,
// activate) switches the same way without a download.
//
// A shadow candidate (a version run beside the active one without
// serving its answers) is fetched and verified the same way by Unpack,
// into a directory of the agent's outside bundles/, without touching the
// slots.
//
// Only one Install, Rollback or Unpack runs at a time; another gets
// ErrBusy.
package slot
