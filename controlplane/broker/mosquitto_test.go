package broker

import (
	"crypto/pbkdf2"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// checkMosquittoPasswd verifies password against one "$7$" line's hash.
func checkMosquittoPasswd(line, password string) bool {
	_, h, ok := strings.Cut(line, ":")
	if !ok {
		return false
	}
	parts := strings.Split(h, "$")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "7" {
		return false
	}
	var iter int
	if _, err := fmt.Sscanf(parts[2], "%d", &iter); err != nil || iter <= 0 || iter > 1<<20 {
		return false
	}
	salt, err1 := base64.StdEncoding.DecodeString(parts[3])
	want, err2 := base64.StdEncoding.DecodeString(parts[4])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got, err := pbkdf2.Key(sha512.New, password, salt, iter, len(want))
	return err == nil && subtle.ConstantTimeCompare(got, want) == 1
}

func TestMosquittoPasswd(t *testing.T) {
	line, err := MosquittoPasswd("dev-a", "s3cret pass")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, "dev-a:$7$101$") || !checkMosquittoPasswd(line, "s3cret pass") || checkMosquittoPasswd(line, "s3cret") {
		t.Fatalf("line %q does not verify", line)
	}
	// The check agrees with mosquitto_passwd's own output, so the two
	// formats are the same (mosquitto accepting ours is TestMosquittoAccess).
	pw := filepath.Join(t.TempDir(), "pw")
	if out, code := runCLI(t, "mosquitto_passwd", "-b", "-c", pw, "dev-b", "other pass"); code != 0 {
		t.Fatal(out)
	}
	theirs := strings.TrimSpace(cptest.ReadFile(t, pw))
	if !checkMosquittoPasswd(theirs, "other pass") || checkMosquittoPasswd(theirs, "other") {
		t.Fatalf("mosquitto_passwd line %q does not verify with our PBKDF2 parameters", theirs)
	}
	for _, c := range []struct{ user, pass string }{{"", "p"}, {"a:b", "p"}, {"a\nb", "p"}, {"a", ""}, {"a", "p\nq"}} {
		if _, err := MosquittoPasswd(c.user, c.pass); err == nil {
			t.Errorf("MosquittoPasswd(%q, %q) accepted", c.user, c.pass)
		}
	}
}

func TestMosquittoACLGolden(t *testing.T) {
	acl, err := MosquittoACL("_fleetd-2", "_fleetd-1")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Golden(t, filepath.Join("testdata", "mosquitto.acl"), []byte(acl))
	for _, users := range [][]string{{"fleetd"}, {""}, {"_a b"}, {"_a/b"}, {"_x", "_x"}} {
		if _, err := MosquittoACL(users...); err == nil {
			t.Errorf("MosquittoACL(%q) accepted", users)
		}
	}
}

func TestStaticAuth(t *testing.T) {
	a := StaticAuth{"d1": "p1", "d2": ""}
	for _, c := range []struct {
		user, pass string
		ok         bool
	}{{"d1", "p1", true}, {"d1", "p2", false}, {"d1", "", false}, {"d2", "", false}, {"d3", "p1", false}} {
		id, ok := a.AuthenticateDevice(c.user, c.pass)
		if ok != c.ok || (ok && id != c.user) {
			t.Errorf("AuthenticateDevice(%q, %q) = %q, %v", c.user, c.pass, id, ok)
		}
	}
}

// TestMosquittoCertificateIdentity checks what docs/protocol.md says about
// certificate logins on mosquitto: with use_identity_as_username the
// CommonName is the username, and the same ACL confines the device.
func TestMosquittoCertificateIdentity(t *testing.T) {
	ca := testenv.NewCA(t, t.TempDir(), "edgefleet test CA")
	srvCert, srvKey := ca.Issue("server", "broker", true)
	aCert, aKey := ca.Issue("dev-a", devA, false)
	acl, err := MosquittoACL(svcUser)
	if err != nil {
		t.Fatal(err)
	}
	svcLine, err := MosquittoPasswd(svcUser, svcPass)
	if err != nil {
		t.Fatal(err)
	}
	m := startMosquitto(t, svcLine+"\n", acl, fmt.Sprintf(
		"cafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\nuse_identity_as_username true\n",
		ca.File, srvCert, srvKey))
	addr := m.Addr()
	_, tlsPort, _ := net.SplitHostPort(m.Addrs()[1])
	obs := newObserver(t, addr, svcUser, svcPass)
	tlsArgs := func(tp, msg string) []string {
		return []string{"-h", "127.0.0.1", "-p", tlsPort, "-i", "ignored", "--cafile", ca.File,
			"--cert", aCert, "--key", aKey, "-t", tp, "-m", msg, "-q", "1", "-V", "5"}
	}
	testenv.Eventually(t, "mosquitto TLS listener", func() bool {
		_, code := runCLI(t, "mosquitto_pub", tlsArgs(topic(devA, protocol.KindEvents), "probe")...)
		return code == 0
	})
	if out, code := runCLI(t, "mosquitto_pub", tlsArgs(topic(devA, protocol.KindTelemetry), "by-cert")...); code != 0 {
		t.Fatalf("certificate login: exit %d: %s", code, out)
	}
	obs.until(t, topic(devA, protocol.KindTelemetry), "by-cert")
	out, _ := runCLI(t, "mosquitto_pub", tlsArgs(topic(devB, protocol.KindTelemetry), "as-b")...)
	if !notAuthorized.MatchString(out) {
		t.Fatalf("certificate device published to another device's topic: %s", out)
	}
}

// TestDocsShowACL: docs/protocol.md shows MosquittoACL's output verbatim.
func TestDocsShowACL(t *testing.T) {
	doc := cptest.ReadFile(t, filepath.Join(testenv.Root(t), "docs", "protocol.md"))
	if !strings.Contains(doc, "```\n"+cptest.ReadFile(t, filepath.Join("testdata", "mosquitto.acl"))+"```") {
		t.Fatal("docs/protocol.md does not show testdata/mosquitto.acl verbatim")
	}
}
