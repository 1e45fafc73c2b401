package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/shared/atomicfile"
	"github.com/edgefleet/edgefleet/shared/bundle"
)

// Step 1.
func (d *demo) stepPreflight(ctx context.Context) (string, error) {
	for _, b := range []string{"fleetd", "edge-agent", "fleetctl"} {
		p := filepath.Join(d.cfg.Bin, b)
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s is missing or not executable: run make build (make demo does), or pass --bin", p)
		}
	}
	d.ortLib = ortLibrary(d.cfg.Repo)
	if _, err := os.Stat(d.ortLib); err != nil {
		return "", fmt.Errorf("the ONNX Runtime library %s is missing: run make deps (or set EDGEFLEET_ORT_LIB)", d.ortLib)
	}
	spec, err := bundle.LoadSpec(d.specDir())
	if err != nil {
		return "", fmt.Errorf("reading the Silero VAD bundle's spec: %w", err)
	}
	d.good = bundleInfo{Name: spec.Name, Version: spec.Version, File: filepath.Join("bundles", spec.Name+"-"+spec.Version+".bundle")}
	for what, p := range map[string]string{"the Silero VAD model": spec.Model, "the pre-processor": spec.Pre} {
		if p == "" {
			continue
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(spec.Dir(), p)
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s (%s) is missing: run make deps wasm (make demo does)", what, p)
		}
	}
	bad, err := nextPatch(spec.Version)
	if err != nil {
		return "", fmt.Errorf("the bundle's version: %w", err)
	}
	d.bad = bundleInfo{Name: spec.Name, Version: bad, File: filepath.Join("bundles", spec.Name+"-"+bad+".bundle")}

	if d.goTool, err = exec.LookPath("go"); err != nil {
		if _, serr := os.Stat("/usr/local/go/bin/go"); serr != nil {
			return "", errors.New("the go command is not on PATH: the demo builds its bad pre-processor with it")
		}
		d.goTool = "/usr/local/go/bin/go"
	}

	// Unix socket paths are limited to 108 bytes.
	if len(filepath.Join(d.work, "agents", "us-jetson-2", "api.sock")) > 100 {
		if d.sockDir, err = os.MkdirTemp("", "efdemo-"); err != nil {
			return "", fmt.Errorf("creating a directory for the agents' sockets: %w", err)
		}
	}

	var versions []string
	for _, b := range []string{"fleetctl", "edge-agent"} {
		res, err := d.sup.Run(ctx, d.work, d.childEnv(), filepath.Join(d.cfg.Bin, b), "version")
		if err != nil {
			return "", err
		}
		v := strings.TrimSpace(string(res.Stdout))
		if !strings.HasPrefix(v, b) {
			v = b + " " + v
		}
		versions = append(versions, v)
	}
	d.n.Say("%s", strings.Join(versions, "; "))
	d.n.Say("ONNX Runtime: %s", d.rel(d.ortLib))
	d.n.Say("model and pre-processor of %s: %s", d.good.ID(), d.rel(d.specDir()))

	// The bad version's pre-processor compiles in the background while
	// the good one is shipped (step 10 waits for it).
	d.slowPre = filepath.Join(d.work, "build", "slow-pre.wasm")
	d.slowBuild = make(chan slowBuildResult, 1)
	go func() {
		start := time.Now()
		_, err := d.sup.Run(ctx, d.cfg.Repo, []string{"GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0"}, d.slowPreArgv()...)
		d.slowBuild <- slowBuildResult{took: time.Since(start), err: err}
	}()
	return fmt.Sprintf("binaries, ONNX Runtime, the model and its pre-processor are in place; building %s's pre-processor in the background", d.bad.ID()), nil
}

func (d *demo) specDir() string {
	return filepath.Join(d.cfg.Repo, "testbed", "bundles", "silero-vad")
}

func (d *demo) slowPreArgv() []string {
	return []string{d.goTool, "build", "-buildmode=c-shared", "-trimpath", "-o", d.slowPre, "./testbed/cmd/demo/slowpre"}
}

