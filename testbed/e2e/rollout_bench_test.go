package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/agent/uplink"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/version"
	"github.com/edgefleet/edgefleet/testbed/fleet"
)

// BenchmarkRolloutFanOut measures how long a rollout takes to reach
// every device of a fleet when nothing but the control plane and the
// MQTT round trips limit it (waves with zero bake: a one-device canary,
// 5%, 25%, 100%; the installSuccess gate with every device required),
// and what it costs the control plane per device.
//
// fleetd runs in this process (embedded broker, file registry, data on
// disk). The devices run in a child process (this test binary again) as
// simulated agents: each has the real uplink (its own MQTT connection
// with its enrolled credentials, the desired-state guard, the reported
// state, events through its own bbolt outbox, acknowledged deliveries)
// over an agent whose Apply takes effect at once, without downloading
// anything. So this process's CPU time during a rollout is fleetd's
// (engine, inventory, broker, API, telemetry ingest) plus the polling of
// the rollout's status; the child's is the devices'.
//
// Side by side: "rollout" goes through the engine; "assign" is the bare
// minimum without it, one assignment per device through the API (16 at
// a time) and a poll of the device list until every device reports the
// version.
//
//	go test -run '^$' -bench RolloutFanOut -benchtime 1x ./testbed/e2e/ [-rollout.devices 1000]
func BenchmarkRolloutFanOut(b *testing.B) {
	n := *benchDevices
	ctx := b.Context()
	art := fleet.TestArtifacts(b)
	pub := fleet.TestPublisher(b)
	f := fleet.Start(b, fleet.Options{Artifacts: art, TrustKeys: []string{pub.PublicKey}})
	dir := b.TempDir()
	var versions []string
	for _, v := range []string{"1.0.0", "2.0.0"} {
		bn := fleet.SileroBundle(b, dir, v, fleet.SileroOptions{Publisher: pub, Artifacts: art, NoCheck: true})
		if err := f.Push(ctx, bn); err != nil {
			b.Fatal(err)
		}
		versions = append(versions, bn.ID())
	}

	cfg, child := startSimFleet(b, f, n, versions[0])
	turn := 0
	measure := func(b *testing.B, name string, run func(bundle string)) {
		var wall, self, sims time.Duration
		for b.Loop() {
			turn++
			bundle := versions[turn%2]
			s0, c0, t0 := selfCPU(b), child.cpu(b), time.Now()
			run(bundle)
			wall += time.Since(t0)
			self += selfCPU(b) - s0
			sims += child.cpu(b) - c0
		}
		per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N*n) }
		b.ReportMetric(per(self), "fleetd-cpu-µs/device")
		b.ReportMetric(per(sims), "device-cpu-µs/device")
		b.Logf("%s to %d devices: %v a run; fleetd process CPU %v (%.0f µs a device), devices' %v", name, n,
			(wall / time.Duration(b.N)).Round(time.Millisecond), self/time.Duration(b.N), per(self), sims/time.Duration(b.N))
	}
	b.Run("rollout", func(b *testing.B) {
		measure(b, "rollout", func(bundle string) { fanOut(b, f, bundle) })
	})
	b.Run("assign", func(b *testing.B) {
		measure(b, "assign", func(bundle string) {
			var wg sync.WaitGroup
			next := make(chan string)
			for range 16 {
				wg.Go(func() {
					for id := range next {
						if _, err := f.API.Assign(ctx, id, bundle, ""); err != nil {
							b.Error(err)
						}
					}
				})
			}
			for _, d := range cfg.Devices {
				next <- d.ID
			}
			close(next)
			wg.Wait()
			waitDevices(b, f, n, func(d protocol.ReportedState, _ bool) bool { return d.Active != nil && d.Active.ID() == bundle })
		})
	})
	child.stop(b)
}

var (
	benchDevices = flag.Int("rollout.devices", 1000, "simulated devices of BenchmarkRolloutFanOut")
	benchAgents  = flag.Int("rollout.agents", 200, "agents of BenchmarkRolloutAgents")
	benchDir     = flag.String("rollout.dir", "", "BenchmarkRolloutAgents: directory for fleetd's and the agents' data (default: a temporary directory; one under /dev/shm puts it on tmpfs)")
)

