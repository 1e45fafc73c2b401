package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
)

// result is one in-process fleetctl run.
type result struct {
	code           int
	stdout, stderr string
}

// fleetctl runs the CLI in-process with check as the model check (nil:
// the real model.Check).
func fleetctl(t *testing.T, check checkFunc, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb, check)
	return result{code, out.String(), errb.String()}
}

func okCheck(context.Context, string, *bundle.Manifest, *slog.Logger) error { return nil }

const specYAML = `name: demo
version: 0.3.0
model: weights.onnx
inputs: [{name: x, datatype: FP32, shape: [-1, 2]}]
outputs: [{name: "y", datatype: FP32, shape: [-1, 1]}]
executionProviders: [cuda]
smoke:
  - name: ones
    inputs: [{name: x, datatype: FP32, shape: [1, 2], data: [1, 1]}]
    expected: [{name: "y", datatype: FP32, shape: [1, 1], data: [2]}]
    tolerance: {abs: 0.001}
`

// demoSpec writes a small spec directory (the model is not real ONNX).
func demoSpec(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "demo")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bundle.yaml"), []byte(specYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "weights.onnx"), []byte("not onnx"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func wantOK(t *testing.T, r result, what string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, r.code, r.stdout, r.stderr)
	}
}

// wantFail wants an ExitError failure saying msg.
func wantFail(t *testing.T, r result, what, msg string) {
	t.Helper()
	wantExit(t, r, ExitError, what, msg)
}

// wantExit wants a failure with exit code code, saying msg.
func wantExit(t *testing.T, r result, code int, what, msg string) {
	t.Helper()
	if r.code != code || !strings.HasPrefix(r.stderr, "fleetctl: ") || !strings.Contains(r.stderr, msg) {
		t.Fatalf("%s: exit %d, stderr %q; want exit %d with \"fleetctl: ...%s...\"", what, r.code, r.stderr, code, msg)
	}
}

