package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/testbed/audio"
)

// Config is what the demo runs with.
type Config struct {
	// Repo is the checkout; Bin holds fleetd, edge-agent and fleetctl.
	Repo, Bin string
	// Work is the workspace to create; empty: Repo/.cache/demo/TIME.
	Work string
	// Agents is the number of edge agents (3 to len(fleetPlan)).
	Agents int
	// Bake is each rollout wave's bake time.
	Bake time.Duration
	// Out receives the narration; TTY and Color say what it can show,
	// Width its columns.
	Out        io.Writer
	TTY, Color bool
	Width      func() int
}

// fleetPlan names the demo's devices and their labels, in the order they
// are started. Devices in region us stream audio with a raised noise
// floor (a noisier site), the others quiet-room audio.
var fleetPlan = []struct{ id, region, hw string }{
	{"eu-pi5-1", "eu", "pi5"},
	{"us-jetson-1", "us", "jetson"},
	{"eu-jetson-1", "eu", "jetson"},
	{"us-pi5-1", "us", "pi5"},
	{"eu-pi5-2", "eu", "pi5"},
	{"us-pi5-2", "us", "pi5"},
	{"eu-jetson-2", "eu", "jetson"},
	{"us-jetson-2", "us", "jetson"},
}

// noisyRegion is the region whose devices hear a raised noise floor.
const noisyRegion = "us"

// keepRuns is how many earlier workspaces under .cache/demo are kept.
const keepRuns = 3

// totalSteps is the number of numbered steps the demo narrates.
const totalSteps = 14

// device is one demo device: an edge-agent process and its files.
type device struct {
	ID      string
	Labels  [][2]string // ordered
	Noisy   bool
	Dir     string // agents/ID
	Socket  string
	LogPath string
	proc    *proc
	started time.Time
	stream  *streamer
}

func (d *device) labelArgs() []string {
	var out []string
	for _, kv := range d.Labels {
		out = append(out, "--label", kv[0]+"="+kv[1])
	}
	return out
}

func (d *device) audioName() string {
	if d.Noisy {
		return "raised noise floor"
	}
	return "quiet room"
}

// bundleInfo is one version the demo built.
type bundleInfo struct {
	Name, Version string
	File          string // relative to the workspace
}

func (b bundleInfo) ID() string { return b.Name + "@" + b.Version }

// demo is one run.
type demo struct {
	cfg     Config
	log     *slog.Logger
	logFile *os.File
	n       *narrator
	sup     *supervisor
	work    string
	sockDir string // a short directory for sockets when work's path is too long
	env     []string
	ortLib  string
	goTool  string
	start   time.Time

	httpAddr, mqttAddr string
	fleetd             *proc
	devices            []*device

	good, bad bundleInfo
	slowPre   string // the bad pre-processor's .wasm
	slowBuild chan slowBuildResult

	streamCancel context.CancelFunc
	streamWG     sync.WaitGroup

	events *eventSink // the CloudEvents receiver (events.go)

	// For the summary.
	first, second   *rollout.Rollout
	firstTook       time.Duration
	secondTook      time.Duration
	rollbackTook    time.Duration
	baselineP95     map[string]float64 // device -> p95 ms on the good version (its metrics)
	drift           driftOutcome
	failedStep      string
	stoppedProcs    int
	stillRunning    []string
	fatalProcessErr error
	fatalMu         sync.Mutex
}

type slowBuildResult struct {
	took time.Duration
	err  error
}

// newDemo creates the workspace and its log.
func newDemo(cfg Config) (*demo, error) {
	d := &demo{cfg: cfg, start: time.Now(), baselineP95: map[string]float64{}}
	if cfg.Work == "" {
		base := filepath.Join(cfg.Repo, ".cache", "demo")
		if err := os.MkdirAll(base, 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", base, err)
		}
		pruneRuns(base, keepRuns-1) // and this one makes keepRuns
		cfg.Work = filepath.Join(base, d.start.Format("20060102-150405"))
		d.cfg.Work = cfg.Work
	}
	if err := os.Mkdir(cfg.Work, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("workspace %s exists already: give --workdir a new directory", cfg.Work)
		}
		return nil, fmt.Errorf("creating the workspace: %w", err)
	}
	d.work = cfg.Work
	for _, sub := range []string{"logs", "bundles", "specs", "build", "rollouts", "agents"} {
		if err := os.Mkdir(filepath.Join(d.work, sub), 0o755); err != nil {
			return nil, fmt.Errorf("creating the workspace: %w", err)
		}
	}
	f, err := os.Create(filepath.Join(d.work, "logs", "demo.log"))
	if err != nil {
		return nil, fmt.Errorf("creating the demo's log: %w", err)
	}
	d.logFile = f
	d.log = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	transcript, err := os.Create(filepath.Join(d.work, "logs", "transcript.txt"))
	if err != nil {
		return nil, fmt.Errorf("creating the transcript: %w", err)
	}
	d.n = newNarrator(cfg.Out, transcript, cfg.TTY, cfg.Color, totalSteps)
	d.n.width = cfg.Width
	d.sup = &supervisor{log: d.log}
	return d, nil
}

// pruneRuns removes all but the keep newest run directories under base
// (only names the demo gives them, and none touched in the last 10
// minutes, which a demo running beside this one could still be using).
func pruneRuns(base string, keep int) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	var runs []string
	for _, e := range entries {
		if _, err := time.Parse("20060102-150405", e.Name()); err == nil && e.IsDir() {
			runs = append(runs, e.Name())
		}
	}
	sort.Strings(runs)
	if len(runs) <= keep {
		return
	}
	for _, r := range runs[:len(runs)-keep] {
		p := filepath.Join(base, r)
		if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) > 10*time.Minute {
			os.RemoveAll(p)
		}
	}
}

