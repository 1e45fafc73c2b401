package configfile

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DefaultMaxBytes caps a document unless Options.MaxBytes says otherwise.
const DefaultMaxBytes = 1 << 20

// Options say how Decode reads a document.
type Options struct {
	// File names the document in errors; empty for one without a name
	// (its errors then start LINE:COLUMN).
	File string
	// MaxBytes caps the document's size (DefaultMaxBytes when 0).
	MaxBytes int
	// Tag is the struct tag that names the keys: "yaml" (the default) or
	// "json". A field without one, or with "-", is not a key. A "must"
	// tag, if any, replaces what the field's value must be in messages
	// (`must:"a list of contexts"`).
	Tag string
	// Words are the words of the messages (DefaultWords when nil).
	Words *Words
	// Check, if set, runs the caller's own checks of the decoded value,
	// reporting each problem by the path of its key. It runs after
	// decoding, also when some keys did not decode (they kept the values
	// they had) and for an empty document, not when the document could
	// not be read at all (too large, not YAML, not a mapping).
	Check func(r *Report)
}

func (o *Options) words() *Words {
	if o.Words != nil {
		return o.Words
	}
	w := DefaultWords()
	return &w
}

func (o *Options) maxBytes() int {
	if o.MaxBytes <= 0 {
		return DefaultMaxBytes
	}
	return o.MaxBytes
}

func (o *Options) tag() string {
	if o.Tag == "" {
		return "yaml"
	}
	return o.Tag
}

// ReadFile reads the document at path, at most o.MaxBytes. A larger file
// is an *Error naming it (o.File, else path); a file that cannot be read
// is the os error.
func ReadFile(path string, o Options) ([]byte, error) {
	max := o.maxBytes()
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(data) > max {
		file := o.File
		if file == "" {
			file = path
		}
		return nil, tooLarge(file, max, o.words())
	}
	return data, nil
}

func tooLarge(file string, max int, w *Words) *Error {
	return &Error{File: file, Msg: fmt.Sprintf("%s larger than %d bytes", w.Document, max)}
}

// Decode reads data, one YAML document whose top level is a mapping, into
// v, a pointer to a struct, strictly (see the package documentation), and
// then runs o.Check. Keys the document does not set keep the values v
// had: put the defaults in v first. A null value keeps the value too (a
// null item of a list or entry of a mapping is the zero value).
//
// It returns where the document set each key, and every problem found:
// the decoding's in the document's order, then the checks' in theirs.
// When the document cannot be read at all (too large, not YAML, more
// than one document, not a mapping) the Source is nil and the one
// problem says why.
func Decode(data []byte, v any, o Options) (*Source, []*Error) {
	w := o.words()
	if max := o.maxBytes(); len(data) > max {
		return nil, []*Error{tooLarge(o.File, max, w)}
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		panic("configfile: Decode needs a pointer to a struct, not " + rv.Type().String())
	}
	src := newSource(o.File)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			return nil, []*Error{syntaxError(o.File, w, err)}
		}
		src.empty = true
	} else {
		var extra yaml.Node
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			if err != nil {
				return nil, []*Error{syntaxError(o.File, w, err)}
			}
			return nil, []*Error{{File: o.File, Line: extra.Line, Column: extra.Column,
				Msg: fmt.Sprintf("more than one YAML document in the %s", w.Document)}}
		}
	}
	d := &decoder{src: src, w: w, tag: o.tag()}
	if !src.empty {
		root := &doc
		if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
			root = root.Content[0]
		}
		switch {
		case root.Kind == yaml.DocumentNode || isNull(root):
			src.empty = true
		case root.Kind != yaml.MappingNode || root.Anchor != "":
			msg := fmt.Sprintf("%s must be %s, %s", w.Root, w.Struct, w.got(root))
			if root.Kind == yaml.MappingNode {
				msg = "YAML anchors and aliases are not supported"
			}
			return nil, []*Error{{File: o.File, Line: root.Line, Column: root.Column, Msg: msg}}
		default:
			d.structure(root, rv.Elem(), "")
		}
	}
	errs := d.errs
	if o.Check != nil {
		r := NewReport(src)
		o.Check(r)
		errs = append(errs, r.Errors()...)
	}
	return src, errs
}

