//go:build demotest

// The end-to-end tests run the demo program as make demo does, with the
// real binaries, and take minutes, so they are built only with the
// demotest tag: make demo-test runs them (go test -tags demotest).

package main

import (
	"bufio"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

var binDir = flag.String("demo.bin", "", "directory with fleetd, edge-agent and fleetctl (default: the checkout's bin/)")

// demoSetup builds the demo program and finds the binaries it runs. It
// makes this process a child subreaper, so that any process the demo
// leaves behind becomes a child of the test, where noOrphans finds it.
func demoSetup(t *testing.T) (exe, bin, root string) {
	t.Helper()
	root = testenv.Root(t)
	bin = *binDir
	if bin == "" {
		bin = filepath.Join(root, "bin")
	}
	for _, b := range []string{"fleetd", "edge-agent", "fleetctl"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("%s: %v: run make demo-test (it builds them), or make build plus go build -o bin/ ./controlplane/cmd/fleetd", filepath.Join(bin, b), err)
		}
	}
	exe = testenv.Command(t, "./testbed/cmd/demo")
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("becoming a child subreaper: %v", err)
	}
	return exe, bin, root
}

// startDemo starts the demo in its own process group (as a shell's job
// would be), its output piped into out and, line by line, into lines.
func startDemo(t *testing.T, exe, bin, root, work string, out *testenv.SyncBuffer, lines chan<- string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(exe, "--repo", root, "--bin", bin, "--workdir", work, "--plain")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			out.Write(append(sc.Bytes(), '\n'))
			if lines != nil {
				select {
				case lines <- sc.Text():
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		pw.Close()
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}

// waitExit waits for the demo to exit and returns its exit status.
func waitExit(t *testing.T, cmd *exec.Cmd, timeout time.Duration, out *testenv.SyncBuffer) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("waiting for the demo: %v", err)
		}
		return 0
	case <-time.After(timeout):
		cmd.Process.Signal(syscall.SIGQUIT)
		time.Sleep(2 * time.Second)
		t.Fatalf("the demo did not exit within %v; its output:\n%s", timeout, out)
		return -1
	}
}

// noOrphans fails the test if a process the demo started is still
// running: a child of this (subreaper) process, or any process whose
// command line or working directory is in the workspace. A process that
// the demo killed may take a moment to be reaped on a busy machine, so
// it looks again until none is left, for up to 30 s; what is still there
// then fails the test (and is killed).
func noOrphans(t *testing.T, work string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := leftovers(t, work)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for pid, args := range left {
				t.Errorf("process %d (%s) is still running 30 s after the demo exited", pid, args)
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leftovers are the processes noOrphans looks for, by pid, with their
// command lines.
func leftovers(t *testing.T, work string) map[int]string {
	t.Helper()
	me := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	left := map[int]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == me {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone
		}
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:]) // state, ppid, ...
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.ReplaceAll(string(cmdline), "\x00", " ")
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		orphan := len(fields) > 1 && fields[1] == strconv.Itoa(me) && fields[0] != "Z"
		inWork := strings.Contains(args, work) || cwd == work || strings.HasPrefix(cwd, work+"/")
		if orphan || inWork {
			left[pid] = args
		}
	}
	return left
}

// TestDemo runs the whole demo and checks that it succeeds, says what
// happened, keeps its data and leaves no process behind.
func TestDemo(t *testing.T) {
	exe, bin, root := demoSetup(t)
	work := filepath.Join(t.TempDir(), "ws")
	var out testenv.SyncBuffer
	start := time.Now()
	cmd := startDemo(t, exe, bin, root, work, &out, nil)
	code := waitExit(t, cmd, 8*time.Minute, &out)
	t.Logf("the demo took %v", time.Since(start).Round(time.Second))
	if code != 0 {
		t.Fatalf("exit status %d; output:\n%s", code, out.String())
	}
	noOrphans(t, work)
	got := out.String()
	for _, want := range []string{
		"✓ [14/14]",
		"rollout succeeded",
		"gate latencyP95: breach",
		"rollout rolled_back: latencyP95 breached",
		"type dev.edgefleet.rollout.rolled_back, id ",
		"automatic true, gate latencyP95",
		"region=eu: no drift",
		"region=us: DRIFT",
		"nothing the demo started is still running",
		"every step did what it said",
		"fleetd-data/registry/samples/bundle=silero-vad/version=5.0.0/date=", // samples.go
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(got, "✗") {
		t.Errorf("a step failed")
	}
	for _, p := range []string{"fleetd-data/inventory.db", "fleetd-data/rollouts.db", "agents/eu-pi5-1/data/state.json",
		"bundles/silero-vad-5.0.0.bundle.sig", "bundles/silero-vad-5.0.1.bundle", "logs/fleetd.log", "logs/transcript.txt"} {
		if _, err := os.Stat(filepath.Join(work, p)); err != nil {
			t.Errorf("the workspace lacks %s: %v", p, err)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", got)
	}
}

// TestDemoInterrupted stops the demo with a signal while fleetd and the
// agents run (and, the second time, while audio streams through them),
// and checks that it stops them all and exits with the signal's status.
func TestDemoInterrupted(t *testing.T) {
	exe, bin, root := demoSetup(t)
	for _, tc := range []struct {
		name  string
		after string // a line the demo prints
		sig   syscall.Signal
		code  int
	}{
		{"sigint-after-agents-start", "[ 7/14]", syscall.SIGINT, 130},
		{"sigterm-while-streaming", "[10/14]", syscall.SIGTERM, 143},
	} {
		t.Run(tc.name, func(t *testing.T) {
			work := filepath.Join(t.TempDir(), "ws")
			var out testenv.SyncBuffer
			lines := make(chan string, 1000)
			cmd := startDemo(t, exe, bin, root, work, &out, lines)
			deadline := time.After(3 * time.Minute)
		wait:
			for {
				select {
				case l := <-lines:
					if strings.HasPrefix(l, tc.after) {
						break wait
					}
				case <-deadline:
					t.Fatalf("the demo never printed %q; output:\n%s", tc.after, out.String())
				}
			}
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			code := waitExit(t, cmd, time.Minute, &out)
			got := out.String()
			if code != tc.code {
				t.Errorf("exit status %d, want %d", code, tc.code)
			}
			for _, want := range []string{"Stopping everything the demo started", "nothing the demo started is still running", "The demo was"} {
				if !strings.Contains(got, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			noOrphans(t, work)
			if t.Failed() {
				t.Logf("output:\n%s", got)
			}
		})
	}
}
