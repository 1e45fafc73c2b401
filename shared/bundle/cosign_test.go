package bundle_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// cosign runs the pinned cosign binary from .cache/tools/bin offline,
// with an empty key password and its state in a temporary home.
func cosign(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(testenv.Root(t), ".cache", "tools", "bin", "cosign")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("cosign not found at %s: run scripts/tools.sh (%v)", bin, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=", "HOME="+home, "TUF_ROOT="+filepath.Join(home, "tuf"), "SIGSTORE_NO_CACHE=true")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestCosignVerifiesOurSignatures: `cosign verify-blob --key` accepts what
// fleetctl bundle sign writes, for both key types, and refuses a modified
// bundle.
func TestCosignVerifiesOurSignatures(t *testing.T) {
	for _, alg := range []bundle.Algorithm{bundle.ECDSAP256, bundle.Ed25519} {
		t.Run(string(alg), func(t *testing.T) {
			dir := t.TempDir()
			keyPath, pubPath := keyPair(t, alg)
			path := craft(t, dir, validEntries(t, smallFiles))
			sigPath := sign(t, path, keyPath)
			out, err := cosign(t, dir, "verify-blob", "--key", pubPath, "--signature", sigPath, "--insecure-ignore-tlog=true", path)
			if err != nil || !strings.Contains(out, "Verified OK") {
				t.Fatalf("cosign verify-blob of our %s signature: %v\n%s", alg, err, out)
			}

			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 1
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err = cosign(t, dir, "verify-blob", "--key", pubPath, "--signature", sigPath, "--insecure-ignore-tlog=true", path)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || strings.Contains(out, "Verified OK") {
				t.Fatalf("cosign verify-blob accepted a modified bundle: %v\n%s", err, out)
			}
		})
	}
}

// TestWeVerifyCosignSignatures: signatures cosign sign-blob makes, with a
// key cosign generated and with our key imported into cosign, pass
// VerifyAndUnpack.
func TestWeVerifyCosignSignatures(t *testing.T) {
	dir := t.TempDir()
	path := craft(t, dir, validEntries(t, smallFiles))

	// A key pair cosign generates (encrypted with an empty password).
	if out, err := cosign(t, dir, "generate-key-pair"); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	// Our ECDSA key, imported into cosign's encrypted format.
	ourKey, ourPub := keyPair(t, bundle.ECDSAP256)
	if out, err := cosign(t, dir, "import-key-pair", "--key", ourKey, "--output-key-prefix", "imported"); err != nil {
		t.Fatalf("cosign import-key-pair: %v\n%s", err, out)
	}

	for _, tc := range []struct{ name, key, pub string }{
		{"cosign key", filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub")},
		{"our key imported", filepath.Join(dir, "imported.key"), ourPub},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sigPath := filepath.Join(t.TempDir(), "crafted.bundle.sig")
			out, err := cosign(t, dir, "sign-blob", "--key", tc.key, "--tlog-upload=false", "--output-signature", sigPath, "--yes", path)
			if err != nil {
				t.Fatalf("cosign sign-blob: %v\n%s", err, out)
			}
			dest := filepath.Join(t.TempDir(), "out")
			if _, err := bundle.VerifyAndUnpack(context.Background(), path, sigPath, trust(t, tc.pub), dest, bundle.Limits{}); err != nil {
				t.Fatalf("VerifyAndUnpack with cosign's signature: %v", err)
			}
			// And the same signature must not verify a different file.
			other := craft(t, t.TempDir(), validEntries(t, map[string][]byte{"model.onnx": []byte("other")}))
			sig, err := bundle.ReadSignature(sigPath)
			if err != nil {
				t.Fatal(err)
			}
			if err := trust(t, tc.pub).VerifySignature(other, sig); !errors.Is(err, bundle.ErrSignature) {
				t.Fatalf("cosign's signature verified another file: %v", err)
			}
		})
	}
}