// syntaxError turns yaml's "yaml: line N: msg" into an *Error on line N.
func syntaxError(file string, w *Words, err error) *Error {
	e := &Error{File: file, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	if rest, ok := strings.CutPrefix(e.Msg, "line "); ok {
		if n, msg, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(n); err == nil {
				e.Line, e.Msg = line, msg
			}
		}
	}
	e.Msg = w.Syntax + e.Msg
	return e
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// decoder decodes YAML nodes into Go values, collecting an *Error per
// problem.
type decoder struct {
	src  *Source
	w    *Words
	tag  string
	errs []*Error
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.src.file, Line: n.Line, Column: n.Column, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// bad reports a value that did not decode, and remembers its path so
// that the checks do not report it again.
func (d *decoder) bad(n *yaml.Node, path, format string, args ...any) {
	d.fail(n, path, format, args...)
	d.src.failed = append(d.src.failed, path)
}

// field is a struct field that is a key.
type field struct {
	key   string
	index int
	must  string
}

// fields lists the keys of struct type t, in declaration order, by tag.
func fields(t reflect.Type, tag string) []field {
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get(tag), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		out = append(out, field{key: name, index: i, must: f.Tag.Get("must")})
	}
	return out
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// where is the position recorded for a key whose value is vn: the
// value's when it is a single value, else the key's.
func where(kn, vn *yaml.Node) Pos {
	if vn.Kind == yaml.ScalarNode && !isNull(vn) {
		return Pos{vn.Line, vn.Column}
	}
	return Pos{kn.Line, kn.Column}
}

// structure decodes mapping n into struct v.
func (d *decoder) structure(n *yaml.Node, v reflect.Value, prefix string) {
	fs := fields(v.Type(), d.tag)
	known := make([]string, len(fs))
	for i, f := range fs {
		known[i] = f.key
	}
	d.entries(n, prefix, func(key string, kn, vn *yaml.Node, path string) {
		for _, f := range fs {
			if f.key == key {
				d.src.set(path, where(kn, vn))
				d.value(vn, v.Field(f.index), path, f.must)
				return
			}
		}
		d.fail(kn, path, "%s", d.w.unknown(key, known))
	})
}

// entries calls fn for each entry of mapping n whose key is a plain
// string set once.
func (d *decoder) entries(n *yaml.Node, prefix string, fn func(key string, kn, vn *yaml.Node, path string)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if kn.Kind != yaml.ScalarNode || isNull(kn) || kn.Anchor != "" {
			d.fail(kn, prefix, "%ss must be plain strings, %s", d.w.Key, d.w.got(kn))
			continue
		}
		path := join(prefix, kn.Value)
		if line, dup := seen[kn.Value]; dup {
			d.fail(kn, path, "set twice (first on line %d)", line)
			continue
		}
		seen[kn.Value] = kn.Line
		fn(kn.Value, kn, vn, path)
	}
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// IsText reports whether values of type t are decoded from text, by
// their UnmarshalText method (sizes, durations, a spec's quotas).
func IsText(t reflect.Type) bool { return reflect.PointerTo(t).Implements(textUnmarshaler) }

// value decodes n into v, a settable value, and reports whether it did
// (a mapping or a list whose items had problems still counts).
func (d *decoder) value(n *yaml.Node, v reflect.Value, path, must string) bool {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		d.bad(n, path, "YAML anchors and aliases are not supported")
		return false
	}
	if isNull(n) {
		return false // keep what v has
	}
	if v.Kind() == reflect.Pointer {
		fresh := v.IsNil()
		if fresh {
			v.Set(reflect.New(v.Type().Elem()))
		}
		ok := d.value(n, v.Elem(), path, must)
		if !ok && fresh {
			v.SetZero()
		}
		return ok
	}
	what := func(def string) string {
		if must != "" {
			return must
		}
		return def
	}
	if IsText(v.Type()) {
		if n.Kind != yaml.ScalarNode {
			d.bad(n, path, "must be %s, %s", what(d.w.Single), d.w.got(n))
			return false
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.bad(n, path, "%v", err)
			return false
		}
		return true
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.bad(n, path, "must be %s, %s", what(d.w.Struct), d.w.got(n))
			return false
		}
		d.structure(n, v, path)
	case reflect.Map:
		if n.Kind != yaml.MappingNode || v.Type().Key().Kind() != reflect.String {
			d.bad(n, path, "must be %s, %s", what(d.w.Map), d.w.got(n))
			return false
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		d.entries(n, path, func(key string, kn, vn *yaml.Node, ep string) {
			d.src.set(ep, where(kn, vn))
			e := reflect.New(v.Type().Elem()).Elem()
			if (isNull(vn) && vn.Anchor == "") || d.value(vn, e, ep, "") {
				m.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), e)
			}
		})
		v.Set(m)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.bad(n, path, "must be %s, %s", what(d.w.List), d.w.got(n))
			return false
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, en := range n.Content {
			ep := path + "[" + strconv.Itoa(i) + "]"
			d.src.set(ep, Pos{en.Line, en.Column})
			d.value(en, s.Index(i), ep, "")
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.bad(n, path, "must be %s, %s", what(d.w.String), d.w.got(n))
			return false
		}
		v.SetString(n.Value) // an unquoted 8080 or true is text here
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || err != nil {
			d.bad(n, path, "must be %s, %s", what(d.w.Bool), d.w.got(n))
			return false
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var x int64
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&x) != nil {
			d.bad(n, path, "must be %s, %s", what(d.w.Int), d.w.got(n))
			return false
		}
		if lo, hi := intRange(v.Type()); x < lo || x > hi {
			d.bad(n, path, "%d is out of range (%d to %d)", x, lo, hi)
			return false
		}
		v.SetInt(x)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var x uint64
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&x) != nil {
			d.bad(n, path, "must be %s, %s", what(d.w.Int), d.w.got(n))
			return false
		}
		if hi := uintMax(v.Type()); x > hi {
			d.bad(n, path, "%d is out of range (0 to %d)", x, hi)
			return false
		}
		v.SetUint(x)
	case reflect.Float32, reflect.Float64:
		var x float64
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&x) != nil {
			d.bad(n, path, "must be %s, %s", what(d.w.Float), d.w.got(n))
			return false
		}
		v.SetFloat(x)
	default:
		d.bad(n, path, "settings of type %s are not supported", v.Type())
		return false
	}
	return true
}

// intRange is the range of a setting of signed integer type t: an int is
// taken as 32 bits, on every platform.
func intRange(t reflect.Type) (lo, hi int64) {
	bits := t.Bits()
	if t.Kind() == reflect.Int {
		bits = 32
	}
	return -1 << (bits - 1), 1<<(bits-1) - 1
}

func uintMax(t reflect.Type) uint64 {
	bits := t.Bits()
	if t.Kind() == reflect.Uint {
		bits = 32
	}
	return math.MaxUint64 >> (64 - bits)
}
