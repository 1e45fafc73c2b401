package fetch

// Parsing the Content-Range headers of 206 and 416 answers.

import (
	"strconv"
	"strings"
)

// parseContentRange parses "bytes START-END/SIZE" (SIZE may be "*", then
// size is -1).
func parseContentRange(v string) (start, end, size int64, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, sz, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err error
	if start, err = strconv.ParseInt(a, 10, 64); err != nil || start < 0 {
		return 0, 0, 0, false
	}
	if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
		return 0, 0, 0, false
	}
	size = -1
	if sz != "*" {
		if size, err = strconv.ParseInt(sz, 10, 64); err != nil || size <= end {
			return 0, 0, 0, false
		}
	}
	return start, end, size, true
}

// parseUnsatisfiedRange parses a 416's "bytes */SIZE"; -1 if absent or
// malformed.
func parseUnsatisfiedRange(v string) int64 {
	sz, found := strings.CutPrefix(strings.TrimSpace(v), "bytes */")
	if !found {
		return -1
	}
	n, err := strconv.ParseInt(sz, 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}
