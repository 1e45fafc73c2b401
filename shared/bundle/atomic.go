package bundle

import (
	"fmt"
	"os"
	"path/filepath"
)

// atomicFile is a file written under a temporary name beside its final
// path and renamed into place by Commit, so that readers see either the
// old file or the complete new one.
type atomicFile struct {
	*os.File
	path string
	done bool
}

func createAtomic(path string, perm os.FileMode) (*atomicFile, error) {
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
	return &atomicFile{File: f, path: path}, nil
}

// Commit fsyncs the file, renames it to its final path and fsyncs the
// directory.
func (a *atomicFile) Commit() error {
	if a.done {
		return fmt.Errorf("%s: already committed or aborted", a.path)
	}
	a.done = true
	if err := a.Sync(); err != nil {
		a.Close()
		os.Remove(a.Name())
		return err
	}
	if err := a.Close(); err != nil {
		os.Remove(a.Name())
		return err
	}
	if err := os.Rename(a.Name(), a.path); err != nil {
		os.Remove(a.Name())
		return err
	}
	return syncDir(filepath.Dir(a.path))
}

// Abort removes the temporary file; it is a no-op after Commit.
func (a *atomicFile) Abort() {
	if a.done {
		return
	}
	a.done = true
	a.Close()
	os.Remove(a.Name())
}

// writeFileAtomic writes data to path atomically with the given mode.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	a, err := createAtomic(path, perm)
	if err != nil {
		return err
	}
	if _, err := a.Write(data); err != nil {
		a.Abort()
		return err
	}
	return a.Commit()
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
