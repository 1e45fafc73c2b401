package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// TestFileFlags: files are --out, never -o; -o is the output format on
// the commands that write files too, and -o FILE says what to use.
func TestFileFlags(t *testing.T) {
	dir := t.TempDir()
	spec := demoSpec(t)
	file := filepath.Join(dir, "x.bundle")
	r := fleetctl(t, okCheck, "bundle", "build", spec, "--out", file, "-o", "json")
	wantOK(t, r, "bundle build --out -o json")
	var b buildResult
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || b.File != file || b.ID != "demo@0.3.0" || b.Size == 0 || len(b.SHA256) != 64 || !b.Checked {
		t.Errorf("bundle build -o json: %+v %v\n%s", b, err, r.stdout)
	}
	if r = fleetctl(t, okCheck, "bundle", "build", spec, "--out", file, "-o", "name"); r.stdout != "demo@0.3.0\n" {
		t.Errorf("bundle build -o name: %q", r.stdout)
	}
	wantExit(t, fleetctl(t, okCheck, "bundle", "build", spec, "-o", file), ExitUsage, "bundle build -o FILE",
		fmt.Sprintf("unknown output format %q (want one of table, wide, json, yaml, name); -o is the output format: give the file to write with --out %s", file, file))
	wantExit(t, fleetctl(t, okCheck, "keys", "generate", "-o", filepath.Join(dir, "k")), ExitUsage, "keys generate -o DIR", "give the file to write with --out")

	// Every flag that names a file is long (--out, --sig, --key, ...) or
	// -f/--file; -o is --output wherever it exists.
	root := newRoot(&app{})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if f := c.Flags().ShorthandLookup("o"); f != nil && f.Name != "output" {
			t.Errorf("%s: -o is --%s, want --output", c.CommandPath(), f.Name)
		}
		if f := c.Flags().ShorthandLookup("f"); f != nil && f.Name != "file" {
			t.Errorf("%s: -f is --%s, want --file", c.CommandPath(), f.Name)
		}
		if f := c.Flags().Lookup("out"); f != nil && f.Shorthand != "" {
			t.Errorf("%s: --out has shorthand -%s", c.CommandPath(), f.Shorthand)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// publish connects as a device and delivers recs.
func publish(t *testing.T, addr, id, password string, recs []protocol.Record) {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(id).SetPassword(password).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	defer c.Disconnect(10)
	b, err := protocol.Encode(&protocol.TelemetryBatch{V: 1, DeviceID: id, Epoch: "e", Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	topic, _ := protocol.Topic(id, protocol.KindTelemetry)
	// fleetd stores the batch before it acknowledges it: once the
	// publish completes, the records are there.
	if tok := c.Publish(topic, 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// TestDevicesRecordsOrder: devices records lists newest first, --limit N
// keeps the newest N, --since and --until bound the time.
func TestDevicesRecordsOrder(t *testing.T) {
	f := startFleetd(t)
	data, srv, remote := f.data, f.srv, f.remote
	r := fleetctl(t, nil, "enroll", "cam-1", "--server", srv.URL(), "--enrol-token-file", filepath.Join(data, enrolTokenRel), "-o", "json")
	wantOK(t, r, "enroll")
	var e api.Enrolment
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil {
		t.Fatal(err)
	}
	// Records 1..6, a minute apart, ending 10 minutes ago; odd ones
	// predictions, even ones metrics.
	now := time.Now().UTC().Truncate(time.Second)
	at := func(id int) time.Time { return now.Add(time.Duration(id-6)*time.Minute - 10*time.Minute) }
	var recs []protocol.Record
	for id := 1; id <= 6; id++ {
		kind := protocol.RecordPrediction
		if id%2 == 0 {
			kind = protocol.RecordMetrics
		}
		recs = append(recs, protocol.Record{ID: uint64(id), Kind: kind, Time: at(id), Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, id))})
	}
	publish(t, srv.MQTTAddr(), "cam-1", e.Password, recs)

	ids := func(args ...string) string {
		t.Helper()
		r := fleetctl(t, nil, append(append([]string{"devices", "records", "cam-1", "-o", "json"}, args...), remote...)...)
		wantOK(t, r, "devices records "+strings.Join(args, " "))
		var rs api.Records
		if err := json.Unmarshal([]byte(r.stdout), &rs); err != nil {
			t.Fatalf("devices records -o json: %v\n%s", err, r.stdout)
		}
		var out []string
		for _, rec := range rs.Records {
			out = append(out, fmt.Sprint(rec.ID))
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "6,5,4,3,2,1"},
		{[]string{"--limit", "2"}, "6,5"},
		{[]string{"--kind", "prediction", "--limit", "2"}, "5,3"},
		{[]string{"--until", at(4).Format(time.RFC3339)}, "3,2,1"},
		{[]string{"--until", at(4).Format(time.RFC3339), "--limit", "1"}, "3"},
		{[]string{"--since", at(2).Format(time.RFC3339), "--until", at(4).Format(time.RFC3339)}, "3,2"},
		{[]string{"--since", "12m30s"}, "6,5,4"},                  // at(4) is 12 minutes ago
		{[]string{"--since", "1h", "--until", "12m30s"}, "3,2,1"}, // a duration back from now, as --since
		{[]string{"--until", "1h"}, ""},
	} {
		if got := ids(tc.args...); got != tc.want {
			t.Errorf("devices records %s: ids %s, want %s", strings.Join(tc.args, " "), got, tc.want)
		}
	}
	r = fleetctl(t, nil, append([]string{"devices", "records", "cam-1", "--limit", "3"}, remote...)...)
	wantOK(t, r, "devices records (table)")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 5 || !strings.Contains(lines[0], "showing 3, newest first") || !strings.HasPrefix(lines[1], "TIME") ||
		!strings.Contains(lines[2], `{"n":6}`) || !strings.Contains(lines[4], `{"n":4}`) {
		t.Errorf("devices records --limit 3 printed\n%s", r.stdout)
	}

	fc := newBinary(t)
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--until", "yesterday"}, `--until "yesterday": want an RFC 3339 time`},
		{[]string{"--since", "-5m"}, `--since "-5m"`},
		{[]string{"--since", "5m", "--until", "1h"}, "is not before --until"},
		{[]string{"--limit", "-1"}, "--limit -1"},
	} {
		wantExit(t, fc.run(append(append([]string{"devices", "records", "cam-1"}, tc.args...), remote...)...), ExitUsage, strings.Join(tc.args, " "), tc.msg)
	}
	wantExit(t, fc.run(append([]string{"devices", "records", "cam-1", "--limit", "10001"}, remote...)...), ExitError, "a limit fleetd refuses", "limit")
}

// TestCompletion: fleetctl --help lists completion, and the bash script
// it writes is valid bash.
func TestCompletion(t *testing.T) {
	fc := newBinary(t)
	h := fc.run("--help")
	wantOK(t, h, "--help")
	for _, want := range []string{"completion ", "config "} {
		if !strings.Contains(h.stdout, "\n  "+want) {
			t.Errorf("fleetctl --help does not list %q:\n%s", want, h.stdout)
		}
	}
	bashPath, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed to check the completion script: %v", err)
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		r := fc.run("completion", shell)
		wantOK(t, r, "completion "+shell)
		if !strings.Contains(r.stdout, "fleetctl") || r.stderr != "" {
			t.Errorf("completion %s: stdout %d bytes, stderr %q", shell, len(r.stdout), r.stderr)
		}
		if shell != "bash" {
			continue
		}
		script := filepath.Join(t.TempDir(), "fleetctl.bash")
		if err := os.WriteFile(script, []byte(r.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bashPath, "-n", script).CombinedOutput(); err != nil {
			t.Errorf("bash -n on the completion script: %v\n%s", err, out)
		}
	}
	wantExit(t, fc.run("completion", "tcsh"), ExitUsage, "completion tcsh", `unknown command "tcsh" for "fleetctl completion"`)

	// The completions themselves: commands, and context names.
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("contexts:\n  - {name: prod, server: 'http://127.0.0.1:1'}\n  - {name: lab, server: 'http://127.0.0.1:1'}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fc.env = []string{envConfig + "=" + cfg}
	if r := fc.run("__complete", "config", "use-context", ""); !strings.Contains(r.stdout, "prod\nlab\n") {
		t.Errorf("completing use-context: %q", r.stdout)
	}
	if r := fc.run("__complete", "devices", "list", "--context", ""); !strings.Contains(r.stdout, "prod\nlab\n") {
		t.Errorf("completing --context: %q", r.stdout)
	}
	if r := fc.run("__complete", "bundle", "pu"); !strings.Contains(r.stdout, "pull") || !strings.Contains(r.stdout, "push") {
		t.Errorf("completing bundle pu: %q", r.stdout)
	}
}

// TestPushPull pushes and pulls through the built binary: into a pipe
// (as here) no progress is drawn and stdout holds only the result; the
// pulled files are the pushed ones.
func TestPushPull(t *testing.T) {
	f := startFleetd(t)
	dir, file, remote := f.dir, f.signedDemoBundle(), f.remote
	fc := newBinary(t)

	r := fc.run(append([]string{"bundle", "push", file, "-o", "json"}, remote...)...)
	wantOK(t, r, "bundle push -o json")
	var pushed struct {
		api.Bundle
		Created bool `json:"created"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &pushed); err != nil || !pushed.Created || pushed.ID() != "demo@0.3.0" {
		t.Errorf("push -o json: %+v %v\n%s", pushed, err, r.stdout)
	}
	if r.stderr != "" {
		t.Errorf("push into a pipe wrote on stderr: %q", r.stderr)
	}

	out := filepath.Join(dir, "pulled", "x.bundle")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	r = fc.run(append([]string{"bundle", "pull", "demo@0.3.0", "--out", out, "-o", "json"}, remote...)...)
	wantOK(t, r, "bundle pull -o json")
	var pulled pullResult
	if err := json.Unmarshal([]byte(r.stdout), &pulled); err != nil || pulled.ID() != "demo@0.3.0" || pulled.File != out || pulled.SigFile != out+".sig" || pulled.SHA256 != pushed.SHA256 {
		t.Errorf("pull -o json: %+v %v\n%s", pulled, err, r.stdout)
	}
	if r.stderr != "" {
		t.Errorf("pull into a pipe wrote on stderr: %q", r.stderr)
	}
	if !bytes.Equal(must(os.ReadFile(file)), must(os.ReadFile(out))) {
		t.Errorf("%s differs from %s", out, file)
	}
	// The registry keeps the signature, not the file's whitespace.
	if !bytes.Equal(must(bundle.ReadSignature(file+".sig")), must(bundle.ReadSignature(out+".sig"))) {
		t.Errorf("%s.sig differs from %s.sig", out, file)
	}
	// The default name, in the current directory; the pulled bundle
	// verifies.
	cwd := filepath.Join(dir, "cwd")
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(cwd)
	r = fc.run(append([]string{"bundle", "pull", "demo@0.3.0"}, remote...)...)
	wantOK(t, r, "bundle pull")
	if !strings.HasPrefix(r.stdout, "pulled demo@0.3.0: ") || !strings.Contains(r.stdout, "wrote demo-0.3.0.bundle and demo-0.3.0.bundle.sig") {
		t.Errorf("pull printed %q", r.stdout)
	}
	wantOK(t, fc.run("bundle", "verify", "--key", filepath.Join(dir, "keys", "signing.pub"), "demo-0.3.0.bundle"), "verify the pulled bundle")
	if ents, _ := os.ReadDir(cwd); len(ents) != 2 {
		t.Errorf("pull left %v in the directory, want the bundle and its signature", ents)
	}

	wantExit(t, fc.run(append([]string{"bundle", "pull", "demo@9.9.9"}, remote...)...), ExitNotFound, "pull an unknown version", "HTTP 404")
	wantExit(t, fc.run(append([]string{"bundle", "pull", "demo"}, remote...)...), ExitUsage, "pull without a version", `bundle "demo": want NAME@VERSION`)
	wantExit(t, fc.run(append([]string{"bundle", "pull", "demo@0.3.0", "--out", filepath.Join(dir, "no", "such", "dir", "x.bundle")}, remote...)...), ExitNotFound, "pull into a missing directory", "no such file or directory")
}
