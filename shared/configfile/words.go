package configfile

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Words are the words of a caller's messages, where callers had their own
// before they shared this package (and tests and operators rely on them).
// DefaultWords has them all; a caller changes the few it needs.
type Words struct {
	// Key names what a mapping holds: "key" (unknown key, keys are
	// case-sensitive) or "field".
	Key string
	// Document names the document: "file" (file larger than N bytes,
	// more than one YAML document in the file), "spec".
	Document string
	// Root names the top level when it is not a mapping: "the top level
	// must be a mapping ...".
	Root string
	// What a value of each kind must be: "must be a list, got ...".
	Struct, Map, List, String, Int, Float, Bool string
	// Single is what a value decoded from text (a size, a duration, ...)
	// must be when it is a mapping or a list.
	Single string
	// Got shows a single value of the wrong kind, GotNode a mapping or a
	// list (or an alias); %s is the value: "got %s", "not %s".
	Got, GotNode string
	// Syntax starts the message of a YAML syntax error.
	Syntax string
}

// DefaultWords returns the default words.
func DefaultWords() Words {
	return Words{
		Key:      "key",
		Document: "file",
		Root:     "the top level",
		Struct:   "a mapping (key: value)",
		Map:      "a mapping (key: value)",
		List:     "a list",
		String:   "a string",
		Int:      "a whole number",
		Float:    "a number",
		Bool:     "true or false",
		Single:   "a single value",
		Got:      "got %s",
		GotNode:  "got %s",
		Syntax:   "not valid YAML: ",
	}
}

// got shows what n holds, as Got or GotNode say.
func (w *Words) got(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return fmt.Sprintf(w.Got, describe(n))
	}
	return fmt.Sprintf(w.GotNode, describe(n))
}

// unknown is the message for key, unknown where known are the keys.
func (w *Words) unknown(key string, known []string) string {
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return fmt.Sprintf("unknown %s; did you mean %q? (%ss are case-sensitive)", w.Key, k, w.Key)
		}
	}
	msg := fmt.Sprintf("unknown %s (known here: %s)", w.Key, strings.Join(known, ", "))
	if s := closest(key, known); s != "" {
		msg += fmt.Sprintf(": did you mean %q?", s)
	}
	return msg
}

// describe names what a node holds, for messages: a mapping, a list, an
// alias, null, a quoted string or the plain text of another single value
// (a number, a boolean), at most 40 characters of it.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	switch n.Tag {
	case "!!str", "!!binary", "!!timestamp":
		return strconv.Quote(v)
	case "!!null":
		return "null"
	}
	return v
}

// closest is the key of known nearest to key by edit distance, if one is
// near enough to be a typo of it: at most 1 edit for keys of up to 4
// characters, 2 for longer ones.
func closest(key string, known []string) string {
	limit := 1
	if len(key) > 4 {
		limit = 2
	}
	best, bestD := "", limit+1
	for _, k := range known {
		if d := distance(strings.ToLower(key), strings.ToLower(k)); d < bestD && d < len(k) {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b, in bytes.
func distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b)) // not a typo of a key
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
