package uplink

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// testCA issues certificates for the TLS tests.
type testCA struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "edgefleet test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{t: t, dir: dir, cert: cert, key: key, file: filepath.Join(dir, "ca.pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue writes name.pem and name.key: a server certificate for 127.0.0.1
// or a client certificate whose CommonName is cn.
func (ca *testCA) issue(name, cn string, server bool) (certFile, keyFile string) {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+".key")
	writePEM(ca.t, certFile, "CERTIFICATE", der)
	writePEM(ca.t, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTLSClientCertificate connects over TLS to a mosquitto that requires
// client certificates and takes the device id from the CommonName.
func TestTLSClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	srvCert, srvKey := ca.issue("server", "broker", true)
	devCert, devKey := ca.issue("device", devID, false)
	fleetCert, fleetKey := ca.issue("fleetd", fleetdUser, false)

	b := testenv.StartMosquitto(t, testenv.MosquittoConfig{
		Listener: fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\nuse_identity_as_username true\n",
			ca.file, srvCert, srvKey),
		Auth: "allow_anonymous false\n",
		ACL:  aclFile,
		Conf: "use_username_as_clientid true\n",
	})
	url := "ssl://" + b.Addr()

	fcert, err := tls.LoadX509KeyPair(fleetCert, fleetKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	f := newFleetd(t, url, fleetdUser, func(o *mqtt.ClientOptions) {
		o.SetPassword("").SetTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{fcert}})
	})

	cfg := testConfig(t, url)
	cfg.Username, cfg.Password = "", ""
	cfg.TLS = TLSFiles{CAFile: ca.file, CertFile: devCert, KeyFile: devKey}
	r := newRig(t, cfg)
	r.start()
	r.waitConnected()
	testenv.Eventually(t, "status online over TLS", func() bool {
		s, ok := f.lastStatus()
		return ok && s.State == protocol.StateOnline
	})
	id := r.appendRecords(1)
	testenv.Eventually(t, "a record over TLS", func() bool { return len(f.recordIDs()) == 1 && f.recordIDs()[0] == id[0] })
	r.stop()

	// Without the client certificate the broker refuses the handshake.
	cfg.StateDir = filepath.Join(t.TempDir(), "state2")
	cfg.TLS.CertFile, cfg.TLS.KeyFile = "", ""
	r2 := newRig(t, cfg)
	u := r2.start()
	testenv.Eventually(t, "failed attempts without a client certificate", func() bool { return u.Stats().ConnectFailures >= 2 })
	if u.Connected() {
		t.Fatal("connected without a client certificate")
	}
}
