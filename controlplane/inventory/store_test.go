package inventory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// The embedded broker's Authenticator and CertAuthorizer
// (controlplane/broker), spelled out so this package does not depend on it.
var _ interface {
	AuthenticateDevice(username, password string) (deviceID string, ok bool)
	AuthorizeCertDevice(deviceID string) bool
} = (*Store)(nil)

const testToken = "enrol-token-0123456789abcdef"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testOptions() Options {
	return Options{EnrolTokens: map[string]string{"factory": testToken}}
}

// openAt opens the store at path and closes it at the end of the test.
func openAt(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "inventory.db")
	return openAt(t, path, testOptions()), path
}

func enroll(t testing.TB, s *Store, id string, labels map[string]string) Credentials {
	t.Helper()
	c, err := s.Enroll(context.Background(), id, labels, testToken)
	if err != nil {
		t.Fatalf("Enroll(%q): %v", id, err)
	}
	return c
}

func desired(bundleVersion string) func(*protocol.DesiredState) (protocol.DesiredState, error) {
	return func(*protocol.DesiredState) (protocol.DesiredState, error) {
		return protocol.DesiredState{
			IssuedAt:  t0,
			ExpiresAt: t0.Add(24 * time.Hour),
			Action:    protocol.ActionInstall,
			Bundle: protocol.BundleRef{
				Name: "silero-vad", Version: bundleVersion,
				URL: "https://fleetd.example/b", SigURL: "https://fleetd.example/b.sig",
				SHA256: strings.Repeat("ab", 32), Size: 1234,
			},
		}, nil
	}
}

func reported(id string, active string) *protocol.ReportedState {
	return &protocol.ReportedState{
		V: protocol.Version, DeviceID: id, Time: t0, AgentVersion: "0.3.1",
		Labels:     map[string]string{"hw": "jetson-orin", "arch": "arm64"},
		Active:     &protocol.BundleID{Name: "silero-vad", Version: active},
		Provider:   "cuda",
		AppliedSeq: 3,
		Buffer:     protocol.BufferStats{Records: 12, Bytes: 3400, Dropped: 2},
	}
}

func status(id string, state protocol.State, session uint64) *protocol.Status {
	return &protocol.Status{V: protocol.Version, DeviceID: id, State: state, Session: session, Time: t0, AgentVersion: "0.3.1"}
}

func TestOpenOptions(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{name: "short token", opts: Options{EnrolTokens: map[string]string{"a": "short"}}, wantErr: `enrolment token "a" is 5 bytes`},
		{name: "unnamed token", opts: Options{EnrolTokens: map[string]string{"": testToken}}, wantErr: "empty name"},
		{name: "negative runs", opts: Options{DedupRuns: -1}, wantErr: "DedupRuns -1"},
	}
	for _, tc := range tests {
		_, err := Open(filepath.Join(dir, tc.name+".db"), tc.opts)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: Open error = %v, want ErrInvalid containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestOpenLockedFile(t *testing.T) {
	_, path := newStore(t)
	_, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open = %v, want a lock error", err)
	}
}

func TestEnroll(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		opts    Options
		id      string
		labels  map[string]string
		token   string
		wantErr error
		errText string
	}{
		{name: "ok", id: "dev-1", labels: map[string]string{"region": "eu"}, token: testToken},
		{name: "bad token", id: "dev-1", token: testToken + "x", wantErr: ErrEnrolToken},
		{name: "empty token", id: "dev-1", token: "", wantErr: ErrEnrolToken},
		{name: "no tokens configured", opts: Options{}, id: "dev-1", token: testToken, wantErr: ErrEnrolToken},
		{name: "bad id", id: "dev/1", token: testToken, wantErr: ErrInvalid, errText: "invalid device id"},
		{name: "bad label", id: "dev-1", labels: map[string]string{"a": "b,c"}, token: testToken, wantErr: ErrInvalid, errText: `label "a"`},
		{name: "second token", opts: Options{EnrolTokens: map[string]string{"factory": testToken, "site": "site-token-0123456789"}},
			id: "dev-1", token: "site-token-0123456789"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			if opts.EnrolTokens == nil && tc.name != "no tokens configured" {
				opts = testOptions()
			}
			s := openAt(t, filepath.Join(t.TempDir(), "inv.db"), opts)
			c, err := s.Enroll(ctx, tc.id, tc.labels, tc.token)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("Enroll error = %v, want %v containing %q", err, tc.wantErr, tc.errText)
				}
				if _, err := s.Get(tc.id); !errors.Is(err, ErrNotFound) {
					t.Errorf("refused enrolment left a device: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Enroll: %v", err)
			}
			if c.DeviceID != tc.id || c.Username != tc.id || len(c.Password) < 40 {
				t.Errorf("credentials = %+v", c)
			}
			d, err := s.Get(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if d.Enrolment.Method != EnrolToken || d.Enrolment.Count != 1 || d.Created.IsZero() || !maps.Equal(d.Labels, tc.labels) {
				t.Errorf("device = %+v", d)
			}
			if id, ok := s.Authenticate(tc.id, c.Password); !ok || id != tc.id {
				t.Errorf("Authenticate with the issued password = %q, %v", id, ok)
			}
		})
	}
}

