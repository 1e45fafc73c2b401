package fleetd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// LoadConfig reads the YAML configuration file at path, strictly: an
// unknown key, a value of the wrong type or a second document is refused
// with the file, line and key named. Relative paths in the file are
// relative to its directory. The result is not validated yet (flags may
// still change it; New validates).
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrConfig, path, err)
	}
	if len(data) > MaxConfigBytes {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", ErrConfig, path, MaxConfigBytes)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return ParseConfig(data, path, filepath.Dir(abs))
}

// ParseConfig is LoadConfig for YAML in memory; file names it in errors
// and relative paths are taken relative to dir.
func ParseConfig(data []byte, file, dir string) (*Config, error) {
	c := &Config{}
	where := func(line int) string {
		if file == "" {
			return fmt.Sprintf("line %d", line)
		}
		return fmt.Sprintf("%s:%d", file, line)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return c, nil
		}
		return nil, fmt.Errorf("%w: %s: %s", ErrConfig, orStdin(file), strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s: more than one YAML document", ErrConfig, orStdin(file))
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return c, nil
	}
	w := &walker{where: where}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: %s: the top level must be a mapping (key: value)", ErrConfig, where(root.Line))
	}
	w.structure(root, reflect.ValueOf(c).Elem(), "")
	if err := errors.Join(w.errs...); err != nil {
		return nil, err
	}
	c.resolvePaths(dir)
	return c, nil
}

func orStdin(file string) string {
	if file == "" {
		return "config"
	}
	return file
}

// walker decodes YAML nodes into the configuration structs, collecting an
// error per bad key.
type walker struct {
	where func(line int) string
	errs  []error
}

func (w *walker) fail(n *yaml.Node, key, format string, args ...any) {
	w.errs = append(w.errs, fmt.Errorf("%w: %s: %s: %s", ErrConfig, w.where(n.Line), key, fmt.Sprintf(format, args...)))
}

// yamlFields maps the YAML keys of struct type t to field indexes.
func yamlFields(t reflect.Type) (keys []string, index map[string]int) {
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

func unknownKey(key string, known []string) string {
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return fmt.Sprintf("unknown key; did you mean %q? (keys are case-sensitive)", k)
		}
	}
	return fmt.Sprintf("unknown key (known here: %s)", strings.Join(known, ", "))
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func (w *walker) structure(n *yaml.Node, v reflect.Value, prefix string) {
	keys, index := yamlFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if kn.Kind != yaml.ScalarNode {
			w.fail(kn, prefix, "keys must be plain strings")
			continue
		}
		path := join(prefix, kn.Value)
		if seen[kn.Value] {
			w.fail(kn, path, "set twice")
			continue
		}
		seen[kn.Value] = true
		fi, ok := index[kn.Value]
		if !ok {
			w.fail(kn, path, "%s", unknownKey(kn.Value, keys))
			continue
		}
		w.value(vn, v.Field(fi), path)
	}
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (w *walker) value(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		w.fail(n, path, "YAML anchors and aliases are not supported here")
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // keep the default
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			w.fail(n, path, "%s", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		w.value(n, v.Elem(), path)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "must be a mapping (key: value)")
			return
		}
		w.structure(n, v, path)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "must be a mapping of name: value")
			return
		}
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			ev := reflect.New(v.Type().Elem()).Elem()
			if kn.Kind != yaml.ScalarNode || vn.Kind != yaml.ScalarNode {
				w.fail(kn, path, "must be a mapping of name: value")
				continue
			}
			w.value(vn, ev, join(path, kn.Value))
			m.SetMapIndex(reflect.ValueOf(kn.Value), ev)
		}
		v.Set(m)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "must be a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, en := range n.Content {
			w.value(en, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.String, reflect.Bool, reflect.Int:
		if n.Kind != yaml.ScalarNode {
			w.fail(n, path, "must be a %s", kindName(v.Kind()))
			return
		}
		if v.Kind() == reflect.String && n.Tag != "!!str" {
			// An unquoted 8080 or true is meant as text here.
			v.SetString(n.Value)
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			w.fail(n, path, "must be a %s, got %q", kindName(v.Kind()), n.Value)
		}
	default:
		w.fail(n, path, "unsupported setting type %s", v.Type())
	}
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "boolean (true or false)"
	case reflect.Int:
		return "whole number"
	default:
		return "string"
	}
}

// Set sets one key (e.g. "http.listen", "auth.enrolTokenFiles.ci",
// "registry.trustedKeys" with comma-separated values) from a string, as a
// command-line flag does. The error names the key.
func (c *Config) Set(key, value string) error {
	parts := strings.Split(key, ".")
	v := reflect.ValueOf(c).Elem()
	for i, p := range parts {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		path := strings.Join(parts[:i+1], ".")
		switch v.Kind() {
		case reflect.Struct:
			keys, index := yamlFields(v.Type())
			fi, ok := index[p]
			if !ok {
				return fmt.Errorf("%w: %s: %s", ErrConfig, path, unknownKey(p, keys))
			}
			v = v.Field(fi)
		case reflect.Map:
			if i != len(parts)-1 {
				return fmt.Errorf("%w: %s: unknown key", ErrConfig, path)
			}
			if v.IsNil() {
				v.Set(reflect.MakeMap(v.Type()))
			}
			v.SetMapIndex(reflect.ValueOf(p), reflect.ValueOf(value))
			return nil
		default:
			return fmt.Errorf("%w: %s: unknown key", ErrConfig, path)
		}
	}
	switch {
	case v.Kind() == reflect.Slice:
		var items []string
		for s := range strings.SplitSeq(value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		v.Set(reflect.ValueOf(items))
		return nil
	case v.Kind() == reflect.String:
		v.SetString(value)
		return nil
	case v.Kind() == reflect.Struct || v.Kind() == reflect.Map:
		return fmt.Errorf("%w: %s: is a section; set one of its keys", ErrConfig, key)
	}
	n := &yaml.Node{Kind: yaml.ScalarNode, Value: value, Line: 0}
	n.Tag = map[reflect.Kind]string{reflect.Bool: "!!bool", reflect.Int: "!!int"}[v.Kind()]
	w := &walker{where: func(int) string { return "flag" }}
	w.value(n, v, key)
	return errors.Join(w.errs...)
}

// resolvePaths makes the file paths set in a configuration file absolute,
// relative to the file's directory dir.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for _, p := range []*string{
		&c.DataDir, &c.HTTP.CertFile, &c.HTTP.KeyFile, &c.Auth.OperatorTokenFile,
		&c.Broker.PasswordFile, &c.Broker.CAFile, &c.Broker.Mosquitto.PasswordFile, &c.Broker.Mosquitto.PIDFile,
		&c.Registry.Dir, &c.Registry.URLKeyFile, &c.Registry.S3.CredentialsFile,
	} {
		abs(p)
	}
	if t := c.Broker.TLS; t != nil {
		abs(&t.CertFile)
		abs(&t.KeyFile)
		abs(&t.ClientCAFile)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Auth.EnrolTokenFiles)) {
		p := c.Auth.EnrolTokenFiles[name]
		abs(&p)
		c.Auth.EnrolTokenFiles[name] = p
	}
	for i := range c.Registry.TrustedKeys {
		abs(&c.Registry.TrustedKeys[i])
	}
}
