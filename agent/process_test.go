package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/slot"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// crashPointEnv is the edge-agent command's test hook (its CrashPointEnv).
const crashPointEnv = "EDGEFLEET_TEST_CRASHPOINT"

var binary struct {
	once sync.Once
	path string
	err  error
}

// edgeAgent builds the edge-agent command (once per process).
func edgeAgent(t testing.TB) string {
	t.Helper()
	testKeys(t) // creates fixture.dir
	binary.once.Do(func() {
		binary.path = filepath.Join(fixture.dir, "edge-agent")
		binary.err = testenv.Build(t, "./agent/cmd/edge-agent", binary.path)
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// agentProc is an edge-agent run process.
type agentProc struct {
	cmd   *exec.Cmd
	out   *testenv.SyncBuffer
	done  chan struct{}
	state *os.ProcessState
}

func startDaemon(t testing.TB, s testSetup, env ...string) *agentProc {
	t.Helper()
	d := &agentProc{out: &testenv.SyncBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(edgeAgent(t), "run", "--config", s.cfgPath)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.cmd.Wait()
		d.state = d.cmd.ProcessState
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("edge-agent (pid %d) output:\n%s", d.cmd.Process.Pid, d.out.String())
		}
	})
	return d
}

// waitReady waits until the process answers its status with the active
// model loaded (or none to load).
func (d *agentProc) waitReady(t testing.TB, s testSetup) Status {
	t.Helper()
	c := NewClient(s.socket)
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-d.done:
			t.Fatalf("edge-agent exited while starting (%v):\n%s", d.state, d.out.String())
		default:
		}
		st, err := c.Status(t.Context())
		if err == nil && st.Running && (st.Ready || st.Active == nil) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge-agent not ready after 30s: %+v, %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (d *agentProc) stop(t testing.TB) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.wait(t)
	if !d.state.Success() {
		t.Fatalf("edge-agent exited with %v after SIGTERM", d.state)
	}
}

func (d *agentProc) wait(t testing.TB) {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatal("edge-agent did not exit within 30s")
	}
}

