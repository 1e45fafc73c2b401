// Package inventory is fleetd's device inventory: which devices exist, how
// they enrolled and authenticate, their labels, connection status, the
// state they last reported, the state fleetd wants them in (with a
// per-device sequence number that never goes back), and the record ids
// already counted from their telemetry, so that at-least-once delivery is
// counted exactly once. Everything lives in one bbolt file and survives a
// restart.
//
// A Store implements the embedded broker's Authenticator and
// CertAuthorizer (AuthenticateDevice, AuthorizeCertDevice).
package inventory

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/groupcommit"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// schemaVersion is the layout of the bbolt file this code reads and writes.
const schemaVersion = 1

// Bucket names. Keys of bucketDedup are deviceID + 0x00 + epoch.
var (
	bucketMeta    = []byte("meta")
	bucketDevices = []byte("devices") // id -> JSON Device
	bucketCreds   = []byte("creds")   // id -> sha256(password)
	bucketSeq     = []byte("seq")     // id -> uint64 BE: highest desired seq ever issued (kept after Delete)
	bucketDedup   = []byte("dedup")   // id\x00epoch -> window
	keySchema     = []byte("schema")
)

// Defaults of Options.
const (
	DefaultDedupRuns   = 1024
	DefaultDedupEpochs = 4
	DefaultLockTimeout = 2 * time.Second
	// MinEnrolTokenLen is the shortest enrolment token accepted.
	MinEnrolTokenLen = 16
)

// Options configures a Store. The zero value works, with enrolment by
// token disabled.
type Options struct {
	// EnrolTokens are the pre-shared enrolment tokens Enroll accepts, by
	// name (the name is recorded in each device's Enrolment, so that the
	// devices a leaked token enrolled can be found). Each token must be
	// at least MinEnrolTokenLen bytes. Tokens are held only as hashes.
	EnrolTokens map[string]string
	// AllowReenrol lets Enroll with a valid token re-enrol an existing
	// device: its password is replaced, everything else kept. Off, a
	// second Enroll fails with ErrExists (an operator then deletes the
	// device or calls ResetPassword).
	AllowReenrol bool
	// CertAutoEnrol makes AuthorizeCertDevice enrol an unknown device
	// whose client certificate the broker verified against the client
	// CA (the CA is then the enrolment authority). Off, certificate
	// devices must be enrolled with EnrollCert first.
	CertAutoEnrol bool
	// DedupRuns bounds the ids above a window's contiguous high-water
	// mark that are remembered (as runs of consecutive ids). Zero means
	// DefaultDedupRuns.
	DedupRuns int
	// DedupEpochs is how many outbox epochs per device keep a dedup
	// window; the least recently used is evicted. Zero means
	// DefaultDedupEpochs.
	DedupEpochs int
	// LockTimeout is how long Open waits for another process holding the
	// file. Zero means DefaultLockTimeout.
	LockTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
}

// Store is the bbolt-backed inventory. It is safe for concurrent use.
type Store struct {
	db     *groupcommit.DB // batch writes commit together (group commit)
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	tokens []enrolToken

	// auth caches password hashes read from the creds bucket; gen
	// increases with every change so that a lookup racing a change does
	// not cache a stale hash.
	authMu sync.RWMutex
	auth   map[string][sha256.Size]byte
	gen    uint64
}

type enrolToken struct {
	name string
	hash [sha256.Size]byte
}

// Open opens (creating if needed) the inventory file at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.DedupRuns == 0 {
		opts.DedupRuns = DefaultDedupRuns
	}
	if opts.DedupEpochs == 0 {
		opts.DedupEpochs = DefaultDedupEpochs
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.DedupRuns < 1 || opts.DedupEpochs < 1 || opts.LockTimeout < 0 {
		return nil, fmt.Errorf("%w: options: DedupRuns %d, DedupEpochs %d and LockTimeout %v must be positive",
			ErrInvalid, opts.DedupRuns, opts.DedupEpochs, opts.LockTimeout)
	}
	s := &Store{
		opts: opts,
		log:  opts.Logger,
		now:  opts.Now,
		auth: make(map[string][sha256.Size]byte),
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.now == nil {
		s.now = time.Now
	}
	for _, name := range slices.Sorted(maps.Keys(opts.EnrolTokens)) {
		tok := opts.EnrolTokens[name]
		if name == "" {
			return nil, fmt.Errorf("%w: options: an enrolment token has an empty name", ErrInvalid)
		}
		if len(tok) < MinEnrolTokenLen {
			return nil, fmt.Errorf("%w: options: enrolment token %q is %d bytes, at least %d are required",
				ErrInvalid, name, len(tok), MinEnrolTokenLen)
		}
		s.tokens = append(s.tokens, enrolToken{name: name, hash: sha256.Sum256([]byte(tok))})
	}

	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("opening inventory %s: locked by another process (waited %v): %w", path, opts.LockTimeout, err)
		}
		return nil, fmt.Errorf("opening inventory %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketDevices, bucketCreds, bucketSeq, bucketDedup} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keySchema); {
		case v == nil:
			return meta.Put(keySchema, u64(schemaVersion))
		case len(v) != 8 || binary.BigEndian.Uint64(v) != schemaVersion:
			return fmt.Errorf("schema version %x, this fleetd reads %d", v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("opening inventory %s: %w", path, err)
	}
	s.db = groupcommit.Wrap(db, maxBatch, ErrClosed)
	return s, nil
}

// Close closes the file. It is idempotent; the Store must not be used
// afterwards (calls fail with ErrClosed).
func (s *Store) Close() error { return s.db.Close() }

// maxBatch bounds the writes that share one transaction.
const maxBatch = 1024

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// getDevice decodes the device id from tx; ErrNotFound if absent.
func getDevice(tx *bolt.Tx, id string) (*Device, error) {
	b := tx.Bucket(bucketDevices).Get([]byte(id))
	if b == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	var d Device
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("inventory: decoding device %q: %w", id, err)
	}
	return &d, nil
}

func putDevice(tx *bolt.Tx, d *Device) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("inventory: encoding device %q: %w", d.ID, err)
	}
	return tx.Bucket(bucketDevices).Put([]byte(d.ID), b)
}

// dedupPrefix is the key prefix of a device's dedup windows.
func dedupPrefix(id string) []byte { return append([]byte(id), 0) }

// deletePrefix deletes every key of b starting with prefix.
func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}