// nextPatch returns version with its patch number one higher.
func nextPatch(version string) (string, error) {
	core, _, _ := strings.Cut(version, "+")
	core, _, _ = strings.Cut(core, "-")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("%q is not MAJOR.MINOR.PATCH", version)
	}
	patch, err := strconv.Atoi(parts[2])
	if err != nil || patch < 0 {
		return "", fmt.Errorf("%q: bad patch number", version)
	}
	return fmt.Sprintf("%s.%s.%d", parts[0], parts[1], patch+1), nil
}

// Step 2.
func (d *demo) stepKeys(ctx context.Context) (string, error) {
	if _, err := d.fleetctl(ctx, "keys", "generate", "--out", "keys"); err != nil {
		return "", err
	}
	return "keys/signing.key stays with the publisher; devices and fleetd get keys/signing.pub", nil
}

// Step 3.
func (d *demo) stepBuild(ctx context.Context) (string, error) {
	model := filepath.Join("mlflow", d.good.Name)
	if err := writeMLflowModel(filepath.Join(d.work, model), d.specDir()); err != nil {
		return "", err
	}
	d.n.Say("%s is the model as a training run logs it to MLflow (mlflow.onnx.log_model): MLmodel with", model)
	d.n.Say("the onnx flavor, the tensor signature and the run's lineage, beside model.onnx.")
	specDir := filepath.Join("specs", d.good.Name+"-"+d.good.Version)
	if err := writeMLflowSpec(d.specDir(), filepath.Join(d.work, specDir)); err != nil {
		return "", err
	}
	d.n.Say("%s/bundle.yaml is the Silero spec without model, inputs and outputs: those come from MLflow.", specDir)
	if _, err := d.fleetctl(ctx, "bundle", "build", specDir, "--from-mlflow", model, "--mlflow-uri", "models:/"+d.good.Name+"/5", "--out", d.good.File); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s: the MLflow signature matches the ONNX graph, the smoke vectors pass in ONNX Runtime, and the manifest names the training run", d.good.File), nil
}

// Step 4.
func (d *demo) stepSign(ctx context.Context) (string, error) {
	if _, err := d.fleetctl(ctx, "bundle", "sign", "--key", "keys/signing.key", d.good.File); err != nil {
		return "", err
	}
	if _, err := d.fleetctl(ctx, "bundle", "verify", "--key", "keys/signing.pub", d.good.File); err != nil {
		return "", err
	}
	return "signed (cosign-compatible detached signature) and verified", nil
}

// Step 5.
func (d *demo) stepFleetd(ctx context.Context) (string, error) {
	httpPort, err := freePort()
	if err != nil {
		return "", err
	}
	mqttPort, err := freePort()
	if err != nil {
		return "", err
	}
	d.httpAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))
	d.mqttAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(mqttPort))
	server := "http://" + d.httpAddr
	d.env = append(d.env, "FLEETCTL_SERVER="+server)
	eventArgs, err := d.startEvents() // events.go
	if err != nil {
		return "", err
	}
	args := []string{"fleetd", "--data-dir", "fleetd-data", "--http-listen", d.httpAddr, "--mqtt-listen", d.mqttAddr,
		"--set", "registry.trustedKeys=keys/signing.pub"}
	args = append(args, eventArgs...)
	args = append(args, samplesArgs()...) // samples.go
	logPath := filepath.Join(d.work, "logs", "fleetd.log")
	d.n.Cmd(append(args, "&"))
	p, err := d.sup.Start("fleetd", d.work, d.childEnv(), logPath, append([]string{filepath.Join(d.cfg.Bin, "fleetd")}, args[1:]...)...)
	if err != nil {
		return "", err
	}
	d.fleetd = p
	if err := waitFor(ctx, 30*time.Second, func() (bool, error) {
		return httpOK(ctx, server+"/api/v1/health"), nil
	}); err != nil {
		return "", fmt.Errorf("fleetd did not answer on %s: %w%s", server, err, tailFile(logPath, 8))
	}
	d.n.Say("fleetd generated an operator token (fleetd-data/operator.token) and an enrolment token (fleetd-data/enrol.token);")
	d.n.Say("fleetctl, run in the workspace, finds both by itself. It finds fleetd through:")
	d.n.Cmd([]string{"export", "FLEETCTL_SERVER=" + server})
	d.n.Say("fleetd stores pushed bundles only when keys/signing.pub verifies them (registry.trustedKeys). Log: logs/fleetd.log")
	d.n.Say("Watch it live in the web console while the demo runs: %s (sign in with the token in fleetd-data/operator.token)", d.consoleURL())
	return fmt.Sprintf("fleetd is up: API %s, MQTT broker tcp://%s, registry in fleetd-data/registry", server, d.mqttAddr), nil
}

