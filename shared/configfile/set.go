package configfile

import (
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Set sets the setting at key of v, a pointer to a struct, from text, as a
// command-line flag does (fleetd --set KEY=VALUE). key is a path of keys
// by o.Tag: "http.listen", "broker.tls.listen" (a missing section is
// made), "auth.enrolTokenFiles.ci" (an entry of a mapping). A list takes
// comma-separated items ("a.pub, b.pub"); text is read as the setting's
// kind reads it in a document, except that a string takes it as it is.
// The *Error's Path is key (or the part of it that is wrong) and it has
// no position.
func Set(v any, key, text string, o Options) *Error {
	w := o.words()
	tag := o.tag()
	cur := reflect.ValueOf(v)
	if cur.Kind() != reflect.Pointer || cur.Elem().Kind() != reflect.Struct {
		panic("configfile: Set needs a pointer to a struct, not " + cur.Type().String())
	}
	cur = cur.Elem()
	parts := strings.Split(key, ".")
	for i, p := range parts {
		for cur.Kind() == reflect.Pointer {
			if cur.IsNil() {
				cur.Set(reflect.New(cur.Type().Elem()))
			}
			cur = cur.Elem()
		}
		path := strings.Join(parts[:i+1], ".")
		switch {
		case cur.Kind() == reflect.Struct && !IsText(cur.Type()):
			fs := fields(cur.Type(), tag)
			known := make([]string, len(fs))
			var next reflect.Value
			for j, f := range fs {
				known[j] = f.key
				if f.key == p {
					next = cur.Field(f.index)
				}
			}
			if !next.IsValid() {
				return &Error{Path: path, Msg: w.unknown(p, known)}
			}
			cur = next
		case cur.Kind() == reflect.Map && i == len(parts)-1 && cur.Type().Key().Kind() == reflect.String:
			e := reflect.New(cur.Type().Elem()).Elem()
			if err := setText(e, key, text, w, tag); err != nil {
				return err
			}
			if cur.IsNil() {
				cur.Set(reflect.MakeMap(cur.Type()))
			}
			cur.SetMapIndex(reflect.ValueOf(p).Convert(cur.Type().Key()), e)
			return nil
		default:
			return &Error{Path: path, Msg: "unknown " + w.Key}
		}
	}
	for cur.Kind() == reflect.Pointer {
		if cur.IsNil() {
			cur.Set(reflect.New(cur.Type().Elem()))
		}
		cur = cur.Elem()
	}
	if (cur.Kind() == reflect.Struct || cur.Kind() == reflect.Map) && !IsText(cur.Type()) {
		return &Error{Path: key, Msg: "is a section; set one of its keys"}
	}
	if cur.Kind() == reflect.Slice && !IsText(cur.Type()) {
		var items []string
		for s := range strings.SplitSeq(text, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		list := reflect.MakeSlice(cur.Type(), len(items), len(items))
		for i, s := range items {
			if err := setText(list.Index(i), key, s, w, tag); err != nil {
				return err
			}
		}
		cur.Set(list)
		return nil
	}
	return setText(cur, key, text, w, tag)
}

// setText sets v from text as a single value of a document would.
func setText(v reflect.Value, path, text string, w *Words, tag string) *Error {
	if v.Kind() == reflect.String {
		v.SetString(text)
		return nil
	}
	n := &yaml.Node{Kind: yaml.ScalarNode, Value: text}
	if n.Tag = n.ShortTag(); n.Tag == "!!null" {
		n.Tag = "!!str"
	}
	d := &decoder{src: newSource(""), w: w, tag: tag}
	tmp := reflect.New(v.Type()).Elem()
	tmp.Set(v)
	if d.value(n, tmp, path, ""); len(d.errs) > 0 {
		return d.errs[0]
	}
	v.Set(tmp)
	return nil
}
