package imports

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
)

// rules are the import rules, the one place they are written
// (docs/architecture.md, "Rooms and imports", shows them). Paths are
// relative to the module root; a pattern "P/..." matches P and every
// package below it, "..." every package of the module, any other pattern
// that one package. A package's test code is its _test.go files, both
// the package's own and its external _test package.
var rules = []rule{
	{
		name:  "shared-only",
		doc:   "shared/ imports nothing of the module outside shared/, tests included",
		from:  []string{"shared/..."},
		tests: true,
		deny:  []string{"..."},
		allow: []allow{{to: "shared/..."}},
	},
	{
		name:  "agent-no-controlplane",
		doc:   "agent/ imports nothing under controlplane/, tests included",
		from:  []string{"agent/..."},
		tests: true,
		deny:  []string{"controlplane/..."},
	},
	{
		// The daemons' wiring: the edge agent (the agent package, New/Run/
		// Close), fleetd (controlplane/fleetd) and fleetctl's command tree
		// (controlplane/cli). Libraries talk to them over their APIs.
		name:     "wiring-in-mains",
		doc:      "only main packages in a cmd/ directory, testbed/ and tests import the daemons' wiring (agent, controlplane/fleetd, controlplane/cli)",
		from:     []string{"..."},
		except:   []string{"testbed/..."},
		cmdMains: true,
		deny:     []string{"agent", "controlplane/fleetd", "controlplane/cli"},
	},
	{
		// testbed/ sits on top: it wires everything together. The one way
		// down is testbed/audio (synthetic speech, a leaf of the standard
		// library) for the agent's drift tests and benchmarks; what it
		// imports is checked as the agent's tests' own imports.
		name:   "testbed-on-top",
		doc:    "nothing outside testbed/ imports testbed/, tests included, except agent/'s tests importing testbed/audio",
		from:   []string{"..."},
		except: []string{"testbed/..."},
		tests:  true,
		deny:   []string{"testbed/..."},
		allow:  []allow{{to: "testbed/audio", from: "agent/...", testsOnly: true}},
	},
}

// A rule constrains the packages in from, less those in except and (with
// cmdMains) the main packages in a cmd/ directory, and with tests their
// test code too: they may not import a package in deny unless an allow
// grants it.
type rule struct {
	name, doc    string
	from, except []string
	cmdMains     bool
	tests        bool
	deny         []string
	allow        []allow
}

// An allow grants importing the packages in to, to the importers in from
// ("": every importer the rule constrains), with testsOnly to their test
// code only.
type allow struct {
	to, from  string
	testsOnly bool
}

// match reports whether the module-relative package path p matches pat.
func match(pat, p string) bool {
	switch {
	case pat == "...":
		return true
	case strings.HasSuffix(pat, "/..."):
		dir := strings.TrimSuffix(pat, "/...")
		return p == dir || strings.HasPrefix(p, dir+"/")
	}
	return p == pat
}

func matchAny(pats []string, p string) bool {
	return slices.ContainsFunc(pats, func(pat string) bool { return match(pat, p) })
}

// importer is the code of one go list record: a package's, or its test
// code.
type importer struct {
	path    string // module-relative
	test    bool
	cmdMain bool // a main package in a cmd/ directory
}

func (r *rule) constrains(i importer) bool {
	return matchAny(r.from, i.path) && !matchAny(r.except, i.path) &&
		!(r.cmdMains && i.cmdMain) && (r.tests || !i.test)
}

func (r *rule) forbids(i importer, to string) bool {
	if !matchAny(r.deny, to) {
		return false
	}
	for _, a := range r.allow {
		if match(a.to, to) && (a.from == "" || match(a.from, i.path)) && (!a.testsOnly || i.test) {
			return false
		}
	}
	return true
}

// broken returns the first rule that i importing the package to breaks,
// or nil.
func broken(i importer, to string) *rule {
	if i.path == to { // a package's tests import the package
		return nil
	}
	for k := range rules {
		if r := &rules[k]; r.constrains(i) && r.forbids(i, to) {
			return r
		}
	}
	return nil
}

// pkg is what `go list -json` says of one package: the fields check reads.
// ImportPath is "P" for a package, "P [Q.test]" for P as built for Q's
// tests (P itself with its _test.go files when P is Q), "P_test [P.test]"
// for an external test package and "P.test" for a generated test main.
type pkg struct {
	ImportPath string
	Name       string
	ForTest    string
	Imports    []string
	Module     *struct {
		Path string
		Main bool
	}
	Error *struct{ Err string }
}

