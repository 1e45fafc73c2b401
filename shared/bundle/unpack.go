package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/klauspost/compress/zstd"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
)

// entryOverhead is what one tar entry may take beyond its data: a header
// block, padding and a modest PAX header. The unpacker refuses a stream
// that decompresses to more than its manifest's files plus this much per
// entry, so a chain of huge headers cannot make it work forever.
const entryOverhead = 64 << 10

// copyBufferSize is the buffer files are copied through.
const copyBufferSize = 256 << 10

// Unpack reads the bundle at bundlePath into destDir, defensively: the
// file must be at most lim.MaxBundleBytes, manifest.json must be its first
// entry, every other entry a regular file the manifest lists, with a safe
// name, within the limits and with the listed size and sha256. Unpack does
// NOT check a signature: use VerifyAndUnpack for anything that came from
// elsewhere.
//
// destDir must not exist (it is created; its parent must exist) or be an
// empty directory. The manifest is written there too, as manifest.json.
// Files are created 0644 with O_EXCL through an os.Root, fsynced, and the
// directory is fsynced at the end. On error, everything Unpack wrote is
// removed (and destDir too if Unpack created it).
func Unpack(ctx context.Context, bundlePath, destDir string, lim Limits) (*Manifest, error) {
	f, size, err := openBundle(bundlePath, &lim)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := unpack(ctx, io.NewSectionReader(f, 0, size), destDir, lim)
	if err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", bundlePath, err)
	}
	return m, nil
}

// VerifyAndUnpack checks the bundle's detached signature (read from
// sigPath, cosign's base64 format) against trust before anything is
// decompressed, then unpacks it like Unpack. Both steps read the same open
// file; the directory holding it must not be writable by anyone the caller
// does not trust, or the file could change between the two reads.
func VerifyAndUnpack(ctx context.Context, bundlePath, sigPath string, trust *TrustRoot, destDir string, lim Limits) (*Manifest, error) {
	if trust == nil || len(trust.keys) == 0 {
		return nil, fmt.Errorf("%w: no trusted keys to verify %s with", ErrSignature, bundlePath)
	}
	sig, err := ReadSignature(sigPath)
	if err != nil {
		return nil, err
	}
	f, size, err := openBundle(bundlePath, &lim)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := trust.verify(ctx, io.NewSectionReader(f, 0, size), sig); err != nil {
		return nil, fmt.Errorf("verifying %s: %w", bundlePath, err)
	}
	m, err := unpack(ctx, io.NewSectionReader(f, 0, size), destDir, lim)
	if err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", bundlePath, err)
	}
	return m, nil
}

// ReadManifest returns the manifest of the bundle at bundlePath without
// unpacking its files or checking a signature: what the bundle claims,
// for display. Nothing it returns has been verified.
func ReadManifest(ctx context.Context, bundlePath string, lim Limits) (*Manifest, error) {
	f, size, err := openBundle(bundlePath, &lim)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s, err := newStream(ctx, io.NewSectionReader(f, 0, size), lim)
	if err != nil {
		return nil, err
	}
	defer s.close()
	m, _, err := s.manifest(lim)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", bundlePath, err)
	}
	return m, nil
}

// openBundle fills lim's zero fields with the defaults and checks them,
// then opens a bundle file and checks it is a regular file within
// lim.MaxBundleBytes. The size returned is the one checked; readers must
// not read past it.
func openBundle(path string, lim *Limits) (*os.File, int64, error) {
	*lim = lim.withDefaults()
	if err := lim.validate(); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("opening bundle: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("opening bundle: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s is not a regular file", ErrFormat, path)
	}
	if fi.Size() == 0 {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s is empty", ErrFormat, path)
	}
	if fi.Size() > lim.MaxBundleBytes {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s is %d bytes, the limit is %d", ErrLimit, path, fi.Size(), lim.MaxBundleBytes)
	}
	return f, fi.Size(), nil
}

// stream is a bundle's tar stream being decompressed under a budget.
type stream struct {
	dec    *zstd.Decoder
	budget *budgetReader
	tr     *tar.Reader
}

func newStream(ctx context.Context, r io.Reader, lim Limits) (*stream, error) {
	dec, err := zstd.NewReader(r,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(lim.MaxWindowBytes),
		zstd.WithDecoderMaxMemory(lim.MaxDecoderMemory),
	)
	if err != nil {
		return nil, fmt.Errorf("bundle: zstd decoder: %w", err)
	}
	b := &budgetReader{ctx: ctx, r: dec, left: MaxManifestBytes + entryOverhead}
	return &stream{dec: dec, budget: b, tr: tar.NewReader(b)}, nil
}

