package configref

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/shared/configfile"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

const (
	module    = "github.com/edgefleet/edgefleet"
	reference = "docs/config-reference.md"
)

// A section of the reference: one configuration document's keys.
type section struct {
	title, intro string
	value        any    // holding the defaults
	tag          string // naming the keys
}

func sections() []section {
	agentDefaults := config.Default()
	agentDefaults.DeviceID = "" // the hostname: the field's comment says so
	return []section{
		{
			title: "edge-agent configuration",
			intro: "`edge-agent --config FILE` (default `/etc/edge-agent/config.yaml`; see [agent.md](agent.md#configuration)). " +
				"Go type `agent/config.Config`; the defaults are `config.Default()`'s. " +
				"A relative path is relative to the file's directory.",
			value: agentDefaults, tag: "yaml",
		},
		{
			title: "fleetd configuration",
			intro: "`fleetd --config FILE`, and `--set KEY=VALUE` for any key (see [operations.md](operations.md#configuration)). " +
				"Go type `controlplane/fleetd.Config`; the defaults are `fleetd.Defaults()`'s (paths under `dataDir` follow it). " +
				"A relative path is relative to the file's directory (to the working directory in a flag).",
			value: fleetd.Defaults(), tag: "yaml",
		},
		{
			title: "Rollout and experiment spec",
			intro: "`fleetctl rollout create -f SPEC.yaml` (YAML or JSON; see [rollouts.md](rollouts.md)). " +
				"Go type `controlplane/rollout.Spec`; the defaults are what `Spec.Normalize` fills in; " +
				"`[]` stands for each item of a list.",
			value: (&rollout.Spec{}).Normalize(), tag: "json",
		},
	}
}

// TestConfigReference keeps docs/config-reference.md what the code
// generates.
func TestConfigReference(t *testing.T) {
	root := testenv.Root(t)
	docs := newDocs(t, root)
	got := render(t, docs)
	testenv.Golden(t, filepath.Join(root, reference), got)
}

// TestEveryKeyDocumented: every key has a description (a doc comment on
// its field, or on the type of a section).
func TestEveryKeyDocumented(t *testing.T) {
	docs := newDocs(t, testenv.Root(t))
	for _, s := range sections() {
		for _, k := range configfile.Keys(s.value, s.tag) {
			if docs.describe(k) == "" {
				t.Errorf("%s: %s (%s.%s) has no doc comment", s.title, k.Path, k.Owner, k.Field.Name)
			}
		}
	}
}

func render(t *testing.T, docs *docs) []byte {
	var b bytes.Buffer
	b.WriteString(`# Configuration reference

<!-- Generated from the Go structs and their field comments by
     go test ./testbed/configref -run TestConfigReference -update
     (or go generate ./testbed/configref); TestConfigReference fails when
     this file and the code differ. Edit the comments, not this file. -->

Every key of the three documents an operator writes. All three are read
the same way (` + "`shared/configfile`" + `): strictly, with every problem reported at
once as ` + "`FILE:LINE:COLUMN: key.path: message`" + ` — an unknown key (with the keys
known there and a did-you-mean), a value of the wrong kind, a key set
twice, YAML anchors and aliases, a second document and a file over 1 MiB
are refused, and so is a value the program's own checks refuse, placed at
its key.

Units: a **size** is a whole number of bytes or one with a unit, ` + "`64MiB`" + `,
` + "`512 KiB`" + `, ` + "`1GB`" + ` (KB, MB, GB, TB are powers of 1000, KiB, MiB, GiB, TiB
powers of 1024; case-insensitive). A **duration** is a number with a unit,
` + "`500ms`" + `, ` + "`90s`" + `, ` + "`1h30m`" + `, ` + "`7d`" + ` (ns, us, ms, s, m, h; d for days). An **octal
mode** is permission bits in octal, ` + "`\"0660\"`" + `. A **percentage** is ` + "`80%`" + `.
A key left out, or set to null (` + "`~`" + `), keeps its default.
`)
	for _, s := range sections() {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", s.title, s.intro)
		b.WriteString("| key | type | default | description |\n|---|---|---|---|\n")
		for _, k := range configfile.Keys(s.value, s.tag) {
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", k.Path, typeName(k.Type), value(k), cell(docs.describe(k)))
		}
	}
	return b.Bytes()
}

