package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/notify"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// TestEventsCommand: fleetctl events lists the events fleetd emitted,
// one line per delivery, as a table, JSON and names, filtered by state,
// type and subscription.
func TestEventsCommand(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	defer ok.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/"
	ln.Close()

	dir := t.TempDir()
	data := filepath.Join(dir, defaultDataDir)
	srv, err := fleetd.New(fleetd.Config{
		DataDir: data, HTTP: fleetd.HTTPConfig{Listen: "127.0.0.1:0"}, Broker: fleetd.BrokerConfig{Listen: "127.0.0.1:0"},
		Registry: fleetd.RegistryConfig{InsecureAcceptAnyKey: true},
		Events: fleetd.EventsConfig{Subscriptions: []fleetd.SubscriptionConfig{
			{Name: "ok", URL: ok.URL},
			{Name: "down", URL: down, Types: []string{notify.TypeInstallFailed}},
		}},
		EventTiming: &fleetd.EventTiming{RetryMax: -1, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
		Logger:      slog.New(slog.DiscardHandler), Announce: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	run := testenv.Start(srv.Run)
	defer func() {
		if err := run.Stop(time.Minute); err != nil {
			t.Error(err)
		}
	}()
	remote := []string{"--server", srv.URL(), "--token-file", filepath.Join(data, operatorTokenRel)}
	fc := func(args ...string) result { return fleetctl(t, nil, append(args, remote...)...) }

	if r := fc("events"); r.code != 0 || !strings.Contains(r.stdout, "no events (subscriptions: ok, down)") {
		t.Fatalf("no events: %+v", r)
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, typ := range []string{notify.TypeRolledBack, notify.TypeInstallFailed} {
		d, _ := json.Marshal(map[string]string{"n": fmt.Sprint(i)})
		if err := srv.Events().Add(notify.Event{ID: fmt.Sprintf("ev-%d", i), Type: typ, Source: "/edgefleet/fleetd/rollouts",
			Subject: "ro-1", Time: t0.Add(time.Duration(i) * time.Minute), Bundles: []string{"vad@2.0.0"}, Data: d}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.EventuallyState(t, "deliveries to ok made, to down tried", func() (bool, string) {
		r := fc("events")
		return strings.Count(r.stdout, " delivered ") == 2 && strings.Contains(r.stdout, "connection refused"), r.stdout
	})
	r := fc("events")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "TIME ") || !strings.Contains(lines[0], "SUBSCRIPTION") {
		t.Fatalf("table:\n%s", r.stdout)
	}
	// Newest first; the install event's two deliveries, in config order.
	for i, want := range []string{"2026-03-01T12:01:00Z  device.install_failed  ro-1 ev-1 ok delivered 1 HTTP 200",
		"2026-03-01T12:01:00Z device.install_failed ro-1 ev-1 down pending",
		"2026-03-01T12:00:00Z rollout.rolled_back ro-1 ev-0 ok delivered 1 HTTP 200"} {
		if got := strings.Fields(lines[i+1]); !strings.HasPrefix(strings.Join(got, " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("line %d: %q, want %q...", i+1, lines[i+1], want)
		}
	}
	var l api.EventList
	r = fc("events", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil || len(l.Events) != 2 || l.Events[0].Deliveries[1].State != api.DeliveryPending ||
		strings.Join(strings.Fields(string(l.Events[1].Data)), "") != `{"n":"0"}` {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if r := fc("events", "-o", "name"); r.stdout != "ev-1\nev-0\n" {
		t.Errorf("names %q", r.stdout)
	}
	if r := fc("events", "-o", "name", "--state", "pending"); r.stdout != "ev-1\n" {
		t.Errorf("pending %q", r.stdout)
	}
	if r := fc("events", "-o", "name", "--type", notify.TypeRolledBack); r.stdout != "ev-0\n" {
		t.Errorf("by type %q", r.stdout)
	}
	if r := fc("events", "-o", "name", "--subscription", "down"); r.stdout != "ev-1\n" {
		t.Errorf("by subscription %q", r.stdout)
	}
	if r := fc("events", "-o", "wide", "--limit", "1"); !strings.Contains(r.stdout, "vad@2.0.0") || !strings.Contains(r.stdout, "/edgefleet/fleetd/rollouts") {
		t.Errorf("wide:\n%s", r.stdout)
	}
	if r := fc("events", "--state", "lost"); r.code != ExitUsage || !strings.Contains(r.stderr, `--state "lost"`) {
		t.Errorf("bad state: %+v", r)
	}
	if r := fc("events", "--type", "drift"); r.code != ExitUsage && r.code != ExitError || !strings.Contains(r.stderr, "not an event type") {
		t.Errorf("bad type: %+v", r)
	}
}
