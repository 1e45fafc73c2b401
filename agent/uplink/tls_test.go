package uplink

import (
	"crypto/tls"
	"fmt"
	"path/filepath"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// TestTLSClientCertificate connects over TLS to a mosquitto that requires
// client certificates and takes the device id from the CommonName.
func TestTLSClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, dir, "edgefleet test CA")
	srvCert, srvKey := ca.Issue("server", "broker", true)
	devCert, devKey := ca.Issue("device", devID, false)
	fleetCert, fleetKey := ca.Issue("fleetd", fleetdUser, false)

	b := testenv.StartMosquitto(t, testenv.MosquittoConfig{
		Listener: fmt.Sprintf("cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\nuse_identity_as_username true\n",
			ca.File, srvCert, srvKey),
		Auth: "allow_anonymous false\n",
		ACL:  aclFile,
		Conf: "use_username_as_clientid true\n",
	})
	url := "ssl://" + b.Addr()

	fcert, err := tls.LoadX509KeyPair(fleetCert, fleetKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := ca.Pool()
	f := newFleetd(t, url, fleetdUser, func(o *mqtt.ClientOptions) {
		o.SetPassword("").SetTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{fcert}})
	})

	cfg := testConfig(t, url)
	cfg.Username, cfg.Password = "", ""
	cfg.TLS = TLSFiles{CAFile: ca.File, CertFile: devCert, KeyFile: devKey}
	r := newRig(t, cfg)
	r.start()
	r.waitConnected()
	f.waitStatus("status online over TLS", protocol.StateOnline)
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
