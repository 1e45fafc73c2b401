package rollout

import (
	"errors"

	"github.com/edgefleet/edgefleet/shared/configfile"
)

// MaxSpecBytes caps a spec document.
const MaxSpecBytes = 1 << 20

// specWords are a spec's words in messages: its keys are fields.
var specWords = func() configfile.Words {
	w := configfile.DefaultWords()
	w.Key = "field"
	w.Document = "spec"
	w.Root = "the spec"
	w.GotNode = "not %s"
	return w
}()

func specOptions(file string) configfile.Options {
	return configfile.Options{File: file, MaxBytes: MaxSpecBytes, Tag: "json", Words: &specWords}
}

// ParseSpec reads a spec from YAML (JSON is YAML too), strictly: an
// unknown field, a value of the wrong type, a field set twice, anchors and
// aliases, and a second document are refused. Every problem is reported,
// each a *FieldError naming the field path, line and column
// (errors.Is(err, ErrInvalid) holds). ParseSpec checks types only;
// Validate checks values.
func ParseSpec(data []byte) (*Spec, error) {
	return parse("", data, false)
}

// CheckSpec is ParseSpec and Validate in one pass: a spec with both kinds
// of problem gets every one at once, each with its line and column.
// (Validate errors on a field that did not parse are left out: the parse
// error says it.)
func CheckSpec(data []byte) (*Spec, error) { return CheckSpecFile("", data) }

// CheckSpecFile is CheckSpec for a spec read from file, which its errors
// name.
func CheckSpecFile(file string, data []byte) (*Spec, error) {
	return parse(file, data, true)
}

// parse decodes data into a Spec, and validates it if check is set.
func parse(file string, data []byte, check bool) (*Spec, error) {
	s := &Spec{}
	o := specOptions(file)
	if check {
		o.Check = func(r *configfile.Report) {
			if !r.Source().Empty() {
				s.validate(&errorList{r: r})
			}
		}
	}
	src, errs := configfile.Decode(data, s, o)
	if src.Empty() {
		return nil, &FieldError{File: file, Msg: "empty spec"}
	}
	if len(errs) > 0 {
		return nil, fieldErrors(errs)
	}
	return s, nil
}

// fieldErrors turns the configfile package's problems into FieldErrors,
// joined.
func fieldErrors(errs []*configfile.Error) error {
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = &FieldError{File: e.File, Line: e.Line, Column: e.Column, Path: e.Path, Msg: e.Msg}
	}
	return errors.Join(out...)
}
