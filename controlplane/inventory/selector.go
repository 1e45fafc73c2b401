package inventory

import (
	"fmt"
	"maps"
	"strings"
)

// Label limits. Keys follow the protocol's rule for reported labels; values
// are restricted to characters a selector can spell, so that every label
// the inventory holds can be selected.
const (
	// MaxLabels is the most labels a device may carry.
	MaxLabels = 64
	// MaxLabelKeyLen and MaxLabelValueLen bound a label's key and value.
	MaxLabelKeyLen   = 63
	MaxLabelValueLen = 255
)

// ValidateLabels checks labels: at most MaxLabels; keys 1 to
// MaxLabelKeyLen bytes of [A-Za-z0-9._/-] starting with a letter or digit;
// values 0 to MaxLabelValueLen bytes of [A-Za-z0-9._/:+@-]. The error wraps
// ErrInvalid and names the label.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%w: %d labels, the limit is %d", ErrInvalid, len(labels), MaxLabels)
	}
	for k, v := range labels {
		if why := checkLabelKey(k); why != "" {
			return fmt.Errorf("%w: label key %q: %s", ErrInvalid, k, why)
		}
		if why := checkLabelValue(v); why != "" {
			return fmt.Errorf("%w: label %q value %q: %s", ErrInvalid, k, v, why)
		}
	}
	return nil
}

func checkLabelKey(k string) string {
	switch {
	case k == "":
		return "empty"
	case len(k) > MaxLabelKeyLen:
		return fmt.Sprintf("%d bytes, the limit is %d", len(k), MaxLabelKeyLen)
	case !isAlnum(k[0]):
		return "must start with a letter or digit"
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; !isAlnum(c) && c != '.' && c != '_' && c != '/' && c != '-' {
			return fmt.Sprintf("character %q at %d: keys are [A-Za-z0-9._/-]", c, i)
		}
	}
	return ""
}

