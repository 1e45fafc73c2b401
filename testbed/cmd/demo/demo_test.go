package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/mlflow"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// fakeClock is a settable clock for the narrator.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time           { return c.t }
func (c *fakeClock) add(d time.Duration)      { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock                { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }
func plainNarrator(w, tr io.Writer) *narrator { return newNarrator(w, tr, false, false, 3) }

func TestNarratorPlain(t *testing.T) {
	var out, transcript bytes.Buffer
	n := plainNarrator(&out, &transcript)
	clock := newFakeClock()
	n.now = clock.now
	n.Header("demo")
	n.Step("Build it")
	n.Cmd([]string{"fleetctl", "bundle", "build", "a dir", "--out", "x.bundle"})
	n.Out("built x.bundle")
	n.Progress(0.5, "half way")
	clock.add(time.Second)
	n.Progress(0.6, "still going") // within plainEvery: not printed
	clock.add(plainEvery)
	n.Progress(0.7, "still going")
	n.Progress(0.7, "still going") // unchanged: not printed
	clock.add(1500 * time.Millisecond)
	n.Done("built")
	n.Step("Start it")
	n.Cmd([]string{"fleetd", "--data-dir", "fleetd-data", "&"})
	n.Say("it runs")
	n.Fail(errors.New("it stopped"))
	n.Close()

	want := `demo

[1/3] Build it
  $ fleetctl bundle build 'a dir' --out x.bundle
    built x.bundle
  … half way
  … still going
✓ [1/3] built (12.5s)

[2/3] Start it
  $ fleetd --data-dir fleetd-data &
  it runs
✗ [2/3] it stopped (0.0s)
`
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
	// The transcript has every line but the progress.
	var noProgress []string
	for l := range strings.Lines(want) {
		if !strings.HasPrefix(l, "  …") {
			noProgress = append(noProgress, l)
		}
	}
	if got := transcript.String(); got != strings.Join(noProgress, "") {
		t.Errorf("transcript:\n%s\nwant:\n%s", got, strings.Join(noProgress, ""))
	}
}

func TestNarratorTerminal(t *testing.T) {
	out := &testenv.SyncBuffer{}
	n := newNarrator(out, nil, true, true, 12)
	n.width = func() int { return 40 }
	n.Step("Wait")
	n.Progress(0.25, "a status long enough to be cut at forty columns")
	// A few spinner frames: until the second one is drawn.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), "⠙") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	n.Say("a line above the spinner")
	n.Done("waited")
	n.Close()
	got := out.String()
	for _, want := range []string{
		ansiClear + ansiCyan + "⠙ [ 1/12]", // the live line, redrawn in place
		"  a line above the spinner\n",
		ansiGreen + "✓ [ 1/12] waited",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%q", want, got)
		}
	}
	for _, line := range strings.Split(got, ansiClear) {
		plain := stripANSI(line)
		if strings.HasPrefix(plain, "⠋") || strings.HasPrefix(plain, "⠙") {
			if w := len([]rune(strings.TrimRight(plain, "\n"))); w > 39 {
				t.Errorf("live line %q is %d columns, wider than the terminal allows", plain, w)
			}
		}
	}
	// Nothing is drawn after Close.
	before := out.String()
	time.Sleep(150 * time.Millisecond)
	if out.String() != before {
		t.Error("the spinner kept drawing after Close")
	}
}

func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b {
			for i < len(s) && !(s[i] >= 'A' && s[i] <= 'Z' || s[i] >= 'a' && s[i] <= 'z') {
				i++
			}
			continue
		}
		if s[i] != '\r' {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func TestShellJoin(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"fleetctl", "enroll", "eu-pi5-1", "--label", "region=eu"}, "fleetctl enroll eu-pi5-1 --label region=eu"},
		{[]string{"curl", "-H", "Content-Type: application/octet-stream"}, "curl -H 'Content-Type: application/octet-stream'"},
		{[]string{"echo", "it's", ""}, `echo 'it'\''s' ''`},
		{[]string{"a", "x&y", "$HOME"}, "a 'x&y' '$HOME'"},
	} {
		if got := shellJoin(tc.argv); got != tc.want {
			t.Errorf("shellJoin(%q) = %s, want %s", tc.argv, got, tc.want)
		}
	}
}

