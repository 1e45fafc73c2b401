package uplink

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

func eventTypes(evs []protocol.Event) []protocol.EventType {
	out := make([]protocol.EventType, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func TestDesiredApplied(t *testing.T) {
	b := startBroker(t)
	f := newFleetd(t, b.URL(), fleetdUser)
	// Published before the device connects: the retained message is what
	// it finds on subscribe.
	f.publishDesired(encode(t, desired(5, protocol.ActionInstall, "1.4.0")))

	r := newRig(t, testConfig(t, b.URL()))
	u := r.start()
	testenv.Eventually(t, "install.succeeded", func() bool { return len(f.eventsOf(protocol.EventInstallSucceeded)) == 1 })

	want := []protocol.EventType{
		protocol.EventInstallStarted,
		protocol.EventInstallProgress, // downloading (once, not per progress call)
		protocol.EventInstallProgress, // verifying
		protocol.EventInstallProgress, // activating
		protocol.EventInstallSucceeded,
	}
	evs := f.events()
	if got := eventTypes(evs); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i, e := range evs {
		if e.Seq != 5 || e.RolloutID != "ro-1" || e.Bundle == nil || e.Bundle.Version != "1.4.0" || e.DeviceID != devID {
			t.Errorf("event %d: %+v", i, e)
		}
		if i > 0 && e.ID <= evs[i-1].ID {
			t.Errorf("event ids not increasing: %d after %d", e.ID, evs[i-1].ID)
		}
	}
	var phase struct{ Phase string }
	if err := json.Unmarshal(evs[1].Data, &phase); err != nil || phase.Phase != string(protocol.PhaseDownloading) || evs[1].Progress == nil {
		t.Errorf("first progress event: %s %+v (%v)", evs[1].Data, evs[1].Progress, err)
	}
	testenv.Eventually(t, "reported appliedSeq 5, succeeded", func() bool {
		rep, _ := f.lastReported()
		return rep.AppliedSeq == 5 && rep.Install != nil && rep.Install.Phase == protocol.PhaseSucceeded &&
			rep.Active != nil && rep.Active.Version == "1.4.0"
	})

	// A rollback order, while connected.
	f.publishDesired(encode(t, desired(6, protocol.ActionRollback, "1.3.2")))
	testenv.Eventually(t, "rollback.succeeded", func() bool { return len(f.eventsOf(protocol.EventRollbackSucceeded)) == 1 })
	rb := f.eventsOf(protocol.EventRollbackSucceeded)[0]
	if rb.Reason != ReasonInstructed || rb.From == nil || rb.From.Version != "1.4.0" || rb.Bundle.Version != "1.3.2" {
		t.Errorf("rollback event %+v", rb)
	}
	if got := r.agent.appliedSeqs(); !slices.Equal(got, []uint64{5, 6}) {
		t.Errorf("Apply calls %v, want [5 6]", got)
	}
	if st := u.Stats(); st.Applied != 2 || st.AcceptedSeq != 6 {
		t.Errorf("stats %+v", st)
	}

	// After a restart the retained seq 6 comes again: a duplicate, not
	// applied again, no event.
	r.stop()
	nEvents := len(f.events())
	u = r.start()
	testenv.Eventually(t, "the duplicate after the restart", func() bool { return u.Stats().Duplicates == 1 })
	if got := r.agent.appliedSeqs(); !slices.Equal(got, []uint64{5, 6}) {
		t.Errorf("Apply calls after restart %v, want [5 6]", got)
	}
	if n := len(f.events()); n != nEvents {
		t.Errorf("%d new events for a duplicate", n-nEvents)
	}
}

// TestDesiredFailed: an Apply that fails for a reason that is not
// transient, or transiently but with its next attempt past the desired
// state's expiry, is final: reported failed, not retried, not even after
// a restart.
func TestDesiredFailed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fail   error
		reason string
	}{
		{"permanent", WithReason("smoke-failed", errApply), "smoke-failed"},
		{"transient past expiry", Transient(WithReason("download", errApply)), "download"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t)
			f := newFleetd(t, b.URL(), fleetdUser)
			cfg := testConfig(t, b.URL())
			cfg.RetryMin, cfg.RetryMax = 48*time.Hour, 48*time.Hour
			r := newRig(t, cfg)
			r.agent.fail = tc.fail
			u := r.start()
			r.waitConnected()
			f.publishDesired(encode(t, desired(3, protocol.ActionInstall, "1.4.0")))
			testenv.Eventually(t, "install.failed", func() bool { return len(f.eventsOf(protocol.EventInstallFailed)) == 1 })
			e := f.eventsOf(protocol.EventInstallFailed)[0]
			if e.Reason != tc.reason || e.Message != errApply.Error() || e.Seq != 3 {
				t.Errorf("install.failed %+v", e)
			}
			testenv.Eventually(t, "reported failed", func() bool {
				rep, _ := f.lastReported()
				return rep.AppliedSeq == 3 && rep.Install != nil && rep.Install.Phase == protocol.PhaseFailed && rep.Install.Error == errApply.Error()
			})
			if st := u.Stats(); st.ApplyFailed != 1 || st.Applied != 0 || st.Retries != 0 {
				t.Errorf("stats %+v", st)
			}
			r.stop()
			u = r.start()
			testenv.Eventually(t, "the duplicate after the restart", func() bool { return u.Stats().Duplicates == 1 })
			if got := r.agent.appliedSeqs(); !slices.Equal(got, []uint64{3}) {
				t.Errorf("Apply calls %v, want [3]", got)
			}
		})
	}
}

