package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
	tbfleet "github.com/edgefleet/edgefleet/testbed/fleet"
	"github.com/edgefleet/edgefleet/testbed/qemu"
)

// TestSmoke boots one emulated arm64 device from the device image and
// gets one inference from it, the way a fleet runs: fleetd (in this
// process) enrols the device and assigns it the signed Silero VAD bundle
// before it boots; the device boots with systemd, its agent connects over
// the guest's only network path (MQTT and HTTP to fleetd through QEMU's
// restricted user network), takes the retained desired state, downloads,
// verifies, smoke-tests and activates the bundle and reports it; then a
// client on the device sends the two-sine PCM frame to the agent's unix
// socket and must get 0.0690874 back. The device must reach fleetd's two
// forwarded ports and nothing else. It logs the image build, boot and
// first-inference times, and the latency of inference on the emulated
// device (with -testbed.compare also through a native agent here).
func TestSmoke(t *testing.T) {
	preflight(t)
	root := testenv.Root(t)
	onSignal := interruptible(t)
	work := t.TempDir()
	start := time.Now()

	img, relay := deviceKit(t, root, work)
	prepared := time.Since(start)

	pub := tbfleet.TestPublisher(t)
	f := startFleet(t, pub.PublicKey)
	bundlePath := sileroBundle(t, root, pub)
	ctx := context.Background()
	if _, _, err := f.api.Push(ctx, bundlePath, bundlePath+".sig"); err != nil {
		t.Fatalf("pushing the bundle: %v", err)
	}
	const id = "smoke-1"
	labels := map[string]string{"testbed": "smoke"}
	e := f.enroll(t, id, labels)
	// Assigned before the device ever connects: the desired state waits,
	// retained, on the broker.
	a, err := f.api.Assign(ctx, id, "silero-vad@5.0.0", "")
	if err != nil {
		t.Fatalf("assigning the bundle: %v", err)
	}

	pcm, err := os.ReadFile(filepath.Join(root, "testbed", "bundles", "silero-vad", "smoke", "two-sine.pcm"))
	if err != nil {
		t.Fatal(err)
	}
	pubKey, err := os.ReadFile(pub.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dev := newDevice(t, onSignal, img, relay, id, f.forwards, map[string][]byte{
		"etc/edge-agent/config.yaml":       agentConfig(t, root, e, labels),
		"etc/edge-agent/mqtt.password":     []byte(e.Password + "\n"),
		"etc/edge-agent/trust/testbed.pub": pubKey,
		"two-sine.pcm":                     pcm,
	}, testLogger(t))

	bootCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := dev.Start(bootCtx); err != nil {
		t.Fatal(err)
	}
	boot, err := dev.WaitReady(bootCtx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %v", id, boot)
	if prof, err := dev.Exec(bootCtx, "systemd-analyze critical-chain edge-agent.service; systemd-analyze blame | head -15"); err == nil {
		t.Logf("%s: boot profile:\n%s", id, prof)
	}

	dev1 := f.waitDevice(bootCtx, t, id, "silero-vad@5.0.0 active", func(d *api.Device) bool {
		r := d.Reported
		return d.Status.Online && r != nil && r.AppliedSeq == a.Desired.Seq && r.Active != nil &&
			r.Active.ID() == "silero-vad@5.0.0" && r.Install != nil && r.Install.Phase == protocol.PhaseSucceeded
	})
	installed := time.Since(start) - prepared
	t.Logf("%s: fleetd sees silero-vad@5.0.0 active (agent %s, provider %s) %.1fs after the device started",
		id, dev1.Reported.AgentVersion, dev1.Reported.Provider, installed.Seconds())

	got := inferOnDevice(t, dev, bootCtx)
	firstInference := time.Since(start) - prepared
	t.Logf("%s: speech probability %v (want %v); first inference %.1fs after the device started (image ready in %.1fs before that)",
		id, got, sileroOutput, firstInference.Seconds(), prepared.Seconds())

	// The network rule: the device reaches fleetd's two forwarded ports
	// and nothing else: not this machine (QEMU's host alias 10.0.2.2, at
	// fleetd's real port), not another port of the fleet address, not
	// QEMU's DNS address 10.0.2.3. (Only addresses of the emulated
	// network the test made: the test never sends to the outside world,
	// not even to prove that it cannot.) The reachable one gets a long
	// limit, since an emulated guest on a busy machine is slow; a blocked
	// one is refused at once by the restricted network.
	_, httpPort, _ := net.SplitHostPort(f.srv.HTTPAddr())
	probe := func(url string, limit int) string {
		return fmt.Sprintf("(curl -s -m %d -o /dev/null %s && echo reached %s || echo blocked %s) &", limit, url, url, url)
	}
	out, err := dev.Exec(bootCtx, strings.Join([]string{
		probe(fmt.Sprintf("http://%s:%d/", qemu.FleetIP, guestHTTPPort), 60),
		probe("http://10.0.2.2:"+httpPort+"/", 5),
		probe(fmt.Sprintf("http://%s:22/", qemu.FleetIP), 5),
		probe("http://10.0.2.3:53/", 5),
		"wait"}, " "))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"reached http://10.0.2.100:8080/", "blocked http://10.0.2.2:" + httpPort + "/", "blocked http://10.0.2.100:22/", "blocked http://10.0.2.3:53/"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("network rule: want %q in:\n%s", want, out)
		}
	}

	if mem, err := dev.Exec(bootCtx, `grep VmRSS /proc/$(systemctl show -p MainPID --value edge-agent)/status; free -m | head -2`); err == nil {
		t.Logf("%s: memory with the bundle loaded:\n%s", id, mem)
	}

	// Latency on the emulated device, as curl measures each request over
	// the unix socket (one curl process and connection: the first request
	// is left out).
	const n = 20
	emulated := latency(t, func(script string) ([]byte, error) { return dev.Exec(bootCtx, script) }, "/run/edge-agent/api.sock", qemu.SeedDir+"/two-sine.pcm", n)
	t.Logf("inference latency (raw PCM over the agent's unix socket), arm64 agent in qemu-system-aarch64 (TCG, -cpu %s, %d vCPU): median %v of %d",
		dev.Config().CPU, dev.Config().CPUs, emulated.Round(time.Microsecond), n)
	if *compare {
		native := nativeLatency(t, root, bundlePath, pubKey, n)
		t.Logf("the same, amd64 agent native on this machine: median %v of %d (emulation %.0fx slower)",
			native.Round(time.Microsecond), n, float64(emulated)/float64(native))
	}

	if *lifecycle {
		lifecycleChecks(t, f, dev, id)
	}

	stopCtx, cancel2 := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel2()
	stopStart := time.Now()
	if err := dev.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: clean power-off in %.1fs", id, time.Since(stopStart).Seconds())
}

