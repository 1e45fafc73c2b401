package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/mlflow"
	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// mlflowDir lays out an MLflow model directory as mlflow.onnx.log_model
// writes it, the Silero model as its data file; edit changes the MLmodel
// file's text first.
func mlflowDir(t *testing.T, edit func(string) string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.Root(t), "shared", "mlflow", "testdata", "silero", mlflow.MLmodelFile))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if edit != nil {
		text = edit(text)
	}
	dir := filepath.Join(t.TempDir(), "model")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, mlflow.MLmodelFile), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(testenv.SileroModel(t), filepath.Join(dir, "model.onnx")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// sileroSmokeSpec is a bundle.yaml for the MLflow model: name, version and
// a smoke vector (the two-sine frame as tensors), no model.
func sileroSmokeSpec(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	inputs := filepath.Join(testenv.Root(t), "testbed", "bundles", "silero-vad", "smoke", "two-sine.inputs.json")
	spec := fmt.Sprintf(`name: vad
version: 3.0.0
%ssmoke:
  - name: two-sine-tensors
    inputsFile: %q
    expected: [{name: output, datatype: FP32, shape: [1, 1], data: [[%v]]}]
    tolerance: {abs: 1e-4}
`, extra, inputs, testbundle.SileroOutput)
	if err := os.WriteFile(filepath.Join(dir, bundle.SpecName), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestBundleBuildFromMLflow builds bundles of a real MLflow-format model
// directory (the Silero model), with the real model check, and reads the
// lineage back.
func TestBundleBuildFromMLflow(t *testing.T) {
	t.Setenv(onnx.EnvLibraryPath, testenv.ORTLibrary(t))
	const run = "3f2a9d1c5b7e4f0a8e6d2c1b0a9f8e7d"
	model := mlflowDir(t, nil)

	// No spec: the model alone, named on the command line.
	out := filepath.Join(t.TempDir(), "vad.bundle")
	r := fleetctl(t, nil, "bundle", "build", "--from-mlflow", model, "--name", "vad", "--version", "2.0.0", "--out", out)
	wantOK(t, r, "build --from-mlflow")
	if !strings.Contains(r.stdout, "vad@2.0.0") || !strings.Contains(r.stdout, "lineage: mlflow, run "+run) {
		t.Errorf("build output %q", r.stdout)
	}
	r = fleetctl(t, nil, "bundle", "inspect", out)
	wantOK(t, r, "inspect")
	for _, want := range []string{"lineage", "run " + run, "uri runs:/" + run + "/model", "version 2.14.1", "created 2024-06-20T09:41:27Z", `input FP32 [-1 512]`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, r.stdout)
		}
	}

	// With a spec (smoke vector run through ONNX Runtime) and the registry
	// URI the model was taken from.
	out = filepath.Join(t.TempDir(), "vad3.bundle")
	r = fleetctl(t, nil, "bundle", "build", sileroSmokeSpec(t, ""), "--from-mlflow", model, "--mlflow-uri", "models:/vad/3", "--out", out, "-o", "json")
	wantOK(t, r, "build SPEC --from-mlflow")
	var res buildResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if res.ID != "vad@3.0.0" || !res.Checked || res.Lineage == nil || res.Lineage.URI != "models:/vad/3" || res.Lineage.RunID != run || res.Lineage.ModelUUID != "8c8e0a3ac0a2454f9c2b7f4a2d6b8e31" {
		t.Errorf("build result %+v lineage %+v", res, res.Lineage)
	}
	m, err := bundle.ReadManifest(t.Context(), out, bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Lineage == nil || m.Lineage.URI != "models:/vad/3" || len(m.Runtime.Inputs) != 3 || len(m.Smoke) != 1 {
		t.Errorf("manifest %+v lineage %+v", m.Runtime, m.Lineage)
	}
}

// TestBundleBuildFromMLflowRefuses: each bad input fails with a message
// naming it and writes no bundle.
func TestBundleBuildFromMLflowRefuses(t *testing.T) {
	t.Setenv(onnx.EnvLibraryPath, testenv.ORTLibrary(t))
	edit := func(old, new string) func(string) string {
		return func(s string) string {
			if !strings.Contains(s, old) {
				t.Fatalf("the MLmodel fixture has no %q", old)
			}
			return strings.Replace(s, old, new, 1)
		}
	}
	for _, c := range []struct {
		name string
		args func(out string) []string
		code int
		want string
	}{
		{"signature dtype differs from the graph", func(out string) []string {
			return []string{"--from-mlflow", mlflowDir(t, edit(`"dtype": "float32", "shape": [-1, 512]`, `"dtype": "float64", "shape": [-1, 512]`)), "--name", "vad", "--version", "1.0.0"}
		}, ExitError, `does not match its ONNX graph`},
		{"signature names another output", func(out string) []string {
			return []string{"--from-mlflow", mlflowDir(t, edit(`"name": "stateN"`, `"name": "hidden"`)), "--name", "vad", "--version", "1.0.0"}
		}, ExitError, `the model's output "stateN"`},
		{"no onnx flavor", func(out string) []string {
			return []string{"--from-mlflow", mlflowDir(t, edit("  onnx:\n    code: null\n", "  keras:\n    code: null\n")), "--name", "vad", "--version", "1.0.0"}
		}, ExitError, "no onnx flavor"},
		{"malformed signature JSON", func(out string) []string {
			return []string{"--from-mlflow", mlflowDir(t, edit(`inputs: '[{"type"`, `inputs: '[{"type`)), "--name", "vad", "--version", "1.0.0"}
		}, ExitError, "malformed signature JSON"},
		{"missing data file", func(out string) []string {
			dir := mlflowDir(t, nil)
			if err := os.Remove(filepath.Join(dir, "model.onnx")); err != nil {
				t.Fatal(err)
			}
			return []string{"--from-mlflow", dir, "--name", "vad", "--version", "1.0.0"}
		}, ExitError, "data file"},
		{"spec names a model too", func(out string) []string {
			return []string{sileroSmokeSpec(t, "model: other.onnx\n"), "--from-mlflow", mlflowDir(t, nil)}
		}, ExitError, `the spec sets "model"`},
		{"no spec and no name", func(out string) []string {
			return []string{"--from-mlflow", mlflowDir(t, nil), "--version", "1.0.0"}
		}, ExitUsage, "needs --name and --version"},
		{"two spec directories", func(out string) []string {
			return []string{sileroSmokeSpec(t, ""), sileroSmokeSpec(t, ""), "--from-mlflow", mlflowDir(t, nil)}
		}, ExitUsage, "unexpected argument"},
		{"--name without --from-mlflow", func(out string) []string {
			return []string{sileroSmokeSpec(t, "model: m.onnx\n"), "--name", "vad"}
		}, ExitUsage, "go with --from-mlflow"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "vad.bundle")
			r := fleetctl(t, nil, append(append([]string{"bundle", "build"}, c.args(out)...), "--out", out)...)
			wantExit(t, r, c.code, c.name, c.want)
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a bundle was written (%v)", err)
			}
		})
	}
}

