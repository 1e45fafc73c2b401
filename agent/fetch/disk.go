package fetch

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// FreeBytes returns the bytes available to an unprivileged user on the
// filesystem holding path.
func FreeBytes(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// CheckSpace returns an ErrNoSpace error naming the bytes needed and free
// when need plus minFree bytes do not fit on the filesystem holding dir.
func CheckSpace(dir string, need, minFree int64) error {
	free, err := FreeBytes(dir)
	if err != nil {
		return err
	}
	if need < 0 {
		need = 0
	}
	if need+minFree > free {
		return fmt.Errorf("%w on %s: need %d bytes (%d to write + %d margin), %d free", ErrNoSpace, dir, need+minFree, need, minFree, free)
	}
	return nil
}

func (f *Fetcher) checkSpace(dir string, need int64) error {
	return CheckSpace(dir, need, f.opts.MinFreeBytes)
}