// killed reports whether the process died of SIGKILL.
func (d *agentProc) killed() bool {
	ws, ok := d.state.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// cli runs edge-agent with args and returns its output and exit status.
func cli(t testing.TB, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return testenv.Run(t, edgeAgent(t), env, args...)
}

// mustCLI runs edge-agent and fails the test unless it succeeds.
func mustCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, code := cli(t, nil, args...)
	if code != 0 {
		t.Fatalf("edge-agent %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func cliStatus(t *testing.T, s testSetup) Status {
	t.Helper()
	var st Status
	out := mustCLI(t, "status", "--config", s.cfgPath, "-o", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	return st
}

// TestProcessInstallKillTerm runs the edge-agent process: an install
// through the CLI and the admin API, status, predictions; SIGKILL during
// a burst of predictions loses nothing that was reported durable, and
// SIGTERM exits cleanly with every sampled prediction in the outbox.
func TestProcessInstallKillTerm(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	s := newSetup(t, "")
	d := startDaemon(t, s)
	d.waitReady(t, s)

	out := mustCLI(t, "install", "--config", s.cfgPath, v1.path, "--sig", v1.sig)
	if !strings.Contains(out, "silero-vad@1.0.0 is active") {
		t.Fatalf("install output %q", out)
	}
	st := cliStatus(t, s)
	if !st.Running || !st.Ready || st.Active == nil || st.Active.ID != "silero-vad@1.0.0" || st.Provider != "cpu" || st.PID != d.cmd.Process.Pid {
		t.Fatalf("status after the install: %+v", st)
	}
	if text := mustCLI(t, "status", "--config", s.cfgPath); !strings.Contains(text, "silero-vad@1.0.0") || !strings.Contains(text, "ready") {
		t.Fatalf("status text:\n%s", text)
	}
	c := NewClient(s.socket)
	defer c.Close()
	if r := infer(t, c, tensorRequest(t, "first"), false); !near(r.output(t), sileroOutput) || r.ModelVersion != "1.0.0" {
		t.Fatalf("answer %+v", r)
	}

	// A burst of predictions, SIGKILL in the middle of it.
	var ok atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code, _, err := post(c, tensorRequest(t, fmt.Sprintf("burst-%d-%d", w, i)), false)
				if err == nil && code == 200 {
					ok.Add(1)
				}
			}
		})
	}
	for ok.Load() < 200 {
		time.Sleep(5 * time.Millisecond)
	}
	durable := cliStatus(t, s).Buffer // appended (fsynced) by now
	for n := ok.Load(); ok.Load() < n+50; {
		time.Sleep(5 * time.Millisecond)
	}
	d.cmd.Process.Kill()
	d.wait(t)
	close(stop)
	wg.Wait()
	if !d.killed() {
		t.Fatalf("edge-agent exited with %v, want killed", d.state)
	}
	t.Logf("%d predictions answered before SIGKILL; %d records durable when asked", ok.Load(), durable.Appended)

	d = startDaemon(t, s)
	st = d.waitReady(t, s)
	if st.Active == nil || st.Active.ID != "silero-vad@1.0.0" || !st.Ready {
		t.Fatalf("status after SIGKILL and restart: %+v", st)
	}
	if st.Buffer.Appended < durable.Appended || st.Buffer.Records < durable.Records || st.Buffer.Dropped != 0 {
		t.Fatalf("outbox after SIGKILL %+v, before %+v: durable records lost", st.Buffer, durable)
	}

	// SIGTERM during a burst: every prediction answered with a 200 is in
	// the outbox after the clean exit.
	var mu sync.Mutex
	var answered []string
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("term-%d-%d", w, i)
				code, _, err := post(c, tensorRequest(t, id), false)
				if err != nil {
					return // the agent is gone
				}
				if code == 200 {
					mu.Lock()
					answered = append(answered, id)
					mu.Unlock()
				}
			}
		})
	}
	for {
		mu.Lock()
		n := len(answered)
		mu.Unlock()
		if n >= 100 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	d.stop(t)
	wg.Wait()
	if !strings.Contains(d.out.String(), "edge agent stopped") {
		t.Errorf("no clean stop in the log:\n%s", d.out.String())
	}
	recs, stats := records(t, s.dataDir)
	kinds := byKind(t, recs)
	if len(kinds[protocol.RecordMetrics]) == 0 {
		t.Error("no metrics record: the last window was not flushed at SIGTERM")
	}
	seen := map[string]bool{}
	for _, p := range kinds[protocol.RecordPrediction] {
		var rec protocol.PredictionRecord
		if err := json.Unmarshal(p, &rec); err != nil {
			t.Fatal(err)
		}
		seen[rec.RequestID] = true
	}
	missing := 0
	for _, id := range answered {
		if !seen[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of the %d predictions answered before the exit are not in the outbox", missing, len(answered))
	}
	t.Logf("%d predictions answered during the SIGTERM burst, all in the outbox", len(answered))
	if stats.Appended != uint64(len(recs)) || stats.Records != len(recs) {
		t.Errorf("outbox stats %+v, %d records", stats, len(recs))
	}

	// Without a daemon the CLI reads the data directory itself.
	st = cliStatus(t, s)
	if st.Running || st.Active == nil || st.Active.ID != "silero-vad@1.0.0" || st.Buffer.Records != len(recs) {
		t.Fatalf("status without a daemon: %+v", st)
	}
}

// TestProcessCrashDuringInstall kills the agent with SIGKILL at every
// crash point of an install driven through the admin API; after a
// restart exactly one consistent version is active and serving.
func TestProcessCrashDuringInstall(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	v2 := sileroBundle(t, spec{version: "2.0.0"})
	for _, tc := range []struct {
		point, want string
	}{
		{slot.PointDownloaded, "1.0.0"},
		{slot.PointUnpacked, "1.0.0"},
		{slot.PointActivated, "1.0.0"},
		{slot.PointStateTempWrite, "1.0.0"},
		{slot.PointStateWritten, "2.0.0"},
	} {
		t.Run(tc.point, func(t *testing.T) {
			s := newSetup(t, "")
			// v1 installed by the CLI with no daemon running.
			mustCLI(t, "install", "--config", s.cfgPath, v1.path)

			d := startDaemon(t, s, crashPointEnv+"="+tc.point)
			d.waitReady(t, s)
			c := NewClient(s.socket)
			defer c.Close()
			if _, err := c.Install(t.Context(), v2.path, v2.sig, InstallOptions{}); err == nil {
				t.Fatal("install succeeded; the agent should have died")
			}
			d.wait(t)
			if !d.killed() {
				t.Fatalf("edge-agent exited with %v, want killed at %s", d.state, tc.point)
			}

			d = startDaemon(t, s)
			st := d.waitReady(t, s)
			if st.Active == nil || st.Active.Version != tc.want || !st.Ready {
				t.Fatalf("after a crash at %s: active %+v, want %s", tc.point, st.Active, tc.want)
			}
			if r := infer(t, c, tensorRequest(t, ""), false); r.ModelVersion != tc.want || !near(r.output(t), sileroOutput) {
				t.Fatalf("serving %+v, want %s", r, tc.want)
			}
			keep := map[string]bool{filepath.Base(st.Active.Dir): true}
			if tc.want == "2.0.0" {
				if st.LastKnownGood == nil || st.LastKnownGood.Version != "1.0.0" {
					t.Fatalf("last-known-good %+v, want 1.0.0", st.LastKnownGood)
				}
				keep[filepath.Base(st.LastKnownGood.Dir)] = true
			} else if st.LastKnownGood != nil {
				t.Fatalf("last-known-good %+v, want none", st.LastKnownGood)
			}
			ents, err := os.ReadDir(filepath.Join(s.dataDir, "bundles"))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if !keep[e.Name()] {
					t.Errorf("bundles/%s left over after the restart", e.Name())
				}
			}
			if ents, _ := os.ReadDir(filepath.Join(s.dataDir, UploadsDir)); len(ents) > 0 {
				t.Errorf("%d uploads left over", len(ents))
			}
			d.stop(t)
		})
	}
}

