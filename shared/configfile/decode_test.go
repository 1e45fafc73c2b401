package configfile

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// testConfig has a setting of every kind Decode reads.
type testConfig struct {
	Name    string            `yaml:"name"`
	Enabled bool              `yaml:"enabled"`
	Count   int               `yaml:"count"`
	Small   int8              `yaml:"small"`
	Mode    uint16            `yaml:"mode"`
	Ratio   float64           `yaml:"ratio"`
	Size    ByteSize          `yaml:"size"`
	Every   Duration          `yaml:"every"`
	Perm    FileMode          `yaml:"perm"`
	Tags    []string          `yaml:"tags"`
	Labels  map[string]string `yaml:"labels"`
	Server  server            `yaml:"server"`
	TLS     *server           `yaml:"tls"`
	Items   []item            `yaml:"items" must:"a list of items"`
	Max     *float64          `yaml:"max"`
	Hidden  string            `yaml:"-"`
}

type server struct {
	Listen string `yaml:"listen"`
	Port   int    `yaml:"port"`
}

type item struct {
	Name string `yaml:"name"`
	Size *int   `yaml:"size"`
}

func decode(t *testing.T, doc string, o Options) (*testConfig, *Source, string) {
	t.Helper()
	c := &testConfig{Name: "default", Count: 7}
	if o.File == "" {
		o.File = "c.yaml"
	}
	src, errs := Decode([]byte(doc), c, o)
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	return c, src, strings.Join(msgs, "\n")
}

func TestDecode(t *testing.T) {
	doc := `name: n
enabled: true
count: 0x10
small: -5
mode: 0o17
ratio: 1e-2
size: 64 MiB
every: 1.5d
perm: 0640
tags: [a, 8080, ~]
labels: {site: berlin, empty: ~}
server:
  listen: 127.0.0.1:1
tls: {port: 8883}
items:
  - name: x
    size: 3
  - name: y
max: .inf
`
	c, src, errs := decode(t, doc, Options{})
	if errs != "" {
		t.Fatal(errs)
	}
	want := &testConfig{Name: "n", Enabled: true, Count: 16, Small: -5, Mode: 0o17, Ratio: 0.01, Size: 64 << 20, Every: Duration(36 * time.Hour),
		Perm: 0o640, Tags: []string{"a", "8080", ""}, Labels: map[string]string{"site": "berlin", "empty": ""}, Server: server{Listen: "127.0.0.1:1"},
		TLS: &server{Port: 8883}, Items: []item{{Name: "x", Size: new(3)}, {Name: "y"}}, Max: new(math.Inf(1))}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", c, want)
	}
	if got := strings.Join(src.Paths(), " "); got != "name enabled count small mode ratio size every perm tags tags[0] tags[1] tags[2] labels labels.site labels.empty server server.listen tls tls.port items items[0] items[0].name items[0].size items[1] items[1].name max" {
		t.Errorf("paths %s", got)
	}
	// A single value is placed at the value, anything else at its key.
	for path, want := range map[string]Pos{"name": {1, 7}, "server": {12, 1}, "server.listen": {13, 11}, "items[1]": {18, 5}, "items[1].name": {18, 11}, "tags[1]": {10, 11}} {
		if got := src.Pos(path); got != want {
			t.Errorf("Pos(%s) = %v, want %v", path, got, want)
		}
	}
	// A key the document does not set is placed at the nearest enclosing
	// one; one outside every key it sets, nowhere.
	if got := src.Pos("server.port"); got != (Pos{12, 1}) {
		t.Errorf("Pos(server.port) = %v", got)
	}
	if got := src.Pos("nothing.here"); got != (Pos{}) {
		t.Errorf("Pos(nothing.here) = %v", got)
	}
}

