// Package atomicfile writes files so that a reader, or the machine after a
// crash or a power cut, sees either the old file or the complete new one:
// the data goes to a temporary file beside the final path, is fsynced,
// renamed (or, for a file that must not exist yet, hard-linked) into
// place, and the directory is fsynced so that the rename itself is
// durable.
package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
)

// File is a file being written under a temporary name beside its final
// path; Commit puts it in place, Abort removes it.
type File struct {
	*os.File
	path      string
	noReplace bool
	done      bool
}

// Create starts writing path with mode perm. The temporary file is
// created in path's directory, which must exist.
func Create(path string, perm os.FileMode) (*File, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &File{File: f, path: path}, nil
}

// CreateNew is Create for a file that must not exist yet: Commit fails
// with an error satisfying errors.Is(err, fs.ErrExist) if path exists by
// then, and leaves it as it was.
func CreateNew(path string, perm os.FileMode) (*File, error) {
	f, err := Create(path, perm)
	if err != nil {
		return nil, err
	}
	f.noReplace = true
	return f, nil
}

// Commit fsyncs the file, puts it at its final path and fsyncs the
// directory. On error the temporary file is removed.
func (f *File) Commit() error {
	if f.done {
		return errors.New(f.path + ": already committed or aborted")
	}
	f.done = true
	tmp := f.Name()
	defer os.Remove(tmp) // after a rename, a no-op; after a link, the second name
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	var err error
	if f.noReplace {
		err = os.Link(tmp, f.path)
	} else {
		err = os.Rename(tmp, f.path)
	}
	if err != nil {
		return err
	}
	return SyncDir(filepath.Dir(f.path))
}

// Abort removes the temporary file; it is a no-op after Commit.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.Close()
	os.Remove(f.Name())
}

// WriteFile writes data to path atomically with mode perm, replacing
// what was there.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return write(Create, path, data, perm)
}

// WriteNew writes data to path atomically with mode perm; if path exists
// it fails (fs.ErrExist) and changes nothing.
func WriteNew(path string, data []byte, perm os.FileMode) error {
	return write(CreateNew, path, data, perm)
}

func write(create func(string, os.FileMode) (*File, error), path string, data []byte, perm os.FileMode) error {
	f, err := create(path, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return err
	}
	return f.Commit()
}

// SyncDir fsyncs the directory dir, making the creations, renames and
// removals in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
