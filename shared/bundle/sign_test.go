package bundle_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
)

// TestRoundTrip is Build → Sign → VerifyAndUnpack for both key types.
func TestRoundTrip(t *testing.T) {
	for _, alg := range []bundle.Algorithm{bundle.ECDSAP256, bundle.Ed25519} {
		t.Run(string(alg), func(t *testing.T) {
			keyPath, pubPath := keyPair(t, alg)
			out := filepath.Join(t.TempDir(), "test-model-1.2.3-rc.1.bundle")
			built, err := bundle.Build(context.Background(), "testdata/spec", out, bundle.BuildOptions{})
			if err != nil {
				t.Fatal(err)
			}
			sigPath := sign(t, out, keyPath)
			dest := filepath.Join(t.TempDir(), "active")
			m, err := bundle.VerifyAndUnpack(context.Background(), out, sigPath, trust(t, pubPath), dest, bundle.Limits{})
			if err != nil {
				t.Fatalf("VerifyAndUnpack: %v", err)
			}
			if m.ID() != built.ID() || len(m.Files) != len(built.Files) {
				t.Errorf("got %s with %d files, built %s with %d", m.ID(), len(m.Files), built.ID(), len(built.Files))
			}
			for _, f := range m.Files {
				got, err := os.ReadFile(filepath.Join(dest, f.Path))
				if err != nil {
					t.Fatal(err)
				}
				if digest(got) != f.SHA256 {
					t.Errorf("%s: digest %s, want %s", f.Path, digest(got), f.SHA256)
				}
			}
			want, err := os.ReadFile(filepath.Join("testdata", "spec", "model.onnx"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(dest, bundle.ModelFile))
			if err != nil || string(got) != string(want) {
				t.Errorf("model.onnx = %q (%v), want %q", got, err, want)
			}
		})
	}
}

// TestVerifyRefuses covers the signature refusals: nothing may be
// unpacked unless the signature holds.
func TestVerifyRefuses(t *testing.T) {
	keyPath, pubPath := keyPair(t, bundle.ECDSAP256)
	_, otherPub := keyPair(t, bundle.ECDSAP256)
	edKey, edPub := keyPair(t, bundle.Ed25519)
	dir := t.TempDir()
	good := craftBytes(t, validEntries(t, smallFiles))

	tests := []struct {
		name   string
		key    string // signs the original bytes
		pub    string
		mutate func(b []byte) []byte
		sig    func(sigPath string) // rewrites the signature file
		msg    string
	}{
		{name: "wrong key", key: keyPath, pub: otherPub, msg: "made by none of the 1 trusted key(s)"},
		{name: "wrong key type", key: edKey, pub: pubPath, msg: "made by none"},
		{name: "ed25519 wrong key", key: keyPath, pub: edPub, msg: "made by none"},
		{name: "flipped byte", key: keyPath, pub: pubPath, mutate: func(b []byte) []byte { b[len(b)/2] ^= 0x01; return b }, msg: "made by none"},
		{name: "ed25519 flipped byte", key: edKey, pub: edPub, mutate: func(b []byte) []byte { b[len(b)/2] ^= 0x80; return b }, msg: "made by none"},
		{name: "truncated file", key: keyPath, pub: pubPath, mutate: func(b []byte) []byte { return b[:len(b)-1] }, msg: "made by none"},
		{name: "appended byte", key: keyPath, pub: pubPath, mutate: func(b []byte) []byte { return append(b, 0) }, msg: "made by none"},
		{name: "empty signature", key: keyPath, pub: pubPath, sig: func(p string) { os.WriteFile(p, []byte("\n"), 0o644) }, msg: "empty signature"},
		{name: "signature not base64", key: keyPath, pub: pubPath, sig: func(p string) { os.WriteFile(p, []byte("not base64!"), 0o644) }, msg: "not base64"},
		{name: "signature garbage", key: keyPath, pub: pubPath, sig: func(p string) { os.WriteFile(p, []byte("AAAA"), 0o644) }, msg: "made by none"},
		{name: "signature missing", key: keyPath, pub: pubPath, sig: func(p string) { os.Remove(p) }, msg: "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".bundle")
			if err := os.WriteFile(path, good, 0o644); err != nil {
				t.Fatal(err)
			}
			sigPath := sign(t, path, tc.key)
			if tc.mutate != nil {
				b := tc.mutate(append([]byte(nil), good...))
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.sig != nil {
				tc.sig(sigPath)
			}
			dest := filepath.Join(dir, "dest-"+filepath.Base(path))
			_, err := bundle.VerifyAndUnpack(context.Background(), path, sigPath, trust(t, tc.pub), dest, bundle.Limits{})
			if !errors.Is(err, bundle.ErrSignature) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("VerifyAndUnpack: %v\nwant ErrSignature containing %q", err, tc.msg)
			}
			t.Logf("refused: %v", err)
			assertNoDir(t, dest)
		})
	}
}

