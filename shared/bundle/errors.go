package bundle

import "errors"

// Sentinel errors callers branch on with errors.Is. Every error this
// package returns for a bad bundle wraps at least one of them; the message
// names the entry or field and what was wrong with it.
var (
	// ErrSignature: the signature is missing, malformed or made by none
	// of the trusted keys.
	ErrSignature = errors.New("signature not valid")
	// ErrUntrusted (with ErrSignature): a well-formed signature made by
	// none of the trusted keys, or over other bytes.
	ErrUntrusted = errors.New("not signed by a trusted key")
	// ErrManifest: manifest.json is missing, not first, not valid JSON,
	// of an unknown schema version, or has missing or invalid fields.
	ErrManifest = errors.New("invalid manifest")
	// ErrDigest: a file's size or sha256 differs from the manifest's.
	ErrDigest = errors.New("digest mismatch")
	// ErrUnsafePath: an entry's name or type could escape or alter the
	// destination: absolute path, "..", nested path, link, device, fifo,
	// directory.
	ErrUnsafePath = errors.New("unsafe entry")
	// ErrLimit: a size, count or decoder cap of Limits was exceeded.
	ErrLimit = errors.New("limit exceeded")
	// ErrMissingFile: a file listed in the manifest is not in the bundle.
	ErrMissingFile = errors.New("missing file")
	// ErrExtraFile: the bundle holds an entry the manifest does not list,
	// or the same entry twice.
	ErrExtraFile = errors.New("unexpected file")
	// ErrFormat: the file is not a readable zstd-compressed tar stream
	// (truncated, corrupt, or not a bundle at all).
	ErrFormat = errors.New("malformed bundle")
	// ErrSpec: a bundle.yaml spec (or a file it names) is invalid.
	ErrSpec = errors.New("invalid bundle spec")
)
