package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

// binary runs a built fleetctl; its result has the process's exit code.
type binary struct {
	t    *testing.T
	path string
	env  []string
}

func newBinary(t *testing.T) *binary {
	return &binary{t: t, path: testenv.Command(t, "./controlplane/cmd/fleetctl")}
}

func (b *binary) run(args ...string) result {
	b.t.Helper()
	out, errOut, code := testenv.Run(b.t, b.path, b.env, args...)
	return result{code, out, errOut}
}

// TestExitCodes runs the built fleetctl against a running fleetd and
// checks every exit code of the table in docs/cli.md but drift's (in
// TestDriftCommand).
func TestExitCodes(t *testing.T) {
	f := startFleetd(t)
	dir, data, keys, srv, remote := f.dir, f.data, f.keys, f.srv, f.remote
	fc := newBinary(t)
	r := func(args ...string) result {
		t.Helper()
		return fc.run(append(args, remote...)...)
	}

	// A bundle and two devices, as in TestRolloutCommands (built
	// in-process: the binary's model check would refuse its fake model).
	bfile := f.signedDemoBundle()
	wantOK(t, r("bundle", "push", bfile), "bundle push")

	// Trust on push: a bundle signed by a key fleetd does not trust is
	// refused (4) naming the key fleetd trusts, which keys list and keys
	// fingerprint show.
	stranger := filepath.Join(dir, "stranger")
	wantOK(t, fc.run("keys", "generate", "--out", stranger), "keys generate (stranger)")
	sfile := filepath.Join(dir, "demo-0.3.1.bundle")
	wantOK(t, fleetctl(t, okCheck, "bundle", "build", demoSpec(t), "--out", sfile), "bundle build")
	wantOK(t, fc.run("bundle", "sign", "--key", filepath.Join(stranger, "signing.key"), sfile), "bundle sign (stranger)")
	fp := fc.run("keys", "fingerprint", filepath.Join(keys, "signing.pub"), "-o", "json")
	wantOK(t, fp, "keys fingerprint")
	var fps []struct{ ID, File string }
	if err := json.Unmarshal([]byte(fp.stdout), &fps); err != nil || len(fps) != 1 || len(fps[0].ID) != 16 {
		t.Fatalf("keys fingerprint -o json: %q, %v", fp.stdout, err)
	}
	wantExit(t, r("bundle", "push", sfile), ExitRefused, "push signed by an untrusted key", "made by none of the 1 trusted key(s) "+fps[0].ID)
	if l := r("keys", "list"); l.code != 0 || !strings.Contains(l.stdout, fps[0].ID) || !strings.Contains(l.stdout, filepath.Join(keys, "signing.pub")) {
		t.Errorf("keys list: exit %d, %q", l.code, l.stdout)
	}
	wantExit(t, fc.run("keys", "fingerprint"), ExitUsage, "keys fingerprint without a file", "missing FILE.pub")
	for _, id := range []string{"cam-1", "cam-2"} {
		wantOK(t, fc.run("enroll", id, "--label", "ring=canary", "--server", srv.URL(), "--enrol-token-file", filepath.Join(data, enrolTokenRel)), "enroll")
	}
	specFile := filepath.Join(dir, "rollout.yaml")
	if err := os.WriteFile(specFile, []byte("target: ring=canary\nbundle: demo@0.3.0\nwaves: [{count: 1, bake: 1h}, {percent: 100, bake: 1h}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	created := r("rollout", "create", "-f", specFile)
	wantOK(t, created, "rollout create")
	id := strings.TrimSuffix(strings.Fields(created.stdout)[1], ":")

	for _, tc := range []struct {
		name string
		res  result
		code int
		msg  string
	}{
		{"version", fc.run("version"), ExitOK, ""},
		{"a typo in a subcommand", fc.run("rollout", "abrot", id), ExitUsage, `did you mean "abort"?`},
		{"an unknown flag", fc.run("devices", "list", "--colour"), ExitUsage, "unknown flag: --colour"},
		{"a missing argument", r("rollout", "status"), ExitUsage, "missing ID"},
		{"a bad --for", r("rollout", "wait", id, "--for", "done"), ExitUsage, `--for="done": want one of completed, paused`},
		{"fleetd unreachable", fc.run("devices", "list", "--server", "http://127.0.0.1:1", "--token-file", remote[3]), ExitError, "127.0.0.1:1"},
		{"an unknown rollout", r("rollout", "status", "ro-nope"), ExitNotFound, "HTTP 404"},
		{"an unknown device", r("devices", "show", "ghost"), ExitNotFound, "HTTP 404"},
		{"devices held by another rollout", r("rollout", "create", "-f", specFile), ExitRefused, "held by rollout " + id},
		{"a wait that times out", r("rollout", "wait", id, "--timeout", "300ms", "--interval", "50ms"), ExitTimeout, "still running after 300ms, not completed"},
	} {
		if tc.code == ExitOK {
			wantOK(t, tc.res, tc.name)
			continue
		}
		wantExit(t, tc.res, tc.code, tc.name, tc.msg)
	}

	wantOK(t, r("rollout", "pause", id), "pause")
	wantOK(t, r("rollout", "wait", id, "--for", "paused"), "wait --for=paused on a paused rollout")
	wantExit(t, r("rollout", "pause", id), ExitRefused, "a second pause", "it is paused")
	wantOK(t, r("rollout", "abort", id, "--note", "test"), "abort")
	wantExit(t, r("rollout", "status", id, "--watch"), ExitUnwanted, "watch an aborted rollout", "rollout "+id+" ended aborted")
	wantExit(t, r("rollout", "wait", id), ExitUnwanted, "wait for an aborted rollout", "ended aborted")
	wantExit(t, r("rollout", "wait", id, "--for", "paused"), ExitUnwanted, "wait --for=paused, aborted", "it will not pause")

	// A second rollout goes all the way: wait exits 0.
	created = r("rollout", "create", "-f", specFile)
	wantOK(t, created, "second rollout create")
	id = strings.TrimSuffix(strings.Fields(created.stdout)[1], ":")
	wantOK(t, r("rollout", "promote", id), "promote")
	wantOK(t, r("rollout", "promote", id), "promote the last wave")
	w := r("rollout", "wait", id, "--timeout", "1m", "--interval", "50ms")
	wantOK(t, w, "wait for a succeeded rollout")
	if w.stdout != id+": succeeded\n" {
		t.Errorf("wait printed %q", w.stdout)
	}
	wantOK(t, r("rollout", "status", id, "--watch"), "watch a succeeded rollout")
	wantOK(t, r("rollout", "rollback", id), "rollback")
	wantExit(t, r("rollout", "status", id, "--watch"), ExitUnwanted, "watch a rolled-back rollout", "ended rolled_back")

	// fleetctl --help ends with the table.
	h := fc.run("--help")
	wantOK(t, h, "--help")
	if !strings.Contains(h.stdout, exitCodesHelp) {
		t.Errorf("fleetctl --help lacks the exit codes:\n%s", h.stdout)
	}
}
