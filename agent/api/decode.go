package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// ErrRequest marks an inference request body that is not valid JSON or not
// a valid Open Inference Protocol request. The server answers it with 400.
// Errors about a tensor also wrap the shared/tensor sentinel that applies
// (tensor.ErrShape, tensor.ErrDatatype, tensor.ErrData, tensor.ErrName).
var ErrRequest = errors.New("invalid inference request")

// InferRequest is a decoded Open Inference Protocol inference request
// ($inference_request).
type InferRequest struct {
	// ID is the request's "id", echoed in the response; "" if none.
	ID string
	// Parameters are the request's "parameters"; nil if none. Values are
	// string, float64 or bool.
	Parameters Parameters
	// Inputs are the input tensors in request order, checked for internal
	// consistency (datatype, shape, element count) but not yet against a
	// model.
	Inputs []tensor.Tensor
	// InputParameters holds the "parameters" of inputs that have any,
	// by input name.
	InputParameters map[string]Parameters
	// Outputs are the outputs the caller asked for; empty means all.
	Outputs []RequestedOutput
}

// RequestedOutput is one entry of a request's "outputs" ($request_output).
type RequestedOutput struct {
	Name       string
	Parameters Parameters
}

// Parameters are Open Inference Protocol parameters: string, float64 or
// bool values by name.
type Parameters map[string]any

// maxDepth bounds the nesting of JSON arrays and objects the decoder
// follows, in tensor data (rank) and in skipped values alike.
const maxDepth = 64

// DecodeInferRequest decodes an inference request body. It is a one-pass
// decoder specialised for the request's shape: tensor data is parsed
// straight into typed slices, without the intermediate tokens and
// json.Number values a generic decoder allocates (for a Silero VAD request
// about 20 times faster than encoding/json with the shared/tensor codec,
// with under 1% of its allocations; see BenchmarkDecodeInferRequest). Whatever it accepts, encoding/json with the
// shared/tensor types accepts with the same values (FuzzDecodeInferRequest
// checks this); it is stricter in a few places: duplicate keys, keys that
// differ from a known key only in case, parameter values that are not a
// string, number or boolean. Unknown keys are ignored, as the protocol
// allows extensions.
func DecodeInferRequest(body []byte) (*InferRequest, error) {
	d := decoder{b: body}
	return d.request()
}

type decoder struct {
	b []byte
	i int
}

