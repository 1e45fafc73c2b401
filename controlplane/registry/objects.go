package registry

// Objects: whole files other parts of fleetd keep in the registry's
// storage beside the bundles (the Parquet sample files of
// controlplane/lake), under a folder of their own.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
)

// ObjectStore keeps whole objects by key: slash-separated relative paths
// such as "bundle=vad/version=1.0.0/date=2026-03-01/part-1.parquet".
type ObjectStore interface {
	// PutObject stores data under key, atomically: a reader sees the
	// whole object or none of it (replacing an object with the same key).
	PutObject(ctx context.Context, key string, data []byte) error
	// GetObject reads the object of key (fs.ErrNotExist if none).
	GetObject(ctx context.Context, key string) ([]byte, error)
	// ListObjects lists the keys under prefix ("" for all), sorted.
	ListObjects(ctx context.Context, prefix string) ([]string, error)
	// Location is where key is, for people: a file path or an
	// s3://bucket/key URL. Location("") is the store's root.
	Location(key string) string
}

// checkKey refuses keys that could leave the store's folder.
func checkKey(key string) error {
	if key == "" || strings.HasPrefix(key, "/") || strings.Contains(key, `\`) || path.Clean(key) != key ||
		key == ".." || strings.HasPrefix(key, "../") {
		return fmt.Errorf("%w: object key %q: must be a clean relative slash-separated path", ErrInvalid, key)
	}
	return nil
}

// DirObjects is an ObjectStore in a directory of the local file system:
// each object a file, written to a temporary name, fsynced and renamed
// into place, its new directories fsynced.
type DirObjects struct {
	// Dir is the root directory; it is created when needed.
	Dir string
}

var _ ObjectStore = (*DirObjects)(nil)

// CheckObjectsFolder checks sub, a folder of a registry's storage for
// other objects (Objects): a relative slash-separated path, clean, that
// is neither the registry's own folders (bundles, tmp) nor holds them.
func CheckObjectsFolder(sub string) error {
	first, _, _ := strings.Cut(sub, "/")
	switch {
	case sub == "" || sub == "." || strings.HasPrefix(sub, "/") || strings.ContainsAny(sub, `\`) || path.Clean(sub) != sub ||
		sub == ".." || strings.HasPrefix(sub, "../"):
		return fmt.Errorf("%w: folder %q: must be a relative folder such as samples or lake/edge", ErrInvalid, sub)
	case first == "bundles" || first == "tmp":
		return fmt.Errorf("%w: folder %q: %s/ is the registry's own (bundles/ holds the bundles, tmp/ what is being pushed or deleted)", ErrInvalid, sub, first)
	}
	return nil
}

// Objects is the ObjectStore in the folder sub of the registry's
// directory (Dir/sub); sub must pass CheckObjectsFolder.
func (f *FS) Objects(sub string) (*DirObjects, error) {
	if err := CheckObjectsFolder(sub); err != nil {
		return nil, err
	}
	return &DirObjects{Dir: filepath.Join(f.cfg.Dir, filepath.FromSlash(sub))}, nil
}

// PutObject implements ObjectStore.
func (d *DirObjects) PutObject(ctx context.Context, key string, data []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := filepath.Join(d.Dir, filepath.FromSlash(key))
	// Create the missing directories one by one, fsyncing each parent so
	// that the new entries survive a crash.
	var missing []string
	for dir := filepath.Dir(p); ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(dir); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("registry: objects: %w", err)
		}
		missing = append(missing, dir)
		if dir == filepath.Dir(dir) {
			break
		}
	}
	for _, dir := range slices.Backward(missing) {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("registry: objects: %w", err)
		}
		if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
			return fmt.Errorf("registry: objects: %w", err)
		}
	}
	if err := atomicfile.WriteFile(p, data, 0o644); err != nil {
		return fmt.Errorf("registry: objects: writing %s: %w", p, err)
	}
	return nil
}

// GetObject implements ObjectStore.
func (d *DirObjects) GetObject(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(d.Dir, filepath.FromSlash(key)))
	if err != nil {
		return nil, fmt.Errorf("registry: objects: %w", err)
	}
	return b, nil
}

// ListObjects implements ObjectStore. Temporary files of writes in
// progress (names starting with ".") are not listed.
func (d *DirObjects) ListObjects(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	err := filepath.WalkDir(d.Dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == d.Dir {
				return filepath.SkipAll
			}
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			return nil
		}
		rel, err := filepath.Rel(d.Dir, p)
		if err != nil {
			return err
		}
		if k := filepath.ToSlash(rel); strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: objects: %w", err)
	}
	slices.Sort(keys)
	return keys, nil
}

// Location implements ObjectStore.
func (d *DirObjects) Location(key string) string {
	return filepath.Join(d.Dir, filepath.FromSlash(key))
}

// S3Objects is an ObjectStore under a prefix of the S3 registry's bucket:
// one PutObject per object, which S3 makes visible whole or not at all.
type S3Objects struct {
	s      *S3
	prefix string // ends with /
}

var _ ObjectStore = (*S3Objects)(nil)

// Objects is the ObjectStore under the key prefix PREFIX+sub+"/" of the
// registry's bucket (PREFIX is S3Config.Prefix); sub must pass
// CheckObjectsFolder.
func (s *S3) Objects(sub string) (*S3Objects, error) {
	if err := CheckObjectsFolder(sub); err != nil {
		return nil, err
	}
	return &S3Objects{s: s, prefix: s.cfg.Prefix + sub + "/"}, nil
}

// PutObject implements ObjectStore.
func (o *S3Objects) PutObject(ctx context.Context, key string, data []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	_, err := o.s.client.PutObject(ctx, o.s.cfg.Bucket, o.prefix+key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return fmt.Errorf("registry: objects: putting %s: %w", o.Location(key), err)
	}
	return nil
}

// GetObject implements ObjectStore.
func (o *S3Objects) GetObject(ctx context.Context, key string) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	obj, err := o.s.client.GetObject(ctx, o.s.cfg.Bucket, o.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("registry: objects: %w", err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		if isNoSuchKey(err) {
			return nil, fmt.Errorf("registry: objects: %s: %w", o.Location(key), fs.ErrNotExist)
		}
		return nil, fmt.Errorf("registry: objects: reading %s: %w", o.Location(key), err)
	}
	return b, nil
}

// ListObjects implements ObjectStore.
func (o *S3Objects) ListObjects(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	for obj := range o.s.client.ListObjects(ctx, o.s.cfg.Bucket, minio.ListObjectsOptions{Prefix: o.prefix + prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("registry: objects: listing %s: %w", o.Location(prefix), obj.Err)
		}
		keys = append(keys, strings.TrimPrefix(obj.Key, o.prefix))
	}
	slices.Sort(keys)
	return keys, nil
}

// Location implements ObjectStore.
func (o *S3Objects) Location(key string) string {
	return "s3://" + o.s.cfg.Bucket + "/" + o.prefix + key
}
