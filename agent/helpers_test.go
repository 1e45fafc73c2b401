package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// sileroOutput is Silero VAD v5's output for the two-sine frame with a
// zero state (shared/DESIGN.md §10).
const sileroOutput = testbundle.SileroOutput

// fixture holds what every test of the package shares: one publisher key
// pair and the bundles built with it (building and checking a Silero
// bundle takes a while).
var fixture struct {
	once    sync.Once
	dir     string
	pub     *testbundle.Publisher
	err     error
	mu      sync.Mutex
	bundles map[string]built
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.dir != "" {
		os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

// keys is the publisher's key pair.
type keys struct {
	dir, priv, pub string
}

func testKeys(t testing.TB) keys {
	t.Helper()
	fixture.once.Do(func() {
		fixture.dir, fixture.err = os.MkdirTemp("", "agent-test-")
		if fixture.err == nil {
			fixture.pub, fixture.err = testbundle.NewPublisher(filepath.Join(fixture.dir, "keys"))
		}
		fixture.bundles = map[string]built{}
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	return keys{dir: filepath.Dir(fixture.pub.PrivateKey), priv: fixture.pub.PrivateKey, pub: fixture.pub.PublicKey}
}

// built is a signed bundle on disk.
type built struct {
	path, sig string
	m         *bundle.Manifest
}

// spec says how to build a test Silero bundle.
type spec struct {
	version string
	// want is the output the smoke vectors expect; 0 means the real one.
	// A wrong value makes a bundle whose smoke test fails on the device
	// (built without model.Check, as a broken pipeline would).
	want float64
	// minAgent is the bundle's minAgentVersion.
	minAgent string
	// sampling is the bundle's sampling policy (testbundle.Silero.Sampling).
	sampling string
}

// sileroBundle builds (once per process) and signs a Silero VAD bundle
// with the WASM pre-processor and both smoke vectors of
// testbed/bundles/silero-vad, checked with model.Check.
func sileroBundle(t testing.TB, s spec) built {
	t.Helper()
	b := testbundle.SileroFiles(t)
	b.Version, b.MinAgentVersion, b.SmokeOutput, b.Sampling = s.version, s.minAgent, s.want, s.sampling
	if s.want == 0 {
		b.Check = modelCheck(t)
	}
	return fixtureBundle(t, fmt.Sprintf("%s/%g/%s/%s", s.version, s.want, s.minAgent, s.sampling), b)
}

// modelCheck is the build-time check fleetctl runs: model.Check with the
// real ONNX Runtime.
func modelCheck(t testing.TB) func(context.Context, string, *bundle.Manifest) error {
	lib := testenv.ORTLibrary(t)
	return func(ctx context.Context, dir string, m *bundle.Manifest) error {
		return model.Check(ctx, dir, m, model.Options{ORTLibrary: lib})
	}
}

// fixtureBundle builds s (once per process: key names it) with the
// package's publisher (testKeys) under the fixture's directory.
func fixtureBundle(t testing.TB, key string, s testbundle.Silero) built {
	t.Helper()
	testKeys(t)
	fixture.mu.Lock()
	defer fixture.mu.Unlock()
	if b, ok := fixture.bundles[key]; ok {
		return b
	}
	dir, err := os.MkdirTemp(fixture.dir, "spec-")
	if err != nil {
		t.Fatal(err)
	}
	tb, err := fixture.pub.BuildSilero(context.Background(), dir, s)
	if err != nil {
		t.Fatal(err)
	}
	b := built{path: tb.Path, sig: tb.Sig, m: tb.Manifest}
	fixture.bundles[key] = b
	return b
}

// tampered copies b with one byte of its body changed and the original
// signature beside it.
func tampered(t testing.TB, b built) built {
	t.Helper()
	data, err := os.ReadFile(b.path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	dir := t.TempDir()
	out := filepath.Join(dir, filepath.Base(b.path))
	if err := os.WriteFile(out, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sig, err := os.ReadFile(b.sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out+".sig", sig, 0o644); err != nil {
		t.Fatal(err)
	}
	return built{path: out, sig: out + ".sig", m: b.m}
}

// shortDir is a temporary directory with a path short enough for unix
// sockets (t.TempDir's can exceed 107 bytes).
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ea")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// testSetup is one agent's files: its configuration, data directory and
// socket.
type testSetup struct {
	dir, cfgPath, dataDir, socket string
}

// setupOptions vary a test agent's configuration.
type setupOptions struct {
	// rate is buffer.predictionSampleRate.
	rate float64
	// api is YAML added to the api section (indented two spaces), extra
	// YAML appended to the file.
	api, extra string
}

// newSetup writes a configuration for an agent under fresh directories,
// sampling every prediction. extra is YAML appended to it.
func newSetup(t testing.TB, extra string) testSetup {
	t.Helper()
	return newSetupWith(t, setupOptions{rate: 1, extra: extra})
}

// newSetupRate is newSetup with another prediction sample rate.
func newSetupRate(t testing.TB, rate float64, extra string) testSetup {
	t.Helper()
	return newSetupWith(t, setupOptions{rate: rate, extra: extra})
}

func newSetupWith(t testing.TB, o setupOptions) testSetup {
	t.Helper()
	k := testKeys(t)
	run := shortDir(t)
	s := testSetup{dir: t.TempDir(), socket: filepath.Join(run, "api.sock")}
	s.dataDir = filepath.Join(s.dir, "data")
	s.cfgPath = filepath.Join(s.dir, "config.yaml")
	y := fmt.Sprintf(`deviceID: test-device
labels: {site: lab}
dataDir: %s
logLevel: debug
trust:
  publicKeys: [%s]
api:
  socket: %s
%s
buffer:
  predictionSampleRate: %g
runtime:
  ortLibrary: %s
%s`, s.dataDir, k.pub, s.socket, o.api, o.rate, testenv.ORTLibrary(t), o.extra)
	if err := os.WriteFile(s.cfgPath, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s testSetup) config(t testing.TB) *config.Config {
	t.Helper()
	c, err := config.Load(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testLogger logs to the test's log.
func testLogger(t testing.TB) *slog.Logger { return testenv.Logger(t) }

// running is an agent run in process.
type running struct {
	*Agent
	client   *Client
	errc     chan error
	stopOnce sync.Once
}

// startAgent runs an agent for s until the test ends and waits until it
// is ready.
func startAgent(t testing.TB, s testSetup, opts ...Option) *running {
	t.Helper()
	a, err := New(s.config(t), testLogger(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	r := &running{Agent: a, client: NewClient(s.socket), errc: make(chan error, 1)}
	go func() { r.errc <- a.Run(context.Background()) }()
	t.Cleanup(func() { r.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for !a.ready.Load() {
		select {
		case err := <-r.errc:
			r.errc <- err
			t.Fatalf("agent stopped while starting: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("agent not ready after 30s")
		}
	}
	return r
}

// stop shuts the agent down and checks that Run returned nil.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.stopOnce.Do(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-r.errc; err != nil {
			t.Errorf("Run: %v", err)
		}
		r.client.Close()
	})
}

// inference is an Open Inference Protocol response as the tests read it.
type inference struct{ api.Response }

func (r inference) output(t testing.TB) float64 {
	t.Helper()
	v, ok := r.Output("output")
	if !ok {
		t.Fatalf("no output in %+v", r)
	}
	return v
}

// tensorRequest is an inference request with the two-sine frame as
// tensors, with id.
func tensorRequest(t testing.TB, id string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.Root(t), "testbed", "bundles", "silero-vad", "smoke", "two-sine.inputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	idField := ""
	if id != "" {
		idField = fmt.Sprintf(`"id": %q, `, id)
	}
	return []byte(`{` + idField + `"inputs": ` + string(b) + `}`)
}

// pcmFrame is the two-sine frame as 16-bit PCM, for the pre-processor.
func pcmFrame(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.Root(t), "testbed", "bundles", "silero-vad", "smoke", "two-sine.pcm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// infer posts body to the silero-vad model over c and decodes a 200
// answer; other answers fail the test.
func infer(t testing.TB, c *Client, body []byte, raw bool) inference {
	t.Helper()
	code, b, err := post(c, body, raw)
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusOK {
		t.Fatalf("infer: %d %s", code, b)
	}
	var r inference
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("infer: %v: %s", err, b)
	}
	return r
}

func post(c *Client, body []byte, raw bool) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, "http://edge-agent/v2/models/silero-vad/infer", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if raw {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func get(t testing.TB, c *Client, path string) (int, []byte) {
	t.Helper()
	resp, err := c.HTTP.Get("http://edge-agent" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func near(got, want float64) bool { return math.Abs(got-want) <= 1e-4 }

// records reads every record of the outbox in dataDir (the agent must be
// stopped).
func records(t testing.TB, dataDir string) ([]outbox.Record, outbox.Stats) {
	t.Helper()
	ob, err := outbox.Open(filepath.Join(dataDir, OutboxFile), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	recs, err := ob.Peek(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	return recs, ob.Stats()
}

// byKind splits records by kind; events are split by type.
func byKind(t testing.TB, recs []outbox.Record) map[string][]json.RawMessage {
	t.Helper()
	out := map[string][]json.RawMessage{}
	for _, r := range recs {
		k := r.Kind
		if k == "event" {
			var e struct {
				Type string `json:"type"`
			}
			if err := json.Unmarshal(r.Payload, &e); err != nil {
				t.Fatalf("event record %d: %v", r.ID, err)
			}
			k = "event:" + e.Type
		}
		out[k] = append(out[k], r.Payload)
	}
	return out
}
