package configfile

import (
	"reflect"
)

// Key is one setting of a configuration type, as Keys lists it.
type Key struct {
	// Path is the key's path: "buffer.maxBytes"; "waves[].bake" for a
	// key of the mappings a list holds.
	Path string
	// Section is true for a mapping of further keys (a struct) or a list
	// of such mappings, whose keys follow it.
	Section bool
	// Field is the struct field, of the struct type Owner.
	Field reflect.StructField
	Owner reflect.Type
	// Type is the field's type, less pointers.
	Type reflect.Type
	// Value is the setting's value in the value given to Keys (its
	// default, when that holds the defaults); not valid under a nil
	// pointer or inside a list.
	Value reflect.Value
}

// Keys lists every setting of v (a struct or a pointer to one, its fields
// named by tag as Options.Tag says) in declaration order, sections before
// their keys. A value decoded from text (IsText) is one setting, and so
// are a list and a mapping of single values.
func Keys(v any, tag string) []Key {
	if tag == "" {
		tag = "yaml"
	}
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	var out []Key
	keys(rv.Type(), rv, "", tag, &out)
	return out
}

func keys(t reflect.Type, v reflect.Value, prefix, tag string, out *[]Key) {
	for _, f := range fields(t, tag) {
		sf := t.Field(f.index)
		ft := sf.Type
		var fv reflect.Value
		if v.IsValid() {
			fv = v.Field(f.index)
		}
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
			if fv.IsValid() {
				if fv.IsNil() {
					fv = reflect.Value{}
				} else {
					fv = fv.Elem()
				}
			}
		}
		k := Key{Path: join(prefix, f.key), Field: sf, Owner: t, Type: ft, Value: fv}
		switch {
		case IsText(ft):
		case ft.Kind() == reflect.Struct:
			k.Section = true
			*out = append(*out, k)
			keys(ft, fv, k.Path, tag, out)
			continue
		case ft.Kind() == reflect.Slice && !IsText(deref(ft.Elem())) && deref(ft.Elem()).Kind() == reflect.Struct:
			k.Section = true
			*out = append(*out, k)
			keys(deref(ft.Elem()), reflect.Value{}, k.Path+"[]", tag, out)
			continue
		}
		*out = append(*out, k)
	}
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}