// freePort returns a TCP port on loopback that nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port on loopback: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// httpOK reports whether GET url answers 200.
func httpOK(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitFor polls cond every 250 ms until it holds, fails, or timeout
// passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still not after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Step 6.
func (d *demo) stepAgents(ctx context.Context) (string, error) {
	d.n.Say("Each device gets MQTT credentials from fleetd through enrolment, a configuration, a data directory and an")
	d.n.Say("edge-agent process of its own, as on real hardware; the labels are what rollouts select devices by.")
	for i := range d.cfg.Agents {
		plan := fleetPlan[i]
		dev := &device{
			ID:     plan.id,
			Labels: [][2]string{{"region", plan.region}, {"hw", plan.hw}},
			Noisy:  plan.region == noisyRegion,
			Dir:    filepath.Join(d.work, "agents", plan.id),
		}
		dev.Socket = filepath.Join(dev.Dir, "api.sock")
		if d.sockDir != "" {
			dev.Socket = filepath.Join(d.sockDir, plan.id+".sock")
		}
		dev.LogPath = filepath.Join(d.work, "logs", plan.id+".log")
		if err := os.Mkdir(dev.Dir, 0o755); err != nil {
			return "", fmt.Errorf("creating %s: %w", dev.Dir, err)
		}
		args := append([]string{"enroll", dev.ID}, dev.labelArgs()...)
		args = append(args, "-o", "json")
		res, err := d.fleetctlSecret(ctx, args...)
		if err != nil {
			return "", err
		}
		var enr api.Enrolment
		if err := json.Unmarshal(res.Stdout, &enr); err != nil {
			return "", fmt.Errorf("fleetctl enroll %s: decoding its output: %w", dev.ID, err)
		}
		if len(enr.Brokers) == 0 || enr.Password == "" {
			return "", fmt.Errorf("fleetctl enroll %s: no broker or password in the answer", dev.ID)
		}
		if err := atomicfile.WriteFile(filepath.Join(dev.Dir, "mqtt.password"), []byte(enr.Password+"\n"), 0o600); err != nil {
			return "", err
		}
		cfgText := agentConfig(dev, enr.Brokers[0], enr.Username, "../../keys/signing.pub", d.ortLib)
		cfgPath := filepath.Join(dev.Dir, "config.yaml")
		if err := atomicfile.WriteFile(cfgPath, []byte(cfgText), 0o644); err != nil {
			return "", err
		}
		if i == 0 {
			d.n.Say("the password went to %s (shown once; fleetd keeps only its hash); the agent's %s:", d.rel(filepath.Join(dev.Dir, "mqtt.password")), d.rel(cfgPath))
			for l := range lines([]byte(cfgText)) {
				d.n.Out(l)
			}
		}
		d.n.Cmd([]string{"edge-agent", "--config", d.rel(cfgPath), "&"})
		p, err := d.sup.Start("edge-agent "+dev.ID, dev.Dir, d.childEnv(), dev.LogPath, filepath.Join(d.cfg.Bin, "edge-agent"), "--config", cfgPath)
		if err != nil {
			return "", err
		}
		dev.proc, dev.started = p, time.Now()
		d.devices = append(d.devices, dev)
	}
	d.n.Say("(and the same for the others: configurations in agents/<id>/config.yaml, logs in logs/<id>.log)")
	if err := d.waitOnline(ctx); err != nil {
		return "", err
	}
	if _, err := d.fleetctl(ctx, "devices", "list"); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d agents are online; none runs a model yet", len(d.devices)), nil
}

// waitOnline waits until fleetd lists every device online with a
// reported state, and every agent answers on its socket.
func (d *demo) waitOnline(ctx context.Context) error {
	err := waitFor(ctx, 60*time.Second, func() (bool, error) {
		var list api.DeviceList
		if err := d.fleetJSON(ctx, &list, "devices", "list"); err != nil {
			return false, err
		}
		online := 0
		for _, dv := range list.Devices {
			if dv.Status.Online && dv.Reported != nil {
				online++
			}
		}
		d.n.Progress(float64(online)/float64(len(d.devices)), "%d of %d agents connected to fleetd", online, len(d.devices))
		return online == len(d.devices), nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the agents to connect: %w", err)
	}
	for _, dev := range d.devices {
		if !unixOK(ctx, dev.Socket, "/v2/health/live") {
			return fmt.Errorf("%s does not answer on its socket %s%s", dev.ID, dev.Socket, tailFile(dev.LogPath, 8))
		}
	}
	return nil
}

// unixOK reports whether GET path on the unix socket answers 200.
func unixOK(ctx context.Context, socket, path string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent"+path, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// agentConfig is a device's edge-agent configuration (docs/agent.md).
// Relative paths are relative to the file's directory.
func agentConfig(dev *device, broker, username, trustKey, ortLib string) string {
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, "deviceID: %s\n", dev.ID)
	b.WriteString("labels:\n")
	for _, kv := range dev.Labels {
		fmt.Fprintf(&b, "  %s: %s\n", kv[0], kv[1])
	}
	b.WriteString("dataDir: data\n")
	b.WriteString("trust:\n")
	fmt.Fprintf(&b, "  publicKeys: [%s]\n", q(trustKey))
	b.WriteString("api:\n")
	socket := dev.Socket
	if filepath.Dir(socket) == dev.Dir {
		socket = filepath.Base(socket)
	}
	fmt.Fprintf(&b, "  socket: %s\n", q(socket))
	// KServe's gRPC protocol too, on a socket of its own (grpc.go).
	fmt.Fprintf(&b, "  grpcSocket: %s\n", q(grpcSocketOf(socket)))
	b.WriteString("runtime:\n")
	b.WriteString("  executionProviders: [cpu]   # no GPU on this machine\n")
	b.WriteString("  intraOpThreads: 1           # several agents share a few cores\n")
	fmt.Fprintf(&b, "  ortLibrary: %s\n", q(ortLib))
	b.WriteString("uplink:\n")
	fmt.Fprintf(&b, "  broker: %s\n", q(broker))
	fmt.Fprintf(&b, "  username: %s\n", q(username))
	b.WriteString("  passwordFile: mqtt.password\n")
	return b.String()
}

// Step 7.
func (d *demo) stepPush(ctx context.Context) (string, error) {
	if _, err := d.fleetctl(ctx, "bundle", "push", d.good.File); err != nil {
		return "", err
	}
	return fmt.Sprintf("fleetd's registry holds %s, its signature checked against keys/signing.pub", d.good.ID()), nil
}

// Step 8.
func (d *demo) stepFirstRollout(ctx context.Context) (string, error) {
	r, took, err := d.rollOut(ctx, d.good, false, 3*time.Minute)
	if err != nil {
		return "", err
	}
	id := r.ID
	d.first, d.firstTook = &r.Rollout, took
	if r.State != "succeeded" {
		return "", fmt.Errorf("rollout %s ended %s, not succeeded: %s", id, r.State, r.Reason)
	}
	if err := d.waitActive(ctx, d.good, 30*time.Second); err != nil {
		return "", err
	}
	return fmt.Sprintf("rollout %s succeeded in %s: every device runs %s", id, fmtSeconds(d.firstTook), d.good.ID()), nil
}

// rollOut writes b's rollout (rolloutSpec) to rollouts/NAME-VERSION.yaml
// in the workspace and shows it, creates it with fleetctl and follows it
// to its end, for timeout at most; it returns the rollout's final status
// and how long it took from its creation.
func (d *demo) rollOut(ctx context.Context, b bundleInfo, upgrade bool, timeout time.Duration) (*api.RolloutStatus, time.Duration, error) {
	spec := d.rolloutSpec(b, upgrade)
	path := filepath.Join("rollouts", b.Name+"-"+b.Version+".yaml")
	if err := atomicfile.WriteFile(filepath.Join(d.work, path), []byte(spec), 0o644); err != nil {
		return nil, 0, err
	}
	d.n.Say("%s:", path)
	for l := range lines([]byte(spec)) {
		d.n.Out(l)
	}
	start := time.Now()
	id, err := d.createRollout(ctx, path, b)
	if err != nil {
		return nil, 0, err
	}
	r, err := d.watchRollout(ctx, id, timeout)
	if err != nil {
		return nil, 0, err
	}
	return r, time.Since(start), nil
}

// rolloutSpec is the rollout of b: waves of one device, half the fleet
// and everyone. The first rollout can only gate on installs (devices ran
// nothing before, so there is no latency to compare with, and their
// first metrics come a minute later); the upgrade adds the error-rate
// and latency gates.
func (d *demo) rolloutSpec(b bundleInfo, upgrade bool) string {
	bake := d.cfg.Bake.String()
	var s strings.Builder
	fmt.Fprintf(&s, "name: %s to every device\n", b.ID())
	s.WriteString("target: \"\"                    # every device; e.g. \"region=eu,hw=pi5\" for some\n")
	fmt.Fprintf(&s, "bundle: %s\n", b.ID())
	s.WriteString("waves:\n")
	fmt.Fprintf(&s, "  - {name: canary, count: 1, bake: %s}\n", bake)
	fmt.Fprintf(&s, "  - {name: half, percent: 50, bake: %s}\n", bake)
	s.WriteString("  - {name: everyone, percent: 100, bake: 0s}\n")
	if upgrade {
		s.WriteString("waveDeadline: 3m               # how long a wave may wait for evidence\n")
		s.WriteString("gates:\n")
		s.WriteString("  installSuccess: {min: 1}\n")
		s.WriteString("  errorRate: {max: 0.01, minReports: 1}\n")
		s.WriteString("  latencyP95: {maxRatio: 1.5, minReports: 1, baseline: 10m}   # p95 on the new version / on the previous one, same device\n")
		s.WriteString("rollback: {auto: true}         # a breach rolls every device of the rollout back\n")
	} else {
		s.WriteString("waveDeadline: 2m\n")
		s.WriteString("gates:\n")
		s.WriteString("  installSuccess: {min: 1, minReports: \"100%\"}   # every device installs, or the rollout stops\n")
	}
	return s.String()
}

// createRollout creates the rollout in specPath and returns its id.
func (d *demo) createRollout(ctx context.Context, specPath string, b bundleInfo) (string, error) {
	before := time.Now().Add(-time.Second)
	if _, err := d.fleetctl(ctx, "rollout", "create", "-f", specPath); err != nil {
		return "", err
	}
	var list api.RolloutList
	if err := d.fleetJSON(ctx, &list, "rollout", "list"); err != nil {
		return "", err
	}
	for _, r := range list.Rollouts {
		if r.Bundle.ID() == b.ID() && r.Created.After(before) {
			return r.ID, nil
		}
	}
	return "", fmt.Errorf("the rollout of %s is not in fleetctl rollout list", b.ID())
}

// waitActive waits until every device reports b active and no install
// in progress.
func (d *demo) waitActive(ctx context.Context, b bundleInfo, timeout time.Duration) error {
	var last string
	err := waitFor(ctx, timeout, func() (bool, error) {
		var list api.DeviceList
		if err := d.fleetJSON(ctx, &list, "devices", "list"); err != nil {
			return false, err
		}
		n, others := 0, []string{}
		for _, dv := range list.Devices {
			if dv.Reported != nil && dv.Reported.Active != nil && dv.Reported.Active.ID() == b.ID() {
				n++
			} else {
				active := "nothing"
				if dv.Reported != nil && dv.Reported.Active != nil {
					active = dv.Reported.Active.ID()
				}
				others = append(others, dv.ID+" runs "+active)
			}
		}
		last = strings.Join(others, ", ")
		d.n.Progress(float64(n)/float64(len(d.devices)), "%d of %d devices report %s active", n, len(d.devices), b.ID())
		return n == len(d.devices) && len(list.Devices) == len(d.devices), nil
	})
	if err != nil {
		return fmt.Errorf("waiting for every device to run %s (%s): %w", b.ID(), last, err)
	}
	return nil
}

// Step 9.
func (d *demo) stepStream(ctx context.Context) (string, error) {
	sctx, cancel := context.WithCancel(ctx)
	d.streamCancel = cancel
	for i, dev := range d.devices {
		dev.stream = newStreamer(dev.ID, dev.Socket, d.good.Name, audioFor(dev, uint64(101+i)))
		d.streamWG.Go(func() {
			if err := dev.stream.run(sctx); err != nil {
				d.log.Error("stream stopped", "device", dev.ID, "err", err)
			}
		})
	}
	d.n.Say("A local application on each device sends one 32 ms frame of 16 kHz PCM per request, in real time, over the")
	d.n.Say("agent's unix socket; the bundle's WASM pre-processor turns it into the model's inputs. One request, with curl:")
	d.n.Cmd([]string{"curl", "--unix-socket", d.rel(d.devices[0].Socket), "-H", "Content-Type: application/octet-stream",
		"--data-binary", "@frame.pcm", "http://localhost/v2/models/" + d.good.Name + "/infer"})
	d.n.Say("Devices in region %s hear a room whose noise floor is 18 dB higher than the one the model was profiled on.", noisyRegion)
	const warmup = 6 * time.Second
	start := time.Now()
	for time.Since(start) < warmup {
		total := 0
		for _, dev := range d.devices {
			total += dev.stream.stats().OK
		}
		d.n.Progress(float64(time.Since(start))/float64(warmup), "%d answers so far", total)
		select {
		case <-ctx.Done():
			return "", context.Cause(ctx)
		case <-time.After(250 * time.Millisecond):
		}
	}
	total := 0
	for _, dev := range d.devices {
		st := dev.stream.stats()
		total += st.OK
		d.n.Out(fmt.Sprintf("%-12s %-18s %4d answers  speech probability, latest: %s  p95 %s",
			dev.ID, dev.audioName(), st.OK, fmtProbs(st.Recent, 6), fmtMs(st.P95[d.good.Version])))
		if st.OK == 0 {
			return "", fmt.Errorf("%s answered none of %d requests (last error: %s)%s", dev.ID, st.Sent, st.LastErr, tailFile(dev.LogPath, 8))
		}
		if st.Failed > 0 {
			d.n.Say("%s: %d request(s) failed, the last: %s", dev.ID, st.Failed, st.LastErr)
		}
	}
	if err := d.checkGRPC(ctx); err != nil {
		return "", err
	}
	if err := d.narrateSamples(ctx); err != nil { // samples.go
		return "", err
	}
	return fmt.Sprintf("%d audio streams keep running in the background (%d answers in the first %s)", len(d.devices), total, fmtSeconds(warmup)), nil
}

func fmtProbs(ps []float64, n int) string {
	if len(ps) > n {
		ps = ps[len(ps)-n:]
	}
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%.2f", p)
	}
	return strings.Join(parts, " ")
}

func fmtMs(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms == 0:
		return "-"
	case ms < 10:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.0f ms", ms)
	}
}