// TestMLflowLineageThroughFleetd: the training run of a bundle built from
// an MLflow model is what fleetctl shows for the registry entry, for the
// device running it (devices show) and for the rollout of it.
func TestMLflowLineageThroughFleetd(t *testing.T) {
	t.Setenv(onnx.EnvLibraryPath, testenv.ORTLibrary(t))
	const run = "3f2a9d1c5b7e4f0a8e6d2c1b0a9f8e7d"
	f := startFleetd(t)
	file := filepath.Join(f.dir, "vad-2.0.0.bundle")
	wantOK(t, fleetctl(t, nil, "bundle", "build", "--from-mlflow", mlflowDir(t, nil), "--name", "vad", "--version", "2.0.0", "--mlflow-uri", "models:/vad/2", "--out", file), "build --from-mlflow")
	wantOK(t, fleetctl(t, nil, "bundle", "sign", "--key", filepath.Join(f.keys, "signing.key"), file), "bundle sign")
	wantOK(t, f.fc("bundle", "push", file), "bundle push")

	r := f.fc("bundle", "list", "-o", "json")
	wantOK(t, r, "bundle list")
	if !strings.Contains(r.stdout, `"runId":"`+run+`"`) && !strings.Contains(r.stdout, `"runId": "`+run+`"`) {
		t.Errorf("bundle list -o json lacks the run id: %s", r.stdout)
	}

	// A device that reports running it.
	e := f.fc("enroll", "cam-1", "--label", "ring=canary", "--server", f.srv.URL(), "--enrol-token-file", filepath.Join(f.data, enrolTokenRel), "-o", "json")
	wantOK(t, e, "enroll")
	var cred struct{ Password string }
	if err := json.Unmarshal([]byte(e.stdout), &cred); err != nil || cred.Password == "" {
		t.Fatalf("enroll -o json: %q, %v", e.stdout, err)
	}
	reportActive(t, f.srv.MQTTAddr(), "cam-1", cred.Password, protocol.BundleID{Name: "vad", Version: "2.0.0"})
	testenv.Eventually(t, "devices show to name the model's run", func() bool {
		r := f.fc("devices", "show", "cam-1")
		return r.code == 0 && strings.Contains(r.stdout, "model lineage") && strings.Contains(r.stdout, "run "+run) && strings.Contains(r.stdout, "uri models:/vad/2")
	})

	// The rollout record keeps the lineage of what it rolls out.
	spec := filepath.Join(f.dir, "rollout.yaml")
	if err := os.WriteFile(spec, []byte("target: ring=canary\nbundle: vad@2.0.0\nwaves: [{percent: 100, bake: 1h}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	created := f.fc("rollout", "create", "-f", spec)
	wantOK(t, created, "rollout create")
	id := strings.TrimSuffix(strings.Fields(created.stdout)[1], ":")
	st := f.fc("rollout", "status", id)
	wantOK(t, st, "rollout status")
	if !strings.Contains(st.stdout, "model lineage") || !strings.Contains(st.stdout, "run "+run) {
		t.Errorf("rollout status lacks the lineage:\n%s", st.stdout)
	}
}

// reportActive connects as device id and publishes a reported state with
// active as its running bundle.
func reportActive(t *testing.T, addr, id, password string, active protocol.BundleID) {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(id).SetPassword(password).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(10) })
	b, err := protocol.Encode(&protocol.ReportedState{V: 1, DeviceID: id, Time: time.Now().UTC(), AgentVersion: "0.1.0", Active: &active, Provider: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	topic, _ := protocol.Topic(id, protocol.KindReported)
	if tok := c.Publish(topic, 1, protocol.KindReported.Retained(), b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}
