package cross_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/cross/deb"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

var (
	distDir  = flag.String("cross.dist", "", "test the packages in this directory (make cross) instead of building them")
	fleetctl = flag.String("cross.fleetctl", "", "fleetctl binary for the bundle (default: built from source)")
	repeat   = flag.Int("cross.repeat", 1, "one-shot predictions per architecture, for the latency figures")
)

// tolerance is how far the two architectures' answers may differ.
const tolerance = 1e-4

// sileroOutput is the Silero VAD v5 speech probability for the two-sine
// smoke frame (testbed/bundles/silero-vad/bundle.yaml).
const sileroOutput = 0.0690874

// target is how this machine builds and runs one architecture.
type target struct {
	arch    string
	cc      string // C cross compiler for cgo
	qemu    string // user-mode emulator, when the machine is another architecture
	sysroot string // the architecture's libc for the emulator (-L)
}

var targets = []target{
	{arch: "amd64", cc: "x86_64-linux-gnu-gcc", qemu: "qemu-x86_64-static", sysroot: "/usr/x86_64-linux-gnu"},
	{arch: "arm64", cc: "aarch64-linux-gnu-gcc", qemu: "qemu-aarch64-static", sysroot: "/usr/aarch64-linux-gnu"},
}

// installed is one architecture's package, unpacked.
type installed struct {
	target
	deb     string
	root    string // the package's files
	version string // the package's Version field
	config  string // the packaged config, pointed at root and a scratch data dir
}

// command runs the unpacked agent: natively, or under qemu-user.
func (in *installed) command(args ...string) *exec.Cmd {
	bin := filepath.Join(in.root, "usr", "bin", "edge-agent")
	if in.arch == runtime.GOARCH {
		return exec.Command(bin, args...)
	}
	return exec.Command(in.qemu, append([]string{"-L", in.sysroot, bin}, args...)...)
}

// TestCrossPredict builds (or takes, with -cross.dist) the amd64 and arm64
// Debian packages, unpacks them, and runs each architecture's agent on the
// same signed Silero VAD bundle: the agent of the other architecture under
// qemu-user, with the ONNX Runtime library and configuration from its own
// package. Both answers, for a tensor request and for raw PCM through the
// WASM pre-processor, must agree within 1e-4.
func TestCrossPredict(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Fatalf("cross builds need linux, not %s", runtime.GOOS)
	}
	root := testenv.Root(t)
	work := t.TempDir()
	var pkgs []*installed
	for _, tg := range targets {
		pkgs = append(pkgs, unpack(t, tg, packageFor(t, root, work, tg), work))
	}

	// The same version is stamped into both binaries and their packages.
	for _, p := range pkgs {
		out := run(t, p.command("version"), nil)
		f := strings.Fields(string(out))
		if len(f) != 4 || f[0] != "edge-agent" || f[3] != "linux/"+p.arch+")" {
			t.Fatalf("%s: edge-agent version printed %q", p.arch, out)
		}
		v, err := deb.DebianVersion(f[1])
		if err != nil || v != p.version {
			t.Errorf("%s: binary version %s (Debian %q, %v), package version %s", p.arch, f[1], v, err, p.version)
		}
		t.Logf("%s: %s, package %s", p.arch, strings.TrimSpace(string(out)), filepath.Base(p.deb))
	}

	bundle, key := signedBundle(t, root, work)
	request := filepath.Join(work, "request.json")
	inputs, err := os.ReadFile(filepath.Join(root, "testbed", "bundles", "silero-vad", "smoke", "two-sine.inputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(request, append(append([]byte(`{"inputs":`), inputs...), '}'), 0o644); err != nil {
		t.Fatal(err)
	}
	pcm := filepath.Join(root, "testbed", "bundles", "silero-vad", "smoke", "two-sine.pcm")

	// Latency of the whole one-shot command (start, verify and unpack the
	// bundle, load the model, one inference, exit), per architecture: the
	// tensor requests below, then more of them up to -cross.repeat.
	times := map[string][]time.Duration{}
	predict := func(p *installed, flag, file string, stdout io.Writer) []byte {
		cmd := p.command("predict", "--config", p.config, "--bundle", bundle, "--key", key, flag, file)
		cmd.Env = append(os.Environ(), "TMPDIR="+work)
		start := time.Now()
		out := run(t, cmd, stdout)
		if flag == "--request" {
			times[p.arch] = append(times[p.arch], time.Since(start))
		}
		return out
	}
	for _, req := range []struct{ name, flag, file string }{
		{"tensors", "--request", request},
		{"raw-pcm", "--raw", pcm},
	} {
		answers := map[string]*response{}
		for _, p := range pkgs {
			r := decode(t, p.arch+" "+req.name, predict(p, req.flag, req.file, nil))
			if got := scalar(t, r, "output"); math.Abs(got-sileroOutput) > tolerance {
				t.Errorf("%s %s: output %v, want %v ± %g", p.arch, req.name, got, sileroOutput, tolerance)
			}
			answers[p.arch] = r
		}
		if err := agree(answers["amd64"], answers["arm64"]); err != nil {
			t.Errorf("%s: amd64 and arm64 disagree: %v", req.name, err)
		} else {
			t.Logf("%s: amd64 and arm64 agree within %g (output %v and %v)", req.name, tolerance,
				scalar(t, answers["amd64"], "output"), scalar(t, answers["arm64"], "output"))
		}
	}

	for range *repeat - 1 {
		for _, p := range pkgs {
			predict(p, "--request", request, io.Discard)
		}
	}
	for _, p := range pkgs {
		how := "native"
		if p.arch != runtime.GOARCH {
			how = "under " + p.qemu
		}
		t.Logf("one-shot predict, %s %s: %s", p.arch, how, summary(times[p.arch]))
	}
}

