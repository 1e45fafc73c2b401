package testbed

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/cross/deb"
	fwimage "github.com/edgefleet/edgefleet/firmware/image"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/testenv"
	tbfleet "github.com/edgefleet/edgefleet/testbed/fleet"
	"github.com/edgefleet/edgefleet/testbed/qemu"
)

var (
	keep      = flag.Bool("testbed.keep", false, "keep every device's directory (console.log, qemu.log, disks) and print where")
	compare   = flag.Bool("testbed.compare", false, "also time inference through a native agent on this machine, for comparison")
	cache     = flag.String("testbed.cache", "", "the device image cache (default: .cache/image in the repository)")
	lifecycle = flag.Bool("testbed.lifecycle", false, "also cut the network link and the power of the smoke device, and check it recovers")
	cpus      = flag.Int("testbed.cpus", 1, "virtual CPUs per device")
	cpu       = flag.String("testbed.cpu", "", "the emulated CPU (-cpu; default qemu.DefaultCPU)")
)

// Guest ports of fleetd's services at qemu.FleetIP.
const (
	guestMQTTPort = 1883
	guestHTTPPort = 8080
)

// sileroOutput is Silero VAD v5's speech probability for the two-sine
// frame (testbed/bundles/silero-vad/bundle.yaml), and tolerance how far an
// answer may be from it.
const (
	sileroOutput = 0.0690874
	tolerance    = 1e-4
)

// agentVersion is stamped into the agent the testbed builds. It does not
// change with commits, so the package (and the image stage that installs
// it) is rebuilt only when the agent's code does.
const agentVersion = "0.1.0+testbed"

// preflight fails the test, naming Debian packages, when something the
// testbed needs is missing.
func preflight(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the testbed builds its device image with debootstrap and chroot, which need root: run the tests as root")
	}
	var missing, pkgs []string
	for _, tool := range []struct{ name, pkg string }{
		{"qemu-system-aarch64", "qemu-system-arm"},
		{"qemu-img", "qemu-utils"},
		{"debootstrap", "debootstrap"},
		{"mkfs.ext4", "e2fsprogs"},
		{"qemu-aarch64-static", "qemu-user-static"},
		{"aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"},
		{"dpkg-deb", "dpkg"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			missing = append(missing, tool.name)
			pkgs = append(pkgs, tool.pkg)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("the testbed needs %s: apt-get install %s", strings.Join(missing, ", "), strings.Join(pkgs, " "))
	}
}

// interruptible makes SIGINT and SIGTERM close every machine the test
// registered and remove its directories before the process exits (QEMU
// also dies with this process: see qemu.Machine). The returned function
// registers a cleanup.
func interruptible(t *testing.T) func(func()) {
	var mu sync.Mutex
	var fns []func()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	stop := make(chan struct{})
	go func() {
		select {
		case s := <-sig:
			mu.Lock()
			for _, fn := range slices.Backward(fns) {
				fn()
			}
			fmt.Fprintf(os.Stderr, "testbed: %v: machines stopped, files removed\n", s)
			os.Exit(130)
		case <-stop:
		}
	}()
	t.Cleanup(func() {
		signal.Stop(sig)
		close(stop)
	})
	// The test's temporary directory (the parent of every t.TempDir),
	// removed last.
	tmp := filepath.Dir(t.TempDir())
	fns = append(fns, func() { os.RemoveAll(tmp) })
	return func(fn func()) {
		mu.Lock()
		defer mu.Unlock()
		fns = append(fns, fn)
	}
}

// run runs cmd and fails the test with its output if it fails.
func run(t *testing.T, cmd *exec.Cmd) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s\n%s", strings.Join(cmd.Args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

