package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/dedup"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/controlplane/inventory"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// env is a record store with the real inventory as its dedup oracle.
type env struct {
	dir   string
	clk   *cptest.Clock
	opts  Options
	store *Store
	inv   *inventory.Store
}

const enrolToken = "test-enrol-token-0123456789"

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), clk: cptest.NewClock(t0), opts: opts}
	e.opts.Now = e.clk.Now
	inv, err := inventory.Open(filepath.Join(e.dir, "inventory.db"), inventory.Options{EnrolTokens: map[string]string{"t": enrolToken}})
	if err != nil {
		t.Fatal(err)
	}
	e.inv = inv
	e.open(t)
	t.Cleanup(func() { e.store.Close(); e.inv.Close() })
	return e
}

func (e *env) open(t *testing.T) {
	t.Helper()
	s, err := Open(filepath.Join(e.dir, "records.db"), e.opts)
	if err != nil {
		t.Fatal(err)
	}
	e.store = s
}

func (e *env) enroll(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if _, err := e.inv.Enroll(context.Background(), id, nil, enrolToken); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) seen(dev, epoch string) dedup.Oracle {
	return func(ids []uint64) ([]bool, error) { return e.inv.SeenRecords(dev, epoch, ids) }
}

func (e *env) ingest(t *testing.T, dev, epoch string, recs []Record) Result {
	t.Helper()
	res, err := e.store.Ingest(dev, epoch, recs, e.seen(dev, epoch))
	if err != nil {
		t.Fatalf("Ingest: %v", err)
	}
	return res
}

func (e *env) stats(t *testing.T, dev string) Stats {
	t.Helper()
	st, err := e.store.Stats(dev)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// recs makes records ids from..to of dev/epoch, one second apart from t0
// plus id seconds, alternating kinds.
func recs(dev, epoch string, from, to uint64) []Record {
	var out []Record
	for id := from; id <= to; id++ {
		kind := "prediction"
		if id%2 == 0 {
			kind = "metrics"
		}
		out = append(out, Record{Device: dev, Epoch: epoch, ID: id, Kind: kind,
			Time: t0.Add(time.Duration(id) * time.Second), Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, id))})
	}
	return out
}

func TestIngestExactlyOnce(t *testing.T) {
	e := newEnv(t, Options{})
	e.enroll(t, "dev-1", "dev-2")
	if got := e.ingest(t, "dev-1", "e1", recs("dev-1", "e1", 1, 10)); got != (Result{Delivered: 10}) {
		t.Fatalf("first delivery = %+v", got)
	}
	if got := e.ingest(t, "dev-1", "e1", recs("dev-1", "e1", 1, 10)); got != (Result{Duplicates: 10}) {
		t.Fatalf("redelivery = %+v", got)
	}
	// Overlapping batch: 6..15.
	if got := e.ingest(t, "dev-1", "e1", recs("dev-1", "e1", 6, 15)); got != (Result{Delivered: 5, Duplicates: 5}) {
		t.Fatalf("overlap = %+v", got)
	}
	// Another epoch with the same ids is other records.
	if got := e.ingest(t, "dev-1", "e2", recs("dev-1", "e2", 1, 3)); got != (Result{Delivered: 3}) {
		t.Fatalf("new epoch = %+v", got)
	}
	// Another device is independent.
	if got := e.ingest(t, "dev-2", "e1", recs("dev-2", "e1", 1, 3)); got != (Result{Delivered: 3}) {
		t.Fatalf("other device = %+v", got)
	}
	if st := e.stats(t, "dev-1"); st != (Stats{Delivered: 18, Duplicates: 15, Held: 18}) {
		t.Errorf("stats = %+v", st)
	}

	// Everything survives a restart, dedup included.
	e.store.Close()
	e.open(t)
	if got := e.ingest(t, "dev-1", "e1", recs("dev-1", "e1", 14, 16)); got != (Result{Delivered: 1, Duplicates: 2}) {
		t.Fatalf("after restart = %+v", got)
	}
	if st := e.stats(t, "dev-1"); st != (Stats{Delivered: 19, Duplicates: 17, Held: 19}) {
		t.Errorf("stats after restart = %+v", st)
	}
}

