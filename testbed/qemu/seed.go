package qemu

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// SeedLabel is the seed disk's file system label, which the image's
// edgefleet-seed.service looks for.
const SeedLabel = "EFSEED"

// seedPath accepts a relative path inside the seed.
func seedPath(p string) error {
	c := filepath.Clean(p)
	if p == "" || filepath.IsAbs(p) || c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return fmt.Errorf("path %q: want a relative path inside the seed disk", p)
	}
	return nil
}

// writeSeed makes the seed disk: an ext4 file system without a journal
// (the guest mounts it read-only) holding files, built in tmp with
// mkfs.ext4 -d.
func writeSeed(img, tmp string, files map[string][]byte) error {
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	total := int64(0)
	for p, b := range files {
		path := filepath.Join(tmp, p)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
		total += int64(len(b)) + 4096
	}
	defer os.RemoveAll(tmp)
	// Room for metadata: a quarter more, and 4 MiB.
	size := total + total/4 + 4<<20
	os.Remove(img)
	return run("e2fsprogs", "mkfs.ext4", "-q", "-F", "-L", SeedLabel, "-O", "^has_journal", "-E", "root_owner=0:0",
		"-d", tmp, img, strconv.FormatInt(size/1024, 10)+"k")
}
