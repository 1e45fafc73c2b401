package registry

import (
	"math/rand/v2"
	"os"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// publisher is a signing key pair in a temporary directory.
type publisher struct {
	*testbundle.Publisher
	trust *bundle.TrustRoot
}

func newPublisher(t testing.TB) *publisher {
	t.Helper()
	p := testbundle.TestPublisher(t)
	trust, err := bundle.LoadTrustRoot(p.PublicKey)
	if err != nil {
		t.Fatalf("LoadTrustRoot: %v", err)
	}
	return &publisher{Publisher: p, trust: trust}
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
	b := p.MustBuildFake(t, name, version, model, "")
	return b.Path, b.Sig
}

// sign writes a fresh signature of bundlePath to bundlePath.sig.
func (p *publisher) sign(t testing.TB, bundlePath string) string {
	t.Helper()
	p.MustSign(t, bundlePath)
	return bundlePath + ".sig"
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