// typeName says what a key's value is, in the reference's words.
func typeName(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[configfile.ByteSize]():
		return "size"
	case reflect.TypeFor[configfile.Duration]():
		return "duration"
	case reflect.TypeFor[configfile.FileMode]():
		return "octal mode"
	case reflect.TypeFor[rollout.Quota]():
		return "count or percentage"
	case reflect.TypeFor[rollout.ClockTime]():
		return "time of day (`HH:MM`, UTC)"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Struct:
		return "mapping"
	case reflect.Slice:
		e := t.Elem()
		for e.Kind() == reflect.Pointer {
			e = e.Elem()
		}
		if e.Kind() == reflect.Struct && !configfile.IsText(e) {
			return "list of mappings"
		}
		return "list of " + plural(typeName(e))
	case reflect.Map:
		return "mapping of " + plural(typeName(t.Elem()))
	}
	return t.String()
}

func plural(s string) string {
	if strings.HasSuffix(s, ")") {
		return s
	}
	return s + "s"
}

// value is a key's default, as a document would write it; "—" for none.
func value(k configfile.Key) string {
	v := k.Value
	if !v.IsValid() || k.Section {
		return "—"
	}
	switch x := v.Interface().(type) {
	case configfile.Duration:
		return "`" + shortDuration(x.D()) + "`"
	case fmt.Stringer:
		if v.Kind() == reflect.String && v.Len() == 0 {
			return "—"
		}
		return "`" + x.String() + "`"
	}
	switch v.Kind() {
	case reflect.String:
		if v.Len() == 0 {
			return "—"
		}
		return "`" + v.String() + "`"
	case reflect.Bool:
		return "`" + strconv.FormatBool(v.Bool()) + "`"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "`" + strconv.FormatInt(v.Int(), 10) + "`"
	case reflect.Float32, reflect.Float64:
		return "`" + strconv.FormatFloat(v.Float(), 'g', -1, 64) + "`"
	case reflect.Slice:
		if v.Len() == 0 {
			return "—"
		}
		items := make([]string, v.Len())
		for i := range items {
			items[i] = fmt.Sprint(v.Index(i).Interface())
		}
		return "`[" + strings.Join(items, ", ") + "]`"
	case reflect.Map:
		if v.Len() == 0 {
			return "—"
		}
		var items []string
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, key := range keys {
			items = append(items, key.String()+": "+fmt.Sprint(v.MapIndex(key).Interface()))
		}
		return "`{" + strings.Join(items, ", ") + "}`"
	}
	return "`" + fmt.Sprint(v.Interface()) + "`"
}

// shortDuration writes d as an operator would: 7d, 1h, 1m30s.
func shortDuration(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// cell makes text fit in a table cell.
func cell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}

// docs are the doc comments of the configuration packages' struct types
// and fields.
type docs struct {
	types  map[string]string            // "pkgpath.Type" -> doc
	fields map[string]map[string]string // "pkgpath.Type" -> field -> doc
}

func newDocs(t *testing.T, root string) *docs {
	t.Helper()
	d := &docs{types: map[string]string{}, fields: map[string]map[string]string{}}
	seen := map[string]bool{}
	for _, s := range sections() {
		for _, k := range configfile.Keys(s.value, s.tag) {
			for _, pkg := range []string{k.Owner.PkgPath(), k.Type.PkgPath()} {
				if pkg == "" || seen[pkg] || !strings.HasPrefix(pkg, module+"/") {
					continue
				}
				seen[pkg] = true
				d.parse(t, pkg, filepath.Join(root, strings.TrimPrefix(pkg, module+"/")))
			}
		}
	}
	return d
}

