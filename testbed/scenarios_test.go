//go:build testbed

package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/testbed/bundles/variants"
	tbfleet "github.com/edgefleet/edgefleet/testbed/fleet"
	"github.com/edgefleet/edgefleet/testbed/qemu"
)

var (
	numDevices = flag.Int("testbed.devices", 3, "number of emulated devices in the scenarios (make testbed: TESTBED_DEVICES)")
	cutFor     = flag.Duration("testbed.cut", 2*time.Minute, "how long the network-cut scenario keeps the device offline")
)

// Scenario device configuration: short intervals, so that rollouts and
// network cuts are observed within minutes on emulated devices.
const (
	scMetricsInterval = "3s"  // metrics windows for the latency gate
	scKeepAlive       = "5s"  // fleetd sees a cut device offline within ~8 s
	scWASMTimeout     = "60s" // the slow pre-processor takes seconds under TCG
)

// scResult is one scenario's outcome.
type scResult struct {
	name     string
	pass     bool
	evidence string
	took     time.Duration
}

// scEnv is what the scenarios share: one fleetd, N booted devices.
type scEnv struct {
	f       *fleet
	devs    []*device
	ids     []string
	bundles map[string]tbfleet.Bundle // by version
}

// TestScenarios boots N emulated arm64 devices (-testbed.devices, default
// 3) against one fleetd in this process and runs, in order: a first
// deployment, a staged rollout, a bad version rolled back by its latency
// gate, a network cut with buffered records delivered afterwards, and a
// power cut in the middle of an install. Each scenario logs a
// "PASS name: evidence" or "FAIL name: ..." line; a summary table ends
// the run. Built only with -tags testbed (make testbed).
func TestScenarios(t *testing.T) {
	preflight(t)
	if *numDevices < 2 {
		t.Fatalf("-testbed.devices=%d: the scenarios need at least 2 devices", *numDevices)
	}
	root := testenv.Root(t)
	onSignal := interruptible(t)
	work := t.TempDir()

	img, relay := deviceKit(t, root, work)

	// Bundles: 5.0.0 (first deployment), 5.0.1 (staged rollout), 5.0.2
	// with the slow pre-processor (rolled back), 5.0.3 (power cut).
	art := tbfleet.TestArtifacts(t)
	pub := tbfleet.TestPublisher(t)
	slowArt := art
	slowArt.PreWASM = testenv.BuildWASM(t, variants.SlowPre)
	bdir := t.TempDir()
	env := &scEnv{f: startFleet(t, pub.PublicKey), bundles: map[string]tbfleet.Bundle{}}
	for _, v := range []struct {
		version string
		art     tbfleet.Artifacts
	}{{"5.0.0", art}, {"5.0.1", art}, {"5.0.2", slowArt}, {"5.0.3", art}} {
		b := tbfleet.SileroBundle(t, bdir, v.version, tbfleet.SileroOptions{Publisher: pub, Artifacts: v.art})
		if _, _, err := env.f.api.Push(t.Context(), b.Path, b.Sig); err != nil {
			t.Fatalf("pushing %s: %v", b.ID(), err)
		}
		env.bundles[v.version] = b
	}
	pubKey, err := os.ReadFile(pub.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pcm, err := os.ReadFile(filepath.Join(root, "testbed", "bundles", "silero-vad", "smoke", "two-sine.pcm"))
	if err != nil {
		t.Fatal(err)
	}

	for i := range *numDevices {
		id := fmt.Sprintf("edge-%d", i+1)
		labels := map[string]string{"testbed": "scenarios"}
		e := env.f.enroll(t, id, labels)
		env.ids = append(env.ids, id)
		env.devs = append(env.devs, newDevice(t, onSignal, img, relay, id, env.f.forwards, map[string][]byte{
			"etc/edge-agent/config.yaml":       scenarioConfig(t, agentConfig(t, root, e, labels)),
			"etc/edge-agent/mqtt.password":     []byte(e.Password + "\n"),
			"etc/edge-agent/trust/testbed.pub": pubKey,
			"two-sine.pcm":                     pcm,
		}, testLogger(t)))
	}

	// Boot every device at once.
	bootCtx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	boots := make([]string, len(env.devs))
	errs := make([]error, len(env.devs))
	for i, d := range env.devs {
		wg.Go(func() {
			if err := d.Start(bootCtx); err != nil {
				errs[i] = err
				return
			}
			b, err := d.WaitReady(bootCtx)
			boots[i], errs[i] = b.String(), err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: boot: %v", env.ids[i], err)
		}
		t.Logf("boot %s: %s", env.ids[i], boots[i])
	}

	var results []scResult
	scenario := func(name string, fn func(t *testing.T) string) {
		start := time.Now()
		var evidence string
		ok := t.Run(name, func(t *testing.T) {
			defer func() {
				if t.Failed() {
					t.Logf("FAIL %s: see the errors above", name)
				} else {
					t.Logf("PASS %s: %s", name, evidence)
				}
			}()
			evidence = fn(t)
		})
		results = append(results, scResult{name: name, pass: ok, evidence: evidence, took: time.Since(start)})
	}
	scenario("first-deployment", env.firstDeployment)
	scenario("staged-rollout", env.stagedRollout)
	scenario("bad-version-rolled-back", env.badVersion)
	scenario("network-cut", env.networkCut)
	scenario("power-cut-mid-install", env.powerCut)

	var b strings.Builder
	fmt.Fprintf(&b, "testbed scenarios, %d devices:\n", len(env.devs))
	for i, id := range env.ids {
		fmt.Fprintf(&b, "  boot %-8s %s\n", id, boots[i])
	}
	for _, r := range results {
		s := "PASS"
		if !r.pass {
			s = "FAIL"
		}
		fmt.Fprintf(&b, "  %s  %-24s %6.0fs  %s\n", s, r.name, r.took.Seconds(), r.evidence)
	}
	t.Log(b.String())

	// Shut down and check that no emulator is left.
	stopCtx, cancel2 := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel2()
	for _, d := range env.devs {
		if err := d.Stop(stopCtx); err != nil {
			t.Errorf("%s: stop: %v", d.Name(), err)
		}
		d.Close()
	}
	for _, d := range env.devs {
		if d.Running() {
			t.Errorf("%s: still running after Close", d.Name())
		}
	}
	// pgrep -f: a process name longer than 15 bytes never matches without it.
	out, err := exec.Command("pgrep", "-a", "-f", "-P", fmt.Sprint(os.Getpid()), "qemu-system-aarch64").Output()
	switch {
	case err == nil:
		t.Errorf("qemu-system-aarch64 processes left after the scenarios:\n%s", out)
	case len(out) == 0:
		t.Logf("cleanup: %d devices stopped, no qemu-system-aarch64 child of this test remains (pgrep -f -P %d)", len(env.devs), os.Getpid())
	}
}

// scenarioConfig sets the scenario keys in a device configuration.
func scenarioConfig(t *testing.T, base []byte) []byte {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal(base, &cfg); err != nil {
		t.Fatal(err)
	}
	sub := func(k string) map[string]any {
		m, _ := cfg[k].(map[string]any)
		if m == nil {
			m = map[string]any{}
			cfg[k] = m
		}
		return m
	}
	sub("metrics")["interval"] = scMetricsInterval
	sub("buffer")["predictionSampleRate"] = 1.0 // every prediction is a record: the network cut counts them
	sub("wasm")["timeout"] = scWASMTimeout
	sub("uplink")["keepAlive"] = scKeepAlive
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// agentStatus is the part of `edge-agent status -o json` the scenarios read.
type agentStatus struct {
	Active *struct {
		ID string `json:"id"`
	} `json:"active"`
	Buffer struct {
		Records  int    `json:"records"`
		Appended uint64 `json:"appended"`
		Acked    uint64 `json:"acked"`
		Dropped  uint64 `json:"dropped"`
	} `json:"buffer"`
	Uplink *struct {
		Connected bool `json:"connected"`
	} `json:"uplink"`
}

func status(ctx context.Context, d *device) (*agentStatus, error) {
	out, err := d.Exec(ctx, "edge-agent status -o json")
	if err != nil {
		return nil, fmt.Errorf("%s: edge-agent status: %w\n%s", d.Name(), err, out)
	}
	var s agentStatus
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("%s: edge-agent status: %w\n%s", d.Name(), err, out)
	}
	return &s, nil
}

func activeIs(bundleID string) func(*api.Device) bool {
	return func(d *api.Device) bool {
		r := d.Reported
		return d.Status.Online && r != nil && r.Active != nil && r.Active.ID() == bundleID &&
			(r.Install == nil || r.Install.Bundle.ID() != bundleID || settled(r.Install.Phase))
	}
}

// settled reports whether an install phase is a result, not a step.
func settled(p protocol.InstallPhase) bool {
	return p == protocol.PhaseSucceeded || p == protocol.PhaseFailed || p == protocol.PhaseRolledBack
}

func (e *scEnv) waitAll(ctx context.Context, t *testing.T, bundleID string) {
	t.Helper()
	for _, id := range e.ids {
		e.f.waitDevice(ctx, t, id, bundleID+" active", activeIs(bundleID))
	}
}

// inferAll sends the frame to every device (infer) and fails the test
// unless each answers from model version want; it returns the answers, in
// the order of e.devs.
func (e *scEnv) inferAll(ctx context.Context, t *testing.T, want string) []float64 {
	t.Helper()
	var answers []float64
	for _, d := range e.devs {
		got, v, err := infer(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if v != want {
			t.Fatalf("%s answered from model version %q, want %s", d.Name(), v, want)
		}
		answers = append(answers, got)
	}
	return answers
}

func (e *scEnv) firstDeployment(t *testing.T) string {
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	const want = "silero-vad@5.0.0"
	start := time.Now()
	for _, id := range e.ids {
		if _, err := e.f.api.Assign(ctx, id, want, ""); err != nil {
			t.Fatalf("assigning %s to %s: %v", want, id, err)
		}
	}
	e.waitAll(ctx, t, want)
	took := time.Since(start)
	var answers []string
	for i, got := range e.inferAll(ctx, t, "5.0.0") {
		answers = append(answers, fmt.Sprintf("%s=%.7f", e.devs[i].Name(), got))
	}
	return fmt.Sprintf("%d/%d devices report %s active after %.0fs; inference %s (want %v)",
		len(e.ids), len(e.ids), want, took.Seconds(), strings.Join(answers, " "), sileroOutput)
}

// createRollout starts a rollout and waits for it to end; it returns the
// final status.
func (e *scEnv) runRollout(ctx context.Context, t *testing.T, spec string) *api.RolloutStatus {
	t.Helper()
	r, _, err := e.f.api.CreateRollout(ctx, []byte(spec), false)
	if err != nil {
		t.Fatalf("creating the rollout: %v\n%s", err, spec)
	}
	t.Logf("rollout %s of %s: %d devices, %d steps", r.ID, r.Bundle.ID(), r.Devices, len(r.Steps))
	var last string
	for {
		st, err := e.f.api.Rollout(ctx, r.ID, false)
		if err != nil {
			t.Fatalf("rollout %s: %v", r.ID, err)
		}
		p := st.Progress
		if now := fmt.Sprintf("%s step %d: assigned %d installed %d failed %d", st.State, st.Step, p.Assigned, p.Installed, p.Failed); now != last {
			t.Logf("rollout %s: %s", r.ID, now)
			last = now
		}
		if !st.State.Active() {
			return st
		}
		select {
		case <-ctx.Done():
			t.Fatalf("rollout %s still %s: %v", r.ID, st.State, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func (e *scEnv) stagedRollout(t *testing.T) string {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	const want = "silero-vad@5.0.1"
	start := time.Now()
	st := e.runRollout(ctx, t, `name: staged 5.0.1
bundle: `+want+`
waves:
  - {name: canary, count: 1, bake: 15s}
  - {name: all, percent: 100, bake: 5s}
waveDeadline: 5m
`)
	if st.State != rollout.StateSucceeded {
		t.Fatalf("rollout %s: %s (%s), breach %+v", st.ID, st.State, st.Reason, st.Breach)
	}
	e.waitAll(ctx, t, want)
	h, err := e.f.api.RolloutHistory(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	var passed []int
	for _, ev := range h.Events {
		if ev.Type == rollout.EventStepPassed {
			passed = append(passed, ev.Step)
		}
	}
	if fmt.Sprint(passed) != "[0 1]" {
		t.Fatalf("steps passed %v, want the canary then 100%%", passed)
	}
	return fmt.Sprintf("rollout %s succeeded in %.0fs: canary (1 device) then 100%% passed; %d/%d devices on %s",
		st.ID, time.Since(start).Seconds(), len(e.ids), len(e.ids), want)
}

// traffic starts (or stops) a loop on every device that sends the frame
// once a second, so that metrics windows have requests.
func (e *scEnv) traffic(ctx context.Context, t *testing.T, on bool) {
	t.Helper()
	cmd := "systemctl stop eftraffic.service 2>/dev/null; true"
	if on {
		cmd = "systemd-run --unit=eftraffic --collect bash -c 'while :; do curl -s -o /dev/null --unix-socket /run/edge-agent/api.sock " +
			"-H \"Content-Type: application/octet-stream\" --data-binary @" + qemu.SeedDir + "/two-sine.pcm " +
			"http://localhost/v2/models/silero-vad/infer; sleep 1; done'"
	}
	for _, d := range e.devs {
		if out, err := d.Exec(ctx, cmd); err != nil {
			t.Fatalf("%s: traffic %v: %v\n%s", d.Name(), on, err, out)
		}
	}
}

// waitMetrics waits until fleetd holds n metrics windows with requests
// of bundleID from every device since since.
func (e *scEnv) waitMetrics(ctx context.Context, t *testing.T, bundleID string, since time.Time, n int) {
	t.Helper()
	for _, id := range e.ids {
		for {
			r, err := e.f.api.Records(ctx, id, client.RecordsQuery{Kind: protocol.RecordMetrics, Since: since, Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for _, rec := range r.Records {
				var m protocol.MetricsRecord
				if json.Unmarshal(rec.Payload, &m) == nil && m.Model == bundleID && m.Requests > 0 {
					got++
				}
			}
			if got >= n {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: %d metrics windows of %s since %s, want %d", id, got, bundleID, since.Format(time.TimeOnly), n)
			case <-time.After(time.Second):
			}
		}
	}
}

func (e *scEnv) badVersion(t *testing.T) string {
	ctx, cancel := context.WithTimeout(t.Context(), 12*time.Minute)
	defer cancel()
	const good, bad = "silero-vad@5.0.1", "silero-vad@5.0.2"
	e.traffic(ctx, t, true)
	defer e.traffic(context.Background(), t, false)
	e.waitMetrics(ctx, t, good, time.Now(), 3)
	start := time.Now()
	// The threshold is a ratio to each device's own baseline (emulated
	// devices are ~60x slower than native ones, and busy).
	st := e.runRollout(ctx, t, `name: slow 5.0.2
bundle: `+bad+`
waves:
  - {name: canary, count: 1, bake: 20s}
  - {name: all, percent: 100, bake: 5s}
waveDeadline: 5m
gates:
  latencyP95: {maxRatio: 5, minReports: 1, baseline: 2m}
`)
	b := st.Breach
	if st.State != rollout.StateRolledBack || b == nil || b.Gate != rollout.GateLatencyP95 || b.Step != 0 {
		t.Fatalf("rollout %s: %s (%s), breach %+v; want rolled_back on latencyP95 in the canary", st.ID, st.State, st.Reason, b)
	}
	e.waitAll(ctx, t, good)
	e.inferAll(ctx, t, "5.0.1")
	return fmt.Sprintf("rollout %s rolled_back in %.0fs: %s %.1f > %.1f in %s (%s); %d/%d devices active and answering on %s",
		st.ID, time.Since(start).Seconds(), b.Gate, b.Value, b.Threshold, b.StepName, b.Detail, len(e.ids), len(e.ids), good)
}

func (e *scEnv) networkCut(t *testing.T) string {
	ctx, cancel := context.WithTimeout(t.Context(), *cutFor+10*time.Minute)
	defer cancel()
	d, id := e.devs[len(e.devs)-1], e.ids[len(e.ids)-1]
	if err := d.SetLink(ctx, false); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	restored := false
	defer func() {
		if !restored {
			d.SetLink(context.Background(), true)
		}
	}()
	e.f.waitDevice(ctx, t, id, "offline", func(d *api.Device) bool { return !d.Status.Online })
	offlineAfter := time.Since(cutAt)
	answered := 0
	for time.Since(cutAt) < *cutFor {
		_, v, err := infer(ctx, d)
		if err != nil {
			t.Fatalf("during the cut: %v", err)
		}
		if v != "5.0.1" {
			t.Fatalf("%s answered from %q during the cut, want 5.0.1", id, v)
		}
		answered++
		time.Sleep(3 * time.Second)
	}
	s, err := status(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	backlog := s.Buffer.Records
	if backlog < answered {
		t.Fatalf("outbox holds %d records after %d predictions offline", backlog, answered)
	}
	if err := d.SetLink(ctx, true); err != nil {
		t.Fatal(err)
	}
	restored = true
	upAt := time.Now()
	e.f.waitDevice(ctx, t, id, "online again", func(d *api.Device) bool { return d.Status.Online && d.Status.Since.After(upAt.Add(-time.Second)) })

	// Drained: the outbox is empty and fleetd holds every record the
	// agent ever appended, each once.
	var delivered, dups uint64
	for {
		s, err = status(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := e.f.api.Device(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		delivered, dups = fd.Records.Delivered, fd.Records.Duplicates
		if s.Buffer.Records == 0 && delivered == s.Buffer.Appended-s.Buffer.Dropped {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("outbox %d records, appended %d dropped %d; fleetd delivered %d", s.Buffer.Records, s.Buffer.Appended, s.Buffer.Dropped, delivered)
		case <-time.After(2 * time.Second):
		}
	}
	drained := time.Since(upAt)
	// The predictions made during the cut, at fleetd: one record each,
	// distinct ids.
	recs, err := e.f.api.Records(ctx, id, client.RecordsQuery{Kind: protocol.RecordPrediction, Since: cutAt.Add(-2 * time.Second), Until: upAt, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range recs.Records {
		k := fmt.Sprintf("%s/%d", r.Epoch, r.ID)
		if seen[k] {
			t.Fatalf("record %s stored twice", k)
		}
		seen[k] = true
	}
	if len(seen) < answered {
		t.Fatalf("fleetd holds %d prediction records of the cut, the device answered %d", len(seen), answered)
	}
	if s.Buffer.Dropped != 0 {
		t.Fatalf("the agent dropped %d records", s.Buffer.Dropped)
	}
	return fmt.Sprintf("%s cut %.0fs (fleetd saw it offline after %.0fs), answered %d/%d inferences offline, backlog %d records; "+
		"after the link came back the outbox drained to 0 in %.0fs; agent appended %d, fleetd delivered %d distinct (%d redeliveries deduplicated), "+
		"%d prediction records of the cut with distinct ids",
		id, upAt.Sub(cutAt).Seconds(), offlineAfter.Seconds(), answered, answered, backlog, drained.Seconds(),
		s.Buffer.Appended, delivered, dups, len(seen))
}

func (e *scEnv) powerCut(t *testing.T) string {
	ctx, cancel := context.WithTimeout(t.Context(), 12*time.Minute)
	defer cancel()
	d, id := e.devs[0], e.ids[0]
	const old, next = "silero-vad@5.0.1", "silero-vad@5.0.3"
	// A watcher in the guest returns as soon as the install's download
	// file or unpack staging directory appears (slot's layout under the
	// agent's data directory); the host cuts the power at once.
	type seen struct {
		out []byte
		err error
	}
	watch := make(chan seen, 1)
	watchCtx, stopWatch := context.WithTimeout(ctx, 5*time.Minute)
	defer stopWatch()
	// The watcher says on the serial console that it is watching (Exec
	// answers only at its end, and runs one command at a time), and the
	// assignment goes out only once the console shows it.
	marker := fmt.Sprintf("edgefleet-watcher-%d", time.Now().UnixNano())
	go func() {
		out, err := d.Exec(watchCtx, `echo `+marker+` >/dev/console; `+
			`while :; do for f in /var/lib/edge-agent/downloads/* /var/lib/edge-agent/bundles/.staging-*; do `+
			`if [ -e "$f" ]; then case "$f" in */downloads/*) echo downloading;; *) echo unpacking;; esac; echo "$f"; exit 0; fi; done; sleep 0.005; done`)
		watch <- seen{out, err}
	}()
	for {
		if b, _ := d.Console(); bytes.Contains(b, []byte(marker)) {
			break
		}
		if watchCtx.Err() != nil {
			t.Fatalf("the watcher in the guest never started: %v; console:\n%s", watchCtx.Err(), d.ConsoleTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	a, err := e.f.api.Assign(ctx, id, next, "")
	if err != nil {
		t.Fatal(err)
	}
	w := <-watch
	if w.err != nil {
		t.Fatalf("watching the install of %s in the guest: %v\n%s", next, w.err, w.out)
	}
	if err := d.PowerCut(); err != nil {
		t.Fatal(err)
	}
	phase := strings.Fields(string(w.out))[0]
	var reported protocol.InstallPhase
	if fd, err := e.f.api.Device(ctx, id); err == nil && fd.Reported != nil && fd.Reported.Install != nil && fd.Reported.Install.Seq == a.Desired.Seq {
		reported = fd.Reported.Install.Phase
	}
	t.Logf("%s: power cut when the guest showed %s; fleetd's last reported phase: %q", id, strings.Join(strings.Fields(string(w.out)), " "), reported)
	cutAt := time.Now()
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	boot, err := d.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := status(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if s.Active == nil || (s.Active.ID != old && s.Active.ID != next) {
		t.Fatalf("after the power cut the device's active version is %+v, want %s or %s", s.Active, old, next)
	}
	afterBoot := s.Active.ID
	if _, v, err := infer(ctx, d); err != nil {
		t.Fatal(err)
	} else if "silero-vad@"+v != afterBoot && "silero-vad@"+v != next {
		t.Fatalf("%s answers from %q, its status says %s active", id, v, afterBoot)
	}
	e.f.waitDevice(ctx, t, id, next+" active after the reboot", func(fd *api.Device) bool {
		return activeIs(next)(fd) && fd.Status.Since.After(cutAt)
	})
	_, v, err := infer(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if v != "5.0.3" {
		t.Fatalf("%s answers from %q, want 5.0.3", id, v)
	}
	return fmt.Sprintf("%s power cut during %s of %s; rebooted (%s) with one consistent active version %s, serving; desired state re-applied: %s active and answering",
		id, phase, next, boot, afterBoot, next)
}