func TestDecodeKeepsDefaults(t *testing.T) {
	for _, doc := range []string{"", "# only a comment\n", "---\n", "~\n", "name: ~\nserver: ~\n"} {
		c, src, errs := decode(t, doc, Options{})
		if errs != "" || c.Name != "default" || c.Count != 7 || c.TLS != nil {
			t.Errorf("%q: %+v %s", doc, c, errs)
		}
		if doc != "name: ~\nserver: ~\n" && !src.Empty() {
			t.Errorf("%q is not empty", doc)
		}
	}
}

func TestDecodeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string // each a line of the error
	}{
		{"unknown key", "server:\n  listn: x\n", []string{`c.yaml:2:3: server.listn: unknown key (known here: listen, port): did you mean "listen"?`}},
		{"unknown far from any", "bogus: 1\n", []string{`c.yaml:1:1: bogus: unknown key (known here: name, enabled, count, small, mode, ratio, size, every, perm, tags, labels, server, tls, items, max)`}},
		{"case", "Name: x\n", []string{`c.yaml:1:1: Name: unknown key; did you mean "name"? (keys are case-sensitive)`}},
		{"hidden", "Hidden: x\n", []string{`Hidden: unknown key`}},
		{"twice", "name: a\nname: b\n", []string{`c.yaml:2:1: name: set twice (first on line 1)`}},
		{"twice in a mapping", "labels:\n  a: 1\n  a: 2\n", []string{`c.yaml:3:3: labels.a: set twice (first on line 2)`}},
		{"bool", "enabled: yes\n", []string{`c.yaml:1:10: enabled: must be true or false, got "yes"`}},
		{"int", "count: 1.5\n", []string{`c.yaml:1:8: count: must be a whole number, got 1.5`}},
		{"int text", "count: many\n", []string{`count: must be a whole number, got "many"`}},
		{"int range", "small: 200\n", []string{`c.yaml:1:8: small: 200 is out of range (-128 to 127)`}},
		{"int 32 bits", "count: 4294967296\n", []string{`count: 4294967296 is out of range (-2147483648 to 2147483647)`}},
		{"uint negative", "mode: -1\n", []string{`mode: must be a whole number, got -1`}},
		{"float", "ratio: often\n", []string{`c.yaml:1:8: ratio: must be a number, got "often"`}},
		{"size", "size: lots\n", []string{`c.yaml:1:7: size: must be a whole number of bytes with an optional unit`}},
		{"duration", "every: 5\n", []string{`every: must be a duration with a unit such as "2s" or "500ms", got "5"`}},
		{"mode", "perm: '0999'\n", []string{`perm: must be octal permissions from 0000 to 0777`}},
		{"text from a list", "size: [1]\n", []string{`c.yaml:1:7: size: must be a single value, got a list`}},
		{"list", "tags: a\n", []string{`c.yaml:1:7: tags: must be a list, got "a"`}},
		{"must tag", "items: {name: x}\n", []string{`c.yaml:1:8: items: must be a list of items, got a mapping`}},
		{"list item", "tags: [a, {b: 1}]\n", []string{`c.yaml:1:11: tags[1]: must be a string, got a mapping`}},
		{"mapping", "server: 8080\n", []string{`c.yaml:1:9: server: must be a mapping (key: value), got 8080`}},
		{"map", "labels: [a]\n", []string{`labels: must be a mapping (key: value), got a list`}},
		{"map value", "labels:\n  site: [a]\n", []string{`c.yaml:2:9: labels.site: must be a string, got a list`}},
		{"key kind", "? [a]\n: 1\n", []string{`c.yaml:1:3: keys must be plain strings, got a list`}},
		{"null key", "~: 1\n", []string{`keys must be plain strings, got null`}},
		{"anchor", "server: &s\n  port: 1\ntls: *s\n", []string{`c.yaml:1:9: server: YAML anchors and aliases are not supported`, `c.yaml:3:6: tls: YAML anchors and aliases are not supported`}},
		{"anchor on a key", "&k name: x\n", []string{`keys must be plain strings`}},
		{"anchor on the top", "&top\nname: x\n", []string{`YAML anchors and aliases are not supported`}},
		{"merge", "server: {port: 1}\ntls:\n  <<: {port: 2}\n", []string{`tls.<<: unknown key`}},
		{"two documents", "name: a\n---\nname: b\n", []string{`c.yaml:2:1: more than one YAML document in the file`}},
		{"second document broken", "name: a\n---\n[\n", []string{`c.yaml:3: not valid YAML: did not find expected node content`}},
		{"not a mapping", "- a\n", []string{`c.yaml:1:1: the top level must be a mapping (key: value), got a list`}},
		{"a scalar", "hello\n", []string{`c.yaml:1:1: the top level must be a mapping (key: value), got "hello"`}},
		{"syntax", "server:\n  listen: [\n", []string{`c.yaml:2: not valid YAML: did not find expected node content`}},
		{"tabs", "server:\n\tlisten: x\n", []string{`c.yaml:2: not valid YAML: found character that cannot start any token`}},
		{"everything at once", "bogus: 1\ncount: x\nserver:\n  port: y\ntags: 1\n", []string{`c.yaml:1:1: bogus: unknown key`, `c.yaml:2:8: count: must be`, `c.yaml:4:9: server.port: must be`, `c.yaml:5:7: tags: must be a list`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, errs := decode(t, tc.doc, Options{})
			if errs == "" {
				t.Fatal("decoded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("errors\n%s\ndo not contain\n%s", errs, w)
				}
			}
		})
	}
}