func (s *stream) close() { s.dec.Close() }

// next returns the next entry's header, nil at the end of the archive.
func (s *stream) next() (*tar.Header, error) {
	h, err := s.tr.Next()
	if errors.Is(err, tar.ErrInsecurePath) && h != nil {
		err = nil // checkEntry refuses it with a clearer message
	}
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, streamError("reading the next entry", err)
	}
	return h, nil
}

// manifest reads and parses the first entry, which must be manifest.json,
// and then sets the stream's budget from what the manifest declares.
func (s *stream) manifest(lim Limits) (*Manifest, []byte, error) {
	h, err := s.next()
	if err != nil {
		return nil, nil, err
	}
	if h == nil {
		return nil, nil, fmt.Errorf("%w: the bundle is empty (no manifest.json)", ErrManifest)
	}
	if err := checkEntryType(h); err != nil {
		return nil, nil, err
	}
	if h.Name != ManifestName {
		return nil, nil, fmt.Errorf("%w: the first entry is %q; a bundle must start with %s", ErrManifest, h.Name, ManifestName)
	}
	if h.Size > MaxManifestBytes || h.Size > lim.MaxFileBytes {
		return nil, nil, fmt.Errorf("%w: %w: %s is %d bytes, the limit is %d", ErrManifest, ErrLimit, ManifestName, h.Size, min(MaxManifestBytes, lim.MaxFileBytes))
	}
	b := make([]byte, h.Size)
	if _, err := io.ReadFull(s.tr, b); err != nil {
		return nil, nil, streamError("reading "+ManifestName, err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, nil, err
	}
	if err := lim.checkManifest(m); err != nil {
		return nil, nil, err
	}
	// From here the stream may hold the listed files and the archive's
	// trailer, nothing more.
	left := int64(entryOverhead)*int64(len(m.Files)+1) + 2*512
	for _, f := range m.Files {
		left += f.Size
	}
	s.budget.left = left
	return m, b, nil
}

// unpack is Unpack on an open stream.
func unpack(ctx context.Context, r io.Reader, destDir string, lim Limits) (_ *Manifest, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d, err := openDest(destDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.abort()
		}
	}()
	s, err := newStream(ctx, r, lim)
	if err != nil {
		return nil, err
	}
	defer s.close()

	m, raw, err := s.manifest(lim)
	if err != nil {
		return nil, err
	}
	if err := d.write(ManifestName, int64(len(raw)), bytes.NewReader(raw), ""); err != nil {
		return nil, err
	}
	want := make(map[string]File, len(m.Files))
	for _, f := range m.Files {
		want[f.Path] = f
	}
	seen := make(map[string]bool, len(m.Files))
	entries := 1
	for {
		h, err := s.next()
		if err != nil {
			return nil, err
		}
		if h == nil {
			break
		}
		entries++
		if entries > lim.MaxFiles {
			return nil, fmt.Errorf("%w: more than %d entries", ErrLimit, lim.MaxFiles)
		}
		if err := checkEntryType(h); err != nil {
			return nil, err
		}
		if h.Name == ManifestName || seen[h.Name] {
			return nil, fmt.Errorf("%w: duplicate entry %q", ErrExtraFile, h.Name)
		}
		if err := CheckPath(h.Name); err != nil {
			return nil, err
		}
		f, ok := want[h.Name]
		if !ok {
			return nil, fmt.Errorf("%w: entry %q is not listed in the manifest", ErrExtraFile, h.Name)
		}
		seen[h.Name] = true
		if h.Size != f.Size {
			return nil, fmt.Errorf("%w: entry %q is %d bytes, the manifest says %d", ErrDigest, h.Name, h.Size, f.Size)
		}
		if err := d.write(h.Name, f.Size, s.tr, f.SHA256); err != nil {
			return nil, err
		}
	}
	var missing []string
	for p := range want {
		if !seen[p] {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("%w: %q listed in the manifest is not in the bundle (%d missing)", ErrMissingFile, missing[0], len(missing))
	}
	if err := d.commit(); err != nil {
		return nil, err
	}
	return m, nil
}

// checkEntryType refuses every entry that is not a regular file. Bundles
// are flat, so directory entries are refused too.
func checkEntryType(h *tar.Header) error {
	var what string
	switch h.Typeflag {
	case tar.TypeReg:
		return nil
	case tar.TypeSymlink:
		what = fmt.Sprintf("a symbolic link (to %q)", h.Linkname)
	case tar.TypeLink:
		what = fmt.Sprintf("a hard link (to %q)", h.Linkname)
	case tar.TypeChar:
		what = "a character device"
	case tar.TypeBlock:
		what = "a block device"
	case tar.TypeFifo:
		what = "a FIFO"
	case tar.TypeDir:
		what = "a directory (bundles are flat)"
	default:
		what = fmt.Sprintf("of unsupported type %q", h.Typeflag)
	}
	return fmt.Errorf("%w: entry %q is %s; only regular files are allowed", ErrUnsafePath, h.Name, what)
}

// streamError classifies an error from the decompressing tar reader.
func streamError(doing string, err error) error {
	switch {
	case errors.Is(err, ErrLimit), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", doing, err)
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return fmt.Errorf("%w: %s: zstd window larger than allowed: %v", ErrLimit, doing, err)
	case errors.Is(err, zstd.ErrMagicMismatch):
		return fmt.Errorf("%w: not a zstd stream (is this a bundle?)", ErrFormat)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %s: truncated", ErrFormat, doing)
	}
	return fmt.Errorf("%w: %s: %v", ErrFormat, doing, err)
}

// budgetReader fails once more than left bytes are read, and when ctx is
// done.
type budgetReader struct {
	ctx  context.Context
	r    io.Reader
	left int64
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if b.left <= 0 {
		return 0, fmt.Errorf("%w: the stream decompresses to more than its manifest declares", ErrLimit)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// dest is the directory a bundle is unpacked into.
type dest struct {
	dir     string
	created bool
	root    *os.Root
	written []string
	buf     []byte
}

func openDest(dir string) (*dest, error) {
	d := &dest{dir: dir}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating destination: %w", err)
		}
		d.created = true
	case err != nil:
		return nil, fmt.Errorf("destination: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("destination %s is not a directory", dir)
	default:
		empty, err := isEmptyDir(dir)
		if err != nil {
			return nil, fmt.Errorf("destination: %w", err)
		}
		if !empty {
			return nil, fmt.Errorf("destination %s is not empty", dir)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		if d.created {
			os.Remove(dir)
		}
		return nil, fmt.Errorf("destination: %w", err)
	}
	d.root = root
	return d, nil
}

func isEmptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err == io.EOF {
		return true, nil
	}
	return len(names) == 0, err
}

// write creates name (which must not exist) from exactly size bytes of r,
// and checks their sha256 against want unless want is "".
func (d *dest) write(name string, size int64, r io.Reader, want string) (err error) {
	f, err := d.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("creating %q: %w", name, err)
	}
	d.written = append(d.written, name)
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("writing %q: %w", name, cerr)
		}
	}()
	if d.buf == nil {
		d.buf = make([]byte, copyBufferSize)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(r, size), d.buf)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("writing %q: %w", name, err)
		}
		return streamError(fmt.Sprintf("reading entry %q", name), err)
	}
	if n != size {
		return fmt.Errorf("%w: entry %q is truncated (%d of %d bytes)", ErrFormat, name, n, size)
	}
	if want != "" {
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return fmt.Errorf("%w: %q has sha256 %s, the manifest says %s", ErrDigest, name, got, want)
		}
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("writing %q: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %q: %w", name, err)
	}
	return nil
}

// commit fsyncs the directory (and its parent if Unpack created it).
func (d *dest) commit() error {
	defer d.root.Close()
	if err := syncRootDir(d.root); err != nil {
		return fmt.Errorf("syncing %s: %w", d.dir, err)
	}
	if d.created {
		if err := atomicfile.SyncDir(filepath.Dir(d.dir)); err != nil {
			return fmt.Errorf("syncing %s: %w", filepath.Dir(d.dir), err)
		}
	}
	return nil
}

// abort removes what was written.
func (d *dest) abort() {
	for _, name := range d.written {
		d.root.Remove(name)
	}
	d.root.Close()
	if d.created {
		os.Remove(d.dir)
	}
}

func syncRootDir(root *os.Root) error {
	f, err := root.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