// BenchmarkRolloutAgents is the same zero-bake rollout as
// BenchmarkRolloutFanOut to full edge agents in this process (through
// testbed/fleet, one shared model per bundle): each device downloads,
// verifies, unpacks, loads and smoke-tests the bundle itself, which is
// what the time is then made of. fleetd and the agents share the process,
// so the CPU reported is theirs together.
//
//	go test -run '^$' -bench RolloutAgents -benchtime 1x ./testbed/e2e/ -rollout.agents 1000 [-rollout.dir /dev/shm/ro]
func BenchmarkRolloutAgents(b *testing.B) {
	n := *benchAgents
	ctx := b.Context()
	art := fleet.TestArtifacts(b)
	pub := fleet.TestPublisher(b)
	dir := *benchDir
	if dir == "" {
		dir = b.TempDir()
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	mc := agent.NewModelCache()
	defer mc.Close()
	start := time.Now()
	f := fleet.Start(b, fleet.Options{Devices: n, Dir: dir, Artifacts: art, TrustKeys: []string{pub.PublicKey}, SampleRate: -1, ModelCache: mc})
	b.Logf("%d agents enrolled and started: %v", n, time.Since(start).Round(time.Millisecond))
	var versions []string
	for _, v := range []string{"1.0.0", "2.0.0"} {
		bn := fleet.SileroBundle(b, b.TempDir(), v, fleet.SileroOptions{Publisher: pub, Artifacts: art})
		if err := f.Push(ctx, bn); err != nil {
			b.Fatal(err)
		}
		versions = append(versions, bn.ID())
	}
	start = time.Now()
	if _, err := f.AssignAll(ctx, versions[0]); err != nil {
		b.Fatal(err)
	}
	waitDevices(b, f, n, func(r protocol.ReportedState, online bool) bool {
		return online && r.Active != nil && r.Active.ID() == versions[0]
	})
	b.Logf("%s assigned and active on %d agents: %v", versions[0], n, time.Since(start).Round(time.Millisecond))

	var wall, cpu time.Duration
	turn := 0
	for b.Loop() {
		turn++
		s0, t0 := selfCPU(b), time.Now()
		fanOut(b, f, versions[turn%2])
		wall += time.Since(t0)
		cpu += selfCPU(b) - s0
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*n), "process-cpu-µs/device")
	b.Logf("rollout to %d agents: %v a run, %v of CPU (fleetd and agents) a run", n, (wall / time.Duration(b.N)).Round(time.Millisecond), cpu/time.Duration(b.N))
}

// fanOut runs the zero-bake four-wave rollout of bundle to every device
// and waits until it has succeeded.
func fanOut(b *testing.B, f *fleet.Fleet, bundle string) {
	ctx := b.Context()
	spec := "name: fan-out\nbundle: " + bundle + `
waves:
  - {name: canary, count: 1}
  - {percent: 5}
  - {percent: 25}
  - {percent: 100}
waveDeadline: 30m
gates:
  installSuccess: {min: 1, minReports: "100%"}
`
	r, _, err := f.API.CreateRollout(ctx, []byte(spec), false)
	if err != nil {
		b.Fatal(err)
	}
	for {
		st, err := f.API.Rollout(ctx, r.ID, false)
		if err != nil {
			b.Fatal(err)
		}
		if st.State == rollout.StateSucceeded {
			return
		}
		if !st.State.Active() {
			b.Fatalf("rollout %s: %s (%s)", r.ID, st.State, st.Reason)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startSimFleet enrols n simulated devices sim-0000... with fleetd,
// starts them in a child process (each reporting active as its bundle)
// and waits until fleetd has them all online.
func startSimFleet(b *testing.B, f *fleet.Fleet, n int, active string) (simConfig, *sims) {
	b.Helper()
	ctx := b.Context()
	start := time.Now()
	cfg := simConfig{Broker: "tcp://" + f.Server.MQTTAddr(), Dir: filepath.Join(b.TempDir(), "sims"), Active: active}
	cfg.Devices = make([]simCreds, n)
	var mu sync.Mutex
	var enrolErr error
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				id := fmt.Sprintf("sim-%04d", i)
				e, err := f.API.Enroll(ctx, f.EnrolToken, id, map[string]string{"region": []string{"eu", "us", "ap"}[i%3]})
				mu.Lock()
				if err != nil && enrolErr == nil {
					enrolErr = err
				}
				if err == nil {
					cfg.Devices[i] = simCreds{ID: id, Password: e.Password}
				}
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if enrolErr != nil {
		b.Fatal(enrolErr)
	}
	b.Logf("%d devices enrolled: %v", n, time.Since(start).Round(time.Millisecond))
	child := startSims(b, cfg)
	start = time.Now()
	waitDevices(b, f, n, func(d protocol.ReportedState, online bool) bool {
		return online && d.Active != nil && d.Active.ID() == active
	})
	b.Logf("%d simulated devices online, reporting %s: %v", n, active, time.Since(start).Round(time.Millisecond))
	return cfg, child
}

// waitDevices polls fleetd's device list until n devices meet cond.
func waitDevices(b *testing.B, f *fleet.Fleet, n int, cond func(r protocol.ReportedState, online bool) bool) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		devs, err := f.API.Devices(b.Context(), "")
		if err != nil {
			b.Fatal(err)
		}
		ok := 0
		for _, d := range devs {
			if d.Reported != nil && cond(*d.Reported, d.Status.Online) {
				ok++
			}
		}
		if ok == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d devices there after 10 minutes", ok, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// selfCPU is this process's CPU time (user and system) so far.
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The simulated devices' child process.

// simEnv names the child's configuration file; set, the test binary runs
// the devices instead of tests.
const simEnv = "EDGEFLEET_ROLLOUT_SIMS"

type simCreds struct {
	ID, Password string
}

// simConfig is the child's configuration.
type simConfig struct {
	Broker  string
	Dir     string
	Active  string // name@version every device starts with
	Devices []simCreds
}

func init() {
	if p := os.Getenv(simEnv); p != "" {
		os.Exit(runSims(p))
	}
}

// sims is the running child.
// sims are the child processes running the simulated devices.
type sims struct{ procs []*simProc }

// simProc is one child process.
type simProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// simsPerProcess bounds a child's devices: each holds an open bbolt file
// and a connection, and a process may have 20,000 open files on the
// machines here (RLIMIT_NOFILE).
const simsPerProcess = 4000

// startSims starts children with cfg's devices, at most simsPerProcess
// each, and waits until each says every device's uplink runs.
func startSims(b *testing.B, cfg simConfig) *sims {
	b.Helper()
	s := &sims{}
	b.Cleanup(func() { s.stop(b) })
	for part := range slices.Chunk(cfg.Devices, simsPerProcess) {
		pc := cfg
		pc.Devices = part
		s.procs = append(s.procs, startSimProc(b, pc, len(s.procs)))
	}
	return s
}

func startSimProc(b *testing.B, cfg simConfig, i int) *simProc {
	b.Helper()
	p := filepath.Join(b.TempDir(), fmt.Sprintf("sims-%d.json", i))
	data, err := json.Marshal(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), simEnv+"="+p)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sp := &simProc{cmd: cmd, stdin: stdin}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		sp.stop(b)
		b.Fatalf("simulated devices %d: %q, %v", i, line, err)
	}
	return sp
}

// cpu is the children's CPU time so far (/proc/PID/stat, in clock ticks
// of 10 ms).
func (s *sims) cpu(b *testing.B) time.Duration {
	var total time.Duration
	for _, sp := range s.procs {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", sp.cmd.Process.Pid))
		if err != nil {
			b.Fatal(err)
		}
		// Fields after the command name, which is in parentheses.
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		total += time.Duration(utime+stime) * 10 * time.Millisecond
	}
	return total
}

// stop shuts every child's devices down and waits for them.
func (s *sims) stop(b *testing.B) {
	for _, sp := range s.procs {
		sp.stop(b)
	}
}

// stop closes the child's stdin (it shuts its devices down) and waits.
func (s *simProc) stop(b *testing.B) {
	if s.stdin == nil {
		return
	}
	s.stdin.Close()
	s.stdin = nil
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			b.Errorf("simulated devices: %v", err)
		}
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		b.Errorf("simulated devices did not stop within a minute")
	}
}