// infer sends the two-sine PCM frame (from the seed disk) to the agent's
// unix socket with curl on d and checks the answer; it returns the answer
// and the model version that gave it.
func infer(ctx context.Context, d *device) (float64, string, error) {
	out, err := d.Exec(ctx, "curl -sS --fail-with-body --unix-socket /run/edge-agent/api.sock "+
		"-H 'Content-Type: application/octet-stream' --data-binary @"+qemu.SeedDir+"/two-sine.pcm "+
		"http://localhost/v2/models/silero-vad/infer")
	if err != nil {
		return 0, "", fmt.Errorf("inference on %s: %w (%s)", d.Name(), err, out)
	}
	var r tbfleet.Prediction
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, "", fmt.Errorf("decoding %s's answer: %w\n%s", d.Name(), err, out)
	}
	got, found := 0.0, false
	for _, o := range r.Outputs {
		if o.Name == "output" && len(o.Data) == 1 {
			got, found = o.Data[0], true
			break
		}
	}
	if !found {
		return 0, "", fmt.Errorf("no one-element output %q in %+v", "output", r.Outputs)
	}
	if !near(got) {
		return got, r.ModelVersion, fmt.Errorf("%s answered %v, want %v ± %g", d.Name(), got, sileroOutput, tolerance)
	}
	return got, r.ModelVersion, nil
}

// inferOnDevice is infer on the smoke test's device, which must answer
// from model version 5.0.0.
func inferOnDevice(t *testing.T, dev *device, ctx context.Context) float64 {
	t.Helper()
	got, version, err := infer(ctx, dev)
	if err != nil {
		t.Fatal(err)
	}
	if version != "5.0.0" {
		t.Fatalf("%s answered from model version %q, want 5.0.0", dev.Name(), version)
	}
	return got
}

