package telemetry

// The file's layout (see the package documentation): the schema version,
// bucket and key names, record states, a device's buckets, the time and
// index keys and the counters.

import (
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// schemaVersion is the layout of the file this code reads and writes.
const schemaVersion = 1

var (
	bucketMeta    = []byte("meta")
	bucketDevices = []byte("dev")
	bucketTime    = []byte("t")
	bucketKeys    = []byte("k")
	bucketCounts  = []byte("m")
	keySchema     = []byte("schema")
	keyDelivered  = []byte("delivered")
	keyDuplicates = []byte("duplicates")
	keyHeld       = []byte("held")
)

// Record states in bucket k.
const (
	stateConfirmed = 0
	statePending   = 1
)

// deviceBucket returns the bucket of device, creating it (and its
// sub-buckets) if create is set; nil without error if absent.
func deviceBucket(tx *bolt.Tx, device string, create bool) (*bolt.Bucket, error) {
	root := tx.Bucket(bucketDevices)
	if b := root.Bucket([]byte(device)); b != nil || !create {
		return b, nil
	}
	b, err := root.CreateBucket([]byte(device))
	if err != nil {
		return nil, err
	}
	for _, name := range [][]byte{bucketTime, bucketKeys, bucketCounts} {
		if _, err := b.CreateBucket(name); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// timeKey orders times bytewise: unix nanoseconds with the sign bit
// flipped, big endian.
func timeKey(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8+protocol.MaxDeviceIDLen+9), uint64(t.UnixNano())^(1<<63))
}

func idxKey(epoch string, id uint64) []byte {
	k := make([]byte, 0, len(epoch)+9)
	k = append(k, epoch...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, id)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func getU64(b *bolt.Bucket, k []byte) uint64 {
	if v := b.Get(k); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func addU64(b *bolt.Bucket, k []byte, n uint64) error {
	if n == 0 {
		return nil
	}
	return b.Put(k, u64(getU64(b, k)+n))
}