// errorf returns an ErrRequest error for the element at path; format may
// wrap further sentinels with %w.
func (d *decoder) errorf(path, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if path == "" {
		return fmt.Errorf("%w: %w", ErrRequest, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrRequest, path, err)
}

// syntax returns an error for malformed JSON at the current offset.
func (d *decoder) syntax(path, want string) error {
	if d.i >= len(d.b) {
		if path == "" {
			return fmt.Errorf("%w: malformed JSON: unexpected end of body, expected %s", ErrRequest, want)
		}
		return fmt.Errorf("%w: malformed JSON in %s: unexpected end of body, expected %s", ErrRequest, path, want)
	}
	c := d.b[d.i]
	got := strconv.QuoteRune(rune(c))
	if c >= utf8.RuneSelf {
		got = fmt.Sprintf("byte 0x%02x", c)
	}
	if path == "" {
		return fmt.Errorf("%w: malformed JSON at offset %d: unexpected %s, expected %s", ErrRequest, d.i, got, want)
	}
	return fmt.Errorf("%w: malformed JSON in %s at offset %d: unexpected %s, expected %s", ErrRequest, path, d.i, got, want)
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
func (d *decoder) consume(c byte, path string) error {
	if d.peek() != c {
		return d.syntax(path, strconv.QuoteRune(rune(c)))
	}
	d.i++
	return nil
}

// literal consumes the literal word (true, false, null) at the offset.
func (d *decoder) literal(word, path string) error {
	if len(d.b)-d.i < len(word) || string(d.b[d.i:d.i+len(word)]) != word {
		return d.syntax(path, "a JSON value")
	}
	d.i += len(word)
	return nil
}

// null consumes a null literal if one is next and reports whether it did.
func (d *decoder) null(path string) (bool, error) {
	if d.peek() != 'n' {
		return false, nil
	}
	return true, d.literal("null", path)
}

// wrongType explains a value of the wrong kind at the offset; where no
// JSON value starts at all, it reports malformed JSON instead.
func (d *decoder) wrongType(path, format string, args ...any) error {
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
func (d *decoder) object(path string, known []string, field func(key string) error) error {
	if err := d.consume('{', path); err != nil {
		return err
	}
	var seen []string
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
				return d.errorf(join(path, key), "duplicate key")
			}
		}
		seen = append(seen, key)
		if !isKnown(key, known) {
			for _, k := range known {
				if strings.EqualFold(key, k) {
					return d.errorf(join(path, key), "unknown key; did you mean %q?", k)
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
func (d *decoder) array(path string, elem func(i int) error) error {
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

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// scanString scans a JSON string at the offset (after whitespace). It
// returns where the bytes between the quotes start and end, and whether
// they are the string itself: no escapes, all ASCII.
func (d *decoder) scanString(path string) (start, end int, simple bool, err error) {
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
func (d *decoder) str(path string) (string, error) {
	start, end, simple, err := d.scanString(path)
	if err != nil {
		return "", err
	}
	return d.unquote(path, start, end, simple)
}

// unquote converts a scanned string. Escapes and non-ASCII go through
// encoding/json, so that the result (escapes resolved, invalid UTF-8
// replaced) is exactly what it would be.
func (d *decoder) unquote(path string, start, end int, simple bool) (string, error) {
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
func (d *decoder) key(path string, known []string) (string, error) {
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
func (d *decoder) number(path string) ([]byte, error) {
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

// skip consumes and validates any JSON value.
func (d *decoder) skip(path string, depth int) error {
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

func (d *decoder) request() (*InferRequest, error) {
	req := &InferRequest{}
	if d.peek() != '{' {
		return nil, d.syntax("", "a JSON object '{'")
	}
	inputsSeen := false
	err := d.object("", []string{"id", "parameters", "inputs", "outputs"}, func(key string) error {
		switch key {
		case "id":
			if null, err := d.null("id"); null || err != nil {
				return err
			}
			if d.peek() != '"' {
				return d.wrongType("id", "must be a string")
			}
			s, err := d.str("id")
			req.ID = s
			return err
		case "parameters":
			p, err := d.parameters("parameters")
			req.Parameters = p
			return err
		case "inputs":
			inputsSeen = true
			return d.inputs(req)
		case "outputs":
			return d.outputs(req)
		}
		return d.skip(key, 1)
	})
	if err != nil {
		return nil, err
	}
	if d.peek() != 0 {
		return nil, d.syntax("", "end of body after the request object")
	}
	if !inputsSeen || len(req.Inputs) == 0 {
		return nil, d.errorf("inputs", "the request has no inputs")
	}
	return req, nil
}

// parameters decodes a $parameters object; values must be a string, a
// number or a boolean.
func (d *decoder) parameters(path string) (Parameters, error) {
	if null, err := d.null(path); null || err != nil {
		return nil, err
	}
	if d.peek() != '{' {
		return nil, d.wrongType(path, "must be an object")
	}
	p := Parameters{}
	err := d.object(path, nil, func(key string) error {
		kp := join(path, key)
		switch c := d.peek(); {
		case c == '"':
			s, err := d.str(kp)
			p[key] = s
			return err
		case c == 't':
			p[key] = true
			return d.literal("true", kp)
		case c == 'f':
			p[key] = false
			return d.literal("false", kp)
		case c == '-' || (c >= '0' && c <= '9'):
			n, err := d.number(kp)
			if err != nil {
				return err
			}
			f, err := strconv.ParseFloat(string(n), 64)
			if err != nil {
				return d.errorf(kp, "number %s out of range", n)
			}
			p[key] = f
			return nil
		}
		return d.wrongType(kp, "a parameter must be a string, number or boolean")
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (d *decoder) inputs(req *InferRequest) error {
	if null, err := d.null("inputs"); null || err != nil {
		req.Inputs = nil
		return err
	}
	if d.peek() != '[' {
		return d.wrongType("inputs", "must be an array of tensors")
	}
	req.Inputs = req.Inputs[:0]
	return d.array("inputs", func(i int) error {
		path := index("inputs", i)
		t, params, err := d.tensor(path)
		if err != nil {
			return err
		}
		for _, u := range req.Inputs {
			if u.Name == t.Name {
				return d.errorf(path, "input %q given twice", t.Name)
			}
		}
		req.Inputs = append(req.Inputs, t)
		if params != nil {
			if req.InputParameters == nil {
				req.InputParameters = map[string]Parameters{}
			}
			req.InputParameters[t.Name] = params
		}
		return nil
	})
}

func (d *decoder) outputs(req *InferRequest) error {
	if null, err := d.null("outputs"); null || err != nil {
		req.Outputs = nil
		return err
	}
	if d.peek() != '[' {
		return d.wrongType("outputs", "must be an array of {\"name\": ...} objects")
	}
	req.Outputs = req.Outputs[:0]
	return d.array("outputs", func(i int) error {
		path := index("outputs", i)
		if d.peek() != '{' {
			return d.wrongType(path, "must be an object with a \"name\"")
		}
		var o RequestedOutput
		err := d.object(path, []string{"name", "parameters"}, func(key string) error {
			switch key {
			case "name":
				if null, err := d.null(join(path, key)); null || err != nil {
					return err
				}
				s, err := d.str(join(path, key))
				o.Name = s
				return err
			case "parameters":
				p, err := d.parameters(join(path, key))
				o.Parameters = p
				return err
			}
			return d.skip(join(path, key), 2)
		})
		if err != nil {
			return err
		}
		if o.Name == "" {
			return d.errorf(path, "output without a name")
		}
		for _, u := range req.Outputs {
			if u.Name == o.Name {
				return d.errorf(path, "output %q requested twice", o.Name)
			}
		}
		req.Outputs = append(req.Outputs, o)
		return nil
	})
}

// tensor decodes one $request_input.
func (d *decoder) tensor(path string) (tensor.Tensor, Parameters, error) {
	if d.peek() != '{' {
		return tensor.Tensor{}, nil, d.wrongType(path, "%w: must be a tensor object", tensor.ErrData)
	}
	var (
		t         tensor.Tensor
		params    Parameters
		shapeSeen bool
		dtSeen    bool
		data      *elems
		dataAt    = -1 // offset of data seen before the datatype
	)
	err := d.object(path, []string{"name", "datatype", "shape", "data", "parameters"}, func(key string) error {
		kp := join(path, key)
		switch key {
		case "name":
			if null, err := d.null(kp); null || err != nil {
				t.Name = ""
				return err
			}
			s, err := d.str(kp)
			t.Name = s
			return err
		case "datatype":
			if null, err := d.null(kp); null || err != nil {
				t.Datatype, dtSeen = "", false
				return err
			}
			s, err := d.str(kp)
			t.Datatype, dtSeen = tensor.Datatype(s), true
			return err
		case "shape":
			if null, err := d.null(kp); null || err != nil {
				t.Shape, shapeSeen = nil, false
				return err
			}
			s, err := d.shape(kp)
			t.Shape, shapeSeen = s, true
			return err
		case "data":
			if dtSeen && t.Datatype.Valid() {
				e, err := d.data(kp, t.Datatype, t.Shape)
				data = e
				return err
			}
			// The datatype comes later (or is invalid, which is reported
			// below): validate now, parse once the datatype is known.
			dataAt = d.i
			data = nil
			return d.skip(kp, 2)
		case "parameters":
			p, err := d.parameters(kp)
			params = p
			return err
		}
		return d.skip(kp, 2)
	})
	if err != nil {
		return tensor.Tensor{}, nil, err
	}
	if t.Name == "" {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: tensor without a name", tensor.ErrName)
	}
	if _, ok := params["binary_data_size"]; ok {
		return tensor.Tensor{}, nil, d.errorf(path, "input %q: the binary tensor data extension is not supported; send the data as JSON, or raw bytes with Content-Type: application/octet-stream", t.Name)
	}
	if !t.Datatype.Valid() {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: input %q: unsupported datatype %q (supported: %v)", tensor.ErrDatatype, t.Name, t.Datatype, tensor.Datatypes)
	}
	if !shapeSeen {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: input %q: missing shape", tensor.ErrShape, t.Name)
	}
	n := tensor.Elements(t.Shape)
	if n < 0 {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: input %q: invalid shape %v", tensor.ErrShape, t.Name, t.Shape)
	}
	if data == nil && dataAt >= 0 {
		end := d.i
		d.i = dataAt
		e, err := d.data(join(path, "data"), t.Datatype, t.Shape)
		if err != nil {
			return tensor.Tensor{}, nil, err
		}
		d.i = end
		data = e
	}
	if data == nil {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: input %q: missing data", tensor.ErrData, t.Name)
	}
	if int64(data.len) != n {
		return tensor.Tensor{}, nil, d.errorf(path, "%w: input %q: shape %v holds %d elements, data has %d", tensor.ErrShape, t.Name, t.Shape, n, data.len)
	}
	t.Data = data.v
	return t, params, nil
}

// shape decodes a shape array of non-negative int64 dimensions.
func (d *decoder) shape(path string) ([]int64, error) {
	if d.peek() != '[' {
		return nil, d.wrongType(path, "%w: must be an array of integers", tensor.ErrShape)
	}
	s := make([]int64, 0, 4)
	err := d.array(path, func(i int) error {
		ip := index(path, i)
		if c := d.peek(); c != '-' && (c < '0' || c > '9') {
			return d.wrongType(ip, "%w: a dimension must be an integer", tensor.ErrShape)
		}
		n, err := d.number(ip)
		if err != nil {
			return err
		}
		v, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			return d.errorf(ip, "%w: dimension %s is not an integer", tensor.ErrShape, n)
		}
		s = append(s, v)
		return nil
	})
	return s, err
}

// elems is decoded tensor data: v is a typed slice, len its length.
type elems struct {
	v   any
	len int
}

// data decodes tensor data, a possibly nested array of values of dt, into
// a typed slice. shape (if known) sizes the slice up front, bounded by what
// the remaining body can hold so a huge shape cannot force a huge
// allocation.
func (d *decoder) data(path string, dt tensor.Datatype, shape []int64) (*elems, error) {
	if null, err := d.null(path); null || err != nil {
		if err != nil {
			return nil, err
		}
		return nil, d.errorf(path, "%w: data is null", tensor.ErrData)
	}
	if d.peek() != '[' {
		return nil, d.wrongType(path, "%w: data must be an array", tensor.ErrData)
	}
	capHint := 0
	if shape != nil {
		if n := tensor.Elements(shape); n > 0 {
			room := int64(len(d.b)-d.i)/2 + 1
			capHint = int(min(n, room))
		}
	}
	switch dt {
	case tensor.FP32:
		return typed(parseData(d, path, make([]float32, 0, capHint), floating[float32](d, path, dt)))
	case tensor.FP64:
		return typed(parseData(d, path, make([]float64, 0, capHint), floating[float64](d, path, dt)))
	case tensor.Int64:
		return typed(parseData(d, path, make([]int64, 0, capHint), numeric(d, path, dt, parseInt[int64](math.MinInt64, math.MaxInt64))))
	case tensor.Int32:
		return typed(parseData(d, path, make([]int32, 0, capHint), numeric(d, path, dt, parseInt[int32](math.MinInt32, math.MaxInt32))))
	case tensor.Int16:
		return typed(parseData(d, path, make([]int16, 0, capHint), numeric(d, path, dt, parseInt[int16](math.MinInt16, math.MaxInt16))))
	case tensor.Int8:
		return typed(parseData(d, path, make([]int8, 0, capHint), numeric(d, path, dt, parseInt[int8](math.MinInt8, math.MaxInt8))))
	case tensor.Uint8:
		return typed(parseData(d, path, make([]uint8, 0, capHint), numeric(d, path, dt, parseInt[uint8](0, math.MaxUint8))))
	case tensor.Bool:
		return typed(parseData(d, path, make([]bool, 0, capHint), d.boolean(path)))
	}
	return nil, d.errorf(path, "%w: unknown datatype %q", tensor.ErrDatatype, dt)
}

func typed[T any](v []T, err error) (*elems, error) {
	if err != nil {
		return nil, err
	}
	return &elems{v, len(v)}, nil
}

type integer interface {
	~uint8 | ~int8 | ~int16 | ~int32 | ~int64
}

func parseInt[T integer](lo, hi int64) func([]byte) (T, bool) {
	return func(n []byte) (T, bool) {
		x, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || x < lo || x > hi {
			return 0, false
		}
		return T(x), true
	}
}

// parseData appends the scalars of a (nested) array to out, iterating
// rather than recursing; scalar parses one element that is neither '[' nor
// ']' (c is its first byte).
func parseData[T any](d *decoder, path string, out []T, scalar func(c byte, i int) (T, error)) ([]T, error) {
	const (
		valueOrClose = iota // after '['
		value               // after ','
		commaOrClose        // after a value or a closed array
	)
	d.i++ // the '[' checked by the caller
	depth, state := 1, valueOrClose
	for {
		d.ws()
		if d.i >= len(d.b) {
			return nil, d.syntax(path, "']'")
		}
		c := d.b[d.i]
		switch {
		case state == commaOrClose && c == ',':
			d.i++
			state = value
		case (state == commaOrClose || state == valueOrClose) && c == ']':
			d.i++
			depth--
			if depth == 0 {
				return out, nil
			}
			state = commaOrClose
		case state == commaOrClose:
			return nil, d.syntax(path, "',' or ']'")
		case c == '[':
			depth++
			if depth > maxDepth {
				return nil, d.errorf(path, "%w: data nested deeper than %d levels", tensor.ErrData, maxDepth)
			}
			d.i++
			state = valueOrClose
		default:
			x, err := scalar(c, len(out))
			if err != nil {
				return nil, err
			}
			out = append(out, x)
			state = commaOrClose
		}
	}
}

// numeric returns a scalar parser for numbers of dt.
func numeric[T any](d *decoder, path string, dt tensor.Datatype, parse func([]byte) (T, bool)) func(byte, int) (T, error) {
	return func(c byte, i int) (T, error) {
		var zero T
		if c != '-' && (c < '0' || c > '9') {
			return zero, d.badElement(path, c, i, dt)
		}
		n, err := d.number(path)
		if err != nil {
			return zero, err
		}
		x, ok := parse(n)
		if !ok {
			return zero, d.errorf(path, "%w: element %d: %s is not %s", tensor.ErrData, i, n, article(dt))
		}
		return x, nil
	}
}

// floating returns a scalar parser for FP32 or FP64 numbers.
func floating[T float32 | float64](d *decoder, path string, dt tensor.Datatype) func(byte, int) (T, error) {
	bits := 64
	if dt == tensor.FP32 {
		bits = 32
	}
	return func(c byte, i int) (T, error) {
		if c != '-' && (c < '0' || c > '9') {
			return 0, d.badElement(path, c, i, dt)
		}
		start := d.i
		f, ok, err := d.float(path, bits)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, d.errorf(path, "%w: element %d: %s is not %s", tensor.ErrData, i, d.b[start:d.i], article(dt))
		}
		return T(f), nil
	}
}

// boolean parses a BOOL element.
func (d *decoder) boolean(path string) func(byte, int) (bool, error) {
	return func(c byte, i int) (bool, error) {
		switch c {
		case 't':
			return true, d.literal("true", path)
		case 'f':
			return false, d.literal("false", path)
		}
		return false, d.badElement(path, c, i, tensor.Bool)
	}
}

// badElement explains an element that cannot be one of dt.
func (d *decoder) badElement(path string, c byte, i int, dt tensor.Datatype) error {
	var what string
	switch {
	case c == 't' || c == 'f':
		what = "boolean"
	case c == '-' || (c >= '0' && c <= '9'):
		what = "number"
	case c == '"':
		what = "string"
	case c == 'n':
		what = "null"
	case c == '{':
		return d.errorf(path, "%w: element %d: objects are not tensor data", tensor.ErrData, i)
	default:
		return d.syntax(path, "a value")
	}
	return d.errorf(path, "%w: element %d: %s in %s data", tensor.ErrData, i, what, dt)
}

func article(dt tensor.Datatype) string {
	switch dt {
	case tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64, tensor.FP32, tensor.FP64:
		return "an " + string(dt)
	}
	return "a " + string(dt)
}
