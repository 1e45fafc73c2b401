package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// pki is a throwaway CA with helpers to issue certificates.
type pki struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{dir: t.TempDir(), cert: cert, key: key}
	writePEM(t, filepath.Join(p.dir, "ca.pem"), "CERTIFICATE", der)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue writes NAME.pem and NAME.key for a leaf certificate with the given
// CommonName, server or client usage, and returns the paths.
func (p *pki) issue(t *testing.T, name, cn string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func (p *pki) caFile() string { return filepath.Join(p.dir, "ca.pem") }

// dialTLS connects a paho client over TLS with an optional client
// certificate.
func dialTLS(t *testing.T, addr string, ca *pki, certFile, keyFile, clientID, user, pass string) (*client, error) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
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
	ca := newPKI(t, "edgefleet test CA")
	rogue := newPKI(t, "rogue CA")
	srvCert, srvKey := ca.issue(t, "server", "broker", true)
	aCert, aKey := ca.issue(t, "dev-a", devA, false)
	cCert, cKey := ca.issue(t, "dev-c", "dev-c", false)
	badCN, badCNKey := ca.issue(t, "bad-cn", "a/b", false)
	rogueCert, rogueKey := rogue.issue(t, "rogue-a", devA, false)

	b := newBroker(t, func(c *Config) {
		c.Addr = ""
		c.Auth = denyAuth{StaticAuth: devices, deny: "dev-c"}
		c.TLS = &TLSConfig{Addr: "127.0.0.1:0", CertFile: srvCert, KeyFile: srvKey, ClientCAFile: ca.caFile()}
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
		out, code := runCLI(t, "mosquitto_pub", "-h", host, "-p", port, "-i", devA, "--cafile", ca.caFile(),
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
			c.TLS = &TLSConfig{Addr: "127.0.0.1:0", CertFile: srvCert, KeyFile: srvKey, ClientCAFile: ca.caFile(), RequireClientCert: true}
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