// TestIngestInterrupted interrupts Ingest between its steps, as a crash
// would, and checks that the redelivery stores and counts every record
// exactly once.
func TestIngestInterrupted(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		// seen runs in the first, interrupted attempt.
		seen func(e *env) dedup.Oracle
	}{
		{"before the oracle recorded", func(e *env) dedup.Oracle {
			return func([]uint64) ([]bool, error) { return nil, boom }
		}},
		{"after the oracle recorded", func(e *env) dedup.Oracle {
			return func(ids []uint64) ([]bool, error) {
				if _, err := e.seen("dev-1", "e1")(ids); err != nil {
					return nil, err
				}
				return nil, boom
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			e.enroll(t, "dev-1")
			e.ingest(t, "dev-1", "e1", recs("dev-1", "e1", 1, 2))
			if _, err := e.store.Ingest("dev-1", "e1", recs("dev-1", "e1", 3, 6), tc.seen(e)); !errors.Is(err, boom) {
				t.Fatalf("interrupted Ingest = %v, want boom", err)
			}
			// The records are stored already (pending), but not counted.
			if st := e.stats(t, "dev-1"); st.Delivered != 2 || st.Held != 6 {
				t.Errorf("stats after the interruption = %+v", st)
			}
			e.store.Close()
			e.open(t)
			if got := e.ingest(t, "dev-1", "e1", recs("dev-1", "e1", 1, 7)); got != (Result{Delivered: 5, Duplicates: 2}) {
				t.Errorf("redelivery = %+v, want 5 delivered (3..7), 2 duplicates", got)
			}
			if st := e.stats(t, "dev-1"); st.Delivered != 7 || st.Held != 7 {
				t.Errorf("stats = %+v", st)
			}
			got, err := e.store.Query("dev-1", Query{})
			if err != nil || len(got) != 7 {
				t.Fatalf("Query = %d records, %v", len(got), err)
			}
		})
	}
}

func TestRetention(t *testing.T) {
	e := newEnv(t, Options{MaxPerDevice: 5, MaxAge: time.Hour})
	e.enroll(t, "dev-1")
	if got := e.ingest(t, "dev-1", "", recs("dev-1", "", 1, 8)); got.Delivered != 8 {
		t.Fatalf("Ingest = %+v", got)
	}
	got, err := e.store.Query("dev-1", Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || got[0].ID != 4 || got[4].ID != 8 {
		t.Fatalf("after trimming to 5: %v", ids(got))
	}
	// A redelivery of a trimmed record is recognised by the oracle and
	// not stored again.
	if got := e.ingest(t, "dev-1", "", recs("dev-1", "", 1, 2)); got != (Result{Duplicates: 2}) {
		t.Fatalf("redelivery of trimmed records = %+v", got)
	}
	if st := e.stats(t, "dev-1"); st != (Stats{Delivered: 8, Duplicates: 2, Held: 5}) {
		t.Errorf("stats = %+v", st)
	}
	// Age: records are at t0+4s..t0+8s; at t0+1h+6.5s those before
	// t0+6.5s go.
	e.clk.Set(t0.Add(time.Hour + 6500*time.Millisecond))
	n, err := e.store.Prune()
	if err != nil || n != 3 {
		t.Fatalf("Prune = %d, %v; want 3", n, err)
	}
	got, _ = e.store.Query("dev-1", Query{})
	if len(got) != 2 || got[0].ID != 7 {
		t.Fatalf("after pruning: %v", ids(got))
	}
	if st := e.stats(t, "dev-1"); st.Held != 2 {
		t.Errorf("held = %d", st.Held)
	}
}

func TestQuery(t *testing.T) {
	e := newEnv(t, Options{})
	e.enroll(t, "dev-1")
	e.ingest(t, "dev-1", "e", recs("dev-1", "e", 1, 10))
	for _, tc := range []struct {
		q    Query
		want []uint64
	}{
		{Query{}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{Query{Kind: "metrics"}, []uint64{2, 4, 6, 8, 10}},
		{Query{Since: t0.Add(8 * time.Second)}, []uint64{8, 9, 10}},
		{Query{Since: t0.Add(3 * time.Second), Until: t0.Add(6 * time.Second)}, []uint64{3, 4, 5}},
		{Query{Kind: "prediction", Limit: 2}, []uint64{1, 3}},
		{Query{Kind: "drift"}, nil},
		{Query{NewestFirst: true}, []uint64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}},
		{Query{NewestFirst: true, Limit: 3}, []uint64{10, 9, 8}},
		{Query{NewestFirst: true, Kind: "metrics", Limit: 2}, []uint64{10, 8}},
		{Query{NewestFirst: true, Since: t0.Add(8 * time.Second)}, []uint64{10, 9, 8}},
		{Query{NewestFirst: true, Until: t0.Add(3 * time.Second)}, []uint64{2, 1}},
		{Query{NewestFirst: true, Since: t0.Add(3 * time.Second), Until: t0.Add(6 * time.Second)}, []uint64{5, 4, 3}},
		{Query{NewestFirst: true, Since: t0.Add(3 * time.Second), Until: t0.Add(6 * time.Second), Limit: 1}, []uint64{5}},
		{Query{NewestFirst: true, Until: t0.Add(time.Hour)}, []uint64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}},
		{Query{NewestFirst: true, Until: t0}, nil},
		{Query{NewestFirst: true, Since: t0.Add(time.Hour)}, nil},
		{Query{Since: t0.Add(6 * time.Second), Until: t0.Add(3 * time.Second)}, nil},
		{Query{NewestFirst: true, Since: t0.Add(6 * time.Second), Until: t0.Add(3 * time.Second)}, nil},
	} {
		got, err := e.store.Query("dev-1", tc.q)
		if err != nil {
			t.Fatalf("Query(%+v): %v", tc.q, err)
		}
		if fmt.Sprint(ids(got)) != fmt.Sprint(tc.want) {
			t.Errorf("Query(%+v) = %v, want %v", tc.q, ids(got), tc.want)
		}
	}
	got, _ := e.store.Query("dev-1", Query{Limit: 1})
	r := got[0]
	if r.Device != "dev-1" || r.Epoch != "e" || string(r.Payload) != `{"n":1}` || !r.Received.Equal(t0) || !r.Time.Equal(t0.Add(time.Second)) {
		t.Errorf("record = %+v", r)
	}
	if got, err := e.store.Query("unknown", Query{}); err != nil || len(got) != 0 {
		t.Errorf("unknown device: %v, %v", got, err)
	}
}