// TestProcessSdNotify runs the agent under a fake systemd notify socket:
// READY=1 only once the socket serves the loaded model, watchdog pings,
// STOPPING=1 on SIGTERM.
func TestProcessSdNotify(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	s := newSetup(t, "")
	mustCLI(t, "install", "--config", s.cfgPath, v1.path)

	path := filepath.Join(shortDir(t), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %s", what)
			}
			return m
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s within 30s", what)
		}
		return ""
	}

	d := startDaemon(t, s, "NOTIFY_SOCKET="+path, "WATCHDOG_USEC=400000")
	c := NewClient(s.socket)
	defer c.Close()
	for {
		m := next("READY=1")
		if !strings.Contains(m, "READY=1") {
			if strings.Contains(m, "WATCHDOG=1") {
				t.Fatalf("watchdog ping before READY=1: %q", m)
			}
			continue
		}
		// READY=1 means the socket serves the loaded model now.
		if code, body := get(t, c, "/v2/health/ready"); code != 200 {
			t.Fatalf("READY=1 sent, but /v2/health/ready answers %d %s", code, body)
		}
		if code, body := get(t, c, "/v2/models/silero-vad/ready"); code != 200 {
			t.Fatalf("READY=1 sent, but the model's readiness is %d %s", code, body)
		}
		if !strings.Contains(m, "STATUS=serving silero-vad@1.0.0 on cpu") {
			t.Errorf("READY=1 without the active bundle in STATUS=: %q", m)
		}
		break
	}
	for pings := 0; pings < 3; {
		if m := next("WATCHDOG=1"); strings.Contains(m, "WATCHDOG=1") {
			pings++
		}
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	for {
		if m := next("STOPPING=1"); strings.Contains(m, "STOPPING=1") {
			break
		}
	}
	d.wait(t)
	if !d.state.Success() {
		t.Fatalf("exit %v after SIGTERM", d.state)
	}
}

