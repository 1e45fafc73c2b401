//go:build linux

package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal: ptm is the side a terminal emulator
// reads, pts the terminal a program writes to.
func openPTY(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ptm.Close() })
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("naming the pseudo-terminal: %v", err)
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening the pseudo-terminal: %v", err)
	}
	if err := unix.IoctlSetWinsize(int(pts.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 120}); err != nil {
		t.Fatalf("sizing the pseudo-terminal: %v", err)
	}
	return ptm, pts
}

// runOnTerminal runs the binary with stderr on a terminal and stdout into
// a pipe, and returns both and the exit code.
func (b *binary) runOnTerminal(args ...string) (stdout, terminal string, code int) {
	b.t.Helper()
	ptm, pts := openPTY(b.t)
	var out bytes.Buffer
	cmd := exec.CommandContext(b.t.Context(), b.path, args...)
	cmd.Env = append(os.Environ(), b.env...)
	cmd.Stdout, cmd.Stderr = &out, pts
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	pts.Close() // the child holds it now: reading ptm ends when it exits
	read := make(chan []byte, 1)
	go func() {
		got, _ := io.ReadAll(ptm) // EIO once the child's side is closed
		read <- got
	}()
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		b.t.Fatal(err)
	}
	return out.String(), string(<-read), code
}

// TestProgressOnTerminal: with stderr a terminal, push and pull draw a
// progress bar there, and stdout still holds only the JSON result.
func TestProgressOnTerminal(t *testing.T) {
	f := startFleetd(t)
	dir, file, remote := f.dir, f.signedDemoBundle(), f.remote
	fc := newBinary(t)

	for _, tc := range []struct {
		what string
		args []string
		bar  string
	}{
		{"push", []string{"bundle", "push", file}, "pushing demo-0.3.0.bundle"},
		{"pull", []string{"bundle", "pull", "demo@0.3.0", "--out", filepath.Join(dir, "pulled.bundle")}, "pulling demo@0.3.0"},
	} {
		stdout, term, code := fc.runOnTerminal(append(append(tc.args, "-o", "json"), remote...)...)
		if code != 0 {
			t.Fatalf("%s on a terminal: exit %d\n%s", tc.what, code, term)
		}
		if !strings.Contains(term, tc.bar) || !strings.Contains(term, "100%") {
			t.Errorf("%s: no progress bar on the terminal: %q", tc.what, term)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(stdout), &v); err != nil || v["name"] != "demo" {
			t.Errorf("%s -o json with a bar on stderr: stdout %q (%v)", tc.what, stdout, err)
		}
	}
}