func TestInvalid(t *testing.T) {
	e := newEnv(t, Options{})
	e.enroll(t, "dev-1")
	ok := recs("dev-1", "e", 1, 1)[0]
	for _, tc := range []struct {
		name         string
		dev, epoch   string
		edit         func(*Record)
		wantContains string
	}{
		{"bad device", "a/b", "e", func(r *Record) { r.Device = "a/b" }, "device id"},
		{"bad epoch", "dev-1", "e e", func(r *Record) { r.Epoch = "e e" }, "epoch"},
		{"other device", "dev-1", "e", func(r *Record) { r.Device = "dev-2" }, "record 0 is of device"},
		{"id 0", "dev-1", "e", func(r *Record) { r.ID = 0 }, "id 0"},
		{"bad kind", "dev-1", "e", func(r *Record) { r.Kind = "Bad Kind" }, "kind"},
		{"no payload", "dev-1", "e", func(r *Record) { r.Payload = nil }, "no payload"},
	} {
		r := ok
		tc.edit(&r)
		_, err := e.store.Ingest(tc.dev, tc.epoch, []Record{r}, e.seen(tc.dev, tc.epoch))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantContains) {
			t.Errorf("%s: Ingest = %v, want ErrInvalid naming %q", tc.name, err, tc.wantContains)
		}
	}
	if _, err := e.store.Query("dev-1", Query{Limit: MaxQueryLimit + 1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Query with a huge limit = %v", err)
	}
	if _, err := e.store.Query("dev-1", Query{Kind: "A"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Query with a bad kind = %v", err)
	}
	// The oracle's error (an unknown device) is the caller's error.
	if _, err := e.store.Ingest("ghost", "", recs("ghost", "", 1, 1), e.seen("ghost", "")); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("Ingest for an unknown device = %v, want inventory.ErrNotFound", err)
	}
	e.store.Close()
	if _, err := e.store.Ingest("dev-1", "e", []Record{ok}, e.seen("dev-1", "e")); !errors.Is(err, ErrClosed) {
		t.Errorf("Ingest after Close = %v", err)
	}
	if err := e.store.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// TestConcurrentRedelivery delivers the same records from many goroutines
// at once (a device reconnecting while its old connection's delivery is
// still being stored): they are counted once.
func TestConcurrentRedelivery(t *testing.T) {
	e := newEnv(t, Options{})
	devs := []string{"dev-1", "dev-2", "dev-3"}
	e.enroll(t, devs...)
	var wg sync.WaitGroup
	var mu sync.Mutex
	delivered := map[string]int{}
	for range 8 {
		for _, d := range devs {
			wg.Go(func() {
				for from := uint64(1); from <= 91; from += 10 {
					res, err := e.store.Ingest(d, "e", recs(d, "e", from, from+9), e.seen(d, "e"))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					delivered[d] += res.Delivered
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	for _, d := range devs {
		if delivered[d] != 100 {
			t.Errorf("%s: delivered %d, want 100", d, delivered[d])
		}
		if st := e.stats(t, d); st.Delivered != 100 || st.Duplicates != 700 || st.Held != 100 {
			t.Errorf("%s: stats %+v", d, st)
		}
	}
}

func TestDeleteDevice(t *testing.T) {
	e := newEnv(t, Options{})
	e.enroll(t, "dev-1")
	e.ingest(t, "dev-1", "", recs("dev-1", "", 1, 3))
	if err := e.store.DeleteDevice("dev-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.DeleteDevice("dev-1"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if st := e.stats(t, "dev-1"); st != (Stats{}) {
		t.Errorf("stats after delete = %+v", st)
	}
}

func ids(rs []Record) []uint64 {
	var out []uint64
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}