func TestDecodeSizeCap(t *testing.T) {
	doc := "name: " + strings.Repeat("x", 100) + "\n"
	_, src, errs := decode(t, doc, Options{MaxBytes: 50})
	if src != nil || errs != "c.yaml: file larger than 50 bytes" {
		t.Errorf("%v %q", src, errs)
	}
	p := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	words := DefaultWords()
	words.Document = "spec"
	if _, err := ReadFile(p, Options{MaxBytes: 50, Words: &words}); err == nil || err.Error() != p+": spec larger than 50 bytes" {
		t.Errorf("ReadFile: %v", err)
	}
	if b, err := ReadFile(p, Options{}); err != nil || string(b) != doc {
		t.Errorf("ReadFile: %q %v", b, err)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "none"), Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFile of a missing file: %v", err)
	}
}

func TestWords(t *testing.T) {
	w := DefaultWords()
	w.Key, w.Root, w.Got, w.GotNode, w.Int, w.Syntax = "field", "the spec", "got %s", "not %s", "an integer", ""
	o := Options{Words: &w}
	for doc, want := range map[string]string{
		"Name: x\n":     `Name: unknown field; did you mean "name"? (fields are case-sensitive)`,
		"tags: {a: 1}":  `tags: must be a list, not a mapping`,
		"count: x":      `count: must be an integer, got "x"`,
		"- 1":           `the spec must be a mapping (key: value), not a list`,
		"name: [\n":     `c.yaml:1: did not find expected node content`,
		"name: a\n---":  `more than one YAML document in the file`,
		"labels: 1\n":   `labels: must be a mapping (key: value), got 1`,
		"server: [1]\n": `server: must be a mapping (key: value), not a list`,
	} {
		if _, _, errs := decode(t, doc, o); !strings.Contains(errs, want) {
			t.Errorf("%q: %s\nwant %s", doc, errs, want)
		}
	}
}

func TestJSONTag(t *testing.T) {
	var v struct {
		Waves []struct {
			Percent *float64 `json:"percent,omitempty"`
		} `json:"waves"`
		Ignored string `yaml:"ignored"`
	}
	src, errs := Decode([]byte(`{"waves": [{"percent": 5}, {"percnt": 1}], "ignored": 1}`), &v, Options{Tag: "json"})
	if len(errs) != 2 || errs[0].Error() != `1:29: waves[1].percnt: unknown key (known here: percent): did you mean "percent"?` || !strings.Contains(errs[1].Error(), "1:44: ignored: unknown key") {
		t.Errorf("errors %v", errs)
	}
	if *v.Waves[0].Percent != 5 || !src.Has("waves[1]") {
		t.Errorf("decoded %+v", v)
	}
}