// violation is one import that breaks a rule.
type violation struct {
	mod  string   // the module path
	from importer // the importer
	to   string   // the imported package, module-relative
	via  []string // the packages between them, module-relative; none for a direct import
	rule *rule
}

func (v violation) String() string {
	full := func(p string) string {
		if p == "" {
			return v.mod
		}
		return v.mod + "/" + p
	}
	s := full(v.from.path)
	if v.from.test {
		s += " (tests)"
	}
	s += " imports " + full(v.to)
	if len(v.via) > 0 {
		var via []string
		for _, p := range v.via {
			via = append(via, full(p))
		}
		s += " via " + strings.Join(via, " → ")
	}
	return s + fmt.Sprintf(" (rule: %s — %s)", v.rule.name, v.rule.doc)
}

// check returns the imports among pkgs (a `go list -deps -test -json`
// answer) that break a rule, sorted. Each package of the main module is
// checked against everything of the module it imports, directly or
// through packages it may import: an import every step of which is
// allowed can still break a rule (the agent's tests through
// testbed/audio, say). Such an indirect import is reported only when no
// package on the way breaks a rule importing it (that package is
// reported instead), so that one bad import is reported once.
func check(pkgs []pkg) []violation {
	mod := ""
	byPath := map[string]*pkg{}
	for i := range pkgs {
		if p := &pkgs[i]; p.Module != nil && p.Module.Main {
			mod = p.Module.Path
			byPath[p.ImportPath] = p
		}
	}
	rel := func(importPath string) string {
		p, _, _ := strings.Cut(importPath, " ")
		if p == mod {
			return ""
		}
		return strings.TrimPrefix(p, mod+"/")
	}
	importerOf := func(p *pkg) (importer, bool) {
		ip, _, _ := strings.Cut(p.ImportPath, " ")
		if p.Name == "main" && p.ForTest == "" && strings.HasSuffix(ip, ".test") {
			return importer{}, false // generated
		}
		var i importer
		switch {
		case p.ForTest != "" && ip == p.ForTest+"_test":
			ip, i.test = p.ForTest, true
		case p.ForTest != "" && ip == p.ForTest:
			i.test = true
		}
		i.path = rel(ip)
		i.cmdMain = p.Name == "main" && !i.test && path.Base(path.Dir(i.path)) == "cmd"
		return i, true
	}

	// One violation per importer, imported package and rule: the one with
	// the shortest chain.
	found := map[[3]string]violation{}
	for _, p := range byPath {
		from, ok := importerOf(p)
		if !ok {
			continue
		}
		// Breadth first through the module's packages p imports, going on
		// only from those p may import: each with the package that imports
		// it on a shortest such chain from p ("" when p does).
		parent := map[string]string{}
		var queue []string
		visit := func(imp, by string) {
			if _, done := parent[imp]; !done && byPath[imp] != nil && imp != p.ImportPath {
				parent[imp] = by
				if broken(from, rel(imp)) == nil {
					queue = append(queue, imp)
				}
			}
		}
		for _, imp := range p.Imports {
			visit(imp, "")
		}
		for len(queue) > 0 {
			q := queue[0]
			queue = queue[1:]
			for _, imp := range byPath[q].Imports {
				visit(imp, q)
			}
		}
		for d := range parent {
			to := rel(d)
			r := broken(from, to)
			if r == nil {
				continue
			}
			var via []string
			reported := false
			for q := parent[d]; q != "" && !reported; q = parent[q] {
				qi, _ := importerOf(byPath[q])
				reported = broken(qi, to) != nil
				via = append(via, rel(q))
			}
			if reported {
				continue
			}
			slices.Reverse(via)
			v := violation{mod: mod, from: from, to: to, via: via, rule: r}
			key := [3]string{fmt.Sprint(from.path, from.test), to, r.name}
			if old, ok := found[key]; !ok || len(via) < len(old.via) {
				found[key] = v
			}
		}
	}
	// A package's tests import what the package does: its own violation
	// covers theirs.
	out := make([]violation, 0, len(found))
	for _, v := range found {
		if _, dup := found[[3]string{fmt.Sprint(v.from.path, false), v.to, v.rule.name}]; v.from.test && dup {
			continue
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}