// agentPackage builds the arm64 agent and its Debian package (cross/deb)
// into dir, reproducibly: the same code gives the same package bytes.
func agentPackage(t *testing.T, root, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "linux-arm64", "edge-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-X github.com/edgefleet/edgefleet/shared/version.Version="+agentVersion,
		"-o", bin, "./agent/cmd/edge-agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOOS=linux", "GOARCH=arm64", "CC=aarch64-linux-gnu-gcc")
	run(t, cmd)
	path, err := deb.Build(slog.New(slog.DiscardHandler), deb.Package{
		Arch:       "arm64",
		Version:    agentVersion,
		Binary:     bin,
		ORTLibrary: filepath.Join(testenv.CacheDir(t), "onnxruntime", "linux-arm64", "libonnxruntime.so.1"),
		Unit:       filepath.Join(root, "firmware", "edge-agent.service"),
		Config:     filepath.Join(root, "firmware", "edge-agent.yaml"),
		MTime:      time.Unix(1767225600, 0), // 2026-01-01: fixed, for identical bytes
	}, dir)
	if err != nil {
		t.Fatalf("packaging the arm64 agent: %v (run `make deps` if the ONNX Runtime library is missing)", err)
	}
	return path
}

// deviceImage builds the device image (or finds it in the cache) with the
// given agent package.
func deviceImage(t *testing.T, root, debPath string) *fwimage.Image {
	t.Helper()
	var out bytes.Buffer
	start := time.Now()
	im, err := fwimage.Build(context.Background(), fwimage.Options{
		Script:   filepath.Join(root, "firmware", "image", "build.sh"),
		Deb:      debPath,
		CacheDir: *cache,
		Output:   &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("device image %s (kernel %s, agent %s) in %.1fs; its build took %v s",
		im.Dir, im.KernelVersion, im.AgentVersion, time.Since(start).Seconds(), im.Seconds)
	return im
}

// deviceKit builds, in work, what booting emulated devices takes: the
// agent's package, the device image with it installed (deviceImage) and
// the relay QEMU's network goes through.
func deviceKit(t *testing.T, root, work string) (*fwimage.Image, string) {
	t.Helper()
	img := deviceImage(t, root, agentPackage(t, root, work))
	relay, err := qemu.BuildRelay(context.Background(), work)
	if err != nil {
		t.Fatal(err)
	}
	return img, relay
}

// fleet is fleetd running in this process on loopback, with the URLs it
// hands devices pointed at qemu.FleetIP.
type fleet struct {
	srv      *fleetd.Server
	api      *client.Client
	enrolTok string
	forwards []qemu.Forward
	logs     *testenv.SyncBuffer
}

// startFleet runs fleetd trusting the publisher keys (PEM files).
func startFleet(t *testing.T, trustedKeys ...string) *fleet {
	t.Helper()
	dir := t.TempDir()
	logs := newLogBuffer()
	srv, err := fleetd.New(fleetd.Config{
		DataDir:  dir,
		Registry: fleetd.RegistryConfig{TrustedKeys: trustedKeys},
		HTTP:     fleetd.HTTPConfig{Listen: "127.0.0.1:0", PublicURL: fmt.Sprintf("http://%s:%d", qemu.FleetIP, guestHTTPPort)},
		Broker: fleetd.BrokerConfig{Listen: "127.0.0.1:0",
			PublicURLs: []string{fmt.Sprintf("tcp://%s:%d", qemu.FleetIP, guestMQTTPort)}},
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("fleetd.New: %v", err)
	}
	run := testenv.Start(srv.Run)
	t.Cleanup(func() {
		if err := run.Stop(time.Minute); err != nil {
			t.Errorf("fleetd: %v", err)
		}
		srv.Close()
		if t.Failed() {
			t.Logf("fleetd log (end):\n%s", logTail(logs, 20000))
		}
	})
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	c, err := client.New("http://"+srv.HTTPAddr(), read(fleetd.OperatorTokenFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{
		srv: srv, api: c, enrolTok: read(fleetd.EnrolTokenFile), logs: logs,
		forwards: []qemu.Forward{
			{GuestPort: guestMQTTPort, HostAddr: srv.MQTTAddr()},
			{GuestPort: guestHTTPPort, HostAddr: srv.HTTPAddr()},
		},
	}
}

func (f *fleet) enroll(t *testing.T, id string, labels map[string]string) *api.Enrolment {
	t.Helper()
	e, err := f.api.Enroll(context.Background(), f.enrolTok, id, labels)
	if err != nil {
		t.Fatalf("enrolling %s: %v", id, err)
	}
	return e
}

// waitDevice polls fleetd's view of a device until cond holds.
func (f *fleet) waitDevice(ctx context.Context, t *testing.T, id, what string, cond func(*api.Device) bool) *api.Device {
	t.Helper()
	var last string
	for {
		d, err := f.api.Device(ctx, id)
		if err == nil && cond(d) {
			return d
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("online %v, reported %+v", d.Status.Online, d.Reported)
			if d.Reported != nil && d.Reported.Install != nil {
				last += fmt.Sprintf(", install %+v", *d.Reported.Install)
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: timed out waiting for %s; last: %s", id, what, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// sileroBundle builds the Silero VAD bundle of testbed/bundles/silero-vad
// (its committed spec, as make builds it) and signs it with pub; it
// returns its path, the signature is path.sig.
func sileroBundle(t *testing.T, root string, pub *tbfleet.Publisher) string {
	t.Helper()
	spec := filepath.Join(root, "testbed", "bundles", "silero-vad")
	if _, err := os.Stat(filepath.Join(spec, "pre.wasm")); err != nil {
		t.Fatalf("the Silero pre-processor is not built: run `make wasm` (%v)", err)
	}
	testenv.SileroModel(t)
	b, err := pub.Build(context.Background(), spec, filepath.Join(t.TempDir(), "silero-vad-5.0.0.bundle"), bundle.BuildOptions{})
	if err != nil {
		t.Fatalf("building the Silero bundle: %v", err)
	}
	return b.Path
}

// agentConfig is the image's default agent configuration
// (firmware/edge-agent.yaml) with the device's id, labels and uplink.
func agentConfig(t *testing.T, root string, e *api.Enrolment, labels map[string]string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "firmware", "edge-agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["deviceID"] = e.DeviceID
	cfg["labels"] = labels
	cfg["uplink"] = map[string]any{
		"broker":       e.Brokers[0],
		"username":     e.Username,
		"passwordFile": "/etc/edge-agent/mqtt.password",
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// device is one emulated device of a test.
type device struct {
	*qemu.Machine
	dir string
}

// newDevice prepares a machine (not started) that Close kills at the
// test's end; its console log is printed if the test failed.
func newDevice(t *testing.T, onSignal func(func()), img *fwimage.Image, relay, name string, forwards []qemu.Forward, seed map[string][]byte, log *slog.Logger) *device {
	t.Helper()
	dir := t.TempDir()
	if *keep {
		var err error
		if dir, err = os.MkdirTemp("", "testbed-"+name+"-"); err != nil {
			t.Fatal(err)
		}
	}
	m, err := qemu.New(qemu.Config{
		Name:      name,
		Image:     qemu.Image{Kernel: img.Kernel, Initrd: img.Initrd, RootFS: img.RootFS},
		Dir:       dir,
		MemoryMiB: 512,
		CPUs:      *cpus,
		CPU:       *cpu,
		Seed:      seed,
		Forwards:  forwards,
		Relay:     relay,
		Logger:    log,
	})
	if err != nil {
		t.Fatal(err)
	}
	onSignal(func() {
		m.Close()
		if !*keep {
			os.RemoveAll(dir)
		}
	})
	t.Cleanup(func() {
		m.Close()
		if t.Failed() {
			t.Logf("%s: console (end):\n%s", name, m.ConsoleTail(12000))
		}
		if *keep {
			t.Logf("%s: kept %s", name, dir)
		}
	})
	return &device{Machine: m, dir: dir}
}

// median of durations.
func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// close enough to the known Silero answer.
func near(got float64) bool { return math.Abs(got-sileroOutput) <= tolerance }

// newLogBuffer collects a log: fleetd's, an agent's; past 8 MiB it drops
// what is written.
func newLogBuffer() *testenv.SyncBuffer { return &testenv.SyncBuffer{Max: 8 << 20} }

// logTail is the end of what b holds: its last n bytes at most.
func logTail(b *testenv.SyncBuffer, n int) string {
	s := b.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// testLogger writes slog records to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = testWriter{}