// simAgent is an agent whose Apply takes effect at once.
type simAgent struct {
	mu          sync.Mutex
	active, lkg *protocol.BundleID
}

func (a *simAgent) Apply(ctx context.Context, d *protocol.DesiredState, progress uplink.ProgressFunc) error {
	progress(protocol.PhaseDownloading, nil)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.active == nil || a.active.ID() != d.Bundle.ID() {
		a.lkg, a.active = a.active, &protocol.BundleID{Name: d.Bundle.Name, Version: d.Bundle.Version}
	}
	return nil
}

func (a *simAgent) Reported() protocol.ReportedState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return protocol.ReportedState{AgentVersion: version.Version, Active: a.active, LastKnownGood: a.lkg, Provider: "cpu"}
}

// runSims is the child's main: it runs the devices of the configuration
// at path until its stdin closes.
func runSims(path string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	data, err := os.ReadFile(path)
	if err != nil {
		log.Error("simulated devices", "err", err)
		return 1
	}
	var cfg simConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		log.Error("simulated devices", "err", err)
		return 1
	}
	name, ver, _ := strings.Cut(cfg.Active, "@")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var obs []*outbox.Outbox
	for _, d := range cfg.Devices {
		dir := filepath.Join(cfg.Dir, d.ID)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			log.Error("simulated devices", "err", err)
			return 1
		}
		ob, err := outbox.Open(filepath.Join(dir, "outbox.db"), outbox.Options{Logger: log})
		if err != nil {
			log.Error("simulated devices", "device", d.ID, "err", err)
			return 1
		}
		obs = append(obs, ob)
		up, err := uplink.New(uplink.Config{
			DeviceID: d.ID, Brokers: []string{cfg.Broker}, Username: d.ID, Password: d.Password,
			StateDir: filepath.Join(dir, "uplink"), MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second,
			ReportDebounce: 100 * time.Millisecond,
		}, &simAgent{active: &protocol.BundleID{Name: name, Version: ver}}, ob, log.With("device", d.ID))
		if err != nil {
			log.Error("simulated devices", "device", d.ID, "err", err)
			return 1
		}
		wg.Go(func() {
			if err := up.Run(ctx); err != nil {
				log.Error("uplink stopped", "device", d.ID, "err", err)
			}
			up.Close()
		})
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	cancel()
	wg.Wait()
	for _, ob := range obs {
		ob.Close()
	}
	return 0
}
