package bundle_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/edgefleet/edgefleet/shared/bundle"
)

// TestUnpackRefuses crafts a bundle for every refusal of the unpacker and
// checks the sentinel, the message, and that nothing is left behind.
func TestUnpackRefuses(t *testing.T) {
	zeros := make([]byte, 16<<20) // a zstd bomb: 16 MiB compresses to a few KiB
	noisy := make([]byte, 2<<20)  // incompressible, so the frame needs a real window
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range noisy {
		noisy[i] = byte(rng.Uint32())
	}
	tests := []struct {
		name    string
		entries func(t *testing.T) []entry
		zopts   []zstd.EOption
		lim     bundle.Limits
		raw     []byte // the bundle's bytes, instead of entries
		want    error
		msg     string
	}{
		{
			name: "missing file",
			entries: func(t *testing.T) []entry {
				return validEntries(t, smallFiles)[:2]
			},
			want: bundle.ErrMissingFile, msg: `"model.onnx" listed in the manifest is not in the bundle`,
		},
		{
			name: "extra file",
			entries: func(t *testing.T) []entry {
				return append(validEntries(t, smallFiles), reg("surprise.sh", []byte("#!/bin/sh\n")))
			},
			want: bundle.ErrExtraFile, msg: `"surprise.sh" is not listed`,
		},
		{
			name: "duplicate entry",
			entries: func(t *testing.T) []entry {
				es := validEntries(t, smallFiles)
				return append(es, es[1])
			},
			want: bundle.ErrExtraFile, msg: `duplicate entry "labels.txt"`,
		},
		{
			name: "second manifest",
			entries: func(t *testing.T) []entry {
				es := validEntries(t, smallFiles)
				return append(es[:2], es[0], es[2])
			},
			want: bundle.ErrExtraFile, msg: `duplicate entry "manifest.json"`,
		},
		{
			name: "digest mismatch",
			entries: func(t *testing.T) []entry {
				es := validEntries(t, smallFiles)
				es[2] = reg("model.onnx", bytes.ToUpper(smallFiles["model.onnx"]))
				return es
			},
			want: bundle.ErrDigest, msg: `"model.onnx" has sha256`,
		},
		{
			name: "size mismatch",
			entries: func(t *testing.T) []entry {
				es := validEntries(t, smallFiles)
				es[2] = reg("model.onnx", []byte("short"))
				return es
			},
			want: bundle.ErrDigest, msg: `entry "model.onnx" is 5 bytes, the manifest says 41`,
		},
		{
			name: "absolute path",
			entries: func(t *testing.T) []entry {
				return append(validEntries(t, smallFiles), reg("/etc/cron.d/evil", []byte("x")))
			},
			want: bundle.ErrUnsafePath, msg: `"/etc/cron.d/evil": absolute path`,
		},
		{
			name: "dot-dot path",
			entries: func(t *testing.T) []entry {
				return append(validEntries(t, smallFiles), reg("../evil", []byte("x")))
			},
			want: bundle.ErrUnsafePath, msg: `"../evil": ".." escapes the bundle`,
		},
		{
			name: "nested dot-dot path",
			entries: func(t *testing.T) []entry {
				return append(validEntries(t, smallFiles), reg("a/../../evil", []byte("x")))
			},
			want: bundle.ErrUnsafePath, msg: `".." escapes the bundle`,
		},
		{
			name: "nested path",
			entries: func(t *testing.T) []entry {
				return append(validEntries(t, smallFiles), reg("sub/file", []byte("x")))
			},
			want: bundle.ErrUnsafePath, msg: "nested paths are not allowed",
		},
		{
			name: "symlink",
			entries: func(t *testing.T) []entry {
				return append(validEntries(t, smallFiles), entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "/etc/passwd", Mode: 0o777}})
			},
			want: bundle.ErrUnsafePath, msg: `entry "link" is a symbolic link (to "/etc/passwd")`,
		},
		{
			name: "hard link",
			entries: func(t *testing.T) []entry {
				return append(validEntries(t, smallFiles), entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "hard", Linkname: "model.onnx"}})
			},
			want: bundle.ErrUnsafePath, msg: `entry "hard" is a hard link`,
		},
		{
			name: "character device",
			entries: func(t *testing.T) []entry {
				return append(validEntries(t, smallFiles), entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "mem", Devmajor: 1, Devminor: 1, Mode: 0o600}})
			},
			want: bundle.ErrUnsafePath, msg: `entry "mem" is a character device`,
		},
		{
			name: "block device",
			entries: func(t *testing.T) []entry {
				return append(validEntries(t, smallFiles), entry{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "sda", Devmajor: 8, Mode: 0o600}})
			},
			want: bundle.ErrUnsafePath, msg: `entry "sda" is a block device`,
		},
		{
			name: "fifo",
			entries: func(t *testing.T) []entry {
				return append(validEntries(t, smallFiles), entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "pipe", Mode: 0o600}})
			},
			want: bundle.ErrUnsafePath, msg: `entry "pipe" is a FIFO`,
		},
		{
			name: "directory entry",
			entries: func(t *testing.T) []entry {
				return append(validEntries(t, smallFiles), entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "sub/", Mode: 0o755}})
			},
			want: bundle.ErrUnsafePath, msg: "is a directory (bundles are flat)",
		},
		{
			name: "symlink as manifest",
			entries: func(t *testing.T) []entry {
				return []entry{{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "manifest.json", Linkname: "/etc/passwd"}}}
			},
			want: bundle.ErrUnsafePath, msg: "symbolic link",
		},
		{
			name: "zstd bomb: file over the per-file cap",
			entries: func(t *testing.T) []entry {
				return validEntries(t, map[string][]byte{"model.onnx": zeros})
			},
			lim:  bundle.Limits{MaxFileBytes: 1 << 20},
			want: bundle.ErrLimit, msg: `file "model.onnx" is 16777216 bytes, the limit is 1048576 per file`,
		},
		{
			name: "zstd bomb: header larger than the manifest says",
			entries: func(t *testing.T) []entry {
				es := validEntries(t, map[string][]byte{"model.onnx": []byte("tiny")})
				es[1] = reg("model.onnx", zeros)
				return es
			},
			want: bundle.ErrDigest, msg: "is 16777216 bytes, the manifest says 4",
		},
		{
			name: "files over the total cap",
			entries: func(t *testing.T) []entry {
				return validEntries(t, map[string][]byte{"model.onnx": zeros[:600<<10], "b.bin": zeros[:600<<10]})
			},
			lim:  bundle.Limits{MaxTotalBytes: 1 << 20},
			want: bundle.ErrLimit, msg: "files total more than 1048576 bytes",
		},
		{
			name: "tar bomb: manifest lists too many files",
			entries: func(t *testing.T) []entry {
				files := map[string][]byte{"model.onnx": nil}
				for i := range 1000 {
					files[fmt.Sprintf("f%04d", i)] = nil
				}
				return validEntries(t, files)
			},
			want: bundle.ErrLimit, msg: "the limit is 64 entries",
		},
		{
			name: "tar bomb: more entries than MaxFiles",
			entries: func(t *testing.T) []entry {
				return validEntries(t, map[string][]byte{"model.onnx": nil, "a": nil, "b": nil, "c": nil})
			},
			lim:  bundle.Limits{MaxFiles: 3},
			want: bundle.ErrLimit, msg: "the limit is 3 entries",
		},
		{
			name: "huge PAX header beyond the stream budget",
			entries: func(t *testing.T) []entry {
				es := validEntries(t, smallFiles)
				es[1].hdr.PAXRecords = map[string]string{"comment": strings.Repeat("A", 900<<10)}
				es[1].hdr.Format = tar.FormatPAX
				return es
			},
			want: bundle.ErrLimit, msg: "decompresses to more than its manifest declares",
		},
		{
			name: "zstd window over the cap",
			entries: func(t *testing.T) []entry {
				return validEntries(t, map[string][]byte{"model.onnx": noisy})
			},
			zopts: []zstd.EOption{zstd.WithWindowSize(8 << 20)},
			lim:   bundle.Limits{MaxWindowBytes: 1 << 20},
			want:  bundle.ErrLimit, msg: "zstd window",
		},
		{
			name: "zstd decoder memory over the cap",
			entries: func(t *testing.T) []entry {
				return validEntries(t, map[string][]byte{"model.onnx": noisy})
			},
			zopts: []zstd.EOption{zstd.WithWindowSize(8 << 20)},
			lim:   bundle.Limits{MaxDecoderMemory: 1 << 20},
			want:  bundle.ErrLimit, msg: "zstd window",
		},
		{
			name: "oversize bundle file",
			entries: func(t *testing.T) []entry {
				return validEntries(t, map[string][]byte{"model.onnx": noisy})
			},
			lim:  bundle.Limits{MaxBundleBytes: 1 << 20},
			want: bundle.ErrLimit, msg: "the limit is 1048576",
		},
		{
			name: "unknown schema version",
			entries: func(t *testing.T) []entry {
				m := testManifest(smallFiles)
				m.SchemaVersion = 2
				return append([]entry{manifestEntry(t, m)}, validEntries(t, smallFiles)[1:]...)
			},
			want: bundle.ErrManifest, msg: "unsupported schemaVersion 2",
		},
		{
			name: "missing name",
			entries: func(t *testing.T) []entry {
				m := testManifest(smallFiles)
				m.Name = ""
				return append([]entry{manifestEntry(t, m)}, validEntries(t, smallFiles)[1:]...)
			},
			want: bundle.ErrManifest, msg: `missing field "name"`,
		},
		{
			name: "missing version",
			entries: func(t *testing.T) []entry {
				m := testManifest(smallFiles)
				m.Version = ""
				return append([]entry{manifestEntry(t, m)}, validEntries(t, smallFiles)[1:]...)
			},
			want: bundle.ErrManifest, msg: `missing field "version"`,
		},
		{
			name: "missing model",
			entries: func(t *testing.T) []entry {
				m := testManifest(smallFiles)
				m.Runtime.Model = ""
				return append([]entry{manifestEntry(t, m)}, validEntries(t, smallFiles)[1:]...)
			},
			want: bundle.ErrManifest, msg: `missing field "runtime.model"`,
		},
		{
			name: "model not listed",
			entries: func(t *testing.T) []entry {
				m := testManifest(smallFiles)
				m.Runtime.Model = "other.onnx"
				return append([]entry{manifestEntry(t, m)}, validEntries(t, smallFiles)[1:]...)
			},
			want: bundle.ErrManifest, msg: `runtime.model "other.onnx" is not in files`,
		},
		{
			name: "missing outputs",
			entries: func(t *testing.T) []entry {
				m := testManifest(smallFiles)
				m.Runtime.Outputs = nil
				return append([]entry{manifestEntry(t, m)}, validEntries(t, smallFiles)[1:]...)
			},
			want: bundle.ErrManifest, msg: `missing field "runtime.outputs"`,
		},
		{
			name: "bad digest syntax",
			entries: func(t *testing.T) []entry {
				m := testManifest(smallFiles)
				m.Files[0].SHA256 = "abc"
				return append([]entry{manifestEntry(t, m)}, validEntries(t, smallFiles)[1:]...)
			},
			want: bundle.ErrManifest, msg: "64 lowercase hex digits",
		},
		{
			name: "unsafe path in manifest",
			entries: func(t *testing.T) []entry {
				m := testManifest(smallFiles)
				m.Files[0].Path = "../labels.txt"
				return append([]entry{manifestEntry(t, m)}, validEntries(t, smallFiles)[1:]...)
			},
			want: bundle.ErrUnsafePath, msg: `".." escapes the bundle`,
		},
		{
			name: "unknown manifest field",
			entries: func(t *testing.T) []entry {
				es := validEntries(t, smallFiles)
				es[0] = reg(bundle.ManifestName, bytes.Replace(es[0].data, []byte(`"name"`), []byte(`"hooks": ["rm -rf /"], "name"`), 1))
				return es
			},
			want: bundle.ErrManifest, msg: `unknown field "hooks"`,
		},
		{
			name: "manifest not JSON",
			entries: func(t *testing.T) []entry {
				es := validEntries(t, smallFiles)
				es[0] = reg(bundle.ManifestName, []byte("name: yaml?"))
				return es
			},
			want: bundle.ErrManifest, msg: "invalid character",
		},
		{
			name: "manifest not first",
			entries: func(t *testing.T) []entry {
				es := validEntries(t, smallFiles)
				es[0], es[1] = es[1], es[0]
				return es
			},
			want: bundle.ErrManifest, msg: `the first entry is "labels.txt"`,
		},
		{
			name: "no manifest",
			entries: func(t *testing.T) []entry {
				return nil
			},
			want: bundle.ErrManifest, msg: "the bundle is empty",
		},
		{
			name: "not zstd",
			raw:  []byte("PK\x03\x04 this is a zip file"),
			want: bundle.ErrFormat, msg: "not a zstd stream",
		},
		{
			name: "empty file",
			raw:  []byte{},
			want: bundle.ErrFormat, msg: "is empty",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "crafted.bundle")
			if tc.raw != nil {
				if err := os.WriteFile(path, tc.raw, 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				path = craft(t, dir, tc.entries(t), tc.zopts...)
			}
			dest := filepath.Join(dir, "out")
			m, err := bundle.Unpack(context.Background(), path, dest, tc.lim)
			if err == nil {
				t.Fatalf("Unpack accepted it: %+v", m)
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Unpack error:\n  %v\nwant %v containing %q", err, tc.want, tc.msg)
			}
			t.Logf("refused: %v", err)
			assertNoDir(t, dest)
		})
	}
}

