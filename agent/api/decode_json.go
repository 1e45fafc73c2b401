package api

// The one-pass JSON decoder under DecodeInferRequest: its state, its
// errors (ErrRequest, with the path and offset), whitespace and literals,
// objects (unique keys, no case-folded look-alikes) and arrays, and
// skipping values nobody asked for.

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxDepth bounds the nesting of JSON arrays and objects the decoder
// follows, in tensor data (rank) and in skipped values alike.
const maxDepth = 64

type decoder struct {
	b []byte
	i int
	// binary is set for a request of the binary tensor data extension;
	// bin is then what remains of the raw data after the JSON header.
	binary bool
	bin    []byte
}

// errorf returns an ErrRequest error for the element at path; format may
// wrap further sentinels with %w.
func (d *decoder) errorf(path jpath, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if path.isRoot() {
		return fmt.Errorf("%w: %w", ErrRequest, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrRequest, path.String(), err)
}

// syntax returns an error for malformed JSON at the current offset.
func (d *decoder) syntax(path jpath, want string) error {
	if d.i >= len(d.b) {
		if path.isRoot() {
			return fmt.Errorf("%w: malformed JSON: unexpected end of body, expected %s", ErrRequest, want)
		}
		return fmt.Errorf("%w: malformed JSON in %s: unexpected end of body, expected %s", ErrRequest, path.String(), want)
	}
	c := d.b[d.i]
	got := strconv.QuoteRune(rune(c))
	if c >= utf8.RuneSelf {
		got = fmt.Sprintf("byte 0x%02x", c)
	}
	if path.isRoot() {
		return fmt.Errorf("%w: malformed JSON at offset %d: unexpected %s, expected %s", ErrRequest, d.i, got, want)
	}
	return fmt.Errorf("%w: malformed JSON in %s at offset %d: unexpected %s, expected %s", ErrRequest, path.String(), d.i, got, want)
}

func (d *decoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek skips whitespace and returns the next byte, or 0 at the end.
func (d *decoder) peek() byte {
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// consume skips whitespace and the byte c, or fails.
func (d *decoder) consume(c byte, path jpath) error {
	if d.peek() != c {
		return d.syntax(path, strconv.QuoteRune(rune(c)))
	}
	d.i++
	return nil
}

// literal consumes the literal word (true, false, null) at the offset.
func (d *decoder) literal(word string, path jpath) error {
	if len(d.b)-d.i < len(word) || string(d.b[d.i:d.i+len(word)]) != word {
		return d.syntax(path, "a JSON value")
	}
	d.i += len(word)
	return nil
}

// null consumes a null literal if one is next and reports whether it did.
func (d *decoder) null(path jpath) (bool, error) {
	if d.peek() != 'n' {
		return false, nil
	}
	return true, d.literal("null", path)
}

// wrongType explains a value of the wrong kind at the offset; where no
// JSON value starts at all, it reports malformed JSON instead.
func (d *decoder) wrongType(path jpath, format string, args ...any) error {
	switch c := d.peek(); {
	case c == '{' || c == '[' || c == '"' || c == 't' || c == 'f' || c == 'n' || c == '-' || (c >= '0' && c <= '9'):
		return d.errorf(path, format, args...)
	}
	return d.syntax(path, "a JSON value")
}

// object walks a JSON object, calling field for each key with the decoder
// positioned at the value; field must consume the value. Keys must be
// unique. A key that is not known but equals a known key in another case
// is refused, because encoding/json would take it for the known key.
func (d *decoder) object(path jpath, known []string, field func(key string) error) error {
	if err := d.consume('{', path); err != nil {
		return err
	}
	var seenBuf [8]string // a request's objects have few keys
	seen := seenBuf[:0]
	if d.peek() == '}' {
		d.i++
		return nil
	}
	for {
		if d.peek() != '"' {
			return d.syntax(path, "an object key")
		}
		key, err := d.key(path, known)
		if err != nil {
			return err
		}
		for _, s := range seen {
			if s == key {
				return d.errorf(path.child(key), "duplicate key")
			}
		}
		seen = append(seen, key)
		if !isKnown(key, known) {
			for _, k := range known {
				if strings.EqualFold(key, k) {
					return d.errorf(path.child(key), "unknown key; did you mean %q?", k)
				}
			}
		}
		if err := d.consume(':', path); err != nil {
			return err
		}
		if err := field(key); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return d.syntax(path, "',' or '}'")
		}
	}
}

func isKnown(key string, known []string) bool {
	for _, k := range known {
		if k == key {
			return true
		}
	}
	return false
}

// array walks a JSON array, calling elem for each element with the decoder
// positioned at it; elem must consume it.
func (d *decoder) array(path jpath, elem func(i int) error) error {
	if err := d.consume('[', path); err != nil {
		return err
	}
	if d.peek() == ']' {
		d.i++
		return nil
	}
	for i := 0; ; i++ {
		if err := elem(i); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return nil
		default:
			return d.syntax(path, "',' or ']'")
		}
	}
}

// jpath names where in the request a value is ("inputs[0].shape[1]"),
// for error messages. Each step points to its parent on the stack of the
// decoder's calls, so that naming a value costs nothing until an error
// needs its String.
type jpath struct {
	parent *jpath
	key    string // the object key of this step, if not idx
	i      int    // the array index of this step, if idx
	idx    bool
}

// top is a top-level key of the request.
func top(key string) jpath { return jpath{key: key} }

// child is key of the object at p.
func (p *jpath) child(key string) jpath { return jpath{parent: p, key: key} }

// at is element i of the array at p.
func (p *jpath) at(i int) jpath { return jpath{parent: p, i: i, idx: true} }

// isRoot reports whether p is the request itself.
func (p jpath) isRoot() bool { return p.parent == nil && p.key == "" && !p.idx }

// String is the path in the form of the errors ("inputs[0].data").
func (p jpath) String() string {
	var b strings.Builder
	p.write(&b)
	return b.String()
}

func (p *jpath) write(b *strings.Builder) {
	if p.parent != nil {
		p.parent.write(b)
	}
	switch {
	case p.idx:
		b.WriteByte('[')
		b.WriteString(strconv.Itoa(p.i))
		b.WriteByte(']')
	case p.key == "":
	default:
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p.key)
	}
}

// skip consumes and validates any JSON value.
func (d *decoder) skip(path jpath, depth int) error {
	if depth > maxDepth {
		return d.errorf(path, "JSON nested deeper than %d levels", maxDepth)
	}
	switch c := d.peek(); {
	case c == '{':
		return d.object(path, nil, func(string) error { return d.skip(path, depth+1) })
	case c == '[':
		return d.array(path, func(int) error { return d.skip(path, depth+1) })
	case c == '"':
		_, err := d.str(path)
		return err
	case c == 't':
		return d.literal("true", path)
	case c == 'f':
		return d.literal("false", path)
	case c == 'n':
		return d.literal("null", path)
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := d.number(path)
		return err
	}
	return d.syntax(path, "a JSON value")
}