func checkLabelValue(v string) string {
	if len(v) > MaxLabelValueLen {
		return fmt.Sprintf("%d bytes, the limit is %d", len(v), MaxLabelValueLen)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !isAlnum(c) && !strings.ContainsRune("._/:+@-", rune(c)) {
			return fmt.Sprintf("character %q at %d: values are [A-Za-z0-9._/:+@-]", c, i)
		}
	}
	return ""
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Op is the operator of a selector requirement.
type Op int

// Selector operators.
const (
	// OpEqual: the label is present with this value ("key=value" or
	// "key==value").
	OpEqual Op = iota + 1
	// OpNotEqual: the label is absent or has another value
	// ("key!=value"), as in Kubernetes.
	OpNotEqual
	// OpExists: the label is present, with any value ("key").
	OpExists
	// OpNotExists: the label is absent ("!key").
	OpNotExists
)

// Requirement is one term of a Selector.
type Requirement struct {
	Key   string
	Op    Op
	Value string // for OpEqual and OpNotEqual
}

// Matches reports whether labels satisfy r.
func (r Requirement) Matches(labels map[string]string) bool {
	v, ok := labels[r.Key]
	switch r.Op {
	case OpEqual:
		return ok && v == r.Value
	case OpNotEqual:
		return !ok || v != r.Value
	case OpExists:
		return ok
	case OpNotExists:
		return !ok
	}
	return false
}

// String returns the term as ParseSelector reads it.
func (r Requirement) String() string {
	switch r.Op {
	case OpEqual:
		return r.Key + "=" + r.Value
	case OpNotEqual:
		return r.Key + "!=" + r.Value
	case OpExists:
		return r.Key
	case OpNotExists:
		return "!" + r.Key
	}
	return fmt.Sprintf("%s?%d", r.Key, int(r.Op))
}

// Selector selects devices by label: every requirement must hold. The zero
// Selector selects every device.
type Selector struct {
	reqs []Requirement
}

// ParseSelector parses a comma-separated list of terms, each one of
//
//	key=value   key==value   the label is present with that value
//	key!=value               the label is absent or has another value
//	key                      the label is present
//	!key                     the label is absent
//
// e.g. "hw=jetson-orin,region=eu,tier!=canary,gpu". Spaces around terms and
// operators are ignored. An empty (or all-space) string selects every
// device. Errors wrap ErrSelector and name the bad term by position.
func ParseSelector(s string) (Selector, error) {
	if strings.TrimSpace(s) == "" {
		return Selector{}, nil
	}
	var sel Selector
	for i, term := range strings.Split(s, ",") {
		r, err := parseTerm(strings.TrimSpace(term))
		if err != nil {
			return Selector{}, fmt.Errorf("%w: term %d %q: %s", ErrSelector, i+1, strings.TrimSpace(term), err)
		}
		sel.reqs = append(sel.reqs, r)
	}
	return sel, nil
}

// MustParseSelector is ParseSelector for constant selectors; it panics on
// an error.
func MustParseSelector(s string) Selector {
	sel, err := ParseSelector(s)
	if err != nil {
		panic(err)
	}
	return sel
}

// selectorError is a term's parse error; ParseSelector adds the term.
type selectorError string

func (e selectorError) Error() string { return string(e) }

func parseTerm(t string) (Requirement, error) {
	if t == "" {
		return Requirement{}, selectorError("empty term (stray comma?)")
	}
	var r Requirement
	var key, value string
	hasValue := false
	switch {
	case strings.HasPrefix(t, "!") && !strings.Contains(t, "="):
		r.Op, key = OpNotExists, strings.TrimSpace(t[1:])
	case strings.Contains(t, "!="):
		i := strings.Index(t, "!=")
		r.Op, key, value, hasValue = OpNotEqual, t[:i], t[i+2:], true
	case strings.Contains(t, "=="):
		i := strings.Index(t, "==")
		r.Op, key, value, hasValue = OpEqual, t[:i], t[i+2:], true
	case strings.Contains(t, "="):
		i := strings.Index(t, "=")
		r.Op, key, value, hasValue = OpEqual, t[:i], t[i+1:], true
	default:
		r.Op, key = OpExists, t
	}
	key, value = strings.TrimSpace(key), strings.TrimSpace(value)
	if key == "" {
		return Requirement{}, selectorError("missing label key")
	}
	if why := checkLabelKey(key); why != "" {
		return Requirement{}, selectorError(fmt.Sprintf("label key %q: %s", key, why))
	}
	if hasValue {
		if value == "" {
			return Requirement{}, selectorError(fmt.Sprintf("missing value after the operator (write %q to test that the label exists)", key))
		}
		if strings.ContainsAny(value, "=!") {
			return Requirement{}, selectorError(fmt.Sprintf("value %q: more than one operator in the term", value))
		}
		if why := checkLabelValue(value); why != "" {
			return Requirement{}, selectorError(fmt.Sprintf("value %q: %s", value, why))
		}
	}
	r.Key, r.Value = key, value
	return r, nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		if !r.Matches(labels) {
			return false
		}
	}
	return true
}

// Empty reports whether s selects every device.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// Requirements returns a copy of s's terms, in order.
func (s Selector) Requirements() []Requirement {
	return append([]Requirement(nil), s.reqs...)
}

// String returns s in the form ParseSelector reads ("" for the empty
// selector).
func (s Selector) String() string {
	terms := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		terms[i] = r.String()
	}
	return strings.Join(terms, ",")
}

// effectiveLabels overlays the inventory's labels on the labels the device
// reports: the inventory (operator) wins on a conflict.
func effectiveLabels(own, reported map[string]string) map[string]string {
	if len(reported) == 0 {
		return own
	}
	out := make(map[string]string, len(own)+len(reported))
	maps.Copy(out, reported)
	maps.Copy(out, own)
	return out
}
