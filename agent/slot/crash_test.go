package slot

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// Environment of the helper process.
const (
	envHelper = "EDGEFLEET_SLOT_HELPER"
	envDir    = "EDGEFLEET_SLOT_DIR"
	envURL    = "EDGEFLEET_SLOT_URL"
	envPub    = "EDGEFLEET_SLOT_PUB"
	envPoint  = "EDGEFLEET_SLOT_POINT"
)

// pointMidDownload is not an Install hook: the test's server stalls in
// the middle of the bundle's body and the child is killed then.
const pointMidDownload = "mid-download"

// TestHelperProcess is the child of TestCrashDuringInstall: it opens the
// store and installs a bundle from a URL, printing each crash point it
// passes and stopping dead at the one it was given, where the parent
// kills it with SIGKILL. Run directly, it does nothing.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		return
	}
	target := os.Getenv(envPoint)
	trust, err := bundle.LoadTrustRoot(os.Getenv(envPub))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	opts := Options{
		Trust:        trust,
		MinFreeBytes: -1,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Hook: func(point string) {
			fmt.Printf("POINT %s\n", point)
			if point == target {
				time.Sleep(time.Hour) // until SIGKILL
			}
		},
	}
	s, err := Open(os.Getenv(envDir), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println("OPEN")
	_, err = s.Install(context.Background(), Request{Bundle: os.Getenv(envURL)}, func(ctx context.Context, dir string, m *bundle.Manifest) error {
		return checkActivated(dir, m)
	})
	fmt.Printf("INSTALLED err=%v\n", err)
	os.Exit(3) // the parent should have killed us before this
}

// TestCrashDuringInstall kills a real process installing demo@2.0.0 over
// demo@1.0.0 at each crash point, then checks that opening the store
// finds exactly one consistent active version (the old one before the
// state file is committed, the new one after), no leftovers, and that the
// next Install works.
func TestCrashDuringInstall(t *testing.T) {
	k := newKeys(t)
	v1, v2, v3 := buildBundle(t, k, "1.0.0"), buildBundle(t, k, "2.0.0"), buildBundle(t, k, "3.0.0")
	srv := newFileServer(t, v1, v2, v3)
	tests := []struct {
		point       string
		active, lkg string
		// What the crash leaves for Open to clean: entries in bundles/
		// and whether a temp state file exists.
		dirs int
		temp bool
	}{
		{pointMidDownload, "demo@1.0.0", "", 1, false},
		{PointDownloaded, "demo@1.0.0", "", 1, false},
		{PointUnpacked, "demo@1.0.0", "", 2, false},
		{PointActivated, "demo@1.0.0", "", 2, false},
		{PointStateTempWrite, "demo@1.0.0", "", 2, true},
		{PointStateWritten, "demo@2.0.0", "demo@1.0.0", 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.point, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, testOptions(t, k))
			if _, err := s.Install(t.Context(), Request{Bundle: v1.path}, (&activator{}).activate); err != nil {
				t.Fatal(err)
			}
			s.Close()

			var stalled chan struct{}
			if tt.point == pointMidDownload {
				stalled = make(chan struct{})
				srv.mu.Lock()
				srv.stall = stalled
				srv.mu.Unlock()
			}
			fi, err := os.Stat(v2.path)
			if err != nil {
				t.Fatal(err)
			}
			killAt(t, tt.point, stalled, dir, fi.Size()/2, []string{
				envHelper + "=1", envDir + "=" + dir, envURL + "=" + srv.url(v2),
				envPub + "=" + k.pub, envPoint + "=" + tt.point,
			})

			if got := listDir(t, filepath.Join(dir, bundlesDir)); len(got) != tt.dirs {
				t.Fatalf("after the crash bundles/ holds %q, want %d entries", got, tt.dirs)
			}
			temp := false
			for _, name := range listDir(t, dir) {
				temp = temp || strings.HasPrefix(name, tempPref)
			}
			if temp != tt.temp {
				t.Fatalf("temp state file after the crash: %v, want %v", temp, tt.temp)
			}

			s = openStore(t, dir, testOptions(t, k))
			assertActive(t, s, tt.active, tt.lkg)
			downloads := listDir(t, filepath.Join(dir, downloadsDir))
			if tt.point == pointMidDownload {
				// The partial download is kept, to be resumed.
				if len(downloads) != 1 || !strings.HasSuffix(downloads[0], ".bundle.part") {
					t.Fatalf("downloads/ holds %q, want the bundle's part file", downloads)
				}
			} else if len(downloads) != 0 {
				t.Fatalf("downloads/ holds %q after recovery", downloads)
			}
			if st := stateFile(t, dir); st.LastError != nil {
				t.Fatalf("a crash is not a failed install, lastError %+v", st.LastError)
			}

			// The store works on: install the next version from the server.
			next, wantLKG := v2, tt.active
			if tt.active == "demo@2.0.0" {
				next = v3
			}
			srv.mu.Lock()
			nRanges := len(srv.ranges)
			srv.mu.Unlock()
			if _, err := s.Install(t.Context(), Request{Bundle: srv.url(next)}, (&activator{}).activate); err != nil {
				t.Fatalf("Install after the crash: %v", err)
			}
			assertActive(t, s, next.m.ID(), wantLKG)
			if tt.point == pointMidDownload {
				srv.mu.Lock()
				r := srv.ranges[nRanges:]
				srv.mu.Unlock()
				if len(r) != 1 || !strings.HasPrefix(r[0], "bytes=") {
					t.Fatalf("bundle requests after the crash had Range %q, want one resumed request", r)
				}
			}
		})
	}
}

// killAt runs the helper process and SIGKILLs it when it reports point
// (or, for pointMidDownload, when the server closes stalled).
func killAt(t *testing.T, point string, stalled chan struct{}, dir string, half int64, env []string) {
	t.Helper()
	cmd, stdout, stderr := testenv.HelperProcess(t, env...)
	reached := make(chan struct{})
	exited := make(chan []string)
	go func() {
		var lines []string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if sc.Text() == "POINT "+point {
				close(reached)
			}
		}
		exited <- lines
	}()
	select {
	case <-reached:
	case <-stalled: // nil unless pointMidDownload
		waitForPart(t, dir, half)
	case lines := <-exited:
		cmd.Wait()
		t.Fatalf("helper exited before %s:\nstdout:\n%s\nstderr:\n%s", point, strings.Join(lines, "\n"), stderr.String())
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	lines := <-exited
	cmd.Wait()
	if st := cmd.ProcessState; st.Exited() {
		t.Fatalf("helper exited on its own (%v) instead of being killed:\n%s", st, strings.Join(lines, "\n"))
	}
	t.Logf("helper killed at %s after: %s", point, strings.Join(lines, ", "))
}

// waitForPart waits until the child has written the half of the bundle
// the server sent before stalling: bytes sent are not yet bytes written.
func waitForPart(t *testing.T, dir string, half int64) {
	t.Helper()
	for {
		ents, _ := os.ReadDir(filepath.Join(dir, downloadsDir))
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".bundle.part") {
				continue
			}
			if fi, err := e.Info(); err == nil && fi.Size() >= half {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}
