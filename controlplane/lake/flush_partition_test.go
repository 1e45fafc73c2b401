package lake

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/edgefleet/edgefleet/controlplane/registry"
)

// errDenied is what partitionStore answers for a refused partition.
var errDenied = errors.New("access denied")

// partitionStore refuses the files of the partitions in fail (as a
// store refusing one prefix would) and writes the others.
type partitionStore struct {
	*registry.DirObjects
	mu   sync.Mutex
	fail map[string]bool     // partitions refused
	puts map[string][]string // partition -> keys written or tried, in order
}

func (s *partitionStore) PutObject(ctx context.Context, key string, data []byte) error {
	part := path.Dir(key)
	s.mu.Lock()
	s.puts[part] = append(s.puts[part], key)
	refused := s.fail[part]
	s.mu.Unlock()
	if refused {
		return fmt.Errorf("%s: %w", part, errDenied)
	}
	return s.DirObjects.PutObject(ctx, key, data)
}

func (s *partitionStore) setFail(part string, fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[part] = fail
}

func (s *partitionStore) tried(part string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.puts[part])
}

const (
	partA = "bundle=vad/version=1.0.0/date=2026-03-01"
	partB = "bundle=vad/version=2.0.0/date=2026-03-01"
)

// partitionLake is a lake, FlushRows 2, on a partitionStore; ingest
// stages records ids of device dev, whose samples are of bundle version
// version (partition A for dev-a's 1.0.0, B for dev-b's 2.0.0).
func partitionLake(t *testing.T) (l *Lake, st *partitionStore, root string, ingest func(dev, version string, ids ...uint64)) {
	t.Helper()
	dir := t.TempDir()
	root = filepath.Join(dir, "samples")
	st = &partitionStore{DirObjects: &registry.DirObjects{Dir: root}, fail: map[string]bool{}, puts: map[string][]string{}}
	l = openLake(t, dir, Options{Store: st, FlushRows: 2})
	o := &oracle{}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ingest = func(dev, version string, ids ...uint64) {
		t.Helper()
		var recs []Record
		for _, id := range ids {
			recs = append(recs, Record{ID: id, Payload: sample(t, version, at, fmt.Sprintf("%s-%d", dev, id), []float32{float32(id), 1})})
		}
		res, err := l.Ingest(dev, "e", recs, o.seenBy(dev, "e"))
		if err != nil || res.Accepted != len(ids) {
			t.Fatalf("Ingest %s %v: %+v %v", dev, ids, res, err)
		}
	}
	return l, st, root, ingest
}

// fileRecords reads the files keys and returns "device/record" of their
// rows, sorted.
func fileRecords(t *testing.T, root string, keys []string) []string {
	t.Helper()
	var out []string
	for _, k := range keys {
		rows, err := parquet.ReadFile[fileRow](filepath.Join(root, filepath.FromSlash(k)))
		if err != nil {
			t.Fatalf("reading %s: %v", k, err)
		}
		for _, r := range rows {
			out = append(out, fmt.Sprintf("%s/%d", r.Device, r.RecordID))
		}
	}
	slices.Sort(out)
	return out
}

// records is "dev/id" of ids, sorted.
func records(dev string, ids ...int) []string {
	var out []string
	for _, id := range ids {
		out = append(out, fmt.Sprintf("%s/%d", dev, id))
	}
	slices.Sort(out)
	return out
}

// checkPartitionErr: err is the failure of partition part (the store's
// error, naming the partition), and names no partition of others.
func checkPartitionErr(t *testing.T, err error, part string, others ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("flush succeeded though %s is refused", part)
	}
	if !errors.Is(err, errDenied) || !strings.Contains(err.Error(), "partition "+part) {
		t.Errorf("error does not name the failing partition %s: %v", part, err)
	}
	for _, o := range others {
		if strings.Contains(err.Error(), o) {
			t.Errorf("error names partition %s, which was written: %v", o, err)
		}
	}
}

// checkFiles: every file under root holds its partition's records
// exactly once, and these are want.
func checkFiles(t *testing.T, root string, want []string) {
	t.Helper()
	var got []string
	for _, r := range readAll(t, root) {
		got = append(got, fmt.Sprintf("%s/%d", r.Device, r.RecordID))
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("records in the files %v, want each of %v once", got, want)
	}
}