// lifecycleChecks exercises the machine controls the full testbed builds
// on (-testbed.lifecycle, make testbed-smoke): a network cut (the device
// keeps serving; its link comes back), then a power cut and a reboot
// (the installed bundle survived and serves, and fleetd sees the device
// back with it).
func lifecycleChecks(t *testing.T, f *fleet, dev *device, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	carrier := func() string {
		out, err := dev.Exec(ctx, "cat /sys/class/net/en*/carrier")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	if err := dev.SetLink(ctx, false); err != nil {
		t.Fatal(err)
	}
	if c := carrier(); c != "0" {
		t.Fatalf("carrier %q with the link down, want 0", c)
	}
	inferOnDevice(t, dev, ctx)
	if err := dev.SetLink(ctx, true); err != nil {
		t.Fatal(err)
	}
	if c := carrier(); c != "1" {
		t.Fatalf("carrier %q with the link up again, want 1", c)
	}
	t.Logf("%s: network cut: the link went down and up, the device served meanwhile", id)

	if err := dev.PowerCut(); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	if err := dev.Start(ctx); err != nil {
		t.Fatal(err)
	}
	boot, err := dev.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := inferOnDevice(t, dev, ctx)
	d := f.waitDevice(ctx, t, id, "back online after the power cut", func(d *api.Device) bool {
		return d.Status.Online && d.Reported != nil && d.Reported.Active != nil &&
			d.Reported.Active.ID() == "silero-vad@5.0.0" && d.Status.Since.After(cutAt)
	})
	t.Logf("%s: power cut and reboot: %v; serves %v again; fleetd sees it online since %s with %s",
		id, boot, got, d.Status.Since.Format(time.TimeOnly), d.Reported.Active.ID())
}

// latency sends the two-sine PCM frame n+1 times to the agent at socket
// through one curl process (run by runScript, which runs a bash script) and returns
// the median of curl's time_total over the last n.
func latency(t *testing.T, runScript func(script string) ([]byte, error), socket, pcm string, n int) time.Duration {
	t.Helper()
	script := fmt.Sprintf("curl -sS --fail-with-body --unix-socket %s -H 'Content-Type: application/octet-stream' --data-binary @%s -w '\\nT %%{time_total}\\n' $(for i in $(seq %d); do echo http://localhost/v2/models/silero-vad/infer; done)",
		socket, pcm, n+1)
	out, err := runScript(script)
	if err != nil {
		t.Fatalf("timing inference: %v", err)
	}
	var ds []time.Duration
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "T "); ok {
			s, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("curl printed %q, not a time", line)
			}
			ds = append(ds, time.Duration(s*float64(time.Second)))
		}
	}
	if len(ds) != n+1 {
		t.Fatalf("%d timings from curl, want %d:\n%s", len(ds), n+1, out)
	}
	return median(ds[1:])
}

// nativeLatency starts an agent built for this machine with the same
// bundle, trusting the publisher key pubKey, and times the same request
// with curl.
func nativeLatency(t *testing.T, root, bundlePath string, pubKey []byte, n int) time.Duration {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl not found: apt-get install curl")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "edge-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-X github.com/edgefleet/edgefleet/shared/version.Version="+agentVersion, "-o", bin, "./agent/cmd/edge-agent")
	cmd.Dir = root
	run(t, cmd)
	key := filepath.Join(dir, "publisher.pub")
	if err := os.WriteFile(key, pubKey, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "api.sock")
	cfg := fmt.Sprintf("deviceID: native\ndataDir: %s\ntrust:\n  publicKeys: [%s]\napi:\n  socket: %s\nruntime:\n  ortLibrary: %s\n",
		filepath.Join(dir, "data"), key, sock, testenv.ORTLibrary(t))
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := exec.Command(bin, "run", "--config", filepath.Join(dir, "config.yaml"))
	logs := newLogBuffer()
	agent.Stdout, agent.Stderr = logs, logs
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		agent.Process.Signal(os.Interrupt)
		agent.Wait()
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the native agent did not listen on %s:\n%s", sock, logTail(logs, 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	run(t, exec.Command(bin, "install", "--config", filepath.Join(dir, "config.yaml"), bundlePath))
	pcm := filepath.Join(root, "testbed", "bundles", "silero-vad", "smoke", "two-sine.pcm")
	return latency(t, func(script string) ([]byte, error) { return exec.Command("bash", "-c", script).Output() }, sock, pcm, n)
}
