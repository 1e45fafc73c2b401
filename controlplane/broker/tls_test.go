package broker

import (
	"crypto/tls"
	"net"
	"net/url"
	"strings"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// dialTLS connects a paho client over TLS with an optional client
// certificate.
func dialTLS(t *testing.T, addr string, ca *testenv.CA, certFile, keyFile, clientID, user, pass string) (*client, error) {
	t.Helper()
	tc := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return dial(t, addr, clientID, user, pass, func(o *paho.ClientOptions) {
		o.SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			return tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", u.Host, tc)
		})
	})
}

// denyAuth is an Authenticator that also refuses certificate devices.
type denyAuth struct {
	StaticAuth
	deny string
}

func (d denyAuth) AuthorizeCertDevice(id string) bool { return id != d.deny }

func TestTLSClientCertificates(t *testing.T) {
	ca := testenv.NewCA(t, t.TempDir(), "edgefleet test CA")
	rogue := testenv.NewCA(t, t.TempDir(), "rogue CA")
	srvCert, srvKey := ca.Issue("server", "broker", true)
	aCert, aKey := ca.Issue("dev-a", devA, false)
	cCert, cKey := ca.Issue("dev-c", "dev-c", false)
	badCN, badCNKey := ca.Issue("bad-cn", "a/b", false)
	rogueCert, rogueKey := rogue.Issue("rogue-a", devA, false)

	b := newBroker(t, func(c *Config) {
		c.Addr = ""
		c.Auth = denyAuth{StaticAuth: devices, deny: "dev-c"}
		c.TLS = &TLSConfig{Addr: "127.0.0.1:0", CertFile: srvCert, KeyFile: srvKey, ClientCAFile: ca.File}
	})
	if b.Addr() != "" || b.TLSAddr() == "" {
		t.Fatalf("listeners: tcp %q tls %q", b.Addr(), b.TLSAddr())
	}
	addr := b.TLSAddr()

	t.Run("certificate is the credential", func(t *testing.T) {
		c, err := dialTLS(t, addr, ca, aCert, aKey, devA, "", "")
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan Message, 1)
		if _, err := b.Subscribe(topic(devA, protocol.KindTelemetry), func(m Message) { ch <- m }); err != nil {
			t.Fatal(err)
		}
		if err := c.publish(t, topic(devA, protocol.KindTelemetry), []byte("over tls"), false); err != nil {
			t.Fatal(err)
		}
		recv(t, ch)
		// Still confined to its own subtree.
		before := b.Refused(RefusedPublish)
		_ = c.publish(t, topic(devB, protocol.KindTelemetry), []byte("x"), false)
		if b.Refused(RefusedPublish) != before+1 {
			t.Fatal("cert device published outside its subtree")
		}
	})
	t.Run("mosquitto_pub with a client certificate", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(addr)
		out, code := runCLI(t, "mosquitto_pub", "-h", host, "-p", port, "-i", devA, "--cafile", ca.File,
			"--cert", aCert, "--key", aKey, "-t", topic(devA, protocol.KindTelemetry), "-m", "cli", "-q", "1")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
	})
	for _, c := range []struct {
		name                 string
		cert, key            string
		clientID, user, pass string
		reason               string
		handshakeFailureOnly bool
	}{
		{name: "certificate of another device's id", cert: aCert, key: aKey, clientID: devB, reason: RefusedClientID},
		{name: "username contradicts the certificate", cert: aCert, key: aKey, clientID: devA, user: devB, pass: devices[devB], reason: RefusedAuth},
		{name: "device refused by the inventory", cert: cCert, key: cKey, clientID: "dev-c", reason: RefusedAuth},
		{name: "CommonName is not a device id", cert: badCN, key: badCNKey, clientID: "a", reason: RefusedAuth},
		{name: "certificate from another CA", cert: rogueCert, key: rogueKey, clientID: devA, handshakeFailureOnly: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := b.Refused(c.reason)
			if _, err := dialTLS(t, addr, ca, c.cert, c.key, c.clientID, c.user, c.pass); err == nil {
				t.Fatal("connected")
			}
			if !c.handshakeFailureOnly && b.Refused(c.reason) != before+1 {
				t.Fatalf("refusals %v", b.Refusals())
			}
		})
	}
	t.Run("password over TLS without a certificate", func(t *testing.T) {
		if _, err := dialTLS(t, addr, ca, "", "", devB, devB, devices[devB]); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("RequireClientCert", func(t *testing.T) {
		b2 := newBroker(t, func(c *Config) {
			c.Addr = ""
			c.Auth = nil
			c.TLS = &TLSConfig{Addr: "127.0.0.1:0", CertFile: srvCert, KeyFile: srvKey, ClientCAFile: ca.File, RequireClientCert: true}
		})
		if _, err := dialTLS(t, b2.TLSAddr(), ca, "", "", devB, devB, devices[devB]); err == nil {
			t.Fatal("connected without a certificate")
		}
		if _, err := dialTLS(t, b2.TLSAddr(), ca, aCert, aKey, devA, "", ""); err != nil {
			t.Fatalf("certificate login: %v", err)
		}
	})
	if _, err := New(Config{Auth: devices, TLS: &TLSConfig{Addr: ":0", CertFile: srvCert, KeyFile: srvKey, RequireClientCert: true}}); err == nil ||
		!strings.Contains(err.Error(), "ClientCAFile") {
		t.Fatalf("RequireClientCert without a CA: %v", err)
	}
}
