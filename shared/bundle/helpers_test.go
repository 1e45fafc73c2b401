package bundle_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// entry is one tar entry of a crafted bundle.
type entry struct {
	hdr  tar.Header
	data []byte
}

func reg(name string, data []byte) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644, ModTime: time.Unix(0, 0)}, data: data}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// testManifest is a valid manifest listing files (which must include
// model.onnx).
func testManifest(files map[string][]byte) *bundle.Manifest {
	m := &bundle.Manifest{
		SchemaVersion: bundle.SchemaVersion,
		Name:          "test-model",
		Version:       "1.0.0",
		Runtime: bundle.Runtime{
			Model:   "model.onnx",
			Inputs:  []tensor.Spec{{Name: "x", Datatype: tensor.FP32, Shape: []int64{-1, 2}}},
			Outputs: []tensor.Spec{{Name: "y", Datatype: tensor.FP32, Shape: []int64{-1, 1}}},
		},
	}
	for _, name := range sortedKeys(files) {
		m.Files = append(m.Files, bundle.File{Path: name, SHA256: digest(files[name]), Size: int64(len(files[name]))})
	}
	return m
}

func sortedKeys(m map[string][]byte) []string {
	return slices.Sorted(maps.Keys(m))
}

// manifestEntry encodes m (without validating it) as the first entry.
func manifestEntry(t testing.TB, m *bundle.Manifest) entry {
	t.Helper()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return reg(bundle.ManifestName, b)
}

// validEntries is a well-formed bundle's entries: manifest and files.
func validEntries(t testing.TB, files map[string][]byte) []entry {
	t.Helper()
	es := []entry{manifestEntry(t, testManifest(files))}
	for _, name := range sortedKeys(files) {
		es = append(es, reg(name, files[name]))
	}
	return es
}

var smallFiles = map[string][]byte{
	"model.onnx": []byte("not really onnx, but Unpack does not care"),
	"labels.txt": []byte("speech\nsilence\n"),
}

// craftBytes encodes entries as a zstd-compressed tar stream.
func craftBytes(t testing.TB, entries []entry, zopts ...zstd.EOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zopts...)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("crafting %q: %v", h.Name, err)
		}
		if len(e.data) > 0 {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatalf("crafting %q: %v", h.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// craft writes a crafted bundle into dir and returns its path.
func craft(t testing.TB, dir string, entries []entry, zopts ...zstd.EOption) string {
	t.Helper()
	p := filepath.Join(dir, "crafted.bundle")
	if err := os.WriteFile(p, craftBytes(t, entries, zopts...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// keyPair generates a key pair in a fresh directory.
func keyPair(t testing.TB, alg bundle.Algorithm) (keyPath, pubPath string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if err := bundle.GenerateKey(dir, alg); err != nil {
		t.Fatalf("GenerateKey(%q): %v", alg, err)
	}
	return filepath.Join(dir, bundle.PrivateKeyFile), filepath.Join(dir, bundle.PublicKeyFile)
}

// sign writes path+".sig" with the key at keyPath.
func sign(t testing.TB, path, keyPath string) string {
	t.Helper()
	s, err := bundle.LoadSigner(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := bundle.SignFile(path, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.WriteSignature(path+".sig", sig); err != nil {
		t.Fatal(err)
	}
	return path + ".sig"
}

func trust(t testing.TB, pubs ...string) *bundle.TrustRoot {
	t.Helper()
	tr, err := bundle.LoadTrustRoot(pubs...)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// writeSpec creates a spec directory with bundle.yaml and files.
func writeSpec(t testing.TB, yaml string, files map[string][]byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spec")
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, bundle.SpecName), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// assertNoDir fails unless path does not exist.
func assertNoDir(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		entries, _ := os.ReadDir(path)
		t.Fatalf("%s still exists after a refused unpack (err %v, %d entries)", path, err, len(entries))
	}
}
