package imports

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/build/constraint"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

// buildTags are the module's own build tags: the tests of the QEMU
// testbed and of the demo, and the race detector's.
var buildTags = []string{"demotest", "race", "testbed"}

// buildConfig is one way go list sees the module.
type buildConfig struct {
	goos, goarch string
	cgo          bool
	tags         []string
}

func (c buildConfig) String() string {
	s := fmt.Sprintf("GOOS=%s GOARCH=%s", c.goos, c.goarch)
	if len(c.tags) > 0 {
		s += " -tags=" + strings.Join(c.tags, ",")
	}
	return s
}

// configs are the configurations the rules are checked in: the devices'
// and the servers' platforms with and without the build tags (a tag can
// also exclude a file), the WASM processors' (wasip1, the Go guests), and
// one that is not Linux.
var configs = []buildConfig{
	{goos: "linux", goarch: "amd64", cgo: true},
	{goos: "linux", goarch: "amd64", cgo: true, tags: buildTags},
	{goos: "linux", goarch: "arm64", cgo: true, tags: buildTags},
	{goos: "wasip1", goarch: "wasm", tags: buildTags},
	{goos: "darwin", goarch: "arm64", cgo: true, tags: buildTags},
}

// goList loads every package of the module at dir, with its tests and
// everything they import, as go list sees them in c. A package of the
// module that go list reports an error for is an error: its imports may
// be incomplete.
func goList(dir string, c buildConfig) ([]pkg, error) {
	args := []string{"list", "-e", "-deps", "-test", "-json=ImportPath,Name,ForTest,Imports,Module,Error"}
	if len(c.tags) > 0 {
		args = append(args, "-tags="+strings.Join(c.tags, ","))
	}
	args = append(args, "./...")
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cgo := "0"
	if c.cgo {
		cgo = "1"
	}
	cmd.Env = append(os.Environ(), "GOOS="+c.goos, "GOARCH="+c.goarch, "CGO_ENABLED="+cgo)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go %s (%s): %v\n%s", strings.Join(args, " "), c, err, stderr.Bytes())
	}
	var pkgs []pkg
	var errs []error
	for dec := json.NewDecoder(&stdout); ; {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list (%s): %v", c, err)
		}
		if p.Error != nil && p.Module != nil && p.Module.Main {
			errs = append(errs, fmt.Errorf("%s: %s", p.ImportPath, p.Error.Err))
		}
		pkgs = append(pkgs, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("go list (%s):\n%v", c, err)
	}
	return pkgs, nil
}