// TestFlushPartitionFailureIsolated: a partition whose file the store
// refuses holds back neither the other partitions nor itself once the
// store takes it again. Its flush is tried once a cycle (not planned
// again in the cycle), written again under the same name, and its rows
// land exactly once.
func TestFlushPartitionFailureIsolated(t *testing.T) {
	l, st, root, ingest := partitionLake(t)
	defer l.Close(t.Context())
	ctx := t.Context()
	st.setFail(partA, true)
	ingest("dev-a", "1.0.0", 1, 2, 3)
	ingest("dev-b", "2.0.0", 1, 2, 3)

	// A comes first and fails; B is written all the same.
	res, err := l.Flush(ctx)
	checkPartitionErr(t, err, partA, partB)
	if res.Rows != 3 || len(res.Files) != 2 {
		t.Fatalf("flush wrote %+v, want B's 3 rows in 2 files", res)
	}
	for _, k := range res.Files {
		if !strings.HasPrefix(k, partB+"/") {
			t.Errorf("file %s is not B's", k)
		}
	}
	if got, want := fileRecords(t, root, res.Files), records("dev-b", 1, 2, 3); !slices.Equal(got, want) {
		t.Errorf("B's files hold %v, want %v", got, want)
	}
	triedA := st.tried(partA)
	if len(triedA) != 1 {
		t.Fatalf("A tried %d times in one flush, want once: %v", len(triedA), triedA)
	}
	if n := l.Stats().FlushErrors; n != 1 {
		t.Errorf("FlushErrors %d, want 1", n)
	}

	// Still refused: A's pending flush is tried again under its name, A
	// is not planned again; B's new rows are written.
	ingest("dev-a", "1.0.0", 4)
	ingest("dev-b", "2.0.0", 4, 5)
	res, err = l.Flush(ctx)
	checkPartitionErr(t, err, partA, partB)
	if got, want := fileRecords(t, root, res.Files), records("dev-b", 4, 5); res.Rows != 2 || !slices.Equal(got, want) {
		t.Errorf("second flush %+v wrote %v, want %v", res, got, want)
	}
	if got := st.tried(partA); len(got) != 2 || got[1] != triedA[0] {
		t.Errorf("A tried %v, want %s twice", got, triedA[0])
	}

	// The store takes A again: its pending flush, then the rest of it.
	st.setFail(partA, false)
	res, err = l.Flush(ctx)
	if err != nil {
		t.Fatalf("flush after the store healed: %v", err)
	}
	if len(res.Files) != 2 || res.Files[0] != triedA[0] || res.Rows != 4 {
		t.Errorf("flush after the store healed %+v, want %s first and A's 4 rows", res, triedA[0])
	}
	if got, want := fileRecords(t, root, res.Files), records("dev-a", 1, 2, 3, 4); !slices.Equal(got, want) {
		t.Errorf("A's files hold %v, want %v", got, want)
	}
	checkFiles(t, root, append(records("dev-a", 1, 2, 3, 4), records("dev-b", 1, 2, 3, 4, 5)...))
	if st := l.Stats(); st.StagedBytes != 0 || st.Rows != 9 {
		t.Errorf("stats at the end %+v, want 9 rows written and nothing staged", st)
	}
	if res, err := l.Flush(ctx); err != nil || res.Rows != 0 {
		t.Errorf("flush with nothing staged: %+v %v", res, err)
	}
}

// TestFlushPendingPartitionFailureIsolated: of two pending flushes (both
// refused once), the one still refused does not keep the other, behind
// it, from being written; each is written under the name it was planned
// with.
func TestFlushPendingPartitionFailureIsolated(t *testing.T) {
	l, st, root, ingest := partitionLake(t)
	defer l.Close(t.Context())
	ctx := t.Context()
	st.setFail(partA, true)
	st.setFail(partB, true)
	ingest("dev-a", "1.0.0", 1, 2)
	ingest("dev-b", "2.0.0", 1, 2)
	res, err := l.Flush(ctx)
	checkPartitionErr(t, err, partA)
	checkPartitionErr(t, err, partB)
	if res.Rows != 0 || len(res.Files) != 0 {
		t.Fatalf("flush with every partition refused wrote %+v", res)
	}
	triedA, triedB := st.tried(partA), st.tried(partB)
	if len(triedA) != 1 || len(triedB) != 1 {
		t.Fatalf("tried A %v and B %v, want each once", triedA, triedB)
	}
	if seqs, err := l.pendingFlushes(); err != nil || len(seqs) != 2 {
		t.Fatalf("pending flushes %d %v, want A's and B's", len(seqs), err)
	}

	// B heals: A's pending flush, first, fails; B's is written.
	st.setFail(partB, false)
	res, err = l.Flush(ctx)
	checkPartitionErr(t, err, partA, partB)
	if len(res.Files) != 1 || res.Files[0] != triedB[0] || res.Rows != 2 {
		t.Errorf("flush %+v, want B's pending %s", res, triedB[0])
	}
	if got, want := fileRecords(t, root, res.Files), records("dev-b", 1, 2); !slices.Equal(got, want) {
		t.Errorf("B's file holds %v, want %v", got, want)
	}

	// A heals.
	st.setFail(partA, false)
	res, err = l.Flush(ctx)
	if err != nil || len(res.Files) != 1 || res.Files[0] != triedA[0] || res.Rows != 2 {
		t.Errorf("flush %+v %v, want A's pending %s", res, err, triedA[0])
	}
	if got := st.tried(partA); len(got) != 3 || got[1] != triedA[0] || got[2] != triedA[0] {
		t.Errorf("A tried %v, want %s three times", got, triedA[0])
	}
	checkFiles(t, root, append(records("dev-a", 1, 2), records("dev-b", 1, 2)...))
	if seqs, err := l.pendingFlushes(); err != nil || len(seqs) != 0 || l.Stats().StagedBytes != 0 {
		t.Errorf("after both healed: %d pending (%v), %+v", len(seqs), err, l.Stats())
	}
}