// packageFor returns the package to test for tg: from -cross.dist, or
// built here from source.
func packageFor(t *testing.T, root, work string, tg target) string {
	t.Helper()
	if *distDir != "" {
		m, _ := filepath.Glob(filepath.Join(*distDir, "edge-agent_*_"+tg.arch+".deb"))
		if len(m) != 1 {
			t.Fatalf("-cross.dist %s: want one edge-agent_*_%s.deb, found %q (run make cross)", *distDir, tg.arch, m)
		}
		return m[0]
	}
	if _, err := exec.LookPath(tg.cc); err != nil {
		t.Fatalf("%s not found: apt-get install gcc-%s (%v)", tg.cc, strings.TrimSuffix(tg.cc, "-gcc"), err)
	}
	const version = "0.1.0+cross.test"
	bin := filepath.Join(work, "build-"+tg.arch, "edge-agent")
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-X github.com/edgefleet/edgefleet/shared/version.Version="+version,
		"-o", bin, "./agent/cmd/edge-agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOOS=linux", "GOARCH="+tg.arch, "CC="+tg.cc)
	run(t, cmd, nil)
	path, err := deb.Build(slog.New(slog.NewTextHandler(io.Discard, nil)), deb.Package{
		Arch:       tg.arch,
		Version:    version,
		Binary:     bin,
		ORTLibrary: filepath.Join(testenv.CacheDir(t), "onnxruntime", "linux-"+tg.arch, "libonnxruntime.so.1"),
		Unit:       filepath.Join(root, "firmware", "edge-agent.service"),
		Config:     filepath.Join(root, "firmware", "edge-agent.yaml"),
	}, filepath.Join(work, "dist"))
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// unpack extracts the package and writes a configuration for running it
// from there: the packaged one, with the ONNX Runtime library of the
// package (the device path /usr/lib/edge-agent is not this machine's) and
// a scratch data directory.
func unpack(t *testing.T, tg target, debPath, work string) *installed {
	t.Helper()
	if tg.arch != runtime.GOARCH {
		if _, err := exec.LookPath(tg.qemu); err != nil {
			t.Fatalf("%s not found: apt-get install qemu-user-static (%v)", tg.qemu, err)
		}
		if _, err := os.Stat(tg.sysroot); err != nil {
			t.Fatalf("the %s libc for qemu is missing: apt-get install gcc-%s (%v)", tg.arch, strings.TrimSuffix(tg.cc, "-gcc"), err)
		}
	}
	in := &installed{target: tg, deb: debPath, root: filepath.Join(work, "root-"+tg.arch)}
	run(t, exec.Command("dpkg-deb", "--extract", debPath, in.root), nil)
	in.version = strings.TrimSpace(string(run(t, exec.Command("dpkg-deb", "--field", debPath, "Version"), nil)))

	b, err := os.ReadFile(filepath.Join(in.root, strings.TrimPrefix(deb.ConfigPath, "/")))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("the packaged %s: %v", deb.ConfigPath, err)
	}
	data := filepath.Join(work, "data-"+tg.arch)
	cfg["dataDir"] = data
	section(cfg, "runtime")["ortLibrary"] = filepath.Join(in.root, strings.TrimPrefix(deb.LibraryPath, "/"))
	section(cfg, "wasm")["cacheDir"] = filepath.Join(data, "cache", "wasm")
	section(cfg, "api")["socket"] = filepath.Join(work, "api-"+tg.arch+".sock")
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	in.config = filepath.Join(work, "config-"+tg.arch+".yaml")
	if err := os.WriteFile(in.config, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return in
}

