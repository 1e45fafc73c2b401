package bundle_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
)

func FuzzParseManifest(f *testing.F) {
	if golden, err := os.ReadFile(filepath.Join("testdata", "golden", "manifest.json")); err == nil {
		f.Add(golden)
	} else {
		f.Fatal(err)
	}
	m, err := testManifest(smallFiles).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m)
	f.Add([]byte(`{"schemaVersion": 2}`))
	f.Add([]byte(`{"schemaVersion": 1, "name": "a", "version": "1.0.0", "files": [{"path": "../x", "sha256": "", "size": -1}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := bundle.ParseManifest(b)
		if err != nil {
			if !errors.Is(err, bundle.ErrManifest) {
				t.Fatalf("error does not wrap ErrManifest: %v", err)
			}
			return
		}
		// Whatever parses must validate, re-encode and parse again to the
		// same encoding.
		if err := m.Validate(); err != nil {
			t.Fatalf("parsed manifest does not validate: %v", err)
		}
		for _, file := range m.Files {
			if err := bundle.CheckPath(file.Path); err != nil {
				t.Fatalf("parsed manifest lists unsafe path: %v", err)
			}
		}
		enc, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		m2, err := bundle.ParseManifest(enc)
		if err != nil {
			t.Fatalf("re-encoded manifest does not parse: %v\n%s", err, enc)
		}
		enc2, err := m2.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable:\n%s\n%s", enc, enc2)
		}
	})
}

// FuzzUnpack feeds arbitrary bytes to the unpacker under small limits: it
// must never panic, never write outside its destination, and leave
// nothing behind when it refuses.
func FuzzUnpack(f *testing.F) {
	f.Add(craftBytes(f, validEntries(f, smallFiles)))
	f.Add(craftBytes(f, append(validEntries(f, smallFiles), reg("../evil", []byte("x")))))
	f.Add(craftBytes(f, append(validEntries(f, smallFiles), entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "/"}})))
	f.Add(craftBytes(f, validEntries(f, smallFiles)[:2]))
	f.Add(craftBytes(f, validEntries(f, map[string][]byte{"model.onnx": make([]byte, 4096)})))
	if b, err := os.ReadFile(filepath.Join("testdata", "golden", "manifest.json")); err == nil {
		f.Add(craftBytes(f, []entry{reg(bundle.ManifestName, b)}))
	}
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	lim := bundle.Limits{
		MaxBundleBytes:   1 << 20,
		MaxFiles:         8,
		MaxFileBytes:     64 << 10,
		MaxTotalBytes:    256 << 10,
		MaxWindowBytes:   1 << 20,
		MaxDecoderMemory: 1 << 20,
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := memDir(t)
		path := filepath.Join(dir, "in.bundle")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		dest := filepath.Join(dir, "out")
		m, err := bundle.Unpack(context.Background(), path, dest, lim)
		entries, _ := os.ReadDir(dir)
		if err != nil {
			if len(entries) != 1 {
				t.Fatalf("refused (%v) but left %v behind", err, entries)
			}
			return
		}
		got, rerr := os.ReadDir(dest)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if len(got) != len(m.Files)+1 {
			t.Fatalf("unpacked %d entries for %d files", len(got), len(m.Files))
		}
		for _, e := range got {
			if !e.Type().IsRegular() {
				t.Fatalf("%s is not a regular file", e.Name())
			}
		}
	})
}

// memDir is a temporary directory on tmpfs where there is one: the
// unpacker fsyncs every file, which on a disk costs tens of milliseconds
// and would starve the fuzzer.
func memDir(t *testing.T) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "bundle-fuzz-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}