func TestDesiredRefused(t *testing.T) {
	f, r := newFleetRig(t)
	u := r.start()
	r.waitConnected()
	f.publishDesired(encode(t, desired(10, protocol.ActionInstall, "1.4.0")))
	testenv.Eventually(t, "seq 10 applied", func() bool { return u.Stats().Applied == 1 })

	expired := desired(11, protocol.ActionInstall, "1.5.0")
	expired.IssuedAt, expired.ExpiresAt = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	future := desired(12, protocol.ActionInstall, "1.5.0")
	future.IssuedAt = time.Now().Add(time.Hour)
	wrongDev := desired(13, protocol.ActionInstall, "1.5.0")
	wrongDev.DeviceID = "dev-2"
	invalid := desired(14, protocol.ActionInstall, "1.5.0")
	invalid.Bundle.SHA256 = ""
	invalidJSON, _ := json.Marshal(invalid) // Encode would refuse it

	cases := []struct {
		name    string
		payload []byte
		reason  string
		seq     uint64
	}{
		{"replay", encode(t, desired(7, protocol.ActionInstall, "1.2.0")), protocol.ReasonReplay, 7},
		{"expired", encode(t, expired), protocol.ReasonExpired, 11},
		{"not yet valid", encode(t, future), protocol.ReasonNotYetValid, 12},
		{"wrong device", encode(t, wrongDev), protocol.ReasonWrongDevice, 13},
		{"malformed", []byte(`{"v":1,"seq":"15"`), protocol.ReasonMalformed, 0},
		{"version", []byte(`{"v":2,"seq":16}`), protocol.ReasonVersion, 0},
		{"invalid", invalidJSON, protocol.ReasonInvalid, 0},
	}
	for i, c := range cases {
		f.publishDesired(c.payload)
		testenv.Eventually(t, c.name+" refused", func() bool { return len(f.eventsOf(protocol.EventDesiredRefused)) == i+1 })
		e := f.eventsOf(protocol.EventDesiredRefused)[i]
		if e.Reason != c.reason || e.Seq != c.seq || e.Message == "" {
			t.Errorf("%s: event %+v, want reason %q seq %d", c.name, e, c.reason, c.seq)
		}
		if got := u.Stats().Refused[c.reason]; got != 1 {
			t.Errorf("%s: counter %q = %d, want 1", c.name, c.reason, got)
		}
	}
	if got := r.agent.appliedSeqs(); !slices.Equal(got, []uint64{10}) {
		t.Fatalf("Apply calls %v, want [10]", got)
	}

	// After a restart the accepted seq is still 10: older ones are still
	// refused, newer ones applied.
	f.publishDesired(encode(t, desired(9, protocol.ActionInstall, "1.3.0")))
	testenv.Eventually(t, "seq 9 refused", func() bool { return u.Stats().Refused[protocol.ReasonReplay] == 2 })
	r.stop()
	u = r.start()
	testenv.Eventually(t, "the retained seq 9 refused after the restart", func() bool { return u.Stats().Refused[protocol.ReasonReplay] == 1 })
	f.publishDesired(encode(t, desired(8, protocol.ActionInstall, "1.3.0")))
	testenv.Eventually(t, "seq 8 refused after the restart", func() bool {
		evs := f.eventsOf(protocol.EventDesiredRefused)
		e := evs[len(evs)-1]
		return e.Seq == 8 && e.Reason == protocol.ReasonReplay
	})
	if got := u.Stats().Refused[protocol.ReasonReplay]; got != 2 {
		t.Errorf("replay counter after the restart %d, want 2", got)
	}
	f.publishDesired(encode(t, desired(20, protocol.ActionInstall, "1.6.0")))
	testenv.Eventually(t, "seq 20 applied", func() bool { return u.Stats().Applied == 1 })
	if got := r.agent.appliedSeqs(); !slices.Equal(got, []uint64{10, 20}) {
		t.Fatalf("Apply calls %v, want [10 20]", got)
	}
}