func TestUnpackTruncated(t *testing.T) {
	dir := t.TempDir()
	b := craftBytes(t, validEntries(t, map[string][]byte{"model.onnx": bytes.Repeat([]byte("0123456789abcdef"), 1<<14)}))
	for _, n := range []int{len(b) - 1, len(b) / 2, 20, 4} {
		p := filepath.Join(dir, "t.bundle")
		if err := os.WriteFile(p, b[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		dest := filepath.Join(dir, "out")
		_, err := bundle.Unpack(context.Background(), p, dest, bundle.Limits{})
		if !errors.Is(err, bundle.ErrFormat) {
			t.Errorf("truncated to %d of %d bytes: %v, want ErrFormat", n, len(b), err)
		}
		assertNoDir(t, dest)
	}
}

func TestUnpackHappyPath(t *testing.T) {
	dir := t.TempDir()
	path := craft(t, dir, validEntries(t, smallFiles))
	dest := filepath.Join(dir, "out")
	m, err := bundle.Unpack(context.Background(), path, dest, bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if m.ID() != "test-model@1.0.0" {
		t.Errorf("ID %q", m.ID())
	}
	for name, want := range smallFiles {
		got, err := os.ReadFile(filepath.Join(dest, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %q, %v", name, got, err)
		}
		fi, err := os.Stat(filepath.Join(dest, name))
		if err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, %v", name, fi.Mode(), err)
		}
	}
	raw, err := os.ReadFile(filepath.Join(dest, bundle.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.ParseManifest(raw); err != nil {
		t.Errorf("unpacked manifest.json: %v", err)
	}
	entries, _ := os.ReadDir(dest)
	if len(entries) != len(smallFiles)+1 {
		t.Errorf("dest holds %d entries, want %d", len(entries), len(smallFiles)+1)
	}
}

func TestUnpackDestination(t *testing.T) {
	dir := t.TempDir()
	path := craft(t, dir, validEntries(t, smallFiles))

	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.Unpack(context.Background(), path, empty, bundle.Limits{}); err != nil {
		t.Errorf("into an empty directory: %v", err)
	}

	full := filepath.Join(dir, "full")
	if err := os.MkdirAll(filepath.Join(full, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.Unpack(context.Background(), path, full, bundle.Limits{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("into a non-empty directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(full, "keep")); err != nil {
		t.Errorf("existing content touched: %v", err)
	}

	// A refused bundle in an existing empty directory leaves it empty
	// (and in place).
	bad := craft(t, t.TempDir(), append(validEntries(t, smallFiles), reg("../x", nil)))
	empty2 := filepath.Join(dir, "empty2")
	if err := os.Mkdir(empty2, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.Unpack(context.Background(), bad, empty2, bundle.Limits{}); !errors.Is(err, bundle.ErrUnsafePath) {
		t.Errorf("bad bundle: %v", err)
	}
	if entries, err := os.ReadDir(empty2); err != nil || len(entries) != 0 {
		t.Errorf("after a refused unpack the directory holds %v (%v)", entries, err)
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := bundle.Unpack(context.Background(), path, file, bundle.Limits{}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("into a file: %v", err)
	}
	if _, err := bundle.Unpack(context.Background(), path, filepath.Join(dir, "no", "parent"), bundle.Limits{}); err == nil {
		t.Error("into a directory whose parent is missing: no error")
	}
	if _, err := bundle.Unpack(context.Background(), dir, filepath.Join(dir, "x"), bundle.Limits{}); !errors.Is(err, bundle.ErrFormat) {
		t.Errorf("a directory as the bundle: %v", err)
	}
}

func TestUnpackCanceled(t *testing.T) {
	dir := t.TempDir()
	path := craft(t, dir, validEntries(t, smallFiles))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dest := filepath.Join(dir, "out")
	if _, err := bundle.Unpack(ctx, path, dest, bundle.Limits{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	assertNoDir(t, dest)
}

func TestReadManifest(t *testing.T) {
	dir := t.TempDir()
	path := craft(t, dir, validEntries(t, smallFiles))
	m, err := bundle.ReadManifest(context.Background(), path, bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 2 {
		t.Errorf("files: %+v", m.Files)
	}
	bad := craft(t, t.TempDir(), []entry{reg("model.onnx", nil)})
	if _, err := bundle.ReadManifest(context.Background(), bad, bundle.Limits{}); !errors.Is(err, bundle.ErrManifest) {
		t.Errorf("without a manifest: %v", err)
	}
}
