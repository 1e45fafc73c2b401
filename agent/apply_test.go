package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/fetch"
	"github.com/edgefleet/edgefleet/agent/uplink"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/version"
)

// registry serves bundle files over HTTP and counts the requests.
type registry struct {
	*httptest.Server
	mu   sync.Mutex
	hits map[string]int
}

func newRegistry(t *testing.T, bs ...built) *registry {
	t.Helper()
	r := &registry{hits: map[string]int{}}
	files := map[string]string{}
	for _, b := range bs {
		files["/"+filepath.Base(b.path)] = b.path
		files["/"+filepath.Base(b.sig)] = b.sig
	}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.hits[req.URL.Path]++
		r.mu.Unlock()
		p, ok := files[req.URL.Path]
		if !ok {
			http.NotFound(w, req)
			return
		}
		http.ServeFile(w, req, p)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *registry) requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, h := range r.hits {
		n += h
	}
	return n
}

// ref is the desired-state reference of b on r.
func (r *registry) ref(t *testing.T, b built) protocol.BundleRef {
	t.Helper()
	data, err := os.ReadFile(b.path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return protocol.BundleRef{
		Name: b.m.Name, Version: b.m.Version,
		URL:    r.URL + "/" + filepath.Base(b.path),
		SigURL: r.URL + "/" + filepath.Base(b.sig),
		SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)),
	}
}

func desired(seq uint64, action protocol.Action, ref protocol.BundleRef) *protocol.DesiredState {
	now := time.Now().UTC()
	return &protocol.DesiredState{
		V: protocol.Version, DeviceID: "test-device", Seq: seq, IssuedAt: now, ExpiresAt: now.Add(time.Hour),
		Action: action, Bundle: ref,
	}
}

// phases records the install phases Apply reports.
type phases struct {
	mu   sync.Mutex
	seen []protocol.InstallPhase
}

func (p *phases) progress(ph protocol.InstallPhase, _ *protocol.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, ph)
}

// TestApplyDesiredState drives the agent as the uplink does: installs
// downloaded from a registry with digests checked, a rollback to the
// last-known-good without a download, refusals with reasons.
func TestApplyDesiredState(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	v2 := sileroBundle(t, spec{version: "2.0.0"})
	v3 := sileroBundle(t, spec{version: "3.0.0"})
	reg := newRegistry(t, v1, v2, v3)
	s := newSetup(t, "")
	a := startAgent(t, s)
	ctx := t.Context()

	var ph phases
	if err := a.Apply(ctx, desired(1, protocol.ActionInstall, reg.ref(t, v1)), ph.progress); err != nil {
		t.Fatal(err)
	}
	want := []protocol.InstallPhase{protocol.PhaseDownloading, protocol.PhaseVerifying, protocol.PhaseSmokeTest, protocol.PhaseActivating}
	if len(ph.seen) != len(want) {
		t.Fatalf("phases %v, want %v", ph.seen, want)
	}
	for i := range want {
		if ph.seen[i] != want[i] {
			t.Fatalf("phases %v, want %v", ph.seen, want)
		}
	}
	if r := infer(t, a.client, tensorRequest(t, ""), false); r.ModelVersion != "1.0.0" {
		t.Fatalf("serving %s after applying 1.0.0", r.ModelVersion)
	}
	if err := a.Apply(ctx, desired(2, protocol.ActionInstall, reg.ref(t, v2)), nil); err != nil {
		t.Fatal(err)
	}
	rep := a.Reported()
	rep.V, rep.DeviceID, rep.Time = protocol.Version, "test-device", time.Now()
	if err := rep.Validate(); err != nil {
		t.Fatalf("reported state: %v", err)
	}
	if rep.Active.ID() != "silero-vad@2.0.0" || rep.LastKnownGood.ID() != "silero-vad@1.0.0" || rep.Provider != "cpu" ||
		rep.AgentVersion != version.Version || rep.Labels["site"] != "lab" {
		t.Fatalf("reported %+v", rep)
	}

	// Back to 1.0.0, the last-known-good: no download.
	before := reg.requests()
	if err := a.Apply(ctx, desired(3, protocol.ActionRollback, reg.ref(t, v1)), nil); err != nil {
		t.Fatal(err)
	}
	if n := reg.requests() - before; n != 0 {
		t.Errorf("a rollback to the last-known-good made %d requests to the registry", n)
	}
	if r := infer(t, a.client, tensorRequest(t, ""), false); r.ModelVersion != "1.0.0" {
		t.Fatalf("serving %s after rolling back to 1.0.0", r.ModelVersion)
	}
	// The active version: nothing to do either.
	if err := a.Apply(ctx, desired(4, protocol.ActionInstall, reg.ref(t, v1)), nil); err != nil || reg.requests() != before {
		t.Fatalf("applying the active version: %v, %d requests", err, reg.requests()-before)
	}

	// Refusals carry a reason for the install.failed event.
	badDigest := reg.ref(t, v3)
	badDigest.SHA256 = hex.EncodeToString(make([]byte, 32))
	// A pinned version that is not the last-known-good is downloaded.
	pinned := reg.ref(t, v2)
	pinned.Version = "2.0.1"
	for _, tc := range []struct {
		name   string
		d      *protocol.DesiredState
		err    error
		reason string
	}{
		{"wrong digest", desired(5, protocol.ActionInstall, badDigest), fetch.ErrDigest, ReasonDigest},
		{"another version than pinned", desired(6, protocol.ActionInstall, pinned), nil, ReasonMismatch},
		{"missing file", desired(7, protocol.ActionInstall, protocol.BundleRef{Name: "silero-vad", Version: "9.0.0", URL: reg.URL + "/nope.bundle", SigURL: reg.URL + "/nope.bundle.sig"}), fetch.ErrStatus, ReasonDownload},
	} {
		err := a.Apply(ctx, tc.d, nil)
		var r interface{ Reason() string }
		if err == nil || !errors.As(err, &r) {
			t.Errorf("%s: err %v, want one with a reason", tc.name, err)
			continue
		}
		if tc.err != nil && !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
		}
		if r.Reason() != tc.reason {
			t.Errorf("%s: reason %q, want %q", tc.name, r.Reason(), tc.reason)
		}
		t.Logf("%s: %s: %v", tc.name, r.Reason(), err)
	}
	if r := infer(t, a.client, tensorRequest(t, ""), false); r.ModelVersion != "1.0.0" {
		t.Fatalf("serving %s after the refusals", r.ModelVersion)
	}
	var _ uplink.Agent = a.Agent
}

