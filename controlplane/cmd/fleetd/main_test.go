package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

// runFleetd runs the built binary and returns its output and exit code.
func runFleetd(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return testenv.Run(t, bin, nil, args...)
}

// TestCommandLine runs the built fleetd: version, help, exit codes, and an
// address in use refused before anything is written.
func TestCommandLine(t *testing.T) {
	bin := testenv.Command(t, "./controlplane/cmd/fleetd")

	if out, _, code := runFleetd(t, bin, "version"); code != 0 || !strings.HasPrefix(out, "fleetd ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	if _, errOut, code := runFleetd(t, bin, "--help"); code != 0 || !strings.Contains(errOut, "fleetd mosquitto-config") ||
		!strings.Contains(errOut, "fleetd version") || !strings.Contains(errOut, "-http-listen") || !strings.Contains(errOut, "Exit codes") {
		t.Errorf("--help: exit %d, %q", code, errOut)
	}
	if _, errOut, code := runFleetd(t, bin, "--no-such-flag"); code != 2 || !strings.Contains(errOut, "no-such-flag") {
		t.Errorf("unknown flag: exit %d, %q", code, errOut)
	}
	if _, errOut, code := runFleetd(t, bin, "--set", "desired.lifetime=soon"); code != 2 || !strings.Contains(errOut, "desired.lifetime") {
		t.Errorf("bad --set: exit %d, %q", code, errOut)
	}

	// Each listen address in use: exit 1 naming the address and its key,
	// and no data directory, so no token was generated and shown.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct{ key, flag string }{
		{"http.listen", "--http-listen"},
		{"broker.listen", "--mqtt-listen"},
	} {
		data := filepath.Join(t.TempDir(), "data")
		args := []string{"--data-dir", data, "--http-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", tc.flag, busy.Addr().String()}
		_, errOut, code := runFleetd(t, bin, args...)
		want := "fleetd: cannot listen on " + busy.Addr().String() + " (" + tc.key + ")"
		if code != 1 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "address already in use") {
			t.Errorf("%s in use: exit %d, stderr %q; want 1 and %q", tc.key, code, errOut, want)
		}
		if strings.Contains(errOut, "shown once") || strings.Contains(errOut, "invalid configuration") {
			t.Errorf("%s in use: stderr %q", tc.key, errOut)
		}
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s in use: the data directory was made (%v)", tc.key, err)
		}
	}
}
