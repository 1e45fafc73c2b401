package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

func testLogger(t *testing.T) (*slog.Logger, *testenv.SyncBuffer) {
	t.Helper()
	var buf testenv.SyncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("outbox log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

func openT(t *testing.T, path string, opts Options) *Outbox {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger, _ = testLogger(t)
	}
	o, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func appendT(t *testing.T, o *Outbox, kind string, payload []byte) uint64 {
	t.Helper()
	id, err := o.Append(context.Background(), kind, payload)
	if err != nil {
		t.Fatalf("Append(%q, %d bytes): %v", kind, len(payload), err)
	}
	return id
}

func peekT(t *testing.T, o *Outbox, max int) []Record {
	t.Helper()
	recs, err := o.Peek(max)
	if err != nil {
		t.Fatalf("Peek(%d): %v", max, err)
	}
	return recs
}

func ids(recs []Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// checkInvariant asserts Appended == Acked + Dropped + Records and that
// Records and Bytes match what is stored.
func checkInvariant(t *testing.T, o *Outbox) {
	t.Helper()
	s := o.Stats()
	if s.Appended != s.Acked+s.Dropped+uint64(s.Records) {
		t.Errorf("Stats %+v: Appended != Acked + Dropped + Records", s)
	}
	recs := peekT(t, o, 1<<30)
	var size int64
	for _, r := range recs {
		size += int64(keyLen + encodedLen(r.Kind, len(r.Payload)))
	}
	if len(recs) != s.Records || size != s.Bytes {
		t.Errorf("Stats %+v, but %d records of %d bytes stored", s, len(recs), size)
	}
}

func TestAppendPeekOrder(t *testing.T) {
	o := openT(t, filepath.Join(t.TempDir(), "outbox.db"), Options{})
	kinds := []string{"prediction", "event", "telemetry"}
	before := time.Now()
	var want []uint64
	for i := range 100 {
		want = append(want, appendT(t, o, kinds[i%3], fmt.Appendf(nil, "payload-%d", i)))
	}
	after := time.Now()
	for i := 1; i < len(want); i++ {
		if want[i] != want[i-1]+1 {
			t.Fatalf("ids not consecutive: %d then %d", want[i-1], want[i])
		}
	}

	recs := peekT(t, o, 1000)
	if got := ids(recs); !slices.Equal(got, want) {
		t.Fatalf("Peek ids = %v, want %v", got, want)
	}
	for i, r := range recs {
		if r.Kind != kinds[i%3] || string(r.Payload) != fmt.Sprintf("payload-%d", i) {
			t.Errorf("record %d = %q %q", i, r.Kind, r.Payload)
		}
		if r.Time.Before(before.Truncate(time.Nanosecond)) || r.Time.After(after) || r.Time.Location() != time.UTC {
			t.Errorf("record %d time %v not in [%v, %v] UTC", i, r.Time, before, after)
		}
	}
	if got := ids(peekT(t, o, 10)); !slices.Equal(got, want[:10]) {
		t.Errorf("Peek(10) = %v, want %v", got, want[:10])
	}
	// Peek does not remove.
	if got := len(peekT(t, o, 1000)); got != 100 {
		t.Errorf("second Peek returned %d records, want 100", got)
	}
	// Peek's payloads belong to the caller.
	recs[0].Payload[0] = 'X'
	if p := peekT(t, o, 1)[0].Payload; string(p) != "payload-0" {
		t.Errorf("payload changed through a Peek result: %q", p)
	}
	s := o.Stats()
	if s.Records != 100 || s.Appended != 100 || s.Acked != 0 || s.Dropped != 0 {
		t.Errorf("Stats = %+v", s)
	}
	checkInvariant(t, o)
}

func TestPeekInvalid(t *testing.T) {
	o := openT(t, filepath.Join(t.TempDir(), "outbox.db"), Options{})
	for _, max := range []int{0, -1} {
		if _, err := o.Peek(max); !errors.Is(err, ErrInvalid) {
			t.Errorf("Peek(%d) error = %v, want ErrInvalid", max, err)
		}
	}
	if recs := peekT(t, o, 5); len(recs) != 0 {
		t.Errorf("Peek on empty outbox = %v", recs)
	}
}

// TestPeekAfter: LastID splits the records into those stored at the
// snapshot and those appended since, and PeekAfter reads the second part,
// also after acks left holes and across a reopen.
func TestPeekAfter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	o := openT(t, path, Options{})
	start := o.Stats().LastID
	if start == 0 {
		t.Fatal("a new outbox reports LastID 0; want the id before its first")
	}
	var backlog []uint64
	for range 5 {
		backlog = append(backlog, appendT(t, o, "event", []byte("old")))
	}
	if backlog[0] != start+1 {
		t.Errorf("first id %d, want LastID+1 = %d", backlog[0], start+1)
	}
	mark := o.Stats().LastID
	if mark != backlog[4] {
		t.Fatalf("LastID = %d after appending %v", mark, backlog)
	}
	if recs, err := o.PeekAfter(mark, 10); err != nil || len(recs) != 0 {
		t.Fatalf("PeekAfter(LastID) = %v, %v; want nothing", ids(recs), err)
	}
	var live []uint64
	for range 4 {
		live = append(live, appendT(t, o, "event", []byte("new")))
	}
	for _, tc := range []struct {
		after uint64
		max   int
		want  []uint64
	}{
		{mark, 10, live},
		{mark, 2, live[:2]},
		{0, 3, backlog[:3]},
		{backlog[1], 2, backlog[2:4]},
		{live[3], 10, nil},
	} {
		recs, err := o.PeekAfter(tc.after, tc.max)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(recs); !slices.Equal(got, tc.want) {
			t.Errorf("PeekAfter(%d, %d) = %v, want %v", tc.after, tc.max, got, tc.want)
		}
	}
	if err := o.Ack(live[0], live[2]); err != nil {
		t.Fatal(err)
	}
	recs, err := o.PeekAfter(mark, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(recs); !slices.Equal(got, []uint64{live[1], live[3]}) {
		t.Errorf("after acks, PeekAfter(mark) = %v, want %v", got, []uint64{live[1], live[3]})
	}
	if _, err := o.PeekAfter(mark, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("PeekAfter(mark, 0) error = %v, want ErrInvalid", err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o = openT(t, path, Options{})
	if got := o.Stats().LastID; got != live[3] {
		t.Errorf("LastID after reopen = %d, want %d", got, live[3])
	}
	o.Close()
	if _, err := o.PeekAfter(mark, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("PeekAfter after Close: %v, want ErrClosed", err)
	}
}

func TestIDsUniqueAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	var seen []uint64
	for round := range 3 {
		o, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			seen = append(seen, appendT(t, o, "event", []byte("x")))
		}
		// Empty the outbox: the next round must still not reuse ids.
		if err := o.Ack(ids(peekT(t, o, 100))...); err != nil {
			t.Fatal(err)
		}
		s := o.Stats()
		if s.Records != 0 || s.Appended != uint64(5*(round+1)) || s.Acked != s.Appended {
			t.Errorf("round %d: Stats = %+v", round, s)
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("id %d after %d: not increasing across reopen (%v)", seen[i], seen[i-1], seen)
		}
	}
}

func TestIDsStartPastClock(t *testing.T) {
	// A recreated file must not reissue the ids of a lost one.
	dir := t.TempDir()
	first := appendT(t, openT(t, filepath.Join(dir, "a.db"), Options{}), "event", nil)
	second := appendT(t, openT(t, filepath.Join(dir, "b.db"), Options{}), "event", nil)
	if second <= first {
		t.Errorf("new file's first id %d <= old file's %d", second, first)
	}
}

func TestAckIdempotent(t *testing.T) {
	o := openT(t, filepath.Join(t.TempDir(), "outbox.db"), Options{})
	a := appendT(t, o, "event", []byte("a"))
	b := appendT(t, o, "event", []byte("b"))
	c := appendT(t, o, "event", []byte("c"))

	for _, step := range [][]uint64{
		{b},
		{b},              // again
		{b, b},           // twice in one call
		{c + 1000, 0, 1}, // never existed
		{},               // nothing
	} {
		if err := o.Ack(step...); err != nil {
			t.Fatalf("Ack(%v): %v", step, err)
		}
	}
	if got := ids(peekT(t, o, 10)); !slices.Equal(got, []uint64{a, c}) {
		t.Errorf("after acks Peek = %v, want [%d %d]", got, a, c)
	}
	if s := o.Stats(); s.Acked != 1 || s.Records != 2 {
		t.Errorf("Stats = %+v, want Acked 1, Records 2", s)
	}
	if err := o.Ack(a, c); err != nil {
		t.Fatal(err)
	}
	if s := o.Stats(); s.Acked != 3 || s.Records != 0 || s.Bytes != 0 {
		t.Errorf("Stats = %+v, want Acked 3 and empty", s)
	}
	checkInvariant(t, o)
}

func TestByteBoundDropsOldest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	payload := bytes.Repeat([]byte("p"), 100)
	recSize := int64(keyLen + encodedLen("telemetry", len(payload)))
	const keep = 10
	log, logBuf := testLogger(t)
	o := openT(t, path, Options{MaxBytes: keep*recSize + recSize/2, Logger: log})

	var all []uint64
	for range 3 * keep {
		all = append(all, appendT(t, o, "telemetry", payload))
	}
	// Bigger records push out several small ones at once.
	big := bytes.Repeat([]byte("B"), int(3*recSize))
	all = append(all, appendT(t, o, "telemetry", big))

	s := o.Stats()
	if s.Bytes > keep*recSize+recSize/2 {
		t.Errorf("Bytes %d over MaxBytes", s.Bytes)
	}
	got := ids(peekT(t, o, 100))
	if want := all[len(all)-len(got):]; !slices.Equal(got, want) {
		t.Fatalf("kept %v, want the newest %v", got, want)
	}
	if s.Dropped != uint64(len(all)-len(got)) || s.Appended != uint64(len(all)) {
		t.Errorf("Stats = %+v, want Dropped %d Appended %d", s, len(all)-len(got), len(all))
	}
	checkInvariant(t, o)
	if n := strings.Count(logBuf.String(), "dropped oldest records"); n != 1 {
		t.Errorf("drop logged %d times, want once (first drop; then once per %d):\n%s", n, dropLogEvery, logBuf)
	}

	// The counter survives a restart.
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o2 := openT(t, path, Options{MaxBytes: keep*recSize + recSize/2})
	if s2 := o2.Stats(); s2 != s {
		t.Errorf("after reopen Stats = %+v, want %+v", s2, s)
	}
	checkInvariant(t, o2)
}

func TestDropLogRateLimited(t *testing.T) {
	log, logBuf := testLogger(t)
	o := openT(t, filepath.Join(t.TempDir(), "outbox.db"), Options{MaxBytes: 64, Logger: log})
	const workers = 10
	n := 2*dropLogEvery + 10
	var wg sync.WaitGroup
	for range workers { // concurrent, so that it takes few commits
		wg.Go(func() {
			for range n / workers {
				if _, err := o.Append(context.Background(), "e", nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if s := o.Stats(); s.Dropped != uint64(n-s.Records) {
		t.Errorf("Stats = %+v, want Dropped %d", s, n-s.Records)
	}
	if got := strings.Count(logBuf.String(), "dropped oldest records"); got != 3 {
		t.Errorf("%d drops logged %d times, want 3 (first, then once per %d)", n, got, dropLogEvery)
	}
}

func TestAppendRefused(t *testing.T) {
	o := openT(t, filepath.Join(t.TempDir(), "outbox.db"), Options{MaxBytes: 4096, MaxRecordBytes: 8192})
	small := openT(t, filepath.Join(t.TempDir(), "outbox.db"), Options{MaxRecordBytes: 100})
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name    string
		o       *Outbox
		ctx     context.Context
		kind    string
		payload []byte
		want    error
	}{
		{"larger than MaxBytes", o, context.Background(), "event", make([]byte, 4096), ErrTooLarge},
		{"payload over MaxRecordBytes", small, context.Background(), "event", make([]byte, 101), ErrTooLarge},
		{"empty kind", o, context.Background(), "", nil, ErrInvalid},
		{"long kind", o, context.Background(), strings.Repeat("k", MaxKindLen+1), nil, ErrInvalid},
		{"invalid UTF-8 kind", o, context.Background(), "\xff", nil, ErrInvalid},
		{"canceled context", o, canceled, "event", nil, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.o.Append(tc.ctx, tc.kind, tc.payload)
			if !errors.Is(err, tc.want) || id != 0 {
				t.Fatalf("Append = %d, %v; want 0, %v", id, err, tc.want)
			}
			t.Logf("error: %v", err)
		})
	}
	for _, ob := range []*Outbox{o, small} {
		if s := ob.Stats(); s != (Stats{LastID: s.LastID}) {
			t.Errorf("refused appends changed Stats: %+v", s)
		}
	}
	// The limits themselves are accepted.
	appendT(t, small, "event", make([]byte, 100))
	appendT(t, o, "event", make([]byte, 4096-keyLen-encodedLen("event", 0)))
}

func TestConcurrentAppends(t *testing.T) {
	for _, maxBatch := range []int{0, 3} {
		t.Run(fmt.Sprintf("MaxBatch=%d", maxBatch), func(t *testing.T) {
			o := openT(t, filepath.Join(t.TempDir(), "outbox.db"), Options{MaxBatch: maxBatch})
			const workers, each = 16, 50
			got := make([][]uint64, workers)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := range each {
						id, err := o.Append(context.Background(), "prediction", fmt.Appendf(nil, "%d/%d", w, i))
						if err != nil {
							t.Errorf("worker %d: %v", w, err)
							return
						}
						got[w] = append(got[w], id)
					}
				})
			}
			wg.Wait()

			byID := map[uint64]string{}
			for _, r := range peekT(t, o, 1<<20) {
				byID[r.ID] = string(r.Payload)
			}
			if len(byID) != workers*each {
				t.Fatalf("%d records stored, want %d", len(byID), workers*each)
			}
			for w, list := range got {
				for i, id := range list {
					if want := fmt.Sprintf("%d/%d", w, i); byID[id] != want {
						t.Errorf("id %d holds %q, want %q", id, byID[id], want)
					}
					// Each caller sees its own records in order.
					if i > 0 && id <= list[i-1] {
						t.Errorf("worker %d: id %d after %d", w, id, list[i-1])
					}
				}
			}
			checkInvariant(t, o)
		})
	}
}

// TestCancelStoredOrNot: under contention, an Append that returned nil is
// stored and one that returned a context error is not.
func TestCancelStoredOrNot(t *testing.T) {
	o := openT(t, filepath.Join(t.TempDir(), "outbox.db"), Options{MaxBatch: 4})
	var (
		mu              sync.Mutex
		stored, refused = map[string]bool{}, map[string]bool{}
		wg              sync.WaitGroup
	)
	for w := range 16 {
		wg.Go(func() {
			for i := range 40 {
				p := fmt.Sprintf("%d/%d", w, i)
				ctx, cancel := context.WithCancel(context.Background())
				if i%2 == 1 {
					go cancel()
				}
				_, err := o.Append(ctx, "event", []byte(p))
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					stored[p] = true
				case errors.Is(err, context.Canceled):
					refused[p] = true
				default:
					t.Errorf("Append %s: %v", p, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d stored, %d canceled", len(stored), len(refused))
	have := map[string]bool{}
	for _, r := range peekT(t, o, 1<<20) {
		have[string(r.Payload)] = true
	}
	for p := range stored {
		if !have[p] {
			t.Errorf("%s: Append returned nil but it is not stored", p)
		}
	}
	for p := range refused {
		if have[p] {
			t.Errorf("%s: Append returned a context error but it is stored", p)
		}
	}
	if len(have) != len(stored) {
		t.Errorf("%d records stored, %d acknowledged", len(have), len(stored))
	}
	checkInvariant(t, o)
}

func TestCloseFlushesAndIsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	o, err := Open(path, Options{MaxBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		acked  []uint64
		closed int
		wg     sync.WaitGroup
	)
	start := make(chan struct{})
	for w := range 16 {
		wg.Go(func() {
			<-start
			for i := 0; ; i++ {
				id, err := o.Append(context.Background(), "event", fmt.Appendf(nil, "%d/%d", w, i))
				mu.Lock()
				if err == nil {
					acked = append(acked, id)
				}
				mu.Unlock()
				if errors.Is(err, ErrClosed) {
					mu.Lock()
					closed++
					mu.Unlock()
					return
				}
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	close(start)
	for o.Stats().Appended < 50 {
		time.Sleep(time.Millisecond)
	}
	if err := o.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	if closed != 16 {
		t.Errorf("%d appenders saw ErrClosed, want 16", closed)
	}
	for range 2 {
		if err := o.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}
	if _, err := o.Append(context.Background(), "event", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
	if _, err := o.Peek(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Peek after Close: %v", err)
	}
	if err := o.Ack(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Ack after Close: %v", err)
	}
	for range o.Wait() { // a pending signal, then closed
	}

	o2 := openT(t, path, Options{})
	have := map[uint64]bool{}
	for _, r := range peekT(t, o2, 1<<20) {
		have[r.ID] = true
	}
	for _, id := range acked {
		if !have[id] {
			t.Errorf("id %d returned by Append before Close is missing", id)
		}
	}
	if len(have) != len(acked) {
		t.Errorf("%d records stored, %d Appends returned an id", len(have), len(acked))
	}
	checkInvariant(t, o2)
}

func TestWaitSignals(t *testing.T) {
	o := openT(t, filepath.Join(t.TempDir(), "outbox.db"), Options{})
	ready := func() bool {
		select {
		case <-o.Wait():
			return true
		default:
			return false
		}
	}
	if ready() {
		t.Fatal("Wait signalled before any Append")
	}
	appendT(t, o, "event", nil)
	if !ready() {
		t.Fatal("Wait not signalled after Append returned")
	}
	if ready() {
		t.Fatal("Wait signalled twice for one Append")
	}
	for range 3 {
		appendT(t, o, "event", nil)
	}
	if !ready() || ready() {
		t.Fatal("three Appends should leave exactly one coalesced signal")
	}
	if err := o.Ack(ids(peekT(t, o, 10))...); err != nil {
		t.Fatal(err)
	}
	if ready() {
		t.Fatal("Ack signalled Wait")
	}

	// A drainer blocked in Wait is woken by an Append from elsewhere.
	got := make(chan []Record)
	go func() {
		<-o.Wait()
		recs, _ := o.Peek(10)
		got <- recs
	}()
	id := appendT(t, o, "event", []byte("wake"))
	if recs := <-got; len(recs) != 1 || recs[0].ID != id {
		t.Errorf("drainer got %v, want record %d", recs, id)
	}
}

func TestOpenLocked(t *testing.T) {
	t.Parallel() // waits out the lock timeout
	path := filepath.Join(t.TempDir(), "outbox.db")
	openT(t, path, Options{})
	_, err := Open(path, Options{})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "outbox locked by another process") {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	t.Logf("error: %v", err)
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a bbolt file "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		opts Options
		want error
	}{
		{"missing directory", filepath.Join(dir, "nope", "outbox.db"), Options{}, os.ErrNotExist},
		{"not a bbolt file", garbage, Options{}, nil},
		{"negative MaxBytes", filepath.Join(dir, "a.db"), Options{MaxBytes: -1}, ErrInvalid},
		{"negative MaxBatch", filepath.Join(dir, "a.db"), Options{MaxBatch: -1}, ErrInvalid},
		{"negative MaxRecordBytes", filepath.Join(dir, "a.db"), Options{MaxRecordBytes: -1}, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Open(tc.path, tc.opts)
			if err == nil {
				o.Close()
				t.Fatal("Open succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), "outbox") {
				t.Errorf("error %q does not say it is the outbox", err)
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	openT(t, path, Options{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		t.Errorf("file mode %v, want 0600", m)
	}
}

// TestOpenRepairs damages the file behind the outbox's back and checks
// that Open repairs the counters, the sequence and undecodable records.
func TestOpenRepairs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	o := openT(t, path, Options{})
	var last uint64
	for range 5 {
		last = appendT(t, o, "event", []byte("ok"))
	}
	if err := o.Ack(last - 4); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		recs := tx.Bucket(recordsBucket)
		if err := recs.Put(idKey(last+1), []byte{9, 9, 9}); err != nil { // undecodable
			return err
		}
		if err := recs.Put(idKey(last+2), encodeValue("event", time.Now(), []byte("sneaked in"))); err != nil {
			return err
		}
		if err := recs.SetSequence(3); err != nil {
			return err
		}
		// Counters claim nothing was ever appended or acked.
		return tx.Bucket(metaBucket).Put(countersKey, counters{}.encode())
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	log, logBuf := testLogger(t)
	o2 := openT(t, path, Options{Logger: log})
	s := o2.Stats()
	// 4 good + 1 sneaked in; the corrupt one was dropped; the ack is lost.
	want := Stats{Records: 5, Bytes: s.Bytes, Appended: 6, Acked: 0, Dropped: 1, LastID: last + 2}
	if s != want {
		t.Errorf("Stats after repair = %+v, want %+v", s, want)
	}
	checkInvariant(t, o2)
	if id := appendT(t, o2, "event", nil); id != last+3 {
		t.Errorf("next id %d, want %d (past the last stored id)", id, last+3)
	}
	for _, msg := range []string{"undecodable record", "counters disagree", "sequence behind"} {
		if !strings.Contains(logBuf.String(), msg) {
			t.Errorf("log lacks %q:\n%s", msg, logBuf)
		}
	}
	if err := o2.Close(); err != nil {
		t.Fatal(err)
	}

	// A consistent file is not rewritten and logs nothing.
	log3, logBuf3 := testLogger(t)
	o3 := openT(t, path, Options{Logger: log3})
	if s3 := o3.Stats(); s3.Appended != 7 || s3.Records != 6 {
		t.Errorf("Stats after clean reopen = %+v", s3)
	}
	if logBuf3.String() != "" {
		t.Errorf("clean open logged:\n%s", logBuf3)
	}
}

func TestOpenRefusesForeignSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		m, err := tx.CreateBucket(metaBucket)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket(recordsBucket); err != nil {
			return err
		}
		return m.Put(versionKey, []byte{99})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "schema version") {
		t.Fatalf("Open of a version-99 file: %v, want ErrCorrupt naming the schema version", err)
	}
}
