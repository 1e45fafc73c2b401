package fleetd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/bundle"
)

// call makes a raw API request and returns the status and the decoded
// error message (for non-2xx answers).
func call(t *testing.T, ts *testServer, method, path, token, contentType string, body []byte) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, ts.srv.URL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: error with Content-Type %q: %s", method, path, ct, b)
		}
		var e api.Error
		if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
			t.Errorf("%s %s: error body is not {\"error\": ...}: %s", method, path, b)
		}
		return resp.StatusCode, e.Error, b
	}
	return resp.StatusCode, "", b
}

func TestAPIAuth(t *testing.T) {
	ts := startServer(t, baseConfig(t))
	op := strings.TrimSpace(cptest.ReadFile(t, ts.cfg.DataDir+"/"+fleetd.OperatorTokenFile))
	routes := []struct{ method, path string }{
		{"GET", "/api/v1/devices"},
		{"GET", "/api/v1/devices/x"},
		{"DELETE", "/api/v1/devices/x"},
		{"POST", "/api/v1/devices/x/assign"},
		{"GET", "/api/v1/devices/x/records"},
		{"GET", "/api/v1/bundles"},
		{"POST", "/api/v1/bundles"},
		{"GET", "/api/v1/bundles/vad"},
		{"GET", "/api/v1/bundles/vad/1.0.0"},
		{"GET", "/metrics"},
	}
	for _, r := range routes {
		for _, tok := range []string{"", "wrong-token-0123456789", ts.enrolTok} {
			code, msg, _ := call(t, ts, r.method, r.path, tok, "", nil)
			if code != http.StatusUnauthorized {
				t.Errorf("%s %s with token %q: %d %s, want 401", r.method, r.path, tok, code, msg)
			}
		}
	}
	if code, _, b := call(t, ts, "GET", "/api/v1/health", "", "", nil); code != 200 || !strings.Contains(string(b), `"status":"ok"`) {
		t.Errorf("health: %d %s", code, b)
	}
	// Enrolment takes an enrolment token, not the operator's.
	body := []byte(`{"id":"dev-1"}`)
	if code, msg, _ := call(t, ts, "POST", "/api/v1/devices", op, "application/json", body); code != 401 || !strings.Contains(msg, "enrolment token") {
		t.Errorf("enrol with the operator token: %d %s", code, msg)
	}
	if code, msg, _ := call(t, ts, "POST", "/api/v1/devices", "", "application/json", body); code != 401 || !strings.Contains(msg, "bearer") {
		t.Errorf("enrol without a token: %d %s", code, msg)
	}
	if code, _, _ := call(t, ts, "POST", "/api/v1/devices", ts.enrolTok, "application/json", body); code != 201 {
		t.Errorf("enrol: %d", code)
	}
}

func TestAPIErrors(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, baseConfig(t))
	op := strings.TrimSpace(cptest.ReadFile(t, ts.cfg.DataDir+"/"+fleetd.OperatorTokenFile))
	ts.enroll(t, "dev-1", nil)
	pub := testPublisher(t)
	bpath := ts.push(t, pub, "vad", "1.0.0", 4<<10)
	other := pub.build(t, "vad", "1.0.0", 5<<10) // same name@version, other bytes

	for _, tc := range []struct {
		name               string
		method, path, body string
		token              string // "" = operator
		want               int
		msg                string
	}{
		{"enrol twice", "POST", "/api/v1/devices", `{"id":"dev-1"}`, ts.enrolTok, 409, "already enrolled"},
		{"enrol bad id", "POST", "/api/v1/devices", `{"id":"a/b"}`, ts.enrolTok, 400, "id"},
		{"enrol bad label", "POST", "/api/v1/devices", `{"id":"dev-2","labels":{"k":"sp ace"}}`, ts.enrolTok, 400, "label"},
		{"enrol unknown field", "POST", "/api/v1/devices", `{"id":"dev-2","name":"x"}`, ts.enrolTok, 400, "unknown field"},
		{"enrol not json", "POST", "/api/v1/devices", `{`, ts.enrolTok, 400, "request body"},
		{"unknown device", "GET", "/api/v1/devices/nope", "", "", 404, "not found"},
		{"bad selector", "GET", "/api/v1/devices?selector=a%3D%3D%3Db", "", "", 400, "selector"},
		{"assign unknown device", "POST", "/api/v1/devices/nope/assign", `{"bundle":"vad@1.0.0"}`, "", 404, "nope"},
		{"assign unknown bundle", "POST", "/api/v1/devices/dev-1/assign", `{"bundle":"vad@9.9.9"}`, "", 404, "not found"},
		{"assign no version", "POST", "/api/v1/devices/dev-1/assign", `{"bundle":"vad"}`, "", 400, "name@version"},
		{"assign bad action", "POST", "/api/v1/devices/dev-1/assign", `{"bundle":"vad@1.0.0","action":"explode"}`, "", 400, "action"},
		{"records bad since", "GET", "/api/v1/devices/dev-1/records?since=yesterday", "", "", 400, "since"},
		{"records bad kind", "GET", "/api/v1/devices/dev-1/records?kind=A", "", "", 400, "kind"},
		{"records bad limit", "GET", "/api/v1/devices/dev-1/records?limit=0", "", "", 400, "limit"},
		{"records bad order", "GET", "/api/v1/devices/dev-1/records?order=newest", "", "", 400, "order=\"newest\": want asc"},
		{"unknown bundle", "GET", "/api/v1/bundles/nope", "", "", 404, "nope"},
		{"unknown version", "GET", "/api/v1/bundles/vad/2.0.0", "", "", 404, "not found"},
		{"push not multipart", "POST", "/api/v1/bundles", `{}`, "", 400, "multipart"},
		{"wrong method", "PUT", "/api/v1/devices", "", "", 405, "not allowed"},
		{"no route", "GET", "/api/v1/nothing", "", "", 404, "no such API route"},
	} {
		tok := tc.token
		if tok == "" {
			tok = op
		}
		code, msg, _ := call(t, ts, tc.method, tc.path, tok, "application/json", []byte(tc.body))
		if code != tc.want || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %d %q, want %d containing %q", tc.name, code, msg, tc.want, tc.msg)
		}
	}

	// Body limits.
	big := `{"id":"dev-9","labels":{"k":"` + strings.Repeat("a", 2<<20) + `"}}`
	if code, msg, _ := call(t, ts, "POST", "/api/v1/devices", ts.enrolTok, "application/json", []byte(big)); code != 413 {
		t.Errorf("2 MiB enrolment: %d %s, want 413", code, msg)
	}
	// A different bundle under an existing name@version.
	if _, _, err := ts.api.Push(ctx, other, other+".sig"); !errors.Is(err, client.ErrConflict) {
		t.Errorf("conflicting push = %v, want 409", err)
	}
	// Missing signature part; unexpected part.
	for _, parts := range [][]string{{"bundle"}, {"bundle", "sig", "extra"}} {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		for _, p := range parts {
			w, _ := mw.CreateFormFile(p, p)
			b, _ := os.ReadFile(bpath)
			if p == "sig" {
				b, _ = os.ReadFile(bpath + ".sig")
			}
			w.Write(b)
		}
		mw.Close()
		if code, msg, _ := call(t, ts, "POST", "/api/v1/bundles", op, mw.FormDataContentType(), buf.Bytes()); code != 400 {
			t.Errorf("push with parts %v: %d %s, want 400", parts, code, msg)
		}
	}
}

