package fleetd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool trusting it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fleetd-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestHTTPS serves the API and the registry over TLS: the public URL and
// the download URLs in desired states are https.
func TestHTTPS(t *testing.T) {
	ctx := context.Background()
	certFile, keyFile, pool := selfSigned(t)
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
