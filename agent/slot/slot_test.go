package slot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/fetch"
	"github.com/edgefleet/edgefleet/shared/bundle"
)

func TestInstallRollbackAndReopen(t *testing.T) {
	k := newKeys(t)
	v1, v2, v3 := buildBundle(t, k, "1.0.0"), buildBundle(t, k, "1.1.0"), buildBundle(t, k, "2.0.0")
	dir := t.TempDir()
	s := openStore(t, dir, testOptions(t, k))
	assertActive(t, s, "", "")
	act := &activator{}

	sl, err := s.Install(t.Context(), Request{Bundle: v1.path}, act.activate)
	if err != nil {
		t.Fatal(err)
	}
	if sl.ID != "demo@1.0.0" || sl.Name != "demo" || sl.Version != "1.0.0" || !filepath.IsAbs(sl.Dir) || sl.InstalledAt.IsZero() {
		t.Fatalf("Install returned %+v", sl)
	}
	assertActive(t, s, "demo@1.0.0", "")

	if _, err := s.Install(t.Context(), Request{Bundle: v2.path, Sig: v2.sig}, act.activate); err != nil {
		t.Fatal(err)
	}
	assertActive(t, s, "demo@1.1.0", "demo@1.0.0")
	mustInstall(t, s, act, v3.path)
	assertActive(t, s, "demo@2.0.0", "demo@1.1.0") // 1.0.0's directory is gone

	// Rollback swaps the two slots, through the callback, without a download.
	if _, err := s.Rollback(t.Context(), act.activate); err != nil {
		t.Fatal(err)
	}
	assertActive(t, s, "demo@1.1.0", "demo@2.0.0")
	if _, err := s.Rollback(t.Context(), act.activate); err != nil {
		t.Fatal(err)
	}
	assertActive(t, s, "demo@2.0.0", "demo@1.1.0")
	want := []string{"demo@1.0.0", "demo@1.1.0", "demo@2.0.0", "demo@1.1.0", "demo@2.0.0"}
	if strings.Join(act.calls, " ") != strings.Join(want, " ") {
		t.Fatalf("activate calls %q, want %q", act.calls, want)
	}

	st := s.State()
	if st.LastError != nil || st.Generation != 5 || len(st.History) != 5 || st.History[3].Op != "rollback" {
		t.Fatalf("state %+v", st)
	}
	// The file is the truth: relative dirs, same content after a reopen.
	onDisk := stateFile(t, dir)
	if !strings.HasPrefix(onDisk.Active.Dir, "bundles/demo@2.0.0-") {
		t.Fatalf("state.json active dir %q, want bundles/demo@2.0.0-*", onDisk.Active.Dir)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Install(t.Context(), Request{Bundle: v1.path}, act.activate); !errors.Is(err, ErrClosed) {
		t.Fatalf("Install after Close: %v, want ErrClosed", err)
	}
	s2 := openStore(t, dir, testOptions(t, k))
	assertActive(t, s2, "demo@2.0.0", "demo@1.1.0")
	if a, _ := s2.Active(); a.InstalledAt.IsZero() || a.Dir != filepath.Join(dir, filepath.FromSlash(onDisk.Active.Dir)) {
		t.Fatalf("reopened active %+v", a)
	}
}

func TestInstallSameVersion(t *testing.T) {
	k := newKeys(t)
	v1 := buildBundle(t, k, "1.0.0")
	s := openStore(t, t.TempDir(), testOptions(t, k))
	act := &activator{}
	first, err := s.Install(t.Context(), Request{Bundle: v1.path}, act.activate)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Install(t.Context(), Request{Bundle: v1.path}, act.activate)
	if err != nil {
		t.Fatalf("reinstalling the active version: %v, want the active slot and nil", err)
	}
	if again != first || len(act.calls) != 1 {
		t.Fatalf("idempotent install returned %+v (active %+v), %d activations", again, first, len(act.calls))
	}
	assertActive(t, s, "demo@1.0.0", "")

	forced, err := s.Install(t.Context(), Request{Bundle: v1.path, Force: true}, act.activate)
	if err != nil {
		t.Fatal(err)
	}
	if forced.Dir == first.Dir || len(act.calls) != 2 {
		t.Fatalf("forced reinstall reused %s (%d activations)", forced.Dir, len(act.calls))
	}
	assertActive(t, s, "demo@1.0.0", "demo@1.0.0")
}

func TestDowngrade(t *testing.T) {
	k := newKeys(t)
	v1, v2 := buildBundle(t, k, "1.0.0"), buildBundle(t, k, "1.2.0")
	other := buildNamed(t, k, "other", "0.1.0")
	s := openStore(t, t.TempDir(), testOptions(t, k))
	act := &activator{}
	mustInstall(t, s, act, v2.path)
	_, err := s.Install(t.Context(), Request{Bundle: v1.path}, act.activate)
	if !errors.Is(err, ErrDowngrade) || !strings.Contains(err.Error(), "demo@1.0.0") {
		t.Fatalf("err %v, want ErrDowngrade naming demo@1.0.0", err)
	}
	assertActive(t, s, "demo@1.2.0", "")
	if le := s.State().LastError; le == nil || le.ID != "demo@1.0.0" || le.Op != "install" || !strings.Contains(le.Error, "downgrade") {
		t.Fatalf("lastError %+v", le)
	}
	if _, err := s.Install(t.Context(), Request{Bundle: v1.path, AllowDowngrade: true}, act.activate); err != nil {
		t.Fatal(err)
	}
	assertActive(t, s, "demo@1.0.0", "demo@1.2.0")
	if s.State().LastError != nil {
		t.Fatalf("lastError not cleared by a successful install")
	}
	// Versions of different bundles are not ordered.
	mustInstall(t, s, act, other.path)
	assertActive(t, s, "other@0.1.0", "demo@1.0.0")
}

func TestAgentTooOld(t *testing.T) {
	k := newKeys(t)
	spec := t.TempDir()
	os.WriteFile(filepath.Join(spec, "model.onnx"), []byte("m"), 0o644)
	os.WriteFile(filepath.Join(spec, bundle.SpecName), []byte(`name: demo
version: 1.0.0
minAgentVersion: 9.0.0
model: model.onnx
inputs: [{name: input, datatype: FP32, shape: [1]}]
outputs: [{name: output, datatype: FP32, shape: [1]}]
`), 0o644)
	b := buildSpec(t, k, spec, "demo-1.0.0.bundle", bundle.BuildOptions{}, nil)
	opts := testOptions(t, k)
	opts.AgentVersion = "1.2.3"
	s := openStore(t, t.TempDir(), opts)
	act := &activator{}
	if _, err := s.Install(t.Context(), Request{Bundle: b.path}, act.activate); !errors.Is(err, ErrAgentTooOld) {
		t.Fatalf("err %v, want ErrAgentTooOld", err)
	}
	assertActive(t, s, "", "")
	if len(act.calls) != 0 {
		t.Fatalf("activate called for a bundle this agent cannot run")
	}
}

func TestActivateFails(t *testing.T) {
	k := newKeys(t)
	v1, v2 := buildBundle(t, k, "1.0.0"), buildBundle(t, k, "2.0.0")
	dir := t.TempDir()
	s := openStore(t, dir, testOptions(t, k))
	act := &activator{}
	mustInstall(t, s, act, v1.path)
	before := stateFile(t, dir)
	smoke := errors.New("smoke vector \"two-sines\": output 0.9 differs from 0.069")
	act.fail = smoke
	_, err := s.Install(t.Context(), Request{Bundle: v2.path}, act.activate)
	if !errors.Is(err, ErrActivate) || !errors.Is(err, smoke) {
		t.Fatalf("err %v, want ErrActivate wrapping the callback's error", err)
	}
	assertActive(t, s, "demo@1.0.0", "")
	after := stateFile(t, dir)
	if *after.Active != *before.Active || after.LastKnownGood != nil {
		t.Fatalf("active moved: %+v -> %+v", before.Active, after.Active)
	}
	le := after.LastError
	if le == nil || le.ID != "demo@2.0.0" || !strings.Contains(le.Error, "two-sines") || le.Source != v2.path {
		t.Fatalf("lastError %+v, want demo@2.0.0 and the smoke failure", le)
	}
	if h := after.History[len(after.History)-1]; h.Op != "failed" || h.ID != "demo@2.0.0" {
		t.Fatalf("last history event %+v", h)
	}

	// A failing rollback leaves things as they are too.
	act.fail = nil
	mustInstall(t, s, act, v2.path)
	act.fail = smoke
	if _, err := s.Rollback(t.Context(), act.activate); !errors.Is(err, ErrActivate) {
		t.Fatalf("rollback err %v, want ErrActivate", err)
	}
	assertActive(t, s, "demo@2.0.0", "demo@1.0.0")
	if le := s.State().LastError; le == nil || le.Op != "rollback" || le.ID != "demo@1.0.0" {
		t.Fatalf("lastError %+v after a failed rollback", le)
	}
}

func TestRollbackWithoutLastKnownGood(t *testing.T) {
	k := newKeys(t)
	s := openStore(t, t.TempDir(), testOptions(t, k))
	if _, err := s.Rollback(t.Context(), (&activator{}).activate); !errors.Is(err, ErrNoLastKnownGood) {
		t.Fatalf("err %v, want ErrNoLastKnownGood", err)
	}
}

func TestRefusesBadBundles(t *testing.T) {
	k := newKeys(t)
	v1, v2 := buildBundle(t, k, "1.0.0"), buildBundle(t, k, "2.0.0")
	stranger := buildBundle(t, newKeys(t), "2.0.0")

	tampered := filepath.Join(t.TempDir(), "demo-2.0.0.bundle")
	data, _ := os.ReadFile(v2.path)
	data[len(data)/2] ^= 0x40
	os.WriteFile(tampered, data, 0o644)
	copyFile(t, v2.sig, tampered+".sig")

	unsigned := filepath.Join(t.TempDir(), "demo-2.0.0.bundle")
	copyFile(t, v2.path, unsigned)

	garbageSig := filepath.Join(t.TempDir(), "demo-2.0.0.bundle")
	copyFile(t, v2.path, garbageSig)
	os.WriteFile(garbageSig+".sig", []byte("not base64!"), 0o644)

	tests := []struct {
		name string
		req  Request
		want error
	}{
		{"tampered", Request{Bundle: tampered}, bundle.ErrSignature},
		{"unsigned", Request{Bundle: unsigned}, bundle.ErrSignature},
		{"garbage signature", Request{Bundle: garbageSig}, bundle.ErrSignature},
		{"signed by an untrusted key", Request{Bundle: stranger.path}, bundle.ErrSignature},
		{"signature of another bundle", Request{Bundle: v2.path, Sig: v1.sig}, bundle.ErrSignature},
		{"missing bundle", Request{Bundle: filepath.Join(t.TempDir(), "nope.bundle")}, fetch.ErrSource},
		{"wrong digest", Request{Bundle: v2.path, SHA256: strings.Repeat("0", 64)}, fetch.ErrDigest},
	}
	dir := t.TempDir()
	s := openStore(t, dir, testOptions(t, k))
	act := &activator{}
	mustInstall(t, s, act, v1.path)
	before := stateFile(t, dir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Install(t.Context(), tt.req, act.activate)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			assertActive(t, s, "demo@1.0.0", "")
			after := stateFile(t, dir)
			if *after.Active != *before.Active || after.LastKnownGood != nil {
				t.Fatalf("state changed: %+v", after)
			}
			if after.LastError == nil || after.LastError.Error != err.Error() {
				t.Fatalf("lastError %+v, want %q", after.LastError, err)
			}
		})
	}
	if len(act.calls) != 1 {
		t.Fatalf("activate was called for a refused bundle: %q", act.calls)
	}
	if _, err := os.Stat(v1.path); err != nil {
		t.Fatalf("a local source was removed: %v", err)
	}
}