// TestTrustedKeys checks trust on push: with registry.trustedKeys fleetd
// stores only bundles one of them signed, and refuses others with 403
// naming the trusted keys and how to trust another; with none it refuses
// every push, unless registry.insecureAcceptAnyKey.
func TestTrustedKeys(t *testing.T) {
	ctx := context.Background()
	trusted, stranger, next := testPublisher(t), newPublisher(t), newPublisher(t)
	cfg := baseConfig(t)
	// A rotation: the current key and the next one.
	cfg.Registry.TrustedKeys = append(cfg.Registry.TrustedKeys, next.publicKey())
	ts := startServer(t, cfg)
	for i, p := range []*publisher{trusted, next} {
		good := p.build(t, "vad", fmt.Sprintf("1.0.%d", i), 4<<10)
		b, _, err := ts.api.Push(ctx, good, good+".sig")
		if err != nil || !b.Verified {
			t.Fatalf("push of a trusted bundle: %+v %v", b, err)
		}
	}
	ids := func(ps ...*publisher) []string {
		var out []string
		for _, p := range ps {
			tr, err := bundle.LoadTrustRoot(p.publicKey())
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, tr.KeyIDs()...)
		}
		return out
	}
	keys, err := ts.api.Keys(ctx)
	if err != nil || len(keys.Keys) != 2 || keys.Keys[0].ID != ids(trusted)[0] || keys.Keys[1].ID != ids(next)[0] ||
		keys.Keys[1].File != next.publicKey() || keys.Keys[0].Algorithm != bundle.ECDSAP256 || keys.InsecureAcceptAnyKey {
		t.Errorf("Keys = %+v, %v", keys, err)
	}

	bad := stranger.build(t, "vad", "1.1.0", 4<<10)
	var ce *client.Error
	_, _, err = ts.api.Push(ctx, bad, bad+".sig")
	if !errors.As(err, &ce) || ce.Status != 403 || !strings.Contains(ce.Message, "push of vad@1.1.0 refused") ||
		!strings.Contains(ce.Message, strings.Join(ids(trusted, next), ", ")) || !strings.Contains(ce.Message, "registry.trustedKeys") {
		t.Errorf("push of an untrusted bundle = %v, want 403 naming the trusted keys and registry.trustedKeys", err)
	}
	if _, err := ts.api.Bundle(ctx, "vad", "1.1.0"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("the refused bundle: %v, want not found", err)
	}

	// No trusted key: every push is refused, and fleetd said so at start.
	cfg = baseConfig(t)
	cfg.Registry.TrustedKeys = nil
	ts = startServer(t, cfg)
	good := trusted.build(t, "vad", "1.0.0", 4<<10)
	if _, _, err := ts.api.Push(ctx, good, good+".sig"); !errors.As(err, &ce) || ce.Status != 403 || !strings.Contains(ce.Message, "fleetd trusts no publisher key") {
		t.Errorf("push with no trusted keys = %v, want 403", err)
	}
	if !strings.Contains(ts.logs.String(), "registry.trustedKeys is empty: every bundle push will be refused") {
		t.Errorf("fleetd did not warn at start:\n%s", ts.logs.String())
	}

	// Insecure: stored unchecked, loudly.
	cfg = baseConfig(t)
	cfg.Registry.TrustedKeys, cfg.Registry.InsecureAcceptAnyKey = nil, true
	ts = startServer(t, cfg)
	if b, _, err := ts.api.Push(ctx, bad, bad+".sig"); err != nil || b.Verified {
		t.Errorf("insecure push: %+v, %v; want stored unverified", b, err)
	}
	if k, err := ts.api.Keys(ctx); err != nil || len(k.Keys) != 0 || !k.InsecureAcceptAnyKey {
		t.Errorf("insecure Keys = %+v, %v", k, err)
	}
	if n := strings.Count(ts.logs.String(), "INSECURE"); n < 2 {
		t.Errorf("%d INSECURE warnings, want one at start and one per push:\n%s", n, ts.logs.String())
	}
}
