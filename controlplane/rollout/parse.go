package rollout

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxSpecBytes caps a spec document.
const MaxSpecBytes = 1 << 20

// ParseSpec reads a spec from YAML (JSON is YAML too), strictly: an
// unknown field, a value of the wrong type, a field set twice, anchors and
// aliases, and a second document are refused. Every problem is reported,
// each a *FieldError naming the field path and line (errors.Is(err,
// ErrInvalid) holds). ParseSpec checks types only; Validate checks values.
func ParseSpec(data []byte) (*Spec, error) {
	s, _, err := parse(data)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// CheckSpec is ParseSpec and Validate in one pass: a spec with both kinds
// of problem gets every one at once, each with its line. (Validate errors
// on a field that did not parse are left out: the parse error says it.)
func CheckSpec(data []byte) (*Spec, error) {
	s, lines, perr := parse(data)
	if s == nil {
		return nil, perr // not one YAML mapping: nothing to validate
	}
	verrs := fieldErrors(s.Validate())
	addLines(verrs, lines)
	bad := fieldErrors(perr)
	for _, fe := range verrs {
		if !related(fe.Path, bad) {
			bad = append(bad, fe)
		}
	}
	if len(bad) > 0 {
		return nil, joinFieldErrors(bad)
	}
	return s, nil
}

// parse decodes data into a Spec as far as it goes. A document-level
// problem (too large, not YAML, not one mapping) returns a nil spec;
// otherwise the spec holds every field that decoded, lines maps each
// field path to its line, and err joins the fields that did not.
func parse(data []byte) (s *Spec, lines map[string]int, err error) {
	if len(data) > MaxSpecBytes {
		return nil, nil, &FieldError{Msg: fmt.Sprintf("spec larger than %d bytes", MaxSpecBytes)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, &FieldError{Msg: "empty spec"}
		}
		return nil, nil, &FieldError{Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, nil, &FieldError{Msg: "more than one YAML document (one spec per file)"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, nil, &FieldError{Line: root.Line, Msg: "the spec must be a mapping (key: value)"}
	}
	s = &Spec{}
	w := walker{lines: map[string]int{}}
	w.value(root, reflect.ValueOf(s).Elem(), "")
	return s, w.lines, w.errs.err()
}

func joinFieldErrors(fes []*FieldError) error {
	errs := make([]error, len(fes))
	for i, fe := range fes {
		errs[i] = fe
	}
	return errors.Join(errs...)
}

// fieldErrors flattens err (an errors.Join of *FieldError) into its
// FieldErrors.
func fieldErrors(err error) []*FieldError {
	var out []*FieldError
	var fe *FieldError
	switch e := err.(type) {
	case nil:
	case interface{ Unwrap() []error }:
		for _, x := range e.Unwrap() {
			out = append(out, fieldErrors(x)...)
		}
	default:
		if errors.As(err, &fe) {
			out = append(out, fe)
		}
	}
	return out
}

// related reports whether path is one of bad's paths, inside one, or
// holds one.
func related(path string, bad []*FieldError) bool {
	for _, b := range bad {
		if b.Path == path || strings.HasPrefix(path, b.Path+".") || strings.HasPrefix(path, b.Path+"[") ||
			strings.HasPrefix(b.Path, path+".") || strings.HasPrefix(b.Path, path+"[") {
			return true
		}
	}
	return false
}

// scalar is implemented by the spec's own scalar types.
type scalar interface{ set(string) error }

var scalarType = reflect.TypeFor[scalar]()

// walker decodes YAML nodes into spec structs by their JSON field names,
// collecting a FieldError per problem.
type walker struct {
	errs  errorList
	lines map[string]int // path -> line, for Validate's errors
}

func (w *walker) fail(n *yaml.Node, path, format string, args ...any) {
	w.errs.add(path, n.Line, format, args...)
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// fields maps the JSON names of struct type t to field indexes.
func fields(t reflect.Type) (names []string, index map[string]int) {
	index = map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		names = append(names, name)
		index[name] = i
	}
	return names, index
}

func unknownField(key string, known []string) string {
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return fmt.Sprintf("unknown field; did you mean %q? (fields are case-sensitive)", k)
		}
	}
	return fmt.Sprintf("unknown field (known here: %s)", strings.Join(known, ", "))
}

func (w *walker) value(n *yaml.Node, v reflect.Value, path string) {
	w.lines[path] = n.Line
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		w.fail(n, path, "YAML anchors and aliases are not supported")
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // absent
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v = v.Elem()
	}
	if reflect.PointerTo(v.Type()).Implements(scalarType) {
		if n.Kind != yaml.ScalarNode {
			w.fail(n, path, "must be a single value, not a %s", nodeKind(n))
			return
		}
		if err := v.Addr().Interface().(scalar).set(n.Value); err != nil {
			w.fail(n, path, "%s", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "must be a mapping (key: value), not a %s", nodeKind(n))
			return
		}
		w.structure(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "must be a list, not a %s", nodeKind(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, en := range n.Content {
			w.value(en, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			w.fail(n, path, "must be text, not a %s", nodeKind(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, ok := map[string]bool{"true": true, "false": false}[n.Value]
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || !ok {
			w.fail(n, path, "must be true or false, got %s", show(n))
			return
		}
		v.SetBool(b)
	case reflect.Int:
		i, err := strconv.ParseInt(n.Value, 10, 32)
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil {
			w.fail(n, path, "must be a whole number, got %s", show(n))
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			w.fail(n, path, "must be a finite number, got %s", show(n))
			return
		}
		v.SetFloat(f)
	default:
		w.fail(n, path, "unsupported field type %s", v.Type())
	}
}

func (w *walker) structure(n *yaml.Node, v reflect.Value, prefix string) {
	names, index := fields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if kn.Kind != yaml.ScalarNode {
			w.fail(kn, prefix, "keys must be plain text, not a %s", nodeKind(kn))
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
			w.fail(kn, path, "%s", unknownField(kn.Value, names))
			continue
		}
		w.value(vn, v.Field(fi), path)
	}
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "single value"
	case yaml.AliasNode:
		return "alias"
	}
	return "document"
}

func show(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return "a " + nodeKind(n)
	}
	return strconv.Quote(n.Value)
}
