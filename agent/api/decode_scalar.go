package api

// The decoder's scalars: JSON strings (unescaped as encoding/json would),
// object keys (known ones without allocating) and number syntax.

import (
	"encoding/json"
	"unicode/utf8"
)

// scanString scans a JSON string at the offset (after whitespace). It
// returns where the bytes between the quotes start and end, and whether
// they are the string itself: no escapes, all ASCII.
func (d *decoder) scanString(path jpath) (start, end int, simple bool, err error) {
	if d.peek() != '"' {
		return 0, 0, false, d.syntax(path, "a string")
	}
	d.i++
	start = d.i
	simple = true
	for {
		if d.i >= len(d.b) {
			return 0, 0, false, d.syntax(path, "'\"' closing the string")
		}
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return start, d.i - 1, simple, nil
		case c == '\\':
			simple = false
			d.i += 2
		case c < 0x20:
			return 0, 0, false, d.syntax(path, "a string character (control characters must be escaped)")
		case c >= utf8.RuneSelf:
			simple = false
			d.i++
		default:
			d.i++
		}
	}
}

// str decodes a JSON string at the offset (after whitespace).
func (d *decoder) str(path jpath) (string, error) {
	start, end, simple, err := d.scanString(path)
	if err != nil {
		return "", err
	}
	return d.unquote(path, start, end, simple)
}

// unquote converts a scanned string. Escapes and non-ASCII go through
// encoding/json, so that the result (escapes resolved, invalid UTF-8
// replaced) is exactly what it would be.
func (d *decoder) unquote(path jpath, start, end int, simple bool) (string, error) {
	if simple {
		return string(d.b[start:end]), nil
	}
	var s string
	if err := json.Unmarshal(d.b[start-1:end+1], &s); err != nil {
		return "", d.errorf(path, "malformed JSON string at offset %d: %v", start-1, err)
	}
	return s, nil
}

// key decodes an object key; a key equal to one of known is returned as
// that string, without allocating.
func (d *decoder) key(path jpath, known []string) (string, error) {
	start, end, simple, err := d.scanString(path)
	if err != nil {
		return "", err
	}
	if simple {
		for _, k := range known {
			if string(d.b[start:end]) == k {
				return k, nil
			}
		}
	}
	return d.unquote(path, start, end, simple)
}

// number scans a JSON number at the offset and returns its text.
func (d *decoder) number(path jpath) ([]byte, error) {
	start := d.i
	b := d.b
	i := d.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		d.i = i
		return nil, d.syntax(path, "a digit")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			d.i = i
			return nil, d.syntax(path, "a digit after '.'")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			d.i = i
			return nil, d.syntax(path, "a digit in the exponent")
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	d.i = i
	return b[start:i], nil
}