// checkModule checks the module at dir in every configuration and returns
// each violation once, with the configuration it was first found in when
// that is not the first one.
func checkModule(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	for i, c := range configs {
		pkgs, err := goList(dir, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range check(pkgs) {
			s := v.String()
			if seen[s] {
				continue
			}
			seen[s] = true
			if i > 0 {
				s += " [" + c.String() + "]"
			}
			out = append(out, s)
		}
	}
	return out
}

// TestImportRules checks the module against the rules.
func TestImportRules(t *testing.T) {
	if v := checkModule(t, testenv.Root(t)); len(v) > 0 {
		t.Errorf("%d imports break the import rules (testbed/imports/rules_test.go; docs/architecture.md, \"Rooms and imports\"):\n%s",
			len(v), strings.Join(v, "\n"))
	}
}

// TestCheck runs the checker on synthetic go list answers: each case's
// packages and the violations it must report, as "IMPORTER imports
// IMPORTED [via A → B] rule" (module-relative paths, " (tests)" for test
// code).
func TestCheck(t *testing.T) {
	const mod = "github.com/edgefleet/edgefleet"
	// qualify turns "P" or "P [Q.test]" (module-relative) into go list's
	// import path; "fmt" stays.
	qualify := func(s string) string {
		if s == "fmt" {
			return s
		}
		p, q, ok := strings.Cut(s, " [")
		if !ok {
			return mod + "/" + p
		}
		return mod + "/" + p + " [" + mod + "/" + q
	}
	// p is a package record of the module: "P", "P [Q.test]" or
	// "P_test [P.test]"; a trailing " !main" makes it a main package.
	p := func(spec string, imports ...string) pkg {
		spec, isMain := strings.CutSuffix(spec, " !main")
		r := pkg{ImportPath: qualify(spec), Name: "x"}
		if isMain {
			r.Name = "main"
		}
		if _, q, ok := strings.Cut(spec, " ["); ok {
			r.ForTest = mod + "/" + strings.TrimSuffix(q, ".test]")
		}
		for _, imp := range imports {
			r.Imports = append(r.Imports, qualify(imp))
		}
		r.Module = &struct {
			Path string
			Main bool
		}{mod, true}
		return r
	}
	std := pkg{ImportPath: "fmt", Name: "fmt"}
	for _, tc := range []struct {
		name string
		pkgs []pkg
		want []string
	}{
		{
			name: "allowed",
			pkgs: []pkg{
				std,
				p("shared/tensor", "fmt"),
				p("shared/model", "shared/tensor"),
				p("shared/model [shared/model.test]", "shared/tensor", "shared/testenv"),
				p("shared/testenv"),
				p("agent/outbox"),
				p("agent", "agent/outbox", "shared/model"),
				p("agent [agent.test]", "agent/outbox", "shared/model", "testbed/audio"),
				p("agent_test [agent.test]", "agent [agent.test]"),
				p("agent.test !main", "agent [agent.test]", "agent_test [agent.test]"),
				p("agent/cmd/edge-agent !main", "agent"),
				p("testbed/audio", "fmt"),
				p("controlplane/fleetd", "shared/tensor"),
				p("controlplane/cmd/fleetd !main", "controlplane/fleetd"),
				p("controlplane/cli", "shared/model"),
				p("controlplane/cli [controlplane/cli.test]", "controlplane/fleetd"),
				p("controlplane/fleetd_test [controlplane/fleetd.test]", "controlplane/fleetd", "agent/outbox"),
				p("testbed/fleet", "agent", "controlplane/fleetd", "controlplane/cli"),
				p("testbed/cmd/fleetsim !main", "testbed/fleet"),
				p("firmware [firmware.test]", "agent"),
				p("cross/cmd/mkdeb !main", "agent"),
			},
		},
		{
			name: "shared imports testbed in its tests",
			pkgs: []pkg{
				p("shared/model", "shared/tensor"),
				p("shared/model [shared/model.test]", "shared/tensor", "testbed/bundles/silero-vad/pre/frame"),
				p("shared/tensor"),
				p("testbed/bundles/silero-vad/pre/frame", "shared/tensor"),
			},
			want: []string{"shared/model (tests) imports testbed/bundles/silero-vad/pre/frame shared-only"},
		},
		{
			name: "a command under shared imports testbed",
			pkgs: []pkg{
				p("shared/drift/cmd/silero-profile !main", "shared/drift", "testbed/audio"),
				p("shared/drift"),
				p("testbed/audio"),
			},
			want: []string{"shared/drift/cmd/silero-profile imports testbed/audio shared-only"},
		},
		{
			name: "shared imports agent, controlplane, firmware",
			pkgs: []pkg{
				p("shared/a", "agent/outbox", "controlplane/api", "firmware/image"),
				p("agent/outbox"), p("controlplane/api"), p("firmware/image"),
			},
			want: []string{
				"shared/a imports agent/outbox shared-only",
				"shared/a imports controlplane/api shared-only",
				"shared/a imports firmware/image shared-only",
			},
		},
		{
			name: "the agent's external test imports the control plane's broker",
			pkgs: []pkg{
				p("agent"),
				p("agent [agent.test]"),
				p("agent_test [agent.test]", "agent [agent.test]", "controlplane/broker"),
				p("controlplane/broker"),
			},
			want: []string{"agent (tests) imports controlplane/broker agent-no-controlplane"},
		},
		{
			name: "the control plane through testbed/audio",
			pkgs: []pkg{
				p("agent [agent.test]", "testbed/audio"),
				p("testbed/audio", "controlplane/broker"),
				p("controlplane/broker"),
			},
			want: []string{"agent (tests) imports controlplane/broker via testbed/audio agent-no-controlplane"},
		},
		{
			name: "testbed/audio outside the agent's tests, testbed/fleet in them",
			pkgs: []pkg{
				p("agent", "testbed/audio"),
				p("agent/api [agent/api.test]", "testbed/audio"),
				p("controlplane/rollout [controlplane/rollout.test]", "testbed/audio"),
				p("agent [agent.test]", "testbed/fleet"),
				p("testbed/audio"),
				p("testbed/fleet"),
			},
			want: []string{
				"agent (tests) imports testbed/fleet testbed-on-top",
				"agent imports testbed/audio testbed-on-top",
				"controlplane/rollout (tests) imports testbed/audio testbed-on-top",
			},
		},
		{
			name: "a library imports the wiring",
			pkgs: []pkg{
				p("controlplane/api", "controlplane/fleetd"),
				p("controlplane/cli", "controlplane/fleetd"),
				p("firmware", "agent"),
				p("agent/cmd/lib", "agent"), // in cmd/ but not a main package
				p("controlplane/fleetd"),
				p("agent"),
			},
			want: []string{
				"agent/cmd/lib imports agent wiring-in-mains",
				"controlplane/api imports controlplane/fleetd wiring-in-mains",
				"controlplane/cli imports controlplane/fleetd wiring-in-mains",
				"firmware imports agent wiring-in-mains",
			},
		},
		{
			name: "one bad import, reported once",
			pkgs: []pkg{
				p("shared/a", "shared/b"),
				p("shared/b", "shared/c"),
				p("shared/c", "agent/outbox"),
				p("shared/c [shared/c.test]", "agent/outbox"),
				p("shared/d [shared/c.test]", "shared/c [shared/c.test]"),
				p("agent/outbox"),
			},
			// Not again for shared/a and shared/b through shared/c, nor for
			// shared/c's tests, which import what shared/c does.
			want: []string{"shared/c imports agent/outbox shared-only"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, v := range check(tc.pkgs) {
				s := v.from.path
				if v.from.test {
					s += " (tests)"
				}
				s += " imports " + v.to
				if len(v.via) > 0 {
					s += " via " + strings.Join(v.via, " → ")
				}
				got = append(got, s+" "+v.rule.name)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("violations:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}

	// The report's form.
	v := check([]pkg{p("agent [agent.test]", "testbed/audio"), p("testbed/audio", "controlplane/broker"), p("controlplane/broker")})
	const want = mod + "/agent (tests) imports " + mod + "/controlplane/broker via " + mod + "/testbed/audio (rule: agent-no-controlplane — agent/ imports nothing under controlplane/, tests included)"
	if len(v) != 1 || v[0].String() != want {
		t.Errorf("report %q, want %q", v, want)
	}
}

// TestTempModule runs the whole check (go list and the checker) on a
// module of its own with this module's path: a bad import in a test file,
// and one in a test file only a build tag selects, are reported; the
// rest of the module is clean.
func TestTempModule(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":                          "module github.com/edgefleet/edgefleet\n\ngo 1.22\n",
		"shared/lib/lib.go":               "package lib\n",
		"shared/lib/lib_test.go":          "package lib\n\nimport _ \"github.com/edgefleet/edgefleet/agent/thing\"\n",
		"shared/lib/tagged_test.go":       "//go:build testbed\n\npackage lib_test\n\nimport _ \"github.com/edgefleet/edgefleet/testbed/fixture\"\n",
		"agent/thing/thing.go":            "package thing\n",
		"agent/cmd/edge-agent/main.go":    "package main\n\nimport _ \"github.com/edgefleet/edgefleet/agent\"\n\nfunc main() {}\n",
		"agent/agent.go":                  "package agent\n",
		"testbed/fixture/fixture.go":      "package fixture\n\nimport _ \"github.com/edgefleet/edgefleet/agent\"\n",
		"testbed/fixture/fixture_test.go": "package fixture\n\nimport _ \"github.com/edgefleet/edgefleet/agent/thing\"\n",
	}
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("GOWORK", "off")
	t.Setenv("GOFLAGS", "-mod=mod")
	got := checkModule(t, dir)
	const mod = "github.com/edgefleet/edgefleet/"
	want := []string{
		mod + "shared/lib (tests) imports " + mod + "agent/thing (rule: shared-only — " + rules[0].doc + ")",
		mod + "shared/lib (tests) imports " + mod + "testbed/fixture (rule: shared-only — " + rules[0].doc + ") [" + configs[1].String() + "]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("violations:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestBuildTagsCovered: every build tag and GOOS/GOARCH file name suffix
// the module's Go files use is set by one of configs, so that no file is
// left out of every check (a negated tag, !linux say, is covered by a
// configuration without it).
func TestBuildTagsCovered(t *testing.T) {
	out, err := exec.Command("go", "tool", "dist", "list").Output()
	if err != nil {
		t.Fatalf("go tool dist list: %v", err)
	}
	knownOS, knownArch := map[string]bool{}, map[string]bool{}
	for line := range strings.Lines(string(out)) {
		goos, goarch, _ := strings.Cut(strings.TrimSpace(line), "/")
		knownOS[goos], knownArch[goarch] = true, true
	}
	set := map[string]bool{"unix": true, "gc": true, "ignore": true}
	for _, c := range configs {
		set[c.goos], set[c.goarch] = true, true
		if c.cgo {
			set["cgo"] = true
		}
		for _, tag := range c.tags {
			set[tag] = true
		}
	}
	covered := func(tag string) bool { return set[tag] || strings.HasPrefix(tag, "go1.") }

	root := testenv.Root(t)
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != root {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		files++
		rel, _ := filepath.Rel(root, path)
		// File name suffixes: _GOOS, _GOARCH, _GOOS_GOARCH (before _test).
		if _, suffix, ok := strings.Cut(strings.TrimSuffix(strings.TrimSuffix(name, ".go"), "_test"), "_"); ok {
			parts := strings.Split(suffix, "_")
			n := len(parts)
			var tags []string
			switch {
			case n >= 2 && knownOS[parts[n-2]] && knownArch[parts[n-1]]:
				tags = parts[n-2:]
			case knownOS[parts[n-1]] || knownArch[parts[n-1]]:
				tags = parts[n-1:]
			}
			for _, tag := range tags {
				if !covered(tag) {
					t.Errorf("%s: its name selects %s, which no configuration of the import check sets: add one to configs", rel, tag)
				}
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for line := range strings.Lines(string(b)) {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "package ") {
				break
			}
			if !constraint.IsGoBuild(line) {
				continue
			}
			expr, err := constraint.Parse(line)
			if err != nil {
				t.Errorf("%s: %v", rel, err)
				continue
			}
			for _, tag := range exprTags(expr) {
				if !covered(tag) {
					t.Errorf("%s: build tag %s is set by no configuration of the import check: add it to buildTags or configs", rel, tag)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("no Go files found")
	}
}

// exprTags returns the tags a build constraint names.
func exprTags(e constraint.Expr) []string {
	switch e := e.(type) {
	case *constraint.TagExpr:
		return []string{e.Tag}
	case *constraint.NotExpr:
		return exprTags(e.X)
	case *constraint.AndExpr:
		return append(exprTags(e.X), exprTags(e.Y)...)
	case *constraint.OrExpr:
		return append(exprTags(e.X), exprTags(e.Y)...)
	}
	return nil
}
