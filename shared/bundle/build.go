package bundle

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
)

// BuildOptions configure Build.
type BuildOptions struct {
	// Check runs against the staged bundle directory (the layout Unpack
	// produces, manifest.json included) before the bundle is written;
	// fleetctl passes model.Check. Nil skips the check.
	Check func(ctx context.Context, dir string, m *Manifest) error
	// Limits the bundle must fit, so that devices accept it; zero fields
	// are DefaultLimits.
	Limits Limits
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
	// Created, if not zero, is recorded in the manifest. Left zero, the
	// same spec and files always give the same bundle bytes.
	Created time.Time
}

// epoch is the modification time of every entry, for reproducible output.
var epoch = time.Unix(0, 0)

// Build makes a bundle from the spec in specDir (see LoadSpec): it copies
// the files the spec names into a staging directory under their bundle
// names, computes their digests, writes and validates the manifest, runs
// opts.Check on the staged directory, and then writes the bundle to
// outPath atomically. The output is deterministic: manifest.json first,
// then the files sorted by name, with fixed modes, owners and times.
func Build(ctx context.Context, specDir, outPath string, opts BuildOptions) (*Manifest, error) {
	spec, err := LoadSpec(specDir)
	if err != nil {
		return nil, err
	}
	return BuildSpec(ctx, spec, outPath, opts)
}

// BuildSpec is Build from a spec in hand (ReadSpec or NewSpec, completed
// with UseModel, say); it checks the spec first.
func BuildSpec(ctx context.Context, spec *Spec, outPath string, opts BuildOptions) (*Manifest, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lim := opts.Limits.withDefaults()
	if err := lim.validate(); err != nil {
		return nil, err
	}
	if err := spec.Check(); err != nil {
		return nil, err
	}
	return buildSpec(ctx, spec, outPath, opts, lim, log)
}

func buildSpec(ctx context.Context, spec *Spec, outPath string, opts BuildOptions, lim Limits, log *slog.Logger) (*Manifest, error) {
	if fi, err := os.Stat(outPath); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("output %s is a directory", outPath)
	}
	stage, err := os.MkdirTemp(filepath.Dir(outPath), ".bundle-stage-")
	if err != nil {
		return nil, fmt.Errorf("creating staging directory: %w", err)
	}
	defer os.RemoveAll(stage)

	m, err := spec.stage(ctx, stage, lim, log)
	if err != nil {
		return nil, err
	}
	if !opts.Created.IsZero() {
		m.Created = opts.Created.UTC().Format(time.RFC3339)
	}
	raw, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	// Round trip, so that Check and the caller see exactly what a device
	// will read.
	m, err = ParseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: the manifest built from the spec is invalid: %w", ErrSpec, err)
	}
	if err := os.WriteFile(filepath.Join(stage, ManifestName), raw, 0o644); err != nil {
		return nil, fmt.Errorf("staging manifest: %w", err)
	}
	if opts.Check != nil {
		log.Info("checking bundle", "bundle", m.ID())
		if err := opts.Check(ctx, stage, m); err != nil {
			return nil, fmt.Errorf("checking %s: %w", m.ID(), err)
		}
	}

	out, err := atomicfile.Create(outPath, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", outPath, err)
	}
	defer out.Abort()
	if err := writeStream(ctx, out, stage, raw, m.Files); err != nil {
		return nil, fmt.Errorf("writing %s: %w", outPath, err)
	}
	size, err := out.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", outPath, err)
	}
	if size > lim.MaxBundleBytes {
		return nil, fmt.Errorf("%w: the bundle is %d bytes, devices accept at most %d", ErrLimit, size, lim.MaxBundleBytes)
	}
	if err := out.Commit(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", outPath, err)
	}
	log.Info("wrote bundle", "bundle", m.ID(), "path", outPath, "bytes", size)
	return m, nil
}

