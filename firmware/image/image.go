// Package image builds the edgefleet arm64 device image from Go: it runs
// build.sh (in this directory; see docs/device-image.md) and reads what it
// made. The script caches both of its stages under the cache directory,
// keyed by their inputs, so a Build with unchanged inputs returns at once.
package image

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrBuild is wrapped by every failed build; the message holds the end of
// the script's output.
var ErrBuild = errors.New("image: build failed")

// Options for Build.
type Options struct {
	// Script is build.sh.
	Script string
	// Deb is the arm64 edge-agent Debian package to install.
	Deb string
	// CacheDir is where the stages are cached (the script's default:
	// .cache/image in the repository).
	CacheDir string
	// Size is the root filesystem's size (default 2G).
	Size string
	// Output receives the script's progress (stderr); nil discards it.
	Output io.Writer
}

// Image is a built image: image.json, and the paths of its files.
type Image struct {
	Dir    string `json:"-"`
	Kernel string `json:"-"` // vmlinuz
	Initrd string `json:"-"` // initrd.img
	RootFS string `json:"-"` // rootfs.img, raw ext4

	Key           string `json:"key"`
	RootFSKey     string `json:"rootfsKey"`
	Suite         string `json:"suite"`
	Arch          string `json:"arch"`
	KernelVersion string `json:"kernelVersion"`
	RootDevice    string `json:"rootDevice"`
	Deb           string `json:"deb"`
	DebSHA256     string `json:"debSHA256"`
	AgentVersion  string `json:"agentVersion"`
	Size          string `json:"size"`
	UsedBytes     int64  `json:"usedBytes"`
	// Seconds is how long each step of the build that made the image
	// took: debootstrap, kernel (0 when the root filesystem stage was
	// cached), extract, agent, mkfs.
	Seconds map[string]float64 `json:"seconds"`
	Built   string             `json:"built"`
}

// Build runs the script (as root: debootstrap and chroot need it) and
// returns the image it made or found in the cache.
func Build(ctx context.Context, o Options) (*Image, error) {
	if o.Script == "" || o.Deb == "" {
		return nil, fmt.Errorf("%w: Script and Deb must be set", ErrBuild)
	}
	args := []string{"--deb", o.Deb}
	if o.CacheDir != "" {
		args = append(args, "--cache", o.CacheDir)
	}
	if o.Size != "" {
		args = append(args, "--size", o.Size)
	}
	cmd := exec.CommandContext(ctx, o.Script, args...)
	var stdout bytes.Buffer
	tailBuf := &tailWriter{max: 8 << 10}
	cmd.Stdout = &stdout
	cmd.Stderr = tailBuf
	if o.Output != nil {
		cmd.Stderr = io.MultiWriter(o.Output, tailBuf)
	}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w\n%s", ErrBuild, o.Script, err, tailBuf.b.String())
	}
	var dir string
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "image: "); ok {
			dir = d
		}
	}
	if dir == "" {
		return nil, fmt.Errorf("%w: %s printed no \"image: DIR\" line", ErrBuild, o.Script)
	}
	return Load(dir)
}

// Load reads a built image's directory.
func Load(dir string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(dir, "image.json"))
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	im := &Image{}
	if err := json.Unmarshal(b, im); err != nil {
		return nil, fmt.Errorf("image: %s: %w", filepath.Join(dir, "image.json"), err)
	}
	im.Dir = dir
	im.Kernel = filepath.Join(dir, "vmlinuz")
	im.Initrd = filepath.Join(dir, "initrd.img")
	im.RootFS = filepath.Join(dir, "rootfs.img")
	for _, p := range []string{im.Kernel, im.Initrd, im.RootFS} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
	}
	return im, nil
}

// tailWriter keeps the last bytes written to it.
type tailWriter struct {
	max int
	b   bytes.Buffer
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.b.Write(p)
	if over := w.b.Len() - w.max; over > 0 {
		w.b.Next(over)
	}
	return len(p), nil
}