func section(cfg map[string]any, key string) map[string]any {
	m, ok := cfg[key].(map[string]any)
	if !ok {
		m = map[string]any{}
		cfg[key] = m
	}
	return m
}

// signedBundle builds and signs the Silero VAD bundle with fleetctl, as a
// publisher would.
func signedBundle(t *testing.T, root, work string) (bundle, key string) {
	t.Helper()
	spec := filepath.Join(root, "testbed", "bundles", "silero-vad")
	if _, err := os.Stat(filepath.Join(spec, "pre.wasm")); err != nil {
		t.Fatalf("the Silero pre-processor is not built: run `make wasm` (%v)", err)
	}
	ctl := *fleetctl
	if ctl == "" {
		ctl = testenv.Command(t, "./controlplane/cmd/fleetctl")
	}
	keys := filepath.Join(work, "keys")
	bundle = filepath.Join(work, "silero-vad-5.0.0.bundle")
	fc := func(args ...string) {
		cmd := exec.Command(ctl, args...)
		cmd.Env = append(os.Environ(), "EDGEFLEET_ORT_LIB="+testenv.ORTLibrary(t))
		run(t, cmd, nil)
	}
	fc("keys", "generate", "--out", keys)
	fc("bundle", "build", spec, "--out", bundle)
	fc("bundle", "sign", "--key", filepath.Join(keys, "signing.key"), bundle)
	return bundle, filepath.Join(keys, "signing.pub")
}

// run runs cmd and returns its standard output; stderr is shown on
// failure. With a non-nil stdout, output goes there instead.
func run(t *testing.T, cmd *exec.Cmd, stdout io.Writer) []byte {
	t.Helper()
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), err, out.Bytes(), stderr.Bytes())
	}
	return out.Bytes()
}

// response is an Open Inference Protocol inference response.
type response = api.Response

func decode(t *testing.T, what string, b []byte) *response {
	t.Helper()
	var r response
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: decoding the response: %v\n%s", what, err, b)
	}
	if len(r.Outputs) == 0 {
		t.Fatalf("%s: no outputs in %s", what, b)
	}
	return &r
}

func scalar(t *testing.T, r *response, name string) float64 {
	t.Helper()
	v, ok := r.Output(name)
	if !ok {
		t.Fatalf("no output %q", name)
	}
	return v
}

// agree compares two responses output by output: the same names,
// datatypes and shapes, every element within tolerance.
func agree(a, b *response) error {
	if len(a.Outputs) != len(b.Outputs) {
		return fmt.Errorf("%d outputs against %d", len(a.Outputs), len(b.Outputs))
	}
	for i, x := range a.Outputs {
		y := b.Outputs[i]
		if x.Name != y.Name || x.Datatype != y.Datatype || !slices.Equal(x.Shape, y.Shape) || len(x.Data) != len(y.Data) {
			return fmt.Errorf("output %d: %s %s %v (%d values) against %s %s %v (%d values)",
				i, x.Name, x.Datatype, x.Shape, len(x.Data), y.Name, y.Datatype, y.Shape, len(y.Data))
		}
		for j := range x.Data {
			if d := math.Abs(x.Data[j] - y.Data[j]); !(d <= tolerance) {
				return fmt.Errorf("%s[%d]: %v against %v (difference %g)", x.Name, j, x.Data[j], y.Data[j], d)
			}
		}
	}
	return nil
}

// summary is "n runs: min, median, max".
func summary(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	r := func(x time.Duration) string { return x.Round(time.Millisecond).String() }
	return fmt.Sprintf("%d run(s): min %s, median %s, max %s", len(s), r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]))
}