// TestAdminAPI drives installs through the admin API as the CLI does: a
// URL the agent downloads, an upload with options, refusals with their
// status and reason.
func TestAdminAPI(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	v2 := sileroBundle(t, spec{version: "2.0.0"})
	reg := newRegistry(t, v1, v2)
	a := startAgent(t, newSetup(t, ""))
	c, ctx := a.client, t.Context()

	var remote *RemoteError
	if _, err := c.Rollback(ctx); !errors.As(err, &remote) || remote.Code != http.StatusUnprocessableEntity || remote.Reason != ReasonNoLastKnown {
		t.Fatalf("rollback with nothing installed: %v", err)
	}
	ref := reg.ref(t, v1)
	res, err := c.Install(ctx, ref.URL, "", InstallOptions{ID: "silero-vad@1.0.0", SHA256: ref.SHA256, Size: ref.Size})
	if err != nil || !res.Changed || res.Active.ID != "silero-vad@1.0.0" {
		t.Fatalf("install by URL: %+v, %v", res, err)
	}
	if _, err := c.Install(ctx, v2.path, v2.sig, InstallOptions{ID: "silero-vad@9.9.9"}); !errors.As(err, &remote) || remote.Reason != ReasonMismatch || remote.Code != http.StatusUnprocessableEntity {
		t.Fatalf("upload with a pinned id it is not: %v", err)
	}
	if _, err := c.Install(ctx, tampered(t, v2).path, "", InstallOptions{}); !errors.As(err, &remote) || remote.Reason != ReasonSignature {
		t.Fatalf("tampered upload: %v", err)
	}
	if res, err = c.Install(ctx, v2.path, "", InstallOptions{}); err != nil || res.Active.ID != "silero-vad@2.0.0" || res.LastKnownGood.ID != "silero-vad@1.0.0" {
		t.Fatalf("upload: %+v, %v", res, err)
	}
	if res, err = c.Rollback(ctx); err != nil || res.Active.ID != "silero-vad@1.0.0" {
		t.Fatalf("rollback: %+v, %v", res, err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Active.ID != "silero-vad@1.0.0" || st.Provider != "cpu" || !st.Ready || len(st.Trust.Keys) != 1 || st.Predictions == nil {
		t.Fatalf("status %+v, %v", st, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(st.DataDir, UploadsDir)); len(ents) != 0 {
		t.Errorf("%d uploads left", len(ents))
	}

	// Malformed requests.
	for _, tc := range []struct {
		ct, body, want string
	}{
		{"application/json", `{"bundle": ""}`, "required"},
		{"application/json", `{"bundle": "x", "bogus": 1}`, "bogus"},
		{"multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"x\"\r\n\r\nabc\r\n--b--\r\n", "needs its detached signature"},
		{"multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nabc\r\n--b--\r\n", "unknown part"},
	} {
		resp, err := c.HTTP.Post("http://edge-agent"+PathInstall, tc.ct, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s %q: %d %s, want 400 naming %q", tc.ct, tc.body, resp.StatusCode, b, tc.want)
		}
	}
	if code, _ := get(t, c, "/agent/v1/nope"); code != http.StatusNotFound {
		t.Errorf("unknown admin path: %d", code)
	}
}