// stage copies the spec's files into dir and returns the manifest.
func (s *Spec) stage(ctx context.Context, dir string, lim Limits, log *slog.Logger) (*Manifest, error) {
	m := &Manifest{
		SchemaVersion:   SchemaVersion,
		Name:            s.Name,
		Version:         s.Version,
		MinAgentVersion: s.MinAgentVersion,
		Runtime: Runtime{
			Model:              ModelFile,
			Inputs:             s.Inputs,
			Outputs:            s.Outputs,
			ExecutionProviders: s.ExecutionProviders,
			AllowNonFinite:     s.AllowNonFinite,
		},
		Lineage:  s.Lineage,
		Sampling: s.Sampling.policy(),
	}
	type source struct{ field, src, name string }
	sources := []source{{"model", s.Model, ModelFile}}
	if s.Pre != "" {
		sources = append(sources, source{"pre", s.Pre, PreFile})
		m.Runtime.Pre = &Processor{Module: PreFile}
	}
	if s.Post != "" {
		sources = append(sources, source{"post", s.Post, PostFile})
		m.Runtime.Post = &Processor{Module: PostFile}
	}
	if s.Profile != "" {
		sources = append(sources, source{"profile", s.Profile, ProfileFile})
		m.Profile = ProfileFile
	}
	for i, e := range s.Extra {
		sources = append(sources, source{fmt.Sprintf("extra[%d]", i), e, filepath.Base(e)})
	}
	if n := len(sources) + 1; n > lim.MaxFiles {
		return nil, fmt.Errorf("%w: %d files, the limit is %d entries with the manifest", ErrLimit, len(sources), lim.MaxFiles)
	}
	used := map[string]string{}
	var total int64
	for _, src := range sources {
		if err := CheckPath(src.name); err != nil {
			return nil, fmt.Errorf("%w: %s %s: %w", ErrSpec, src.field, src.src, err)
		}
		if prev, ok := used[src.name]; ok {
			return nil, fmt.Errorf("%w: %s %s would be stored as %q, which %s already uses", ErrSpec, src.field, src.src, src.name, prev)
		}
		used[src.name] = src.field
		f, err := stageFile(ctx, s.path(src.src), filepath.Join(dir, src.name), lim.MaxFileBytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src.field, err)
		}
		f.Path = src.name
		if f.Size > lim.MaxTotalBytes-total {
			return nil, fmt.Errorf("%w: files total more than %d bytes", ErrLimit, lim.MaxTotalBytes)
		}
		total += f.Size
		m.Files = append(m.Files, f)
		log.Info("staged file", "file", f.Path, "from", src.src, "bytes", f.Size, "sha256", f.SHA256)
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	var err error
	if m.Smoke, err = s.smokeVectors(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSpec, err)
	}
	return m, nil
}

// stageFile copies src (a regular file, symlinks followed) to dst and
// returns its size and sha256.
func stageFile(ctx context.Context, src, dst string, maxBytes int64) (File, error) {
	in, err := os.Open(src)
	if err != nil {
		return File{}, fmt.Errorf("%w: %w", ErrSpec, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return File{}, err
	}
	if !fi.Mode().IsRegular() {
		return File{}, fmt.Errorf("%w: %s is not a regular file", ErrSpec, src)
	}
	if fi.Size() > maxBytes {
		return File{}, fmt.Errorf("%w: %s is %d bytes, the limit is %d per file", ErrLimit, src, fi.Size(), maxBytes)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return File{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), ctxReader{ctx, io.LimitReader(in, maxBytes+1)})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return File{}, fmt.Errorf("copying %s: %w", src, err)
	}
	if n > maxBytes {
		return File{}, fmt.Errorf("%w: %s grew past %d bytes while being read", ErrLimit, src, maxBytes)
	}
	return File{SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// writeStream writes a bundle's zstd-compressed tar stream: manifest.json
// and then files from dir, in the given (sorted) order. Every header is
// the same but for name and size: regular file, mode 0644, uid/gid 0, no
// owner names, mtime 0, ustar format.
func writeStream(ctx context.Context, w io.Writer, dir string, manifest []byte, files []File) error {
	zw, err := zstd.NewWriter(w,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(EncoderWindowBytes),
	)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	header := func(name string, size int64) *tar.Header {
		return &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     name,
			Size:     size,
			Mode:     0o644,
			ModTime:  epoch,
			Format:   tar.FormatUSTAR,
		}
	}
	if err := tw.WriteHeader(header(ManifestName, int64(len(manifest)))); err != nil {
		return err
	}
	if _, err := tw.Write(manifest); err != nil {
		return err
	}
	for _, f := range files {
		if err := writeEntry(ctx, tw, header(f.Path, f.Size), filepath.Join(dir, f.Path), f.SHA256); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// writeEntry copies one staged file into the archive, checking it still
// has the digest the manifest records.
func writeEntry(ctx context.Context, tw *tar.Writer, h *tar.Header, path, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, sum), ctxReader{ctx, f})
	if err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	if n != h.Size || hex.EncodeToString(sum.Sum(nil)) != want {
		return errors.New(h.Name + ": staged file changed while the bundle was written")
	}
	return nil
}
