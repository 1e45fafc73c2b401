package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFileBytes caps the size of a configuration file.
const MaxFileBytes = 1 << 20

// Load reads, checks and returns the configuration in the YAML file at
// path, on top of Default. Relative paths in it are taken relative to the
// file's directory. Every problem found is reported, each as a
// *FieldError naming the file, line and key; errors.Is(err, ErrInvalid)
// holds for all of them.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config: reading %s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, &FieldError{File: path, Msg: fmt.Sprintf("file larger than %d bytes", MaxFileBytes)}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(data, path, filepath.Dir(abs))
}

// Parse is Load for YAML already in memory; relative paths are taken
// relative to dir.
func Parse(data []byte, dir string) (*Config, error) {
	return parse(data, "", dir)
}

func parse(data []byte, file, dir string) (*Config, error) {
	src := &source{file: file, lines: map[string]int{}}
	c := defaults()
	c.src = src
	root, err := document(data, src)
	if err != nil {
		return nil, err
	}
	d := walker{src: src}
	if root != nil {
		d.structure(root, reflect.ValueOf(c).Elem(), "")
	}
	c.resolve(dir)
	c.derive()
	// A setting that failed to decode kept its default, so validating
	// the rest is meaningful: report every problem at once.
	if err := errors.Join(append(d.errs, c.Validate())...); err != nil {
		return nil, err
	}
	return c, nil
}

// document parses data into the single YAML document's top mapping; nil
// for an empty document.
func document(data []byte, src *source) (*yaml.Node, error) {
	fail := func(format string, args ...any) error {
		// yaml's messages start "line N: "; make that the error's line.
		e := &FieldError{File: src.file, Msg: fmt.Sprintf(format, args...)}
		if rest, ok := strings.CutPrefix(e.Msg, "line "); ok {
			if n, msg, ok := strings.Cut(rest, ": "); ok {
				if line, err := strconv.Atoi(n); err == nil {
					e.Line, e.Msg = line, msg
				}
			}
		}
		return e
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fail("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return nil, fail("%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return nil, &FieldError{File: src.file, Line: line, Msg: "more than one YAML document; the configuration is one mapping"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, nil
		}
		root = root.Content[0]
	}
	if isNull(root) {
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, &FieldError{File: src.file, Line: root.Line, Msg: "the top level must be a mapping of settings (key: value)"}
	}
	return root, nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// walker decodes YAML nodes into the configuration's structs, strictly,
// collecting an error per bad setting.
type walker struct {
	src  *source
	errs []error
}

func (w *walker) fail(n *yaml.Node, key, format string, args ...any) {
	w.errs = append(w.errs, &FieldError{File: w.src.file, Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// yamlKeys lists the YAML keys of struct type t, with their field index.
func yamlKeys(t reflect.Type) (keys []string, index map[string]int) {
	index = map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || tag == "" || tag == "-" {
			continue
		}
		keys = append(keys, tag)
		index[tag] = i
	}
	return keys, index
}

// structure decodes mapping n into struct v.
func (w *walker) structure(n *yaml.Node, v reflect.Value, prefix string) {
	keys, index := yamlKeys(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if kn.Kind != yaml.ScalarNode || isNull(kn) {
			w.fail(kn, prefix, "keys must be plain strings")
			continue
		}
		key := kn.Value
		path := join(prefix, key)
		if line, dup := seen[key]; dup {
			w.fail(kn, path, "set twice (first on line %d)", line)
			continue
		}
		seen[key] = kn.Line
		w.src.lines[path] = kn.Line
		fi, ok := index[key]
		if !ok {
			w.fail(kn, path, "%s", unknownKey(key, keys))
			continue
		}
		w.value(vn, v.Field(fi), path)
	}
}

func unknownKey(key string, known []string) string {
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return fmt.Sprintf("unknown key; did you mean %q? (keys are case-sensitive)", k)
		}
	}
	return fmt.Sprintf("unknown key (known here: %s)", strings.Join(known, ", "))
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// value decodes n into v, a settable field.
func (w *walker) value(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		w.fail(n, path, "YAML anchors and aliases are not supported in the configuration")
		return
	}
	if isNull(n) {
		return // keep the default
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			w.fail(n, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "must be a mapping of settings (key: value), got %s", describe(n))
			return
		}
		w.structure(n, v, path)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			w.fail(n, path, "must be a string, got %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int:
		var x int64
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&x) != nil {
			w.fail(n, path, "must be an integer, got %s", describe(n))
			return
		}
		if x < math.MinInt32 || x > math.MaxInt32 {
			w.fail(n, path, "%d is out of range", x)
			return
		}
		v.SetInt(x)
	case reflect.Float64:
		var x float64
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&x) != nil {
			w.fail(n, path, "must be a number, got %s", describe(n))
			return
		}
		v.SetFloat(x)
	case reflect.Slice: // []string
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "must be a list, got %s", describe(n))
			return
		}
		list := reflect.MakeSlice(v.Type(), 0, len(n.Content))
		for i, e := range n.Content {
			ep := path + "[" + strconv.Itoa(i) + "]"
			w.src.lines[ep] = e.Line
			if e.Kind != yaml.ScalarNode || isNull(e) {
				w.fail(e, ep, "must be a string, got %s", describe(e))
				continue
			}
			list = reflect.Append(list, reflect.ValueOf(e.Value))
		}
		v.Set(list)
	case reflect.Map: // map[string]string
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "must be a mapping (key: value), got %s", describe(n))
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			if kn.Kind != yaml.ScalarNode || isNull(kn) {
				w.fail(kn, path, "keys must be plain strings")
				continue
			}
			ep := path + "." + kn.Value
			w.src.lines[ep] = kn.Line
			if line, dup := seen[kn.Value]; dup {
				w.fail(kn, ep, "set twice (first on line %d)", line)
				continue
			}
			seen[kn.Value] = kn.Line
			if vn.Kind != yaml.ScalarNode {
				w.fail(vn, ep, "must be a string, got %s", describe(vn))
				continue
			}
			val := vn.Value
			if isNull(vn) {
				val = ""
			}
			m.SetMapIndex(reflect.ValueOf(kn.Value), reflect.ValueOf(val))
		}
		v.Set(m)
	default:
		panic("config: no decoder for " + v.Type().String())
	}
}

// describe names what a node holds, for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	switch n.Tag {
	case "!!str":
		return strconv.Quote(v)
	case "!!null":
		return "null"
	}
	return v
}

// resolve makes the relative paths set in a file absolute, against dir.
func (c *Config) resolve(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) && dir != "" {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.DataDir)
	for i := range c.Trust.PublicKeys {
		abs(&c.Trust.PublicKeys[i])
	}
	abs(&c.API.Socket)
	abs(&c.Runtime.ORTLibrary)
	abs(&c.WASM.CacheDir)
	abs(&c.Uplink.PasswordFile)
	abs(&c.Uplink.TLS.CA)
	abs(&c.Uplink.TLS.Cert)
	abs(&c.Uplink.TLS.Key)
}