// Step 10.
func (d *demo) stepBadBundle(ctx context.Context) (string, error) {
	d.n.Cmd(append([]string{"GOOS=wasip1", "GOARCH=wasm", "go"}, d.slowPreArgv()[1:]...))
	d.n.Say("(run in the checkout, %s, in the background since step 1)", d.cfg.Repo)
	var res slowBuildResult
	select {
	case res = <-d.slowBuild:
	case <-ctx.Done():
		return "", context.Cause(ctx)
	}
	if res.err != nil {
		return "", fmt.Errorf("building the slow pre-processor: %w", res.err)
	}
	d.n.Say("build/slow-pre.wasm: testbed/cmd/demo/slowpre computes exactly what the real pre-processor does, after wasting")
	d.n.Say("a fixed amount of CPU on every frame (compiled in %s).", fmtSeconds(res.took))
	specDir := filepath.Join("specs", d.bad.Name+"-"+d.bad.Version)
	if err := writeBadSpec(d.specDir(), filepath.Join(d.work, specDir), d.bad.Version, d.slowPre); err != nil {
		return "", err
	}
	d.n.Say("%s/bundle.yaml is the %s spec with version %s and that pre-processor.", specDir, d.good.Version, d.bad.Version)
	if _, err := d.fleetctl(ctx, "bundle", "build", specDir, "--out", d.bad.File); err != nil {
		return "", err
	}
	if _, err := d.fleetctl(ctx, "bundle", "sign", "--key", "keys/signing.key", d.bad.File); err != nil {
		return "", err
	}
	if _, err := d.fleetctl(ctx, "bundle", "push", d.bad.File); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s is signed and pushed: it passes its smoke vectors and answers correctly, only slowly", d.bad.ID()), nil
}

