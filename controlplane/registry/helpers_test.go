package registry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
)

// publisher is a signing key pair in a temporary directory.
type publisher struct {
	dir   string
	trust *bundle.TrustRoot
}

func newPublisher(t testing.TB) *publisher {
	t.Helper()
	dir := t.TempDir()
	if err := bundle.GenerateKey(dir, ""); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	trust, err := bundle.LoadTrustRoot(filepath.Join(dir, bundle.PublicKeyFile))
	if err != nil {
		t.Fatalf("LoadTrustRoot: %v", err)
	}
	return &publisher{dir: dir, trust: trust}
}

// modelBytes is a deterministic pseudo-random "model" of n bytes (random,
// so that zstd cannot shrink the bundle much and ranges have something
// to cover); seed picks the content.
func modelBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 42))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// build builds a real bundle NAME-VERSION.bundle from a tiny spec whose
// model file is model, signs it, and returns the bundle and signature
// paths. Builds of the same inputs are byte-identical.
func (p *publisher) build(t testing.TB, name, version string, model []byte) (bundlePath, sigPath string) {
	t.Helper()
	spec := t.TempDir()
	yaml := fmt.Sprintf("name: %s\nversion: %s\nmodel: model.onnx\n"+
		"inputs: [{name: x, datatype: FP32, shape: [-1, 2]}]\n"+
		"outputs: [{name: \"y\", datatype: FP32, shape: [-1, 1]}]\n", name, version)
	if err := os.WriteFile(filepath.Join(spec, bundle.SpecName), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(spec, "model.onnx"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), name+"-"+version+".bundle")
	if _, err := bundle.Build(context.Background(), spec, out, bundle.BuildOptions{Check: nil}); err != nil {
		t.Fatalf("Build %s@%s: %v", name, version, err)
	}
	return out, p.sign(t, out)
}

// sign writes a fresh signature of bundlePath to bundlePath.sig.
func (p *publisher) sign(t testing.TB, bundlePath string) string {
	t.Helper()
	s, err := bundle.LoadSigner(filepath.Join(p.dir, bundle.PrivateKeyFile))
	if err != nil {
		t.Fatalf("LoadSigner: %v", err)
	}
	sig, err := bundle.SignFile(bundlePath, s)
	if err != nil {
		t.Fatalf("SignFile: %v", err)
	}
	sigPath := bundlePath + ".sig"
	if err := bundle.WriteSignature(sigPath, sig); err != nil {
		t.Fatalf("WriteSignature: %v", err)
	}
	return sigPath
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
