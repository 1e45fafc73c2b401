package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestMain keeps the tests off the configuration and environment of
// whoever runs them: no contexts, no server or token from the
// environment, unless a test sets them.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleetctl-test-config-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv(envConfig, filepath.Join(dir, "none", "config.yaml"))
	for _, v := range []string{envContext, envServer, envToken, envTokenFile, envEnrolToken} {
		os.Unsetenv(v)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestParseConfig(t *testing.T) {
	const path = "/cfg/config.yaml"
	good := `# mine
currentContext: prod
contexts:
  - name: prod
    server: https://fleetd.example.com:8080/
    tokenFile: prod.token
  - name: lab
    server: http://127.0.0.1:8080
`
	cfg, err := parseConfig(path, []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CurrentContext != "prod" || len(cfg.Contexts) != 2 || cfg.Contexts[1].Name != "lab" || cfg.Contexts[1].TokenFile != "" {
		t.Errorf("parsed %+v", cfg)
	}
	if p := cfg.tokenPath(cfg.context("prod")); p != "/cfg/prod.token" {
		t.Errorf("relative tokenFile resolves to %q, want it beside the file", p)
	}
	for _, empty := range []string{"", "# nothing yet\n", "contexts: []\n", "contexts:\n"} {
		if cfg, err := parseConfig(path, []byte(empty)); err != nil || len(cfg.Contexts) != 0 {
			t.Errorf("%q: %+v, %v", empty, cfg, err)
		}
	}

	for _, tc := range []struct {
		name, doc string
		want      []string // each in the error
	}{
		{"unknown top key", "currentContext: prod\ncontext: []\n", []string{path + ":2:1: context: unknown key (known here: currentContext, contexts)"}},
		{"unknown context key", "contexts:\n  - name: a\n    server: http://h:1\n    sever: x\n", []string{path + ":4:5: contexts[0].sever: unknown key (known here: name, server, tokenFile)"}},
		{"case", "contexts:\n  - name: a\n    Server: http://h:1\n", []string{`:3:5: contexts[0].Server: unknown key; did you mean "server"?`, ":2:5: contexts[0]: server missing"}},
		{"bad url", "contexts:\n  - name: a\n    server: ftp://h\n", []string{`:3:13: contexts[0].server: server "ftp://h" is not an http(s)://host:port URL`}},
		{"no server", "contexts:\n  - name: a\n", []string{":2:5: contexts[0]: server missing"}},
		{"bad name", "contexts:\n  - name: a b\n    server: http://h:1\n", []string{`:2:11: contexts[0].name: context name "a b"`}},
		{"twice", "contexts:\n  - {name: a, server: 'http://h:1'}\n  - {name: a, server: 'http://h:2'}\n", []string{`:3:12: contexts[1].name: context "a" is already defined on line 2`}},
		{"key twice", "currentContext: a\ncurrentContext: b\n", []string{":2:1: currentContext: set twice (first on line 1)"}},
		{"current unknown", "currentContext: nope\ncontexts:\n  - {name: a, server: 'http://h:1'}\n", []string{`:1:17: currentContext: "nope" is none of the contexts (have: a)`}},
		{"not a list", "contexts: {name: a}\n", []string{":1:11: contexts: must be a list of contexts, not a mapping"}},
		{"not a mapping", "- a\n", []string{":1:1: the file must be a mapping"}},
		{"context not a mapping", "contexts: [a]\n", []string{":1:12: contexts[0]: must be a mapping (key: value), not the value \"a\""}},
		{"server a list", "contexts:\n  - name: a\n    server: [x]\n", []string{":3:13: contexts[0].server: must be a string, not a list"}},
		{"alias", "contexts:\n  - &x {name: a, server: 'http://h:1'}\n  - *x\n", []string{":2:5: contexts[0]: YAML anchors and aliases are not supported", ":3:5: contexts[1]: YAML anchors"}},
		{"anchor on a value", "contexts:\n  - name: &n a\n    server: http://h:1\n", []string{":2:11: contexts[0].name: YAML anchors and aliases are not supported"}},
		{"two documents", "contexts: []\n---\ncontexts: []\n", []string{path + ":2:1: more than one YAML document"}},
		{"not yaml", "contexts: [\n", []string{path + ":1: not valid YAML"}},
		{"every problem", "bogus: 1\ncontexts:\n  - name: a\n    server: ftp://h\n", []string{":1:1: bogus: unknown key", ":4:13: contexts[0].server:"}},
	} {
		_, err := parseConfig(path, []byte(tc.doc))
		if err == nil {
			t.Errorf("%s: parsed %q", tc.name, tc.doc)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", tc.name, err)
		}
	}
}

// TestConfigCommands drives config set-context, use-context,
// current-context, get-contexts and delete-context through the built
// binary, and checks that bad input is refused with its exit code and
// leaves the file as it was.
func TestConfigCommands(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "conf", "fleetctl.yaml")
	token := filepath.Join(dir, "prod.token")
	if err := os.WriteFile(token, []byte("secret-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fc := newBinary(t)
	fc.env = []string{envConfig + "=" + cfgPath}

	wantExit(t, fc.run("config", "current-context"), ExitError, "current-context with no file", "no current context in "+cfgPath)
	r := fc.run("config", "get-contexts")
	wantOK(t, r, "get-contexts with no file")
	if r.stdout != "CURRENT  NAME  SERVER  TOKEN FILE\n" {
		t.Errorf("get-contexts with no file printed %q", r.stdout)
	}

	r = fc.run("config", "set-context", "prod", "--server", "https://fleetd.example.com:8443/", "--token-file", token)
	wantOK(t, r, "set-context prod")
	if r.stdout != fmt.Sprintf("context \"prod\" created in %s\n", cfgPath) || !strings.Contains(r.stderr, "use-context prod") {
		t.Errorf("set-context printed %q / %q", r.stdout, r.stderr)
	}
	fi, err := os.Stat(cfgPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v, %v; want mode 0600", fi, err)
	}
	if di, err := os.Stat(filepath.Dir(cfgPath)); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("config directory: %v, %v; want mode 0700", di, err)
	}
	wantOK(t, fc.run("config", "set-context", "lab", "--server", "http://127.0.0.1:1"), "set-context lab")
	wantOK(t, fc.run("config", "use-context", "prod"), "use-context prod")
	if r = fc.run("config", "current-context"); r.code != 0 || r.stdout != "prod\n" {
		t.Errorf("current-context: exit %d, %q", r.code, r.stdout)
	}
	r = fc.run("config", "get-contexts")
	wantOK(t, r, "get-contexts")
	want := "CURRENT  NAME  SERVER                           TOKEN FILE\n" +
		"*        prod  https://fleetd.example.com:8443  " + token + "\n" +
		"         lab   http://127.0.0.1:1               -\n"
	if r.stdout != want {
		t.Errorf("get-contexts printed\n%s\nwant\n%s", r.stdout, want)
	}
	// --context and $FLEETCTL_CONTEXT pick another for one call.
	if r = fc.run("config", "current-context", "--context", "lab"); r.stdout != "lab\n" {
		t.Errorf("current-context --context lab: %q %q", r.stdout, r.stderr)
	}
	r = fc.runEnv([]string{envContext + "=lab"}, "config", "get-contexts", "-o", "json")
	wantOK(t, r, "get-contexts -o json")
	var list contextList
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || list.File != cfgPath || list.CurrentContext != "lab" || len(list.Contexts) != 2 ||
		list.Contexts[0].Current || !list.Contexts[1].Current || list.Contexts[0].TokenFile != token {
		t.Errorf("get-contexts -o json with $FLEETCTL_CONTEXT=lab: %+v %v\n%s", list, err, r.stdout)
	}
	if r = fc.run("config", "get-contexts", "-o", "name"); r.stdout != "prod\nlab\n" {
		t.Errorf("get-contexts -o name: %q", r.stdout)
	}
	if r = fc.run("config", "get-contexts", "lab", "-o", "name"); r.stdout != "lab\n" {
		t.Errorf("get-contexts lab -o name: %q", r.stdout)
	}
	r = fc.run("config", "get-contexts", "-o", "yaml")
	var y struct {
		CurrentContext string `yaml:"currentContext"`
	}
	if err := yaml.Unmarshal([]byte(r.stdout), &y); err != nil || y.CurrentContext != "prod" {
		t.Errorf("get-contexts -o yaml: %v\n%s", err, r.stdout)
	}
	// The file is what parseConfig reads back.
	cfg, err := parseConfig(cfgPath, must(os.ReadFile(cfgPath)))
	if err != nil || cfg.CurrentContext != "prod" || cfg.context("prod").Server != "https://fleetd.example.com:8443" {
		t.Errorf("written file: %+v, %v", cfg, err)
	}

	// Bad input: the exit code, a message naming what was wrong, and
	// the file untouched (no temporary file left either).
	before := string(must(os.ReadFile(cfgPath)))
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		code int
		msg  string
	}{
		{"use an unknown context", []string{"config", "use-context", "nope"}, nil, ExitUsage, `context "nope": no such context in ` + cfgPath + " (have: prod, lab;"},
		{"a new context without --server", []string{"config", "set-context", "new"}, nil, ExitUsage, `context "new" is new: give its fleetd with --server URL`},
		{"a bad --server", []string{"config", "set-context", "new", "--server", "ftp://x"}, nil, ExitUsage, `--server: server "ftp://x" is not an http(s)://host:port URL`},
		{"a bad --server on an existing context", []string{"config", "set-context", "prod", "--server", "127.0.0.1:8080"}, nil, ExitUsage, "not an http(s)://host:port URL"},
		{"a bad name", []string{"config", "set-context", "a b", "--server", "http://h:1"}, nil, ExitUsage, `context name "a b"`},
		{"a missing token file", []string{"config", "set-context", "new", "--server", "http://h:1", "--token-file", filepath.Join(dir, "absent")}, nil, ExitNotFound, "reading the token (--token-file)"},
		{"nothing to change", []string{"config", "set-context", "prod"}, nil, ExitUsage, "give --server or --token-file to change it"},
		{"delete an unknown context", []string{"config", "delete-context", "nope"}, nil, ExitUsage, `"nope": no such context`},
		{"get an unknown context", []string{"config", "get-contexts", "nope"}, nil, ExitUsage, `"nope": no such context`},
		{"--context unknown", []string{"config", "current-context", "--context", "nope"}, nil, ExitUsage, `--context "nope": no such context`},
		{"$FLEETCTL_CONTEXT unknown", []string{"config", "get-contexts"}, []string{envContext + "=nope"}, ExitUsage, `$FLEETCTL_CONTEXT "nope": no such context`},
		{"--context unknown on a remote command", []string{"devices", "list", "--context", "nope"}, nil, ExitUsage, `--context "nope": no such context`},
		{"a missing argument", []string{"config", "use-context"}, nil, ExitUsage, "missing NAME"},
		{"a typo", []string{"config", "use-contxt", "prod"}, nil, ExitUsage, `did you mean "use-context"?`},
	} {
		wantExit(t, fc.runEnv(tc.env, tc.args...), tc.code, tc.name, tc.msg)
		if after := string(must(os.ReadFile(cfgPath))); after != before {
			t.Errorf("%s changed the file:\n%s", tc.name, after)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(cfgPath)); len(ents) != 1 {
		t.Errorf("config directory holds %v, want only the file", ents)
	}

	// Changing and deleting.
	wantOK(t, fc.run("config", "set-context", "prod", "--token-file", ""), "set-context prod --token-file ''")
	if cfg, _ := parseConfig(cfgPath, must(os.ReadFile(cfgPath))); cfg.context("prod").TokenFile != "" || cfg.context("prod").Server != "https://fleetd.example.com:8443" {
		t.Errorf("after clearing the token file: %+v", cfg.context("prod"))
	}
	r = fc.run("config", "delete-context", "prod")
	wantOK(t, r, "delete-context prod")
	if !strings.Contains(r.stderr, "it was the current context") {
		t.Errorf("delete-context of the current one said %q", r.stderr)
	}
	if r = fc.run("config", "get-contexts", "-o", "name"); r.stdout != "lab\n" {
		t.Errorf("after delete: %q", r.stdout)
	}
	wantExit(t, fc.run("config", "current-context"), ExitError, "current-context after deleting it", "no current context")

	// A broken file: exit 1 naming file and line, for the config
	// commands and for a command that needs a context.
	if err := os.WriteFile(cfgPath, []byte("contexts:\n  - name: lab\n    server: http://127.0.0.1:1\n    token: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantExit(t, fc.run("config", "get-contexts"), ExitError, "get-contexts on a broken file", cfgPath+":4:5: contexts[0].token: unknown key")
	wantExit(t, fc.run("config", "set-context", "x", "--server", "http://h:1"), ExitError, "set-context on a broken file", cfgPath+":4:5:")
	wantExit(t, fc.run("devices", "list"), ExitError, "devices list on a broken file", cfgPath+":4:5:")
}

// runEnv is run with more environment variables.
func (b *binary) runEnv(env []string, args ...string) result {
	b.t.Helper()
	saved := b.env
	b.env = append(append([]string(nil), b.env...), env...)
	defer func() { b.env = saved }()
	return b.run(args...)
}

// TestContextPrecedence checks where server and token come from: flag,
// then environment, then the context (--context, $FLEETCTL_CONTEXT or the
// current one), then the defaults.
func TestContextPrecedence(t *testing.T) {
	f := startFleetd(t)
	dir, srv, tokenFile := f.dir, f.srv, f.tokenFile
	dead := "http://127.0.0.1:1" // a closed port
	wrong := filepath.Join(dir, "wrong.token")
	if err := os.WriteFile(wrong, []byte("wrong-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgDir := filepath.Join(dir, "conf")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "live.token"), must(os.ReadFile(tokenFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(cfgDir, "config.yaml")
	// live's token file is relative: beside the configuration file.
	cfg := fmt.Sprintf("currentContext: live\ncontexts:\n  - {name: live, server: %q, tokenFile: live.token}\n  - {name: dead, server: %q, tokenFile: %q}\n"+
		"  - {name: bare, server: %q}\n  - {name: gone, server: %q, tokenFile: /nonexistent/op.token}\n",
		srv.URL(), dead, tokenFile, srv.URL(), srv.URL())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	fc := newBinary(t)
	t.Chdir(t.TempDir()) // no ./fleetd-data here
	fc.env = []string{envConfig + "=" + cfgPath}

	const ok = 0
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		msg  string
	}{
		{"the current context", nil, nil, ok, ""},
		{"--context", nil, []string{"--context", "dead"}, ExitError, "127.0.0.1:1"},
		{"$FLEETCTL_CONTEXT", []string{envContext + "=dead"}, nil, ExitError, "127.0.0.1:1"},
		{"--context over $FLEETCTL_CONTEXT", []string{envContext + "=dead"}, []string{"--context", "live"}, ok, ""},
		{"$FLEETCTL_SERVER over the context", []string{envServer + "=" + dead}, nil, ExitError, "127.0.0.1:1"},
		{"--server over $FLEETCTL_SERVER", []string{envServer + "=" + dead}, []string{"--server", srv.URL()}, ok, ""},
		{"--server over the context's", nil, []string{"--context", "dead", "--server", srv.URL()}, ok, ""}, // dead's token is the right one
		{"$FLEETCTL_TOKEN over the context's token", []string{envToken + "=wrong-token-0123456789"}, nil, ExitError, "invalid API token (HTTP 401)"},
		{"$FLEETCTL_TOKEN_FILE over the context's token", []string{envTokenFile + "=" + wrong}, nil, ExitError, "HTTP 401"},
		{"--token-file over $FLEETCTL_TOKEN", []string{envToken + "=wrong-token-0123456789"}, []string{"--token-file", tokenFile}, ok, ""},
		{"a context without a token file", nil, []string{"--context", "bare"}, ExitError, "no operator token: give --token-file"},
		{"a context whose token file is gone", nil, []string{"--context", "gone"}, ExitNotFound, `reading the token (tokenFile of context "gone" in ` + cfgPath + ")"},
		{"no configuration file", []string{envConfig + "=" + cfgPath + ".none"}, nil, ExitError, "no operator token"},
	} {
		r := fc.runEnv(tc.env, append([]string{"devices", "list"}, tc.args...)...)
		if tc.code == ok {
			wantOK(t, r, tc.name)
			continue
		}
		wantExit(t, r, tc.code, tc.name, tc.msg)
	}

	// With server and token given, the file is not read: a broken one
	// does not stand in the way (but --context still needs it).
	broken := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(broken, []byte("nonsense: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{envConfig + "=" + broken, envServer + "=" + srv.URL()}
	wantOK(t, fc.runEnv(env, "devices", "list", "--token-file", tokenFile), "everything given, broken config")
	wantExit(t, fc.runEnv(env, "devices", "list", "--token-file", tokenFile, "--context", "live"), ExitError, "--context with a broken config", broken)

	// The default place: $XDG_CONFIG_HOME/fleetctl/config.yaml, else
	// ~/.config/fleetctl/config.yaml.
	xdg := filepath.Join(dir, "xdg")
	if err := os.MkdirAll(filepath.Join(xdg, "fleetctl"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(xdg, "fleetctl", "config.yaml"), []byte(strings.ReplaceAll(cfg, "tokenFile: live.token", "tokenFile: "+tokenFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	wantOK(t, fc.runEnv([]string{envConfig + "=", "XDG_CONFIG_HOME=" + xdg}, "devices", "list"), "the context from $XDG_CONFIG_HOME")
	home := filepath.Join(dir, "home")
	wantOK(t, fc.runEnv([]string{envConfig + "=", "XDG_CONFIG_HOME=", "HOME=" + home}, "config", "set-context", "h", "--server", srv.URL(), "--token-file", tokenFile), "set-context in ~")
	if _, err := os.Stat(filepath.Join(home, ".config", "fleetctl", "config.yaml")); err != nil {
		t.Errorf("set-context with only $HOME: %v", err)
	}
	wantOK(t, fc.runEnv([]string{envConfig + "=", "XDG_CONFIG_HOME=", "HOME=" + home}, "devices", "list", "--context", "h"), "the context from ~/.config")
}
