package notify_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/controlplane/notify"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// setClock moves clk to t.
func setClock(clk *cptest.Clock, t time.Time) { clk.Advance(t.Sub(clk.Now())) }

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// listed reports whether the service lists event id (and its delivery
// to sub, if it has one).
func listed(t *testing.T, svc *notify.Service, id, sub string) (api.Delivery, bool) {
	t.Helper()
	evs, err := svc.List(notify.Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.ID == id {
			for _, d := range e.Deliveries {
				if d.Subscription == sub {
					return d, true
				}
			}
			return api.Delivery{}, true
		}
	}
	return api.Delivery{}, false
}

// TestRetentionAfterDone: events.retention counts from when an event's
// deliveries are done, not from when it was queued. An event whose
// receiver is unreachable (its connections go to a closed port on
// 127.0.0.1) is retried past the retention, is delivered, is still
// listed right after, and is pruned only the retention after its
// delivery. An event no subscription selected is done when queued.
func TestRetentionAfterDone(t *testing.T) {
	const retention = time.Hour
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := cptest.NewClock(t0)
	rcv := receiver(t, nil)
	up := strings.TrimSuffix(strings.TrimPrefix(rcv.URL, "http://"), "/")
	down := closedAddr(t)
	var target atomic.Value
	target.Store(down)
	var dialer net.Dialer
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dialer.DialContext(ctx, network, target.Load().(string))
	}}
	defer tr.CloseIdleConnections()

	db := openDB(t, filepath.Join(t.TempDir(), "q.db"))
	defer db.Close()
	svc, err := notify.New(notify.Config{DB: db, Now: clk.Now, Transport: tr, MaxAge: 24 * time.Hour, Retention: retention,
		RetryMax: -1, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		Subscriptions: []notify.Subscription{{Name: "ce", URL: rcv.URL, Filter: notify.Filter{Types: []string{notify.TypeRolledBack}}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
		svc.Close()
	}()

	if err := svc.Add(event("ev-1", notify.TypeRolledBack, nil, nil)); err != nil {
		t.Fatal(err)
	}
	if err := svc.Add(event("ev-unselected", notify.TypeInstallFailed, nil, nil)); err != nil {
		t.Fatal(err)
	}
	testenv.EventuallyState(t, "a failed attempt", func() (bool, string) {
		d, _ := listed(t, svc, "ev-1", "ce")
		return d.State == api.DeliveryPending && d.Attempts >= 1 && d.LastError != "", fmt.Sprintf("%+v", d)
	})
	// Past the retention, still retried.
	clk.Advance(2 * retention)
	testenv.EventuallyState(t, "an attempt past the retention", func() (bool, string) {
		d, _ := listed(t, svc, "ev-1", "ce")
		return d.State == api.DeliveryPending && !d.LastAttempt.Before(t0.Add(2*retention)), fmt.Sprintf("%+v", d)
	})
	svc.Prune()
	if d, ok := listed(t, svc, "ev-1", "ce"); !ok || d.State != api.DeliveryPending {
		t.Fatalf("pending event past the retention: %+v (listed %v)", d, ok)
	}
	if _, ok := listed(t, svc, "ev-unselected", ""); ok {
		t.Errorf("an event no subscription selected, queued more than the retention ago, was not pruned")
	}

	// The receiver is back.
	target.Store(up)
	d := waitDelivery(t, svc, "ev-1", "ce", api.DeliveryDelivered)
	doneAt := t0.Add(2 * retention)
	if !d.Done.Equal(doneAt) {
		t.Fatalf("delivery %+v, want done at %s", d, doneAt)
	}
	if n := svc.Prune(); n != 0 {
		t.Errorf("pruned %d right after the delivery", n)
	}
	if d, ok := listed(t, svc, "ev-1", "ce"); !ok || d.State != api.DeliveryDelivered {
		t.Fatalf("right after its delivery: %+v (listed %v)", d, ok)
	}
	setClock(clk, doneAt.Add(retention))
	if n := svc.Prune(); n != 0 {
		t.Errorf("pruned %d at exactly the retention after the delivery", n)
	}
	if _, ok := listed(t, svc, "ev-1", "ce"); !ok {
		t.Fatal("pruned at exactly the retention after its delivery")
	}
	setClock(clk, doneAt.Add(retention+time.Second))
	svc.Prune()
	if d, ok := listed(t, svc, "ev-1", "ce"); ok {
		t.Errorf("still listed past the retention after its delivery: %+v", d)
	}
	if n := rcv.Copies("ev-1"); n != 1 {
		t.Errorf("%d copies received", n)
	}
}

// TestRetentionSchema1: a store written by the fleetd before the done
// index (schema 1, events without a done time) is upgraded when opened:
// an event none of whose deliveries is pending counts as done at the
// latest done time of its deliveries, or, with none (no subscription
// selected it), at when it was queued; a pending one when its deliveries
// are done.
func TestRetentionSchema1(t *testing.T) {
	const retention = 7 * 24 * time.Hour
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := cptest.NewClock(t0)
	path := filepath.Join(t.TempDir(), "q.db")
	db := openDB(t, path)
	defer db.Close()

	// The layout of schema 1, as the earlier version wrote it.
	type old struct {
		id     string
		queued time.Time
		d      *api.Delivery // to "ce"
	}
	olds := []old{
		{"queued-long-ago-delivered-lately", t0.Add(-10 * 24 * time.Hour),
			&api.Delivery{Subscription: "ce", State: api.DeliveryDelivered, Attempts: 40, Done: t0.Add(-time.Hour)}},
		{"failed-long-ago", t0.Add(-9 * 24 * time.Hour),
			&api.Delivery{Subscription: "ce", State: api.DeliveryFailed, Attempts: 1, Done: t0.Add(-8 * 24 * time.Hour)}},
		{"unselected-long-ago", t0.Add(-8 * 24 * time.Hour), nil},
		{"pending", t0.Add(-2 * time.Hour), &api.Delivery{Subscription: "ce", State: api.DeliveryPending, Attempts: 3}},
		{"unselected-lately", t0.Add(-time.Hour), nil},
	}
	err := db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucket([]byte("notify"))
		if err != nil {
			return err
		}
		bs := map[string]*bolt.Bucket{}
		for _, n := range []string{"e", "id", "d", "p", "drift"} {
			if bs[n], err = root.CreateBucket([]byte(n)); err != nil {
				return err
			}
		}
		dce, _ := bs["d"].CreateBucket([]byte("ce"))
		pce, _ := bs["p"].CreateBucket([]byte("ce"))
		for i, o := range olds {
			k := binary.BigEndian.AppendUint64(nil, uint64(i+1))
			ev := event(o.id, notify.TypeRolledBack, nil, nil)
			v, _ := json.Marshal(struct {
				notify.Event
				Queued time.Time `json:"queued"`
			}{ev, o.queued})
			bs["e"].Put(k, v)
			bs["id"].Put([]byte(o.id), k)
			if o.d != nil {
				dv, _ := json.Marshal(o.d)
				dce.Put(k, dv)
				if o.d.State == api.DeliveryPending {
					pce.Put(k, nil)
				}
			}
		}
		bs["e"].SetSequence(uint64(len(olds)))
		return root.Put([]byte("schema"), binary.BigEndian.AppendUint64(nil, 1))
	})
	if err != nil {
		t.Fatal(err)
	}

	rcv := receiver(t, nil)
	open := func() *notify.Service {
		t.Helper()
		svc, err := notify.New(notify.Config{DB: db, Now: clk.Now, Retention: retention,
			RetryMax: -1, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
			Subscriptions: []notify.Subscription{{Name: "ce", URL: rcv.URL}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(svc.Close)
		return svc
	}
	svc := open()
	var schema []byte
	db.View(func(tx *bolt.Tx) error {
		schema = append(schema, tx.Bucket([]byte("notify")).Get([]byte("schema"))...)
		return nil
	})
	if len(schema) != 8 || binary.BigEndian.Uint64(schema) != 2 {
		t.Fatalf("schema %x after opening, want 2", schema)
	}
	want := func(step string, names ...string) {
		t.Helper()
		evs, err := svc.List(notify.Query{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range evs {
			got = append(got, e.ID)
		}
		slices.Sort(got)
		slices.Sort(names)
		if !slices.Equal(got, names) {
			t.Errorf("%s: listed %v, want %v", step, got, names)
		}
	}

	// Not running yet: nothing is delivered.
	if n := svc.Prune(); n != 2 {
		t.Errorf("first prune deleted %d, want 2", n)
	}
	want("upgraded and pruned", "queued-long-ago-delivered-lately", "pending", "unselected-lately")

	// Opened again (schema 2 as is), and run until the pending delivery
	// is made, at t0.
	svc.Close()
	svc = open()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.Run(ctx)
	}()
	d := waitDelivery(t, svc, "pending", "ce", api.DeliveryDelivered)
	cancel()
	<-done
	if !d.Done.Equal(t0) || d.Attempts != 4 {
		t.Errorf("delivery %+v, want done at %s after 4 attempts", d, t0)
	}
	want("delivered", "queued-long-ago-delivered-lately", "pending", "unselected-lately")

	setClock(clk, t0.Add(retention-30*time.Minute))
	if n := svc.Prune(); n != 2 {
		t.Errorf("prune a week after: deleted %d, want 2", n)
	}
	want("a week after", "pending")
	setClock(clk, t0.Add(retention+time.Second))
	if n := svc.Prune(); n != 1 {
		t.Errorf("prune a week after the pending one's delivery: deleted %d, want 1", n)
	}
	want("a week after the last delivery")
	db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket([]byte("notify"))
		for _, b := range []string{"e", "id", "done"} {
			if k, _ := root.Bucket([]byte(b)).Cursor().First(); k != nil {
				t.Errorf("bucket %s not empty: %x", b, k)
			}
		}
		return nil
	})
}