// TestCheck: the caller's checks run in the same pass, their problems
// placed where the document set the keys they name.
func TestCheck(t *testing.T) {
	doc := "name: n\ncount: bad\nserver:\n  listen: x\nitems:\n  - name: a\n    size: 0\n"
	var ran bool
	check := func(c *testConfig) func(r *Report) {
		return func(r *Report) {
			ran = true
			if c.Server.Listen == "x" {
				r.Add("server.listen", "not an address")
			}
			r.Add("server.port", "required") // not set: placed at server
			r.Add("count", "must be positive")
			r.Add("items[0].size", "must be at least 1")
			r.Add("tls", "required") // nowhere
		}
	}
	c := &testConfig{}
	src, errs := Decode([]byte(doc), c, Options{File: "c.yaml", Check: check(c)})
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	want := []string{
		`c.yaml:2:8: count: must be a whole number, got "bad"`,
		`c.yaml:4:11: server.listen: not an address`,
		`c.yaml:3:1: server.port: required`,
		// count failed to decode: its check is left out.
		`c.yaml:7:11: items[0].size: must be at least 1`,
		`c.yaml: tls: required`,
	}
	if !ran || !reflect.DeepEqual(got, want) {
		t.Errorf("errors\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Later, after a flag set server.listen, a problem with it is not
	// placed in the file.
	src.Forget("server.listen")
	r := NewReport(src)
	r.Add("server.listen", "still bad")
	r.Add("items[0]", "whatever")
	if e := r.Errors(); e[0].Error() != "server.listen: still bad" || e[1].Error() != "c.yaml:6:5: items[0]: whatever" {
		t.Errorf("after Forget: %v", e)
	}
	// Without a document, nothing is placed.
	r = NewReport(nil)
	r.Add("a.b", "no")
	if e := r.Errors(); e[0].Error() != "a.b: no" {
		t.Errorf("no source: %v", e)
	}
	// The checks run for an empty document too, not for one that cannot
	// be read.
	ran = false
	if _, errs := Decode(nil, c, Options{Check: check(c)}); !ran || len(errs) == 0 {
		t.Errorf("empty document: ran %v, %v", ran, errs)
	}
	ran = false
	if _, errs := Decode([]byte("[1]"), c, Options{Check: check(c)}); ran || len(errs) != 1 {
		t.Errorf("a list: ran %v, %v", ran, errs)
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{File: "f.yaml", Line: 2, Column: 3, Path: "a.b", Msg: "bad"}, "f.yaml:2:3: a.b: bad"},
		{Error{File: "f.yaml", Line: 2, Path: "a.b", Msg: "bad"}, "f.yaml:2: a.b: bad"},
		{Error{Line: 2, Column: 3, Path: "a.b", Msg: "bad"}, "2:3: a.b: bad"},
		{Error{File: "f.yaml", Msg: "too big"}, "f.yaml: too big"},
		{Error{Path: "a", Msg: "bad"}, "a: bad"},
		{Error{Msg: "bad"}, "bad"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.e, got, tc.want)
		}
	}
}