func TestTrustRootSeveralKeys(t *testing.T) {
	_, pubA := keyPair(t, bundle.ECDSAP256)
	keyB, pubB := keyPair(t, bundle.Ed25519)
	keyC, pubC := keyPair(t, bundle.ECDSAP256)
	path := craft(t, t.TempDir(), validEntries(t, smallFiles))

	// Two keys in one PEM file, a third in another.
	a, _ := os.ReadFile(pubA)
	b, _ := os.ReadFile(pubB)
	both := filepath.Join(t.TempDir(), "both.pub")
	if err := os.WriteFile(both, append(a, b...), 0o644); err != nil {
		t.Fatal(err)
	}
	tr := trust(t, both, pubC)
	if n := len(tr.KeyIDs()); n != 3 {
		t.Fatalf("%d keys, want 3", n)
	}
	ids := tr.KeyIDs()
	for i, key := range []string{keyB, keyC} {
		sigPath := sign(t, path, key)
		raw, err := bundle.ReadSignature(sigPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.VerifySignature(path, raw); err != nil {
			t.Errorf("raw signature by %s: %v", key, err)
		}
		// Signer names the key that made it: B is the second key, C the
		// third.
		if k, err := tr.Signer(path, raw); err != nil || k.ID != ids[i+1] {
			t.Errorf("signer of the signature by %s: %+v, %v; want key %s", key, k, err, ids[i+1])
		}
		text, _ := os.ReadFile(sigPath)
		if err := tr.VerifySignature(path, text); err != nil {
			t.Errorf("base64 signature by %s: %v", key, err)
		}
	}
}

func TestGenerateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	if err := bundle.GenerateKey(dir, ""); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, bundle.PrivateKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("signing.key mode %v (%v), want 0600", fi.Mode(), err)
	}
	pub, err := os.ReadFile(filepath.Join(dir, bundle.PublicKeyFile))
	if err != nil || !strings.HasPrefix(string(pub), "-----BEGIN PUBLIC KEY-----") {
		t.Errorf("signing.pub: %q (%v)", pub, err)
	}
	tr, err := bundle.ParseTrustRoot(pub)
	if err != nil || len(tr.KeyIDs()) != 1 {
		t.Errorf("ParseTrustRoot: %v", err)
	}
	if err := bundle.GenerateKey(dir, bundle.Ed25519); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second GenerateKey: %v", err)
	}
	if err := bundle.GenerateKey(t.TempDir(), "rsa-2048"); err == nil || !strings.Contains(err.Error(), `unknown key algorithm "rsa-2048"`) {
		t.Errorf("unknown algorithm: %v", err)
	}
}

func TestKeyRefusals(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	rsaPubDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384PubDER, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(p256)

	signerTests := []struct {
		name, file, msg string
	}{
		{"rsa", write("rsa.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER})), "not supported"},
		{"encrypted cosign key", write("cosign.key", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED SIGSTORE PRIVATE KEY", Bytes: []byte("x")})), "is encrypted"},
		{"public key", write("pub.key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPubDER})), `unsupported PEM block "PUBLIC KEY"`},
		{"not PEM", write("junk.key", []byte("hello")), "no PEM block"},
		{"missing", filepath.Join(dir, "nope.key"), "no such file"},
	}
	for _, tc := range signerTests {
		if _, err := bundle.LoadSigner(tc.file); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("LoadSigner(%s): %v, want %q", tc.name, err, tc.msg)
		}
	}
	if _, err := bundle.LoadSigner(write("sec1.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))); err != nil {
		t.Errorf("LoadSigner(SEC 1 EC key): %v", err)
	}

	trustTests := []struct {
		name string
		pem  []byte
		msg  string
	}{
		{"rsa", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPubDER}), "not supported"},
		{"p384", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: p384PubDER}), "curve P-384 is not supported"},
		{"private key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER}), `is not a "PUBLIC KEY"`},
		{"empty", nil, "no PEM block"},
	}
	for _, tc := range trustTests {
		if _, err := bundle.ParseTrustRoot(tc.pem); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseTrustRoot(%s): %v, want %q", tc.name, err, tc.msg)
		}
	}
	if _, err := bundle.ParseTrustRoot(); err == nil {
		t.Error("ParseTrustRoot(): no error")
	}
	if _, err := bundle.VerifyAndUnpack(context.Background(), "x", "x.sig", nil, t.TempDir(), bundle.Limits{}); !errors.Is(err, bundle.ErrSignature) {
		t.Errorf("nil trust root: %v", err)
	}
}