func TestNoTrustRoot(t *testing.T) {
	k := newKeys(t)
	v1 := buildBundle(t, k, "1.0.0")
	opts := testOptions(t, k)
	opts.Trust = nil
	s := openStore(t, t.TempDir(), opts)
	if _, err := s.Install(t.Context(), Request{Bundle: v1.path}, (&activator{}).activate); !errors.Is(err, bundle.ErrSignature) {
		t.Fatalf("err %v, want ErrSignature", err)
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestNoSpace(t *testing.T) {
	k := newKeys(t)
	v1, v2 := buildBundle(t, k, "1.0.0"), buildBundle(t, k, "2.0.0")
	srv := newFileServer(t, v2)
	dir := t.TempDir()
	s := openStore(t, dir, testOptions(t, k))
	act := &activator{}
	mustInstall(t, s, act, v1.path)
	s.Close()
	opts := testOptions(t, k)
	opts.MinFreeBytes = 1 << 60 // more than any disk: the disk is "full"
	s = openStore(t, dir, opts)
	for _, src := range []string{v2.path, srv.url(v2)} {
		_, err := s.Install(t.Context(), Request{Bundle: src}, act.activate)
		if !errors.Is(err, ErrNoSpace) || !errors.Is(err, fetch.ErrNoSpace) {
			t.Fatalf("%s: err %v, want ErrNoSpace", src, err)
		}
		if !strings.Contains(err.Error(), "need") || !strings.Contains(err.Error(), "free") {
			t.Fatalf("error %q does not name the bytes needed and free", err)
		}
		assertActive(t, s, "demo@1.0.0", "")
		if got := listDir(t, filepath.Join(dir, downloadsDir)); len(got) != 0 {
			t.Fatalf("downloads/ holds %q", got)
		}
	}
	if len(act.calls) != 1 {
		t.Fatalf("activate called without space: %q", act.calls)
	}
}

func TestInstallFromURLWithCuts(t *testing.T) {
	k := newKeys(t)
	v1, v2 := buildBundle(t, k, "1.0.0"), buildBundle(t, k, "2.0.0")
	srv := newFileServer(t, v1, v2)
	dir := t.TempDir()
	opts := testOptions(t, k)
	opts.Fetch.RetryWaitMin = time.Millisecond
	opts.Fetch.RetryWaitMax = 5 * time.Millisecond
	opts.Fetch.MaxResumes = -1 // a cut fails the Install; the next one resumes
	s := openStore(t, dir, opts)
	act := &activator{}
	mustInstall(t, s, act, srv.url(v1))
	srv.mu.Lock()
	srv.cutAfter = 300
	srv.mu.Unlock()
	_, err := s.Install(t.Context(), Request{Bundle: srv.url(v2)}, act.activate)
	if !errors.Is(err, fetch.ErrInterrupted) {
		t.Fatalf("err %v, want ErrInterrupted", err)
	}
	assertActive(t, s, "demo@1.0.0", "")
	// The part file survives a restart of the agent and is resumed.
	s.Close()
	s = openStore(t, dir, opts)
	parts := listDir(t, filepath.Join(dir, downloadsDir))
	if len(parts) != 1 || !strings.HasSuffix(parts[0], "-demo-2.0.0.bundle.part") {
		t.Fatalf("downloads/ holds %q, want the bundle's part file", parts)
	}
	if _, err := s.Install(t.Context(), Request{Bundle: srv.url(v2), SHA256: sha(t, v2.path)}, act.activate); err != nil {
		t.Fatal(err)
	}
	assertActive(t, s, "demo@2.0.0", "demo@1.0.0")
	if got := srv.ranges[len(srv.ranges)-1]; got != "bytes=300-" {
		t.Fatalf("last bundle request had Range %q, want a resume from byte 300", got)
	}
	if got := listDir(t, filepath.Join(dir, downloadsDir)); len(got) != 0 {
		t.Fatalf("downloads/ holds %q after the install", got)
	}
	if src := s.State().History; len(src) == 0 {
		t.Fatal("no history")
	}
}

func sha(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestBusy(t *testing.T) {
	k := newKeys(t)
	v1, v2 := buildBundle(t, k, "1.0.0"), buildBundle(t, k, "2.0.0")
	s := openStore(t, t.TempDir(), testOptions(t, k))
	act := &activator{}
	mustInstall(t, s, act, v1.path)
	entered, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := s.Install(t.Context(), Request{Bundle: v2.path}, func(ctx context.Context, dir string, m *bundle.Manifest) error {
			close(entered)
			<-release
			return nil
		})
		done <- err
	}()
	<-entered
	if _, err := s.Install(t.Context(), Request{Bundle: v2.path}, act.activate); !errors.Is(err, ErrBusy) {
		t.Fatalf("concurrent Install: %v, want ErrBusy", err)
	}
	if _, err := s.Rollback(t.Context(), act.activate); !errors.Is(err, ErrBusy) {
		t.Fatalf("concurrent Rollback: %v, want ErrBusy", err)
	}
	// Readers are not blocked by a running install.
	if a, _ := s.Active(); a.ID != "demo@1.0.0" {
		t.Fatalf("active during install: %s", a.ID)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	assertActive(t, s, "demo@2.0.0", "demo@1.0.0")
	if le := s.State().LastError; le != nil {
		t.Fatalf("ErrBusy was recorded as a failure: %+v", le)
	}
}

func TestCancelledInstall(t *testing.T) {
	k := newKeys(t)
	v1, v2 := buildBundle(t, k, "1.0.0"), buildBundle(t, k, "2.0.0")
	srv := newFileServer(t, v2)
	s := openStore(t, t.TempDir(), testOptions(t, k))
	if _, err := s.Install(t.Context(), Request{Bundle: v1.path}, (&activator{}).activate); err != nil {
		t.Fatal(err)
	}
	stalled := make(chan struct{})
	srv.mu.Lock()
	srv.stall = stalled
	srv.mu.Unlock()
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-stalled
		cancel()
	}()
	_, err := s.Install(ctx, Request{Bundle: srv.url(v2)}, (&activator{}).activate)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	assertActive(t, s, "demo@1.0.0", "")
}

func TestLocked(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	s := openStore(t, dir, testOptions(t, k))
	if _, err := Open(dir, testOptions(t, k)); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	s.Close()
	s2, err := Open(dir, testOptions(t, k))
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}

func TestRequestID(t *testing.T) {
	k := newKeys(t)
	v1, v2 := buildBundle(t, k, "1.0.0"), buildBundle(t, k, "2.0.0")
	srv := newFileServer(t, v1, v2)
	s := openStore(t, t.TempDir(), testOptions(t, k))
	act := &activator{}
	if _, err := s.Install(t.Context(), Request{Bundle: srv.url(v1), ID: "demo@1.0.0"}, act.activate); err != nil {
		t.Fatal(err)
	}
	// The registry serves 1.0.0 where 2.0.0 was asked for: refused, even
	// though it is validly signed.
	_, err := s.Install(t.Context(), Request{Bundle: srv.url(v1), ID: "demo@2.0.0", Force: true}, act.activate)
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("err %v, want ErrMismatch", err)
	}
	assertActive(t, s, "demo@1.0.0", "")
	// The active version with its ID: no download at all.
	srv.mu.Lock()
	n := len(srv.ranges)
	srv.mu.Unlock()
	if sl, err := s.Install(t.Context(), Request{Bundle: srv.url(v1), ID: "demo@1.0.0"}, act.activate); err != nil || sl.ID != "demo@1.0.0" {
		t.Fatalf("Install of the active ID: %+v, %v", sl, err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.ranges) != n {
		t.Fatalf("the active version was downloaded again")
	}
	if len(act.calls) != 1 {
		t.Fatalf("activate calls %q", act.calls)
	}
}

func TestRollbackVerifiesLastKnownGood(t *testing.T) {
	k := newKeys(t)
	dir, _, lkg := twoVersions(t, k)
	s := openStore(t, dir, testOptions(t, k))
	// Bit rot in the model file of the last-known-good.
	p := filepath.Join(lkg.Dir, "model.onnx")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	act := &activator{}
	if _, err := s.Rollback(t.Context(), act.activate); !errors.Is(err, bundle.ErrDigest) {
		t.Fatalf("err %v, want bundle.ErrDigest", err)
	}
	if len(act.calls) != 0 {
		t.Fatal("activate called with a corrupt directory")
	}
	if a, _ := s.Active(); a.ID != "demo@2.0.0" {
		t.Fatalf("active %s after a refused rollback", a.ID)
	}
	if le := s.State().LastError; le == nil || le.Op != "rollback" || !strings.Contains(le.Error, "model.onnx") {
		t.Fatalf("lastError %+v", le)
	}
}