// TestProcessConfigErrors: a configuration the agent cannot run with stops
// it at start, naming the key.
func TestProcessConfigErrors(t *testing.T) {
	s := newSetup(t, "bogusKey: 1\nbuffer2:\n  x: 1\n")
	// 78 (EX_CONFIG): the unit's RestartPreventExitStatus.
	for _, args := range [][]string{
		{"--config", s.cfgPath},
		{"run", "--config", s.cfgPath},
		{"status", "--config", s.cfgPath},
	} {
		_, errOut, code := cli(t, nil, args...)
		if code != 78 || !strings.Contains(errOut, "bogusKey") || !strings.Contains(errOut, "buffer2") || !strings.Contains(errOut, s.cfgPath) {
			t.Errorf("edge-agent %s: exit %d, stderr %q; want 78 and a message naming the file and both keys", strings.Join(args, " "), code, errOut)
		}
	}
	if _, errOut, code := cli(t, nil, "run", "--config", filepath.Join(t.TempDir(), "missing.yaml")); code != 78 || !strings.Contains(errOut, "missing.yaml") {
		t.Errorf("a missing --config file: exit %d, %q", code, errOut)
	}
	if _, errOut, code := cli(t, nil, "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, %q", code, errOut)
	}
	if out, _, code := cli(t, nil, "version"); code != 0 || !strings.HasPrefix(out, "edge-agent ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	// --help (and help, -h) lists every subcommand and every flag of each.
	out, _, code := cli(t, nil, "--help")
	if code != 0 {
		t.Errorf("--help: exit %d", code)
	}
	for _, want := range []string{"edge-agent [run]", "edge-agent install", "edge-agent rollback", "edge-agent status", "edge-agent predict", "edge-agent version",
		"edge-agent run flags:", "edge-agent install flags:", "edge-agent rollback flags:", "edge-agent status flags:", "edge-agent predict flags:",
		"-config FILE", "-sig FILE", "-force", "-allow-downgrade", "-id NAME@VERSION", "-sha256", "-size", "-o format",
		"-bundle FILE", "-request FILE", "-raw FILE", "-key FILE",
		"Exit codes", "1 error (such as a listen address in use", "78 unusable configuration"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
	for _, arg := range []string{"help", "-h"} {
		if o, _, code := cli(t, nil, arg); code != 0 || o != out {
			t.Errorf("%s: exit %d, output differs from --help's:\n%s", arg, code, o)
		}
	}
}

// TestProcessPredict runs the one-shot predict command on a signed bundle
// through the API's handler: tensors and raw PCM.
func TestProcessPredict(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	s := newSetup(t, "")
	req := filepath.Join(t.TempDir(), "request.json")
	if err := os.WriteFile(req, tensorRequest(t, "one-shot"), 0o644); err != nil {
		t.Fatal(err)
	}
	pcm := filepath.Join(t.TempDir(), "frame.pcm")
	if err := os.WriteFile(pcm, pcmFrame(t), 0o644); err != nil {
		t.Fatal(err)
	}
	k := testKeys(t)
	env := []string{"EDGEFLEET_ORT_LIB=" + testenv.ORTLibrary(t)}
	for _, args := range [][]string{
		{"predict", "--config", s.cfgPath, "--bundle", v1.path, "--request", req},
		{"predict", "--bundle", v1.path, "--key", k.pub, "--raw", pcm},
	} {
		out, errOut, code := cli(t, env, args...)
		if code != 0 {
			t.Fatalf("edge-agent %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		var r inference
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("not an inference response: %v\n%s", err, out)
		}
		if r.ModelName != "silero-vad" || r.ModelVersion != "1.0.0" || !near(r.output(t), sileroOutput) {
			t.Fatalf("answer %s", out)
		}
	}
	// A tampered bundle is refused before anything runs.
	forged := tampered(t, v1)
	if out, errOut, code := cli(t, env, "predict", "--bundle", forged.path, "--key", k.pub, "--request", req); code == 0 || !strings.Contains(errOut, "signature") {
		t.Fatalf("tampered bundle: exit %d\n%s%s", code, out, errOut)
	}
	// A request the model refuses: the error object, and a failure.
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"inputs":[]}`), 0o644)
	if out, _, code := cli(t, env, "predict", "--config", s.cfgPath, "--bundle", v1.path, "--request", bad); code == 0 || !strings.Contains(out, `"error"`) {
		t.Fatalf("bad request: exit %d, %s", code, out)
	}
}

// TestProcessListenInUse: a listen address in use (api.tcp, api.grpcListen, metrics.listen,
// api.socket) stops the agent at start with exit status 1, naming the
// address and its key, before anything is written under the data
// directory: one that does not exist is not made, an empty one stays
// empty.
func TestProcessListenInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	ca := testenv.NewCA(t, t.TempDir(), "ca")
	cert, key := ca.Issue("server", "edge-agent", true)
	grpcTLS := fmt.Sprintf("\n  grpcTLS: {cert: %s, key: %s, clientCA: %s}", cert, key, ca.File)
	for _, tc := range []struct {
		key    string
		o      setupOptions
		reason string
	}{
		{"api.tcp", setupOptions{rate: 1, api: "  tcp: " + addr}, "address already in use"},
		{"api.grpcListen", setupOptions{rate: 1, api: "  grpcListen: " + addr + grpcTLS}, "address already in use"},
		{"metrics.listen", setupOptions{rate: 1, extra: "metrics:\n  listen: " + addr + "\n"}, "address already in use"},
		{"api.socket", setupOptions{rate: 1}, "socket in use: another process is listening on it"},
	} {
		for _, makeDir := range []bool{false, true} {
			s := newSetupWith(t, tc.o)
			want := addr
			if tc.key == "api.socket" {
				// Another process serves the socket.
				ln, err := net.Listen("unix", s.socket)
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				want = s.socket
			}
			if makeDir {
				if err := os.Mkdir(s.dataDir, 0o750); err != nil {
					t.Fatal(err)
				}
			}
			_, errOut, code := cli(t, nil, "run", "--config", s.cfgPath)
			line := "edge-agent: cannot listen on " + want + " (" + tc.key + "): " + tc.reason + "\n"
			if code != 1 || !strings.Contains(errOut, line) {
				t.Errorf("%s in use: exit %d, stderr %q; want 1 and %q", tc.key, code, errOut, line)
			}
			entries, err := os.ReadDir(s.dataDir)
			switch {
			case !makeDir && !errors.Is(err, fs.ErrNotExist):
				t.Errorf("%s in use: the data directory was made (%d entries, %v)", tc.key, len(entries), err)
			case makeDir && (err != nil || len(entries) > 0):
				t.Errorf("%s in use: the empty data directory now holds %v (%v)", tc.key, entries, err)
			}
			if tc.key != "api.socket" {
				if _, err := os.Lstat(s.socket); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s in use: the unix socket is left at %s (%v)", tc.key, s.socket, err)
				}
			}
		}
	}
}

// TestProcessSocketStaleOrLive: the socket a killed agent left behind is
// replaced at start; a second agent started beside a running one stops
// with exit status 1 at its socket and leaves the first one serving.
func TestProcessSocketStaleOrLive(t *testing.T) {
	s := newSetup(t, "")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if fi, err := os.Lstat(s.socket); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("no stale socket: %v, %v", fi, err)
	}
	d := startDaemon(t, s)
	d.waitReady(t, s)

	_, errOut, code := cli(t, nil, "run", "--config", s.cfgPath)
	line := "edge-agent: cannot listen on " + s.socket + " (api.socket): socket in use"
	if code != 1 || !strings.Contains(errOut, line) {
		t.Errorf("second agent: exit %d, stderr %q; want 1 and %q", code, errOut, line)
	}
	if st := cliStatus(t, s); !st.Running || st.PID != d.cmd.Process.Pid {
		t.Errorf("after the second agent failed: %+v", st)
	}
	d.stop(t)
	if _, err := os.Lstat(s.socket); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left after SIGTERM: %v", err)
	}
}