// TestPublisherFlow is keys generate → bundle build → sign → verify →
// inspect, then tampering.
func TestPublisherFlow(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	file := filepath.Join(dir, "demo.bundle")

	r := fleetctl(t, nil, "keys", "generate", "--out", keys)
	wantOK(t, r, "keys generate")
	if !strings.Contains(r.stdout, "signing.key") || !strings.Contains(r.stdout, "signing.pub") {
		t.Errorf("keys generate printed %q", r.stdout)
	}
	key, pub := filepath.Join(keys, "signing.key"), filepath.Join(keys, "signing.pub")

	var checked *bundle.Manifest
	check := func(ctx context.Context, d string, m *bundle.Manifest, _ *slog.Logger) error {
		checked = m
		_, err := os.Stat(filepath.Join(d, m.Runtime.Model))
		return err
	}
	r = fleetctl(t, check, "bundle", "build", demoSpec(t), "--out", file)
	wantOK(t, r, "bundle build")
	if checked == nil || checked.ID() != "demo@0.3.0" {
		t.Fatalf("the check saw %+v", checked)
	}
	if !strings.Contains(r.stdout, "built "+file+": demo@0.3.0") || !strings.Contains(r.stdout, "(model checked)") {
		t.Errorf("build printed %q", r.stdout)
	}

	wantOK(t, fleetctl(t, nil, "bundle", "sign", "--key", key, file), "bundle sign")
	if _, err := os.Stat(file + ".sig"); err != nil {
		t.Fatal(err)
	}

	r = fleetctl(t, nil, "bundle", "verify", "--key", pub, file)
	wantOK(t, r, "bundle verify")
	if !strings.HasPrefix(r.stdout, "OK demo@0.3.0") || !strings.Contains(r.stdout, "1 of 1 verified") {
		t.Errorf("verify printed %q", r.stdout)
	}
	r = fleetctl(t, nil, "bundle", "verify", "--key", pub, "-o", "json", file)
	wantOK(t, r, "bundle verify -o json")
	var vr verifyResult
	if err := json.Unmarshal([]byte(r.stdout), &vr); err != nil || !vr.Verified || vr.ID != "demo@0.3.0" || len(vr.Files) != 1 {
		t.Errorf("verify -o json: %+v (%v)\n%s", vr, err, r.stdout)
	}

	r = fleetctl(t, nil, "bundle", "inspect", file)
	wantOK(t, r, "bundle inspect")
	if !strings.HasPrefix(r.stdout, "UNVERIFIED") || !strings.Contains(r.stdout, "demo@0.3.0") || !strings.Contains(r.stdout, "cuda, cpu (implicit)") {
		t.Errorf("inspect printed %q", r.stdout)
	}
	r = fleetctl(t, nil, "bundle", "inspect", "-o", "json", file)
	wantOK(t, r, "bundle inspect -o json")
	var ir struct {
		Verified bool             `json:"verified"`
		Manifest *bundle.Manifest `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &ir); err != nil || ir.Verified || ir.Manifest.ID() != "demo@0.3.0" {
		t.Errorf("inspect -o json: %+v (%v)", ir, err)
	}
	if !strings.Contains(r.stderr, "UNVERIFIED") {
		t.Errorf("inspect -o json without --key does not warn on stderr: %q", r.stderr)
	}
	r = fleetctl(t, nil, "bundle", "inspect", "--key", pub, file)
	wantOK(t, r, "bundle inspect --key")
	if !strings.HasPrefix(r.stdout, "VERIFIED") {
		t.Errorf("inspect --key printed %q", r.stdout)
	}

	// Tampering: one flipped byte and verify (and inspect --key) fail.
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-10] ^= 1
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	wantFail(t, fleetctl(t, nil, "bundle", "verify", "--key", pub, file), "verify of a tampered bundle", "signature not valid")
	wantFail(t, fleetctl(t, nil, "bundle", "inspect", "--key", pub, file), "inspect --key of a tampered bundle", "signature not valid")

	// A key that did not sign it.
	other := filepath.Join(dir, "other")
	wantOK(t, fleetctl(t, nil, "keys", "generate", "--out", other, "--algorithm", "ed25519"), "keys generate ed25519")
	wantOK(t, fleetctl(t, okCheck, "bundle", "build", demoSpec(t), "--out", file), "rebuild")
	wantOK(t, fleetctl(t, nil, "bundle", "sign", "--key", key, file), "re-sign")
	wantFail(t, fleetctl(t, nil, "bundle", "verify", "--key", filepath.Join(other, "signing.pub"), file), "verify with the wrong key", "made by none")
	// Either of two keys will do.
	wantOK(t, fleetctl(t, nil, "bundle", "verify", "--key", filepath.Join(other, "signing.pub"), "--key", pub, file), "verify with two keys")
}

func TestBundleBuildChecks(t *testing.T) {
	spec := demoSpec(t)
	out := filepath.Join(t.TempDir(), "demo.bundle")

	// The real model.Check runs by default; weights.onnx is not ONNX, so
	// the build must fail and write nothing.
	r := fleetctl(t, nil, "bundle", "build", spec, "--out", out)
	wantFail(t, r, "build with the real model check", "checking demo@0.3.0: ")
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("bundle written although the check failed")
	}

	errSmoke := errors.New(`smoke "ones": output y is 2.5, want 2`)
	r = fleetctl(t, func(context.Context, string, *bundle.Manifest, *slog.Logger) error { return errSmoke }, "bundle", "build", spec, "--out", out)
	wantFail(t, r, "build with a failing check", errSmoke.Error())

	called := false
	r = fleetctl(t, func(context.Context, string, *bundle.Manifest, *slog.Logger) error { called = true; return nil }, "bundle", "build", spec, "--out", out, "--no-check")
	wantOK(t, r, "build --no-check")
	if called {
		t.Error("--no-check ran the check")
	}
	if !strings.Contains(r.stderr, "WARNING: --no-check") || !strings.Contains(r.stdout, "model NOT checked") {
		t.Errorf("--no-check is not loud enough:\nstdout %q\nstderr %q", r.stdout, r.stderr)
	}

	// The default output name is NAME-VERSION.bundle in the current
	// directory.
	tmp := t.TempDir()
	t.Chdir(tmp)
	wantOK(t, fleetctl(t, okCheck, "bundle", "build", spec), "build with the default output")
	if _, err := os.Stat(filepath.Join(tmp, "demo-0.3.0.bundle")); err != nil {
		t.Errorf("default output: %v", err)
	}

	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	wantOK(t, fleetctl(t, okCheck, "bundle", "build", spec, "--out", out), "build with SOURCE_DATE_EPOCH")
	r = fleetctl(t, nil, "bundle", "inspect", out)
	if !strings.Contains(r.stdout, "2023-11-14T22:13:20Z") {
		t.Errorf("created time not recorded: %s", r.stdout)
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"frobnicate"}, ExitUsage, `unknown command "frobnicate"`},
		{[]string{"bundle", "verify", "x.bundle"}, ExitUsage, `required flag(s) "key" not set`},
		{[]string{"bundle", "verify", "--key", "k.pub"}, ExitUsage, "missing FILE"},
		{[]string{"bundle", "build"}, ExitUsage, "missing SPEC_DIR"},
		{[]string{"bundle", "build", "a", "b"}, ExitUsage, `unexpected argument "b"`},
		{[]string{"bundle", "inspect", "-o", "xml", "x.bundle"}, ExitUsage, `unknown output format "xml" (want one of table, wide, json, yaml, name)`},
		{[]string{"version", "-o", "name"}, ExitUsage, "-o name: this command's result has no names"},
		{[]string{"bundle", "inspect", "--bogus", "x.bundle"}, ExitUsage, "unknown flag: --bogus"},
		{[]string{"bundle", "biuld"}, ExitUsage, `unknown command "biuld" for "fleetctl bundle"; did you mean "build"?`},
		{[]string{"rollout", "abrot", "ro-1"}, ExitUsage, `did you mean "abort"?`},
		{[]string{"bundle", "inspect", filepath.Join(dir, "missing.bundle")}, ExitNotFound, "no such file"},
		{[]string{"bundle", "build", dir}, ExitNotFound, "bundle.yaml"},
		{[]string{"bundle", "sign", "--key", filepath.Join(dir, "nope.key"), "x.bundle"}, ExitNotFound, "reading signing key"},
		{[]string{"keys", "generate"}, ExitUsage, `required flag(s) "out" not set`},
		{[]string{"keys", "generate", "--out", dir, "--algorithm", "rsa"}, ExitError, `unknown key algorithm "rsa"`},
	}
	for _, tc := range tests {
		wantExit(t, fleetctl(t, okCheck, tc.args...), tc.code, strings.Join(tc.args, " "), tc.msg)
	}
	// A group command run bare shows its commands.
	r := fleetctl(t, nil, "rollout")
	wantOK(t, r, "rollout")
	if !strings.Contains(r.stdout, "wait") || !strings.Contains(r.stdout, "abort") {
		t.Errorf("rollout printed %q", r.stdout)
	}
}

func TestVersionAndHelp(t *testing.T) {
	r := fleetctl(t, nil, "version", "-o", "json")
	wantOK(t, r, "version")
	var v map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v["version"] == "" {
		t.Errorf("version -o json: %q (%v)", r.stdout, err)
	}
	r = fleetctl(t, nil, "bundle", "--help")
	wantOK(t, r, "bundle --help")
	for _, sub := range []string{"build", "sign", "verify", "inspect"} {
		if !strings.Contains(r.stdout, sub) {
			t.Errorf("bundle --help does not list %s", sub)
		}
	}
}