func TestSet(t *testing.T) {
	var c testConfig
	for k, v := range map[string]string{
		"name": "", "enabled": "true", "count": "12", "size": "2GiB", "every": "7d", "tags": "a, b,,c",
		"labels.site": "x", "tls.listen": ":8883", "max": "0.5", "perm": "600",
	} {
		if err := Set(&c, k, v, Options{}); err != nil {
			t.Fatalf("Set(%s, %q): %v", k, v, err)
		}
	}
	if !c.Enabled || c.Count != 12 || c.Size != 2<<30 || c.Every.D() != 7*24*time.Hour || strings.Join(c.Tags, "|") != "a|b|c" ||
		c.Labels["site"] != "x" || c.TLS.Listen != ":8883" || *c.Max != 0.5 || c.Perm != 0o600 {
		t.Errorf("after Set: %+v", c)
	}
	for k, want := range map[string]string{
		"nmae":            `nmae: unknown key (known here: name, enabled`,
		"server":          "server: is a section; set one of its keys",
		"labels":          "labels: is a section",
		"server.lisen.x":  `server.lisen: unknown key (known here: listen, port): did you mean "listen"?`,
		"name.x":          "name.x: unknown key",
		"labels.a.b":      "labels.a: unknown key",
		"count":           `count: must be a whole number, got "x y"`,
		"enabled":         `enabled: must be true or false, got "x y"`,
		"every":           "every: must be a duration",
		"size":            "size: must be a whole number of bytes",
		"server.port.bad": "server.port.bad: unknown key",
	} {
		if err := Set(&c, k, "x y", Options{}); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Set(%s) = %v, want %q", k, err, want)
		}
	}
	if err := Set(&c, "count", "", Options{}); err == nil || err.Error() != `count: must be a whole number, got ""` {
		t.Errorf("Set(count, \"\") = %v", err)
	}
	if c.Count != 12 {
		t.Errorf("a refused Set changed the value: %d", c.Count)
	}
}

func TestKeys(t *testing.T) {
	c := testConfig{Name: "d", Server: server{Port: 80}}
	var paths []string
	for _, k := range Keys(&c, "") {
		p := k.Path
		if k.Section {
			p += "/"
		}
		if k.Value.IsValid() && !k.Value.IsZero() && !k.Section {
			p += "=" + fmt.Sprint(k.Value.Interface())
		}
		paths = append(paths, p)
	}
	want := "name=d enabled count small mode ratio size every perm tags labels server/ server.listen server.port=80 tls/ tls.listen tls.port items/ items[].name items[].size max"
	if got := strings.Join(paths, " "); got != want {
		t.Errorf("Keys:\n%s\nwant\n%s", got, want)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("name: n\ncount: 3\nserver: {listen: x, port: 1}\nitems: [{name: a, size: 2}]\nlabels: {a: b}\n"))
	f.Add([]byte("size: 64MiB\nevery: 1.5d\nperm: '0640'\ntags: [a, ~]\nmax: .nan\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("name: a\n---\nname: b\n"))
	f.Add([]byte("? [a]\n: 1\nserver: 8080\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c testConfig
		src, errs := Decode(data, &c, Options{File: "fuzz.yaml", Check: func(r *Report) { r.Add("name", "checked") }})
		for _, e := range errs {
			if e.File != "fuzz.yaml" || e.Line < 0 || e.Column < 0 || e.Msg == "" {
				t.Fatalf("malformed error %+v", e)
			}
		}
		if src == nil {
			if len(errs) != 1 {
				t.Fatalf("a document that cannot be read has %d errors: %v", len(errs), errs)
			}
			return
		}
		for _, p := range src.Paths() {
			if pos := src.Pos(p); pos.Line < 1 || pos.Column < 1 {
				t.Fatalf("%s at %v", p, pos)
			}
		}
		if len(errs) > 1 || errs[0].Msg != "checked" {
			return
		}
		// What decoded without a problem survives a round trip through
		// YAML.
		out, err := yaml.Marshal(&c)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		var back testConfig
		if _, errs := Decode(out, &back, Options{}); len(errs) > 0 {
			t.Fatalf("re-decoding %q: %v\nfrom %q", out, errs, data)
		}
		if out2, _ := yaml.Marshal(&back); !bytes.Equal(out, out2) {
			t.Fatalf("round trip differs:\n%s\n%s", out, out2)
		}
	})
}