func TestInterruptedApplyResumes(t *testing.T) {
	f, r := newFleetRig(t)
	r.agent.setBlock(4)
	r.start()
	f.publishDesired(encode(t, desired(4, protocol.ActionInstall, "1.4.0")))
	testenv.Eventually(t, "Apply started", func() bool { return len(r.agent.appliedSeqs()) == 1 })

	// Shutdown in the middle of the install: no result is reported, and
	// the state says it did not finish.
	r.stop()
	if n := len(f.eventsOf(protocol.EventInstallFailed)); n != 0 {
		t.Errorf("%d install.failed events for an interrupted install", n)
	}
	st, err := openState(r.cfg.StateDir, devID)
	if err != nil {
		t.Fatal(err)
	}
	if s := st.get(); s.AcceptedSeq != 4 || s.DoneSeq != 0 || s.Attempts != 1 {
		t.Fatalf("state after the interruption %+v", s)
	}

	// On restart the retained seq 4 resumes the install.
	r.agent.mu.Lock()
	delete(r.agent.block, 4)
	r.agent.mu.Unlock()
	u := r.start()
	testenv.Eventually(t, "the resumed install to succeed", func() bool { return u.Stats().Applied == 1 })
	if got := r.agent.appliedSeqs(); !slices.Equal(got, []uint64{4, 4}) {
		t.Errorf("Apply calls %v, want [4 4]", got)
	}
	started := f.eventsOf(protocol.EventInstallStarted)
	var data struct{ Resumed bool }
	if len(started) != 2 || json.Unmarshal(started[1].Data, &data) != nil || !data.Resumed {
		t.Errorf("install.started events %+v", started)
	}
}