func (d *docs) parse(t *testing.T, pkg, dir string) {
	t.Helper()
	fset := token.NewFileSet()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			g, ok := decl.(*ast.GenDecl)
			if !ok || g.Tok != token.TYPE {
				continue
			}
			for _, spec := range g.Specs {
				ts := spec.(*ast.TypeSpec)
				key := pkg + "." + ts.Name.Name
				doc := ts.Doc.Text()
				if doc == "" && len(g.Specs) == 1 {
					doc = g.Doc.Text()
				}
				d.types[key] = flatten(doc)
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					continue
				}
				fields := map[string]string{}
				prev := ""
				for _, f := range st.Fields.List {
					doc := flatten(f.Doc.Text() + f.Comment.Text())
					for _, n := range f.Names {
						switch {
						case doc != "":
							fields[n.Name] = doc
						case mentions(prev, n.Name):
							// "IntraOpThreads and InterOpThreads size ...":
							// the comment above covers this field too.
							fields[n.Name] = prev
						}
					}
					if doc != "" {
						prev = doc
					}
				}
				d.fields[key] = fields
			}
		}
	}
}

// describe is a key's description: its field's doc comment, else (for a
// section) its type's, with the Go names of the struct's fields written
// as their keys ("Username and PasswordFile authenticate" becomes
// "`username` and `passwordFile` authenticate").
func (d *docs) describe(k configfile.Key) string {
	if s := d.fields[k.Owner.PkgPath()+"."+k.Owner.Name()][k.Field.Name]; s != "" {
		return keyNames(s, k.Owner, "", "")
	}
	if k.Section && k.Type.PkgPath() != "" {
		key := k.Path[strings.LastIndexAny(k.Path, ".]")+1:]
		return keyNames(d.types[k.Type.PkgPath()+"."+k.Type.Name()], k.Type, k.Type.Name(), key)
	}
	return ""
}

// keyNames writes the Go names of struct type t's fields in doc as their
// keys, and typeName (if doc starts with it) as key. A name in capitals
// only ("TLS") is a key only as the first word: elsewhere it is more
// likely the word.
func keyNames(doc string, t reflect.Type, typeName, key string) string {
	keys := map[string]string{}
	for _, k := range configfile.Keys(reflect.New(t).Interface(), "") {
		if !strings.ContainsAny(k.Path, ".[") {
			keys[k.Field.Name] = k.Path
		}
	}
	for _, k := range configfile.Keys(reflect.New(t).Interface(), "json") {
		if !strings.ContainsAny(k.Path, ".[") {
			keys[k.Field.Name] = k.Path
		}
	}
	var b strings.Builder
	first := true
	for doc != "" {
		i := strings.IndexFunc(doc, isWord)
		if i < 0 {
			b.WriteString(doc)
			break
		}
		b.WriteString(doc[:i])
		doc = doc[i:]
		j := 0
		for j < len(doc) && (isWord(rune(doc[j])) || doc[j] == '.' && j+1 < len(doc) && isWord(rune(doc[j+1]))) {
			j++
		}
		w := doc[:j]
		doc = doc[j:]
		switch k, ok := keys[w]; {
		case first && w == typeName && key != "":
			w = "`" + key + "`"
		case ok && (first || strings.ToUpper(w) != w):
			w = "`" + k + "`"
		}
		b.WriteString(w)
		first = false
	}
	return b.String()
}

func isWord(r rune) bool {
	return r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
}

// flatten joins a comment's lines into one paragraph.
func flatten(s string) string { return strings.Join(strings.Fields(s), " ") }

// mentions reports whether doc names the Go identifier name as a word.
func mentions(doc, name string) bool {
	for _, w := range strings.FieldsFunc(doc, func(r rune) bool { return !isWord(r) }) {
		if w == name {
			return true
		}
	}
	return false
}