func TestEnrollRecordsTokenName(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "inv.db"), Options{EnrolTokens: map[string]string{
		"factory": testToken, "berlin": "berlin-token-0123456789",
	}})
	if _, err := s.Enroll(context.Background(), "dev-1", nil, "berlin-token-0123456789"); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Get("dev-1")
	if d.Enrolment.Token != "berlin" {
		t.Errorf("Enrolment.Token = %q, want berlin", d.Enrolment.Token)
	}
}

func TestReenrol(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	first := enroll(t, s, "dev-1", map[string]string{"region": "eu"})
	if _, err := s.Enroll(ctx, "dev-1", nil, testToken); !errors.Is(err, ErrExists) {
		t.Fatalf("second Enroll = %v, want ErrExists", err)
	}
	if _, ok := s.Authenticate("dev-1", first.Password); !ok {
		t.Fatal("a refused re-enrolment broke the existing password")
	}

	opts := testOptions()
	opts.AllowReenrol = true
	s2 := openAt(t, filepath.Join(t.TempDir(), "inv.db"), opts)
	a := enroll(t, s2, "dev-1", map[string]string{"region": "eu"})
	if _, err := s2.SetDesired("dev-1", desired("1.0.0")); err != nil {
		t.Fatal(err)
	}
	b := enroll(t, s2, "dev-1", nil)
	if _, ok := s2.Authenticate("dev-1", a.Password); ok {
		t.Error("the old password still works after re-enrolment")
	}
	if _, ok := s2.Authenticate("dev-1", b.Password); !ok {
		t.Error("the new password does not work")
	}
	d, _ := s2.Get("dev-1")
	if d.Labels["region"] != "eu" || d.Desired == nil || d.Enrolment.Count != 2 {
		t.Errorf("re-enrolment lost state: %+v", d)
	}
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	c := enroll(t, s, "dev-1", nil)
	other := enroll(t, s, "dev-2", nil)
	tests := []struct {
		user, pass string
		ok         bool
	}{
		{"dev-1", c.Password, true},
		{"dev-1", c.Password, true}, // cached
		{"dev-2", other.Password, true},
		{"dev-1", other.Password, false},
		{"dev-1", c.Password + "x", false},
		{"dev-1", "", false},
		{"dev-3", c.Password, false},
		{"", c.Password, false},
		{"dev/1", c.Password, false},
	}
	for _, tc := range tests {
		id, ok := s.Authenticate(tc.user, tc.pass)
		if ok != tc.ok || (ok && id != tc.user) {
			t.Errorf("Authenticate(%q, ...) = %q, %v; want ok=%v", tc.user, id, ok, tc.ok)
		}
	}

	// A reset password replaces the cached one at once.
	reset, err := s.ResetPassword(ctx, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Authenticate("dev-1", c.Password); ok {
		t.Error("old password works after ResetPassword")
	}
	if _, ok := s.Authenticate("dev-1", reset.Password); !ok {
		t.Error("reset password does not work")
	}
	if _, err := s.ResetPassword(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ResetPassword(unknown) = %v, want ErrNotFound", err)
	}

	// Deleting the device revokes it, cached or not.
	if err := s.Delete("dev-1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Authenticate("dev-1", reset.Password); ok {
		t.Error("deleted device still authenticates")
	}
}

func TestCertEnrolment(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	if s.AuthorizeCertDevice("cam-1") {
		t.Fatal("unknown certificate device authorized without CertAutoEnrol")
	}
	if err := s.EnrollCert(ctx, "cam-1", map[string]string{"hw": "rpi4"}); err != nil {
		t.Fatal(err)
	}
	if err := s.EnrollCert(ctx, "cam-1", nil); !errors.Is(err, ErrExists) {
		t.Fatalf("second EnrollCert = %v, want ErrExists", err)
	}
	if !s.AuthorizeCertDevice("cam-1") {
		t.Fatal("enrolled certificate device refused")
	}
	if _, ok := s.Authenticate("cam-1", ""); ok {
		t.Fatal("a certificate device logs in without a password")
	}
	if s.AuthorizeCertDevice("bad/cn") {
		t.Fatal("invalid CN authorized")
	}

	opts := testOptions()
	opts.CertAutoEnrol = true
	auto := openAt(t, filepath.Join(t.TempDir(), "inv.db"), opts)
	for i := range 2 { // enrols, then finds it enrolled
		if !auto.AuthorizeCertDevice("cam-2") {
			t.Fatalf("call %d: CertAutoEnrol did not authorize a new certificate device", i+1)
		}
	}
	d, err := auto.Get("cam-2")
	if err != nil || d.Enrolment.Method != EnrolCert {
		t.Fatalf("auto-enrolled device = %+v, %v", d, err)
	}
}

func TestListSelectors(t *testing.T) {
	s, _ := newStore(t)
	enroll(t, s, "a", map[string]string{"region": "eu", "tier": "canary"})
	enroll(t, s, "b", map[string]string{"region": "eu"})
	enroll(t, s, "c", map[string]string{"region": "us"})
	// b reports hw=jetson-orin and region=us: the inventory's region wins.
	rs := reported("b", "1.0.0")
	rs.Labels = map[string]string{"hw": "jetson-orin", "region": "us"}
	if err := s.UpdateReported("b", rs, t0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sel  string
		want string
	}{
		{"", "a,b,c"},
		{"region=eu", "a,b"},
		{"region=eu,tier!=canary", "b"},
		{"hw=jetson-orin", "b"},
		{"hw=jetson-orin,region=us", ""},
		{"!tier", "b,c"},
		{"tier", "a"},
	}
	for _, tc := range tests {
		devs, err := s.List(MustParseSelector(tc.sel))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range devs {
			ids = append(ids, d.ID)
		}
		if got := strings.Join(ids, ","); got != tc.want {
			t.Errorf("List(%q) = %q, want %q", tc.sel, got, tc.want)
		}
	}
}

func TestSetLabels(t *testing.T) {
	s, _ := newStore(t)
	enroll(t, s, "a", map[string]string{"region": "eu"})
	if err := s.SetLabels("a", map[string]string{"region": "us", "tier": "canary"}); err != nil {
		t.Fatal(err)
	}
	d, _ := s.Get("a")
	if !maps.Equal(d.Labels, map[string]string{"region": "us", "tier": "canary"}) {
		t.Errorf("labels = %v", d.Labels)
	}
	if err := s.SetLabels("a", map[string]string{"bad key": "x"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetLabels(bad) = %v, want ErrInvalid", err)
	}
	if err := s.SetLabels("nope", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetLabels(unknown) = %v, want ErrNotFound", err)
	}
}

func TestUpdateReported(t *testing.T) {
	s, _ := newStore(t)
	enroll(t, s, "dev-1", nil)
	rs := reported("dev-1", "1.2.0")
	if err := s.UpdateReported("dev-1", rs, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	rs.Provider = "changed-after-the-call"
	d, _ := s.Get("dev-1")
	if d.Reported == nil || d.Reported.Active.Version != "1.2.0" || d.Reported.Provider != "cuda" ||
		d.Reported.Buffer.Dropped != 2 || !d.ReportedAt.Equal(t0.Add(time.Minute)) || !d.LastSeen.Equal(t0.Add(time.Minute)) {
		t.Errorf("device = %+v, reported = %+v", d, d.Reported)
	}

	bad := reported("dev-1", "1.2.0")
	bad.AgentVersion = ""
	if err := s.UpdateReported("dev-1", bad, t0); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "agentVersion") {
		t.Errorf("invalid reported state: %v", err)
	}
	if err := s.UpdateReported("dev-1", reported("dev-2", "1.0.0"), t0); !errors.Is(err, ErrInvalid) {
		t.Errorf("reported state of another device: %v", err)
	}
	if err := s.UpdateReported("dev-2", reported("dev-2", "1.0.0"), t0); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown device: %v", err)
	}
}

func TestSetStatusSessions(t *testing.T) {
	on, off := protocol.StateOnline, protocol.StateOffline
	steps := []struct {
		state   protocol.State
		session uint64
		applied bool
		online  bool
	}{
		{on, 1, true, true},
		{on, 1, false, true},   // retained redelivery
		{off, 1, true, false},  // will of session 1
		{on, 1, false, false},  // online of a session already offline
		{on, 3, true, true},    // reconnected
		{off, 2, false, true},  // late will of an older connection
		{off, 3, true, false},  // clean disconnect
		{off, 3, false, false}, // and its will
	}
	s, _ := newStore(t)
	enroll(t, s, "dev-1", nil)
	for i, st := range steps {
		at := t0.Add(time.Duration(i) * time.Second)
		applied, err := s.SetStatus("dev-1", status("dev-1", st.state, st.session), at)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := s.Get("dev-1")
		if applied != st.applied || d.Status.Online != st.online {
			t.Errorf("step %d (%s session %d): applied=%v online=%v, want %v %v", i, st.state, st.session, applied, d.Status.Online, st.applied, st.online)
		}
		if !d.LastSeen.Equal(at) {
			t.Errorf("step %d: LastSeen = %v, want %v", i, d.LastSeen, at)
		}
	}
	if _, err := s.SetStatus("dev-1", &protocol.Status{V: 1, DeviceID: "dev-1", State: "away", Session: 4}, t0); !errors.Is(err, ErrInvalid) {
		t.Errorf("invalid status: %v", err)
	}
}

func TestTouch(t *testing.T) {
	s, _ := newStore(t)
	enroll(t, s, "dev-1", nil)
	for _, at := range []time.Time{t0.Add(time.Hour), t0} {
		if err := s.Touch("dev-1", at); err != nil {
			t.Fatal(err)
		}
	}
	d, _ := s.Get("dev-1")
	if !d.LastSeen.Equal(t0.Add(time.Hour)) {
		t.Errorf("LastSeen = %v, want the latest", d.LastSeen)
	}
	if err := s.Touch("nope", t0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Touch(unknown) = %v", err)
	}
}

func TestSetDesired(t *testing.T) {
	s, _ := newStore(t)
	enroll(t, s, "dev-1", nil)
	d1, err := s.SetDesired("dev-1", desired("1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	if d1.Seq != 1 || d1.DeviceID != "dev-1" || d1.V != protocol.Version {
		t.Errorf("first desired = %+v", d1)
	}
	var sawPrev *protocol.DesiredState
	d2, err := s.SetDesired("dev-1", func(prev *protocol.DesiredState) (protocol.DesiredState, error) {
		sawPrev = prev
		next, _ := desired("1.1.0")(prev)
		next.Seq = 999 // ignored: the store assigns seqs
		return next, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if sawPrev == nil || sawPrev.Seq != 1 || sawPrev.Bundle.Version != "1.0.0" || d2.Seq != 2 {
		t.Errorf("prev = %+v, next = %+v", sawPrev, d2)
	}

	// fn's error aborts without using a seq.
	errNoChange := errors.New("no change")
	if _, err := s.SetDesired("dev-1", func(*protocol.DesiredState) (protocol.DesiredState, error) {
		return protocol.DesiredState{}, errNoChange
	}); err != errNoChange {
		t.Errorf("SetDesired with failing fn = %v, want fn's error as is", err)
	}
	// An invalid state is refused without using a seq.
	if _, err := s.SetDesired("dev-1", func(*protocol.DesiredState) (protocol.DesiredState, error) {
		return protocol.DesiredState{Action: protocol.ActionInstall}, nil
	}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "issuedAt") {
		t.Errorf("invalid desired state: %v", err)
	}
	d3, err := s.SetDesired("dev-1", desired("1.2.0"))
	if err != nil || d3.Seq != 3 {
		t.Errorf("after refusals: %+v, %v", d3, err)
	}
	got, _ := s.Get("dev-1")
	if got.Desired == nil || got.Desired.Seq != 3 || got.Desired.Bundle.Version != "1.2.0" {
		t.Errorf("stored desired = %+v", got.Desired)
	}
	if _, err := s.SetDesired("nope", desired("1.0.0")); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetDesired(unknown) = %v", err)
	}
}

// TestReopenKeepsEverything: everything the store holds survives closing
// and reopening the file, and seqs carry on across restarts and across
// deleting and re-enrolling a device.
func TestReopenKeepsEverything(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "inventory.db")
	s := openAt(t, path, testOptions())
	creds := enroll(t, s, "dev-1", map[string]string{"region": "eu"})
	if err := s.EnrollCert(ctx, "cam-1", map[string]string{"hw": "rpi4"}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateReported("dev-1", reported("dev-1", "1.0.0"), t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetStatus("dev-1", status("dev-1", protocol.StateOnline, 7), t0); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.SetDesired("dev-1", desired("1.0.0")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SeenRecords("dev-1", "ep1", []uint64{1, 2, 3, 5}); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Get("dev-1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Get("dev-1"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}

	s = openAt(t, path, testOptions())
	after, err := s.Get("dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if a, b := cptest.JSON(t, after), cptest.JSON(t, before); a != b {
		t.Errorf("device changed across reopen:\n%s\n%s", a, b)
	}
	if !after.Status.Online || after.Status.Session != 7 || after.Desired.Seq != 3 {
		t.Errorf("after reopen: %+v", after)
	}
	if _, ok := s.Authenticate("dev-1", creds.Password); !ok {
		t.Error("password lost across reopen")
	}
	if !s.AuthorizeCertDevice("cam-1") {
		t.Error("certificate device lost across reopen")
	}
	dups, err := s.SeenRecords("dev-1", "ep1", []uint64{1, 2, 3, 4, 5, 6})
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, true, true, false, true, false}; fmt.Sprint(dups) != fmt.Sprint(want) {
		t.Errorf("dedup after reopen = %v, want %v", dups, want)
	}
	d, err := s.SetDesired("dev-1", desired("1.0.1"))
	if err != nil || d.Seq != 4 {
		t.Fatalf("seq after reopen = %d, %v; want 4", d.Seq, err)
	}

	// Delete and re-enrol: seqs are never reused; dedup starts over.
	if err := s.Delete("dev-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("dev-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v", err)
	}
	s.Close()
	s = openAt(t, path, testOptions())
	enroll(t, s, "dev-1", nil)
	d, err = s.SetDesired("dev-1", desired("1.0.1"))
	if err != nil || d.Seq != 5 {
		t.Fatalf("seq after delete and re-enrol = %d, %v; want 5", d.Seq, err)
	}
	if dup, err := s.SeenRecord("dev-1", "ep1", 1); err != nil || dup {
		t.Errorf("record 1 after re-enrol: dup=%v err=%v, want a fresh window", dup, err)
	}
}

func TestSeenRecords(t *testing.T) {
	s, path := newStore(t)
	enroll(t, s, "dev-1", nil)
	enroll(t, s, "dev-2", nil)

	dups, err := s.SeenRecords("dev-1", "", []uint64{1, 2, 2, 4, 3})
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{false, false, true, false, false}; fmt.Sprint(dups) != fmt.Sprint(want) {
		t.Errorf("first batch = %v, want %v", dups, want)
	}
	// Windows are per device and per epoch.
	for _, c := range []struct{ id, epoch string }{{"dev-2", ""}, {"dev-1", "e2"}} {
		if dup, err := s.SeenRecord(c.id, c.epoch, 1); err != nil || dup {
			t.Errorf("%s epoch %q record 1: dup=%v err=%v", c.id, c.epoch, dup, err)
		}
	}
	if dup, _ := s.SeenRecord("dev-1", "", 4); !dup {
		t.Error("redelivered record 4 not detected")
	}

	for _, tc := range []struct {
		id, epoch string
		ids       []uint64
		want      error
		text      string
	}{
		{"dev-1", "", []uint64{1, 0}, ErrInvalid, "index 1 is 0"},
		{"dev-1", "bad epoch", []uint64{1}, ErrInvalid, `epoch "bad epoch"`},
		{"nope", "", []uint64{1}, ErrNotFound, `"nope"`},
	} {
		if _, err := s.SeenRecords(tc.id, tc.epoch, tc.ids); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("SeenRecords(%q, %q, %v) = %v, want %v containing %q", tc.id, tc.epoch, tc.ids, err, tc.want, tc.text)
		}
	}

	// Only the most recently used epochs keep a window.
	s.Close()
	opts := testOptions()
	opts.DedupEpochs = 2
	s = openAt(t, path, opts)
	for _, ep := range []string{"e3", "e4"} { // evicts "" then "e2"
		if _, err := s.SeenRecord("dev-1", ep, 1); err != nil {
			t.Fatal(err)
		}
	}
	if dup, _ := s.SeenRecord("dev-1", "e4", 1); !dup {
		t.Error("e4 window lost")
	}
	if dup, _ := s.SeenRecord("dev-1", "", 1); dup {
		t.Error(`epoch "" should have been evicted`)
	}
}

// TestConcurrent hammers one store from many goroutines (run with -race):
// every record is counted exactly once and seqs are unique and dense.
func TestConcurrent(t *testing.T) {
	s, _ := newStore(t)
	const devices, workers, records = 4, 8, 60
	creds := map[string]Credentials{}
	for i := range devices {
		id := fmt.Sprintf("dev-%d", i)
		creds[id] = enroll(t, s, id, nil)
	}
	var (
		mu      sync.Mutex
		fresh   = map[string]int{}
		seqs    = map[string]map[uint64]bool{}
		wg      sync.WaitGroup
		errOnce sync.Once
		failure error
	)
	fail := func(err error) { errOnce.Do(func() { failure = err }) }
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 1; r <= records; r++ {
				id := fmt.Sprintf("dev-%d", (w+r)%devices)
				// Every worker delivers every record id of every device:
				// each must be fresh exactly once.
				dups, err := s.SeenRecords(id, "e", []uint64{uint64(r), uint64(r + records)})
				if err != nil {
					fail(err)
					return
				}
				n := 0
				for _, d := range dups {
					if !d {
						n++
					}
				}
				mu.Lock()
				fresh[id] += n
				mu.Unlock()
				if r%10 == 0 {
					d, err := s.SetDesired(id, desired("1.0.0"))
					if err != nil {
						fail(err)
						return
					}
					mu.Lock()
					if seqs[id] == nil {
						seqs[id] = map[uint64]bool{}
					}
					if seqs[id][d.Seq] {
						fail(fmt.Errorf("seq %d issued twice to %s", d.Seq, id))
					}
					seqs[id][d.Seq] = true
					mu.Unlock()
				}
				if err := s.UpdateReported(id, reported(id, "1.0.0"), t0); err != nil {
					fail(err)
					return
				}
				if _, err := s.SetStatus(id, status(id, protocol.StateOnline, uint64(r)), t0); err != nil {
					fail(err)
					return
				}
				if _, ok := s.Authenticate(id, creds[id].Password); !ok {
					fail(fmt.Errorf("%s: authentication failed", id))
					return
				}
				if _, err := s.List(MustParseSelector("")); err != nil {
					fail(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	// Worker w hits device (w+r)%devices: with workers a multiple of
	// devices, every device sees every r, so 2*records fresh ids each.
	for id := range creds {
		if fresh[id] != 2*records {
			t.Errorf("%s: %d records counted, want %d", id, fresh[id], 2*records)
		}
		for seq := uint64(1); seq <= uint64(len(seqs[id])); seq++ {
			if !seqs[id][seq] {
				t.Errorf("%s: seqs %v are not 1..%d", id, seqs[id], len(seqs[id]))
				break
			}
		}
	}
}

// TestGroupCommitIsolatesFailures: a failing write sharing a group commit
// gets its own error, and the writes beside it still commit.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	s, _ := newStore(t)
	enroll(t, s, "dev-1", nil)
	const n = 64
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "dev-1"
			if i%3 == 0 {
				id = "nope"
			}
			_, errs[i] = s.SeenRecord(id, "", uint64(i+1))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i%3 == 0) != errors.Is(err, ErrNotFound) || (i%3 != 0 && err != nil) {
			t.Errorf("write %d: %v", i, err)
		}
	}
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	dups, err := s.SeenRecords("dev-1", "", ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, dup := range dups {
		if dup != (i%3 != 0) {
			t.Errorf("record %d: duplicate = %v after the group", i+1, dup)
		}
	}
}