func TestNextPatch(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"5.0.0", "5.0.1", ""},
		{"1.2.9", "1.2.10", ""},
		{"2.0.0-rc.1+build.5", "2.0.1", ""},
		{"5.0", "", "not MAJOR.MINOR.PATCH"},
		{"1.2.x", "", "bad patch number"},
	} {
		got, err := nextPatch(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("nextPatch(%q) = %q, %v; want an error saying %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("nextPatch(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestLatencyQuantile(t *testing.T) {
	var l latencies
	if l.quantile(0.95) != 0 {
		t.Error("empty: want 0")
	}
	for i := 1; i <= 100; i++ {
		l.add(time.Duration(i) * time.Millisecond)
	}
	if got := l.quantile(0.95); got != 95*time.Millisecond {
		t.Errorf("p95 of 1..100 ms = %v, want 95ms", got)
	}
	// Only the latest latencyKeep are kept.
	for range latencyKeep {
		l.add(time.Second)
	}
	if got := l.quantile(0.5); got != time.Second {
		t.Errorf("after %d slow requests the median is %v, want 1s", latencyKeep, got)
	}
}

// TestAgentConfig checks the configuration the demo writes with the
// agent's own strict parser.
func TestAgentConfig(t *testing.T) {
	dir := t.TempDir()
	for _, sockDir := range []string{"", "/tmp/efdemo-123"} {
		dev := &device{ID: "us-jetson-1", Labels: [][2]string{{"region", "us"}, {"hw", "jetson"}}, Dir: dir}
		dev.Socket = filepath.Join(dir, "api.sock")
		if sockDir != "" {
			dev.Socket = filepath.Join(sockDir, "us-jetson-1.sock")
		}
		text := agentConfig(dev, "tcp://127.0.0.1:1883", "us-jetson-1", "../../keys/signing.pub", "/opt/ort/libonnxruntime.so.1")
		cfg, err := config.Parse([]byte(text), dir)
		if err != nil {
			t.Fatalf("the agent refuses the demo's configuration: %v\n%s", err, text)
		}
		if cfg.DeviceID != "us-jetson-1" || cfg.Labels["region"] != "us" || cfg.Labels["hw"] != "jetson" {
			t.Errorf("device %q labels %v", cfg.DeviceID, cfg.Labels)
		}
		if cfg.API.Socket != dev.Socket {
			t.Errorf("socket %q, want %q", cfg.API.Socket, dev.Socket)
		}
		if want := grpcSocketOf(dev.Socket); cfg.API.GRPCSocket != want || want == dev.Socket {
			t.Errorf("gRPC socket %q, want %q", cfg.API.GRPCSocket, want)
		}
		if cfg.DataDir != filepath.Join(dir, "data") {
			t.Errorf("data dir %q", cfg.DataDir)
		}
		if len(cfg.Trust.PublicKeys) != 1 || cfg.Trust.PublicKeys[0] != filepath.Join(dir, "../../keys/signing.pub") {
			t.Errorf("trust %q", cfg.Trust.PublicKeys)
		}
		if cfg.Uplink.Broker != "tcp://127.0.0.1:1883" || cfg.Uplink.Username != "us-jetson-1" || cfg.Uplink.PasswordFile != filepath.Join(dir, "mqtt.password") {
			t.Errorf("uplink %+v", cfg.Uplink)
		}
		if cfg.Runtime.ORTLibrary != "/opt/ort/libonnxruntime.so.1" || len(cfg.Runtime.ExecutionProviders) != 1 {
			t.Errorf("runtime %+v", cfg.Runtime)
		}
	}
}

// TestRolloutSpecs checks the demo's rollout specs with the engine's own
// parser and validation.
func TestRolloutSpecs(t *testing.T) {
	d := &demo{cfg: Config{Bake: 5 * time.Second}}
	for _, upgrade := range []bool{false, true} {
		text := d.rolloutSpec(bundleInfo{Name: "silero-vad", Version: "5.0.1"}, upgrade)
		spec, err := rollout.ParseSpec([]byte(text))
		if err != nil {
			t.Fatalf("upgrade %v: %v\n%s", upgrade, err, text)
		}
		if err := spec.Validate(); err != nil {
			t.Fatalf("upgrade %v: %v\n%s", upgrade, err, text)
		}
		if len(spec.Waves) != 3 || spec.Waves[0].Count == nil || *spec.Waves[0].Count != 1 {
			t.Errorf("upgrade %v: waves %+v", upgrade, spec.Waves)
		}
		if got := spec.Gates.LatencyP95 != nil; got != upgrade {
			t.Errorf("upgrade %v: latency gate %v", upgrade, got)
		}
		if got := spec.Gates.ErrorRate != nil; got != upgrade {
			t.Errorf("upgrade %v: error-rate gate %v", upgrade, got)
		}
	}
}

// TestBadSpec checks the bad version's spec with the bundle builder's
// own loader: the good spec with another version and pre-processor, and
// every path absolute so that it builds from anywhere.
func TestBadSpec(t *testing.T) {
	goodDir := filepath.Join(testenv.Root(t), "testbed", "bundles", "silero-vad")
	good, err := bundle.LoadSpec(goodDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "spec")
	pre := "/somewhere/slow-pre.wasm"
	if err := writeBadSpec(goodDir, dir, "9.9.9", pre); err != nil {
		t.Fatal(err)
	}
	bad, err := bundle.LoadSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if bad.Name != good.Name || bad.Version != "9.9.9" || bad.Pre != pre {
		t.Errorf("name %q version %q pre %q", bad.Name, bad.Version, bad.Pre)
	}
	paths := []string{bad.Model, bad.Profile}
	for _, s := range bad.Smoke {
		paths = append(paths, s.InputsFile, s.RawFile, s.ExpectedFile)
	}
	for _, p := range paths {
		if p == "" {
			continue
		}
		if !filepath.IsAbs(p) {
			t.Errorf("path %q is relative", p)
		} else if rel, err := filepath.Rel(goodDir, p); err != nil || strings.HasPrefix(rel, "..") && !strings.Contains(p, ".cache") {
			t.Errorf("path %q is not the good spec's", p)
		}
	}
	if len(bad.Smoke) != len(good.Smoke) || len(bad.Inputs) != len(good.Inputs) || len(bad.Outputs) != len(good.Outputs) {
		t.Errorf("smoke vectors or tensors differ: %+v", bad)
	}
}

func TestRunFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--agents", "2"}, "--agents must be 3 to 8"},
		{[]string{"--agents", "9"}, "--agents must be 3 to 8"},
		{[]string{"--bake", "-1s"}, "--bake must be 0 to 10m"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--nope"}, "flag provided but not defined"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: stderr %q lacks %q", tc.args, stderr.String(), tc.want)
		}
	}
	// No checkout above the working directory.
	t.Chdir(t.TempDir())
	var stdout, stderr bytes.Buffer
	if code := run(nil, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "no edgefleet checkout") {
		t.Errorf("outside a checkout: exit %d, %q", code, stderr.String())
	}
}

// TestSupervisorStopsGroups starts real processes that start processes
// of their own, and checks that stopping them leaves none behind: a
// long-running one stopped with SIGTERM, one that ignores SIGTERM killed
// after the grace time, and a short command whose context ends.
func TestSupervisorStopsGroups(t *testing.T) {
	dir := t.TempDir()
	sup := &supervisor{log: slog.New(slog.DiscardHandler)}
	exited := make(chan string, 4)
	sup.onExit = func(p *proc, err error) { exited <- p.Name }

	// The grandchild's pid goes to a file; the child waits on it.
	script := func(name, trap string) string {
		return trap + "sleep 300 & echo $! > " + filepath.Join(dir, name+".pid") + "; wait"
	}
	polite, err := sup.Start("polite", dir, nil, filepath.Join(dir, "polite.log"), "sh", "-c", script("polite", ""))
	if err != nil {
		t.Fatal(err)
	}
	stubborn, err := sup.Start("stubborn", dir, nil, filepath.Join(dir, "stubborn.log"), "sh", "-c", script("stubborn", "trap '' TERM; "))
	if err != nil {
		t.Fatal(err)
	}
	grandchild := func(name string) int {
		var pid int
		if err := waitFor(t.Context(), 10*time.Second, func() (bool, error) {
			b, err := os.ReadFile(filepath.Join(dir, name+".pid"))
			if err != nil || len(bytes.TrimSpace(b)) == 0 {
				return false, nil
			}
			_, err = fmt.Sscan(string(b), &pid)
			return err == nil, nil
		}); err != nil {
			t.Fatalf("%s never started its child: %v", name, err)
		}
		return pid
	}
	pids := []int{polite.Pid(), grandchild("polite"), stubborn.Pid(), grandchild("stubborn")}

	sup.StopAll(300*time.Millisecond, func(p *proc) bool { return p.Name == "polite" })
	for _, pid := range pids {
		// A signal is delivered, and the process gone, a moment after
		// kill returns.
		if err := waitFor(context.Background(), 5*time.Second, func() (bool, error) { return !alive(pid), nil }); err != nil {
			t.Errorf("process %d survived StopAll", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if len(sup.Running()) != 0 {
		t.Errorf("still running: %v", sup.Running())
	}
	select {
	case name := <-exited:
		t.Errorf("onExit called for %s, which was stopped on purpose", name)
	default:
	}

	// A short command and its child, killed when the context ends.
	sup2 := &supervisor{log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := sup2.Run(ctx, dir, nil, "sh", "-c", script("short", ""))
		done <- err
	}()
	child := grandchild("short")
	cancel(errInterrupted)
	select {
	case err := <-done:
		if !errors.Is(err, errInterrupted) {
			t.Errorf("Run returned %v, want the context's cause", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if err := waitFor(context.Background(), 30*time.Second, func() (bool, error) { return !alive(child), nil }); err != nil {
		t.Errorf("the short command's child %d survived", child)
		syscall.Kill(child, syscall.SIGKILL)
	}

	// A second interrupt kills at once; StopAll still waits for the exits.
	sup4 := &supervisor{log: slog.New(slog.DiscardHandler)}
	deaf, err := sup4.Start("deaf", dir, nil, filepath.Join(dir, "deaf.log"), "sh", "-c", "trap '' TERM; sleep 300")
	if err != nil {
		t.Fatal(err)
	}
	sup4.KillAll()
	sup4.StopAll(time.Minute, nil)
	if len(sup4.Running()) != 0 || deaf.Err() == nil {
		t.Errorf("after KillAll and StopAll: running %v", sup4.Running())
	}

	// An unexpected exit is reported.
	sup3 := &supervisor{log: slog.New(slog.DiscardHandler)}
	gone := make(chan string, 1)
	sup3.onExit = func(p *proc, err error) { gone <- p.Name }
	if _, err := sup3.Start("brief", dir, nil, filepath.Join(dir, "brief.log"), "sh", "-c", "exit 3"); err != nil {
		t.Fatal(err)
	}
	select {
	case name := <-gone:
		if name != "brief" {
			t.Errorf("onExit(%q)", name)
		}
	case <-time.After(60 * time.Second):
		t.Error("an unexpected exit was not reported")
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestMLflowModel checks what step 3 builds from with the readers the
// build uses: an MLflow model directory whose signature is the Silero
// spec's and holds to the ONNX graph, and a spec that takes the model
// from it.
func TestMLflowModel(t *testing.T) {
	goodDir := filepath.Join(testenv.Root(t), "testbed", "bundles", "silero-vad")
	good, err := bundle.LoadSpec(goodDir)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	modelDir, specDir := filepath.Join(work, "mlflow"), filepath.Join(work, "spec")
	if err := writeMLflowModel(modelDir, goodDir); err != nil {
		t.Fatal(err)
	}
	m, err := mlflow.Load(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Inputs, good.Inputs) || !reflect.DeepEqual(m.Outputs, good.Outputs) || m.RunID != demoRunID || m.ModelUUID != demoModelUUID {
		t.Errorf("MLflow model %+v", m)
	}
	if err := model.CheckIO(m.ONNX, m.Inputs, m.Outputs, model.Options{ORTLibrary: testenv.ORTLibrary(t)}); err != nil {
		t.Errorf("the signature does not hold to the graph: %v", err)
	}
	if err := writeMLflowSpec(goodDir, specDir); err != nil {
		t.Fatal(err)
	}
	spec, err := bundle.ReadSpec(specDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.UseModel(m.Source("models:/silero-vad/5")); err != nil {
		t.Fatal(err)
	}
	if err := spec.Check(); err != nil {
		t.Fatal(err)
	}
	if spec.Name != good.Name || spec.Version != good.Version || len(spec.Smoke) != len(good.Smoke) || spec.Lineage.RunID != demoRunID || !filepath.IsAbs(spec.Pre) {
		t.Errorf("spec %+v", spec)
	}
}