// Run runs the demo: every step, the summary, and the cleanup, which
// always runs. It returns nil only when every step did what it says.
func (d *demo) Run(ctx context.Context) (err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d.sup.onExit = func(p *proc, perr error) {
		err := fmt.Errorf("%s exited unexpectedly (%v); the end of %s:%s", p.Name, perr, d.rel(p.LogPath), tailFile(p.LogPath, 8))
		d.fatalMu.Lock()
		if d.fatalProcessErr == nil {
			d.fatalProcessErr = err
		}
		d.fatalMu.Unlock()
		cancel(err)
	}
	defer d.logFile.Close()
	defer func() {
		d.cleanup()
		d.finish(err)
		d.n.Close()
	}()

	d.n.Header("edgefleet demo: a control plane, %d edge agents and two versions of a voice-activity model, on this machine", d.cfg.Agents)
	d.n.Line("  workspace: %s", d.work)
	d.n.Line("  Every command below runs in the workspace with %s on its PATH; it takes about 2½ minutes.", d.cfg.Bin)

	steps := []struct {
		title string
		run   func(context.Context) (string, error)
	}{
		{"Check what the demo needs", d.stepPreflight},
		{"Generate the publisher's signing key pair", d.stepKeys},
		{"Build the Silero VAD bundle: model checked, smoke vectors run", d.stepBuild},
		{"Sign the bundle and verify the signature", d.stepSign},
		{"Start fleetd: API, embedded MQTT broker and bundle registry on loopback", d.stepFleetd},
		{fmt.Sprintf("Enrol %d devices and start an edge agent for each", d.cfg.Agents), d.stepAgents},
		{"Push the signed bundle to fleetd's registry", d.stepPush},
		{"Roll the bundle out in waves: a canary, half the fleet, everyone", d.stepFirstRollout},
		{"Stream synthetic audio through every agent's local inference API", d.stepStream},
		{"Build a deliberately bad version: same model, a pre-processor that burns CPU on every call", d.stepBadBundle},
		{"Wait for every device's first metrics report on the good version (agents report once a minute)", d.stepBaseline},
		{"Roll out the bad version: the canary breaches the latency gate, fleetd rolls back", d.stepSecondRollout},
		{"Check the fleet: every device back on the good version", d.stepFleetCheck},
		{"Drift: collect the agents' drift windows and compare what they heard with the bundle's profile", d.stepDrift},
	}
	if len(steps) != totalSteps {
		panic("demo: totalSteps is out of date")
	}
	for _, s := range steps {
		d.n.Step(s.title)
		msg, err := s.run(ctx)
		if err == nil && ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			}
			d.failedStep = s.title
			d.n.Fail(err)
			return err
		}
		d.n.Done("%s", msg)
	}
	return nil
}

// cleanup stops the audio streams, the agents (together) and fleetd,
// and removes the socket directory.
func (d *demo) cleanup() {
	d.n.Line("")
	running := d.sup.Running()
	if d.streamCancel != nil {
		d.streamCancel()
		d.streamWG.Wait()
	}
	if len(running) > 0 {
		d.n.Header("Stopping everything the demo started: %s", procNames(running))
	}
	isAgent := func(p *proc) bool { return strings.HasPrefix(p.Name, "edge-agent ") }
	d.sup.StopAll(25*time.Second, isAgent)
	d.closeEvents()
	d.stoppedProcs = len(running)
	for _, p := range d.sup.Running() {
		d.stillRunning = append(d.stillRunning, fmt.Sprintf("%s (pid %d)", p.Name, p.Pid()))
	}
	if d.sockDir != "" {
		os.RemoveAll(d.sockDir)
	}
}

func procNames(ps []*proc) string {
	var agents, other []string
	for _, p := range ps {
		if strings.HasPrefix(p.Name, "edge-agent ") {
			agents = append(agents, strings.TrimPrefix(p.Name, "edge-agent "))
		} else {
			other = append(other, p.Name)
		}
	}
	var parts []string
	if len(agents) > 0 {
		parts = append(parts, fmt.Sprintf("%d edge agent(s) (%s)", len(agents), strings.Join(agents, ", ")))
	}
	parts = append(parts, other...)
	return strings.Join(parts, " and ")
}

// rel shows path relative to the workspace when it is inside it.
func (d *demo) rel(path string) string {
	if r, err := filepath.Rel(d.work, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	if r, err := filepath.Rel(d.cfg.Repo, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

// childEnv is the environment every child gets besides the demo's own.
func (d *demo) childEnv() []string {
	return append([]string{
		"PATH=" + d.cfg.Bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		"EDGEFLEET_ORT_LIB=" + d.ortLib,
		// fleetctl talks to the demo's fleetd, not to a context of the
		// operator's own configuration (docs/cli.md, Contexts).
		"FLEETCTL_CONFIG=" + filepath.Join(d.work, "fleetctl-config.yaml"),
		"FLEETCTL_CONTEXT=",
	}, d.env...)
}

// ortLibrary finds the ONNX Runtime library make deps fetched.
func ortLibrary(repo string) string {
	if p := os.Getenv("EDGEFLEET_ORT_LIB"); p != "" {
		return p
	}
	cache := os.Getenv("EDGEFLEET_CACHE")
	if cache == "" {
		cache = filepath.Join(repo, ".cache", "deps")
	}
	return filepath.Join(cache, "onnxruntime", "linux-"+runtime.GOARCH, "libonnxruntime.so.1")
}

// audioFor is the audio a device's streamer plays.
func audioFor(dev *device, seed uint64) audio.Config {
	if dev.Noisy {
		return audio.RaisedNoise(seed)
	}
	return audio.Normal(seed)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