func TestInterruptedApplyGivesUp(t *testing.T) {
	f, r := newFleetRig(t)
	r.agent.setBlock(4)
	f.publishDesired(encode(t, desired(4, protocol.ActionInstall, "1.4.0")))
	for i := 1; i <= maxAttempts; i++ {
		r.start()
		testenv.Eventually(t, fmt.Sprintf("Apply #%d", i), func() bool { return len(r.agent.appliedSeqs()) == i })
		r.stop()
	}
	u := r.start()
	testenv.Eventually(t, "install.failed (interrupted)", func() bool { return len(f.eventsOf(protocol.EventInstallFailed)) == 1 })
	if e := f.eventsOf(protocol.EventInstallFailed)[0]; e.Reason != ReasonInterrupted || e.Seq != 4 {
		t.Errorf("event %+v", e)
	}
	if n := len(r.agent.appliedSeqs()); n != maxAttempts {
		t.Errorf("%d Apply calls, want %d", n, maxAttempts)
	}
	if st := u.Stats(); st.ApplyFailed != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestNewerDesiredSupersedesInstall(t *testing.T) {
	f, r := newFleetRig(t)
	r.agent.setBlock(3)
	u := r.start()
	r.waitConnected()
	f.publishDesired(encode(t, desired(3, protocol.ActionInstall, "1.4.0")))
	testenv.Eventually(t, "Apply of seq 3", func() bool { return len(r.agent.appliedSeqs()) == 1 })

	// A replay cannot interrupt it; a newer valid one does.
	f.publishDesired(encode(t, desired(2, protocol.ActionInstall, "1.2.0")))
	f.publishDesired(encode(t, desired(4, protocol.ActionRollback, "1.3.2")))
	testenv.Eventually(t, "the rollback", func() bool { return len(f.eventsOf(protocol.EventRollbackSucceeded)) == 1 })
	failed := f.eventsOf(protocol.EventInstallFailed)
	if len(failed) != 1 || failed[0].Seq != 3 || failed[0].Reason != ReasonSuperseded {
		t.Fatalf("install.failed events %+v, want one for seq 3, superseded", failed)
	}
	if got := r.agent.appliedSeqs(); !slices.Equal(got, []uint64{3, 4}) {
		t.Errorf("Apply calls %v, want [3 4]", got)
	}
	st := u.Stats()
	if st.Applied != 1 || st.ApplyFailed != 1 || st.AcceptedSeq != 4 {
		t.Errorf("stats %+v", st)
	}
}

func TestLatestSlot(t *testing.T) {
	l := latest{ready: make(chan struct{}, 1)}
	d := func(seq uint64) *protocol.DesiredState { return &protocol.DesiredState{Seq: seq} }
	if dropped := l.put(d(5)); dropped != nil {
		t.Fatalf("dropped %v from an empty slot", dropped)
	}
	if dropped := l.put(d(7)); dropped == nil || dropped.Seq != 5 {
		t.Fatalf("put 7 dropped %v, want 5", dropped)
	}
	if dropped := l.put(d(6)); dropped == nil || dropped.Seq != 6 {
		t.Fatalf("put 6 over 7 dropped %v, want 6 itself", dropped)
	}
	<-l.ready
	if got := l.take(); got.Seq != 7 {
		t.Fatalf("take %d, want 7", got.Seq)
	}
	if got := l.take(); got != nil {
		t.Fatalf("second take %v", got)
	}
}

func TestInterruptedApplyExpired(t *testing.T) {
	f, r := newFleetRig(t)
	r.agent.setBlock(4)
	d := desired(4, protocol.ActionInstall, "1.4.0")
	// Valid long enough for the uplink to connect and start the Apply on
	// a busy machine; the test then waits it out. Round(0) drops the
	// monotonic reading: the guard compares wall-clock times.
	d.ExpiresAt = time.Now().Add(8 * time.Second).Round(0)
	f.publishDesired(encode(t, d))
	r.start()
	testenv.Eventually(t, "Apply started", func() bool { return len(r.agent.appliedSeqs()) == 1 })
	r.stop()
	// Wait, on the wall clock the guard reads, until seq 4 has expired.
	for !time.Now().After(d.ExpiresAt) {
		time.Sleep(10 * time.Millisecond)
	}

	// The retained seq 4 comes back expired: not resumed, reported failed.
	r.start()
	testenv.Eventually(t, "install.failed (expired)", func() bool { return len(f.eventsOf(protocol.EventInstallFailed)) == 1 })
	if e := f.eventsOf(protocol.EventInstallFailed)[0]; e.Reason != protocol.ReasonExpired || e.Seq != 4 {
		t.Errorf("event %+v", e)
	}
	if n := len(r.agent.appliedSeqs()); n != 1 {
		t.Errorf("%d Apply calls, want 1", n)
	}
	// Done now: the next redelivery is a plain duplicate.
	r.stop()
	u := r.start()
	testenv.Eventually(t, "the duplicate", func() bool { return u.Stats().Duplicates == 1 })
	if n := len(f.eventsOf(protocol.EventInstallFailed)); n != 1 {
		t.Errorf("%d install.failed events, want 1", n)
	}
}

// TestDesiredRetried: an Apply that fails transiently is reported
// retrying (attempt, reason, next attempt) and tried again after the
// backoff until it succeeds; the redelivered desired state does not
// hurry it.
func TestDesiredRetried(t *testing.T) {
	b := startBroker(t)
	f := newFleetd(t, b.URL(), fleetdUser)
	cfg := testConfig(t, b.URL())
	cfg.RetryMin, cfg.RetryMax = 50*time.Millisecond, 100*time.Millisecond
	r := newRig(t, cfg)
	cut := Transient(WithReason("download", errApply))
	r.agent.failures = []error{cut, cut}
	u := r.start()
	r.waitConnected()
	f.publishDesired(encode(t, desired(3, protocol.ActionInstall, "1.4.0")))

	testenv.Eventually(t, "install.succeeded after two retries", func() bool { return len(f.eventsOf(protocol.EventInstallSucceeded)) == 1 })
	if got := r.agent.appliedSeqs(); !slices.Equal(got, []uint64{3, 3, 3}) {
		t.Errorf("Apply calls %v, want [3 3 3]", got)
	}
	retries := f.eventsOf(protocol.EventInstallRetrying)
	if len(retries) != 2 {
		t.Fatalf("%d install.retrying events, want 2", len(retries))
	}
	for i, e := range retries {
		var data struct {
			Attempt       int
			NextAttemptAt time.Time
		}
		if err := json.Unmarshal(e.Data, &data); err != nil || data.Attempt != i+1 || data.NextAttemptAt.IsZero() ||
			e.Reason != "download" || e.Message != errApply.Error() || e.Seq != 3 {
			t.Errorf("install.retrying %d: %+v %s (%v)", i, e, e.Data, err)
		}
	}
	if n := len(f.eventsOf(protocol.EventInstallFailed)); n != 0 {
		t.Errorf("%d install.failed events for a retried install", n)
	}
	// Some reported state showed the wait, with its attempt and error.
	seen := false
	for _, rep := range f.reported() {
		if in := rep.Install; in != nil && in.Phase == protocol.PhaseRetrying {
			seen = true
			if in.Attempt < 1 || in.NextAttemptAt == nil || in.Reason != "download" || in.Error != errApply.Error() {
				t.Errorf("reported retrying: %+v", in)
			}
		}
	}
	if !seen {
		t.Error("no reported state showed the install retrying")
	}
	testenv.Eventually(t, "reported succeeded at attempt 3", func() bool {
		rep, _ := f.lastReported()
		return rep.Install != nil && rep.Install.Phase == protocol.PhaseSucceeded && rep.Install.Attempt == 3 && rep.Install.NextAttemptAt == nil
	})
	if st := u.Stats(); st.Applied != 1 || st.Retries != 2 || st.ApplyFailed != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestDesiredRetryEnds: a retried desired state stops being retried when
// it fails for a reason that is not transient, and gives way at once to a
// newer desired state.
func TestDesiredRetryEnds(t *testing.T) {
	b := startBroker(t)
	f := newFleetd(t, b.URL(), fleetdUser)
	cfg := testConfig(t, b.URL())
	r := newRig(t, cfg)
	// restart runs the uplink anew with the backoff at retry and fail
	// as the next Apply's failure, and publishes seq.
	var u *Uplink
	restart := func(retry time.Duration, fail error, seq uint64, version string) {
		r.stop()
		cfg.RetryMin, cfg.RetryMax = retry, retry
		r.cfg = cfg
		r.agent.failures = []error{fail}
		u = r.start()
		r.waitConnected()
		f.publishDesired(encode(t, desired(seq, protocol.ActionInstall, version)))
	}
	restart(time.Hour, Transient(WithReason("no-space", errApply)), 3, "1.4.0")
	f.waitInstall("seq 3 waiting for its retry", 3, protocol.PhaseRetrying)
	// A reconnect redelivers seq 3: it keeps waiting for its backoff.
	r.stop()
	u = r.start()
	testenv.Eventually(t, "the redelivered seq 3 after the restart applied", func() bool {
		return u.Stats().Applied == 1
	})
	// (The restart resumed it: the interrupted wait is a first attempt.)
	if got := r.agent.appliedSeqs(); !slices.Equal(got, []uint64{3, 3}) {
		t.Fatalf("Apply calls %v, want [3 3]", got)
	}

	// A permanent failure is final, even with the backoff at 1 ms.
	restart(time.Millisecond, WithReason("signature", errApply), 4, "1.5.0")
	rep := f.waitInstall("seq 4 failed", 4, protocol.PhaseFailed)
	if in := rep.Install; in.Reason != "signature" || in.Attempt != 1 || in.NextAttemptAt != nil {
		t.Errorf("reported failed install %+v", in)
	}

	// Transient failures of seq 5, then seq 6 arrives: 5 is dropped.
	restart(time.Hour, Transient(WithReason("download", errApply)), 5, "1.6.0")
	f.waitInstall("seq 5 retrying", 5, protocol.PhaseRetrying)
	f.publishDesired(encode(t, desired(6, protocol.ActionInstall, "1.7.0")))
	testenv.Eventually(t, "seq 6 applied", func() bool { return u.Stats().Applied == 1 })
	if got := r.agent.appliedSeqs(); !slices.Equal(got, []uint64{3, 3, 4, 5, 6}) {
		t.Errorf("Apply calls %v, want [3 3 4 5 6]", got)
	}
}

func TestRetryWait(t *testing.T) {
	for _, tc := range []struct {
		n        int
		min, max time.Duration
	}{
		{1, 5 * time.Second, 10 * time.Second},
		{2, 10 * time.Second, 20 * time.Second},
		{3, 20 * time.Second, 40 * time.Second},
		{7, 5 * time.Minute, 10 * time.Minute},
		{60, 5 * time.Minute, 10 * time.Minute},
	} {
		for range 100 {
			if w := retryWait(10*time.Second, 10*time.Minute, tc.n); w < tc.min || w > tc.max {
				t.Fatalf("retryWait(attempt %d) = %v, want in [%v, %v]", tc.n, w, tc.min, tc.max)
			}
		}
	}
}
