package uplink

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

func TestStateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := openState(dir, devID)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.get(); got.AcceptedSeq != 0 || got.Session != 0 {
		t.Fatalf("fresh state %+v", got)
	}
	if err := s.accept(7); err != nil {
		t.Fatal(err)
	}
	if err := s.resume(); err != nil {
		t.Fatal(err)
	}
	if err := s.done(7); err != nil {
		t.Fatal(err)
	}
	// The clock floor: a session is at least the time in milliseconds.
	now := time.UnixMilli(1_000_000)
	s1, err := s.nextSession(now)
	if err != nil || s1 != 1_000_000 {
		t.Fatalf("first session %d, %v", s1, err)
	}
	// The counter: a clock that went back still gets a higher session.
	s2, err := s.nextSession(now.Add(-time.Hour))
	if err != nil || s2 != s1+1 {
		t.Fatalf("second session %d, %v; want %d", s2, err, s1+1)
	}

	again, err := openState(dir, devID)
	if err != nil {
		t.Fatal(err)
	}
	want := state{V: stateVersion, DeviceID: devID, AcceptedSeq: 7, DoneSeq: 7, Attempts: 2, Session: s2}
	if got := again.get(); got != want {
		t.Fatalf("reopened %+v, want %+v", got, want)
	}
	if fi, err := os.Stat(filepath.Join(dir, StateFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v %v", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d entries (temp files left?)", len(entries))
	}
}

func TestStateRefusesBadFiles(t *testing.T) {
	for _, c := range []struct {
		name, content, want string
	}{
		{"empty", "", "not a JSON state object"},
		{"garbage", "{", "not a JSON state object"},
		{"trailing", `{"v":1,"deviceId":"dev-1"} {}`, "trailing data"},
		{"unknown field", `{"v":1,"deviceId":"dev-1","x":1}`, "unknown field"},
		{"version", `{"v":2,"deviceId":"dev-1"}`, "schema version 2"},
		{"other device", `{"v":1,"deviceId":"dev-2"}`, `belongs to device "dev-2"`},
		{"done above accepted", `{"v":1,"deviceId":"dev-1","acceptedSeq":3,"doneSeq":4}`, "doneSeq 4 is above"},
		{"negative attempts", `{"v":1,"deviceId":"dev-1","attempts":-1}`, "attempts -1"},
		{"negative seq", `{"v":1,"deviceId":"dev-1","acceptedSeq":-1}`, "not a JSON state object"},
		{"huge", `{"v":1,"deviceId":"dev-1","pad":"` + strings.Repeat("x", maxStateFile) + `"}`, "the limit is"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := openState(dir, devID)
			if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("openState: %v, want ErrState containing %q", err, c.want)
			}
			// New refuses to start on it too.
			ob, err := outbox.Open(filepath.Join(t.TempDir(), "ob.db"), outbox.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer ob.Close()
			cfg := Config{DeviceID: devID, Brokers: []string{"tcp://127.0.0.1:1"}, StateDir: dir}
			if _, err := New(cfg, newTestAgent(), ob, nil); !errors.Is(err, ErrState) {
				t.Fatalf("New: %v, want ErrState", err)
			}
		})
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"v":1,"deviceId":"dev-1","acceptedSeq":7,"doneSeq":7,"attempts":2,"session":1795763746296}`))
	f.Add([]byte(`{"v":1,"deviceId":"dev-1"}`))
	f.Add([]byte(`{"v":1,"deviceId":"dev-1","acceptedSeq":3,"doneSeq":4}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseState(b, devID)
		if err != nil {
			return
		}
		if st.V != stateVersion || st.DeviceID != devID || st.DoneSeq > st.AcceptedSeq || st.Attempts < 0 {
			t.Fatalf("accepted an inconsistent state %+v", st)
		}
	})
}

func TestAppendEvent(t *testing.T) {
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "ob.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	ctx := context.Background()
	for _, c := range []struct {
		name string
		e    protocol.Event
		want string
	}{
		{"no type", protocol.Event{}, `"type"`},
		{"bad type", protocol.Event{Type: "Install Started"}, `"type"`},
		{"bad reason", protocol.Event{Type: protocol.EventInstallFailed, Reason: "Smoke Failed"}, `"reason"`},
		{"bad bundle", protocol.Event{Type: protocol.EventInstallFailed, Bundle: &protocol.BundleID{Name: "x"}}, `"bundle.version"`},
		{"data not an object", protocol.Event{Type: protocol.EventAgentStarted, Data: []byte(`[1]`)}, `"data"`},
	} {
		if _, err := AppendEvent(ctx, ob, c.e); !errors.Is(err, protocol.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid naming %s", c.name, err, c.want)
		}
	}
	if n := ob.Stats().Records; n != 0 {
		t.Fatalf("%d invalid events stored", n)
	}

	// A valid event gets its id, device and envelope on the way out.
	id, err := AppendEvent(ctx, ob, protocol.Event{Type: protocol.EventAgentStarted, DeviceID: "ignored", ID: 99, Message: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ob.Peek(1)
	if err != nil || len(recs) != 1 || recs[0].Kind != RecordEvent {
		t.Fatalf("peek %+v %v", recs, err)
	}
	u := &Uplink{cfg: Config{DeviceID: devID, Epoch: "e1"}}
	payload, err := u.eventFromRecord(recs[0])
	if err != nil {
		t.Fatal(err)
	}
	e, err := protocol.DecodeEvent(payload)
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != id || e.DeviceID != devID || e.Epoch != "e1" || e.Message != "hello" || e.Time.IsZero() {
		t.Errorf("published event %+v, want id %d", e, id)
	}
}

func TestWithReason(t *testing.T) {
	base := errors.New("boom")
	if reasonOf(WithReason("smoke-failed", base)) != "smoke-failed" {
		t.Error("reason lost")
	}
	if !errors.Is(WithReason("x", base), base) {
		t.Error("WithReason does not unwrap")
	}
	if reasonOf(WithReason("Not A Token", base)) != "" {
		t.Error("an invalid reason was kept")
	}
	if WithReason("x", nil) != nil {
		t.Error("WithReason(nil) is not nil")
	}
}

func FuzzEventRecord(f *testing.F) {
	f.Add([]byte(`{"time":"2026-03-01T12:01:40Z","type":"desired.refused","seq":12,"reason":"replay","message":"m"}`))
	f.Add([]byte(`{"type":"install.progress","progress":{"done":1,"total":2},"data":{"phase":"downloading"}}`))
	f.Add([]byte(`{"type":"x","bundle":{"name":"a","version":"1.0.0"}}`))
	f.Add([]byte(`[1]`))
	f.Add([]byte(`{"type":"x","data":[1]}`))
	u := &Uplink{cfg: Config{DeviceID: devID}}
	f.Fuzz(func(t *testing.T, payload []byte) {
		rec := outbox.Record{ID: 42, Kind: RecordEvent, Time: time.Unix(1_700_000_000, 0).UTC(), Payload: payload}
		b, err := u.eventFromRecord(rec)
		if err != nil {
			return
		}
		e, err := protocol.DecodeEvent(b)
		if err != nil {
			t.Fatalf("published an event the protocol refuses: %v\n%s", err, b)
		}
		if e.ID != 42 || e.DeviceID != devID {
			t.Fatalf("event %+v lost its id or device", e)
		}
	})
}