// writeBadSpec writes dir/bundle.yaml: the spec in goodDir with version
// and pre-processor replaced, and every path made absolute.
func writeBadSpec(goodDir, dir, version, pre string) error {
	return writeSpec(goodDir, dir, "# The demo's deliberately bad version (testbed/cmd/demo): the spec of\n# "+goodDir+
		"\n# with another version and a pre-processor that wastes CPU on every call.\n", func(s *bundle.Spec) {
		s.Version, s.Pre = version, pre
	})
}

// writeMLflowSpec writes dir/bundle.yaml: the spec in goodDir without its
// model, inputs and outputs, which fleetctl bundle build --from-mlflow
// takes from the MLflow model instead; every path made absolute.
func writeMLflowSpec(goodDir, dir string) error {
	return writeSpec(goodDir, dir, "# The demo's spec for a build from an MLflow model (testbed/cmd/demo): the\n# spec of "+goodDir+
		"\n# without model, inputs and outputs, which come from the MLflow model.\n", func(s *bundle.Spec) {
		s.Model, s.Inputs, s.Outputs = "", nil, nil
		s.Sampling = demoSampling() // samples.go
	})
}

// writeSpec writes dir/bundle.yaml: the spec in goodDir with every path
// made absolute and then changed by edit, after the comment head.
func writeSpec(goodDir, dir, head string, edit func(*bundle.Spec)) error {
	spec, err := bundle.LoadSpec(goodDir)
	if err != nil {
		return fmt.Errorf("reading the good bundle's spec: %w", err)
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(spec.Dir(), p)
	}
	out := *spec
	out.Model, out.Pre, out.Post, out.Profile = abs(spec.Model), abs(spec.Pre), abs(spec.Post), abs(spec.Profile)
	out.Extra = nil
	for _, e := range spec.Extra {
		out.Extra = append(out.Extra, abs(e))
	}
	out.Smoke = append([]bundle.SmokeSpec(nil), spec.Smoke...)
	for i := range out.Smoke {
		s := &out.Smoke[i]
		s.InputsFile, s.RawFile, s.ExpectedFile = abs(s.InputsFile), abs(s.RawFile), abs(s.ExpectedFile)
	}
	edit(&out)
	js, err := json.Marshal(&out)
	if err != nil {
		return fmt.Errorf("encoding the spec of %s: %w", dir, err)
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		return fmt.Errorf("encoding the spec of %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	return atomicfile.WriteFile(filepath.Join(dir, bundle.SpecName), append([]byte(head), y...), 0o644)
}
