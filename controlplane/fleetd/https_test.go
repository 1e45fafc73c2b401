package fleetd_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// TestHTTPS serves the API and the registry over TLS: the public URL and
// the download URLs in desired states are https.
func TestHTTPS(t *testing.T) {
	ctx := context.Background()
	ca := testenv.NewCA(t, t.TempDir(), "fleetd test CA")
	certFile, keyFile := ca.Issue("server", "fleetd-test", true)
	pool := ca.Pool()
	cfg := baseConfig(t)
	cfg.HTTP.CertFile, cfg.HTTP.KeyFile = certFile, keyFile
	ts := startServer(t, cfg)
	if !strings.HasPrefix(ts.srv.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL = %s", ts.srv.URL())
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	tok := strings.TrimSpace(cptest.ReadFile(t, filepath.Join(cfg.DataDir, "operator.token")))
	api, err := client.New(ts.srv.URL(), tok, hc)
	if err != nil {
		t.Fatal(err)
	}
	ts.api = api
	if h, err := api.Health(ctx); err != nil || h.Status != "ok" {
		t.Fatalf("health over TLS: %+v, %v", h, err)
	}
	pw := ts.enroll(t, "dev-1", nil)
	d := mustDialDevice(t, ts.srv.MQTTAddr(), "dev-1", pw)
	d.subscribeDesired()
	pub := testPublisher(t)
	bpath := pub.build(t, "vad", "1.0.0", 16<<10)
	if _, _, err := api.Push(ctx, bpath, bpath+".sig"); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Assign(ctx, "dev-1", "vad@1.0.0", ""); err != nil {
		t.Fatal(err)
	}
	ds := d.nextDesired(0)
	if !strings.HasPrefix(ds.Bundle.URL, ts.srv.URL()+"/registry/") {
		t.Fatalf("bundle URL %s", ds.Bundle.URL)
	}
	resp, err := hc.Get(ds.Bundle.URL)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("download over TLS: %v %v", resp, err)
	}
	resp.Body.Close()
}
