package configfile

import (
	"fmt"
	"strconv"
	"strings"
)

// Error is one problem with a document: where it is, which key, what is
// wrong.
type Error struct {
	// File names the document; empty for one without a name.
	File string
	// Line and Column are 1-based; 0 when unknown (a setting made in code
	// or by a flag, a YAML syntax error's column).
	Line, Column int
	// Path is the key's path: "buffer.maxBytes", "waves[2].percent",
	// "labels.site"; empty for the document as a whole.
	Path string
	// Msg says what is wrong.
	Msg string
}

// Error is FILE:LINE:COLUMN: PATH: MSG, less the parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if loc := e.Location(); loc != "" {
		b.WriteString(loc)
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Location is FILE:LINE:COLUMN, less what is unknown: FILE:LINE without a
// column, LINE:COLUMN for a document without a name, FILE alone without a
// line, empty when nothing is known.
func (e *Error) Location() string {
	var parts []string
	if e.File != "" {
		parts = append(parts, e.File)
	}
	if e.Line > 0 {
		parts = append(parts, strconv.Itoa(e.Line))
		if e.Column > 0 {
			parts = append(parts, strconv.Itoa(e.Column))
		}
	}
	return strings.Join(parts, ":")
}

// Pos is a position in a document, 1-based; the zero Pos is unknown.
type Pos struct {
	Line, Column int
}

// Source records where a decoded document set each key: for a key of a
// mapping, the position of its value when that is a single value, else
// of the key; for an item of a list, the item's. A nil *Source knows
// nothing (a configuration made in code).
type Source struct {
	file   string
	pos    map[string]Pos
	order  []string
	gone   map[string]bool // forgotten: set elsewhere since
	failed []string        // paths whose values did not decode
	empty  bool
}

func newSource(file string) *Source {
	return &Source{file: file, pos: map[string]Pos{}}
}

// File is the document's name as given to Decode.
func (s *Source) File() string {
	if s == nil {
		return ""
	}
	return s.file
}

// Empty reports whether the document was empty: no YAML document, or a
// null one (only comments, "~", "---").
func (s *Source) Empty() bool { return s != nil && s.empty }

// Paths lists the key paths the document set, in the document's order.
func (s *Source) Paths() []string {
	if s == nil {
		return nil
	}
	var out []string
	for _, p := range s.order {
		if _, ok := s.pos[p]; ok {
			out = append(out, p)
		}
	}
	return out
}

// Has reports whether the document set path (and Forget did not take it
// back).
func (s *Source) Has(path string) bool {
	if s == nil {
		return false
	}
	_, ok := s.pos[path]
	return ok
}

// Pos is the position of path: its own, or else that of the nearest
// enclosing key the document set ("gates.errorRate" for a missing
// "gates.errorRate.max"). It is the zero Pos when the document set
// neither, and for a path Forget took back and everything inside it.
func (s *Source) Pos(path string) Pos {
	pos, _ := s.lookup(path)
	return pos
}

// lookup is Pos, and whether Forget took path back.
func (s *Source) lookup(path string) (pos Pos, gone bool) {
	if s == nil {
		return Pos{}, false
	}
	for p := path; p != ""; p = parent(p) {
		if s.gone[p] {
			return Pos{}, true
		}
		if pos, ok := s.pos[p]; ok {
			return pos, false
		}
	}
	return Pos{}, false
}

// Forget records that path (and everything inside it) is now set
// elsewhere, e.g. by a command-line flag: problems with it are no longer
// placed in the document.
func (s *Source) Forget(path string) {
	if s == nil {
		return
	}
	if s.gone == nil {
		s.gone = map[string]bool{}
	}
	s.gone[path] = true
	for p := range s.pos {
		if p == path || within(p, path) {
			delete(s.pos, p)
		}
	}
}

// Errorf returns an *Error about path, placed where the document set it
// (or the nearest enclosing key it set). A path the document does not set
// is in its file all the same (it has the file's meaning); one Forget
// took back is not.
func (s *Source) Errorf(path, format string, args ...any) *Error {
	pos, gone := s.lookup(path)
	e := &Error{Line: pos.Line, Column: pos.Column, Path: path, Msg: fmt.Sprintf(format, args...)}
	if !gone {
		e.File = s.File()
	}
	return e
}

func (s *Source) set(path string, p Pos) {
	if _, ok := s.pos[path]; !ok {
		s.order = append(s.order, path)
	}
	s.pos[path] = p
}

// related reports whether path is one of the paths that failed to
// decode, inside one or holds one.
func (s *Source) related(path string) bool {
	if s == nil {
		return false
	}
	for _, f := range s.failed {
		if f == path || within(path, f) || within(f, path) {
			return true
		}
	}
	return false
}

// parent is the path enclosing p: "a.b" for "a.b.c" and "a.b[2]"; "" at
// the top.
func parent(p string) string {
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}

// within reports whether path p is inside path outer.
func within(p, outer string) bool {
	if outer == "" {
		return p != ""
	}
	return strings.HasPrefix(p, outer+".") || strings.HasPrefix(p, outer+"[")
}

// Report collects the problems a caller's checks find, each placed where
// the document set the key it names. The checks of Options.Check report
// into the Report Decode gives them; a check run on its own makes one with
// NewReport.
type Report struct {
	src  *Source
	errs []*Error
}

// NewReport returns a Report placing problems by src (nil: nowhere).
func NewReport(src *Source) *Report { return &Report{src: src} }

// Source is what the Report places problems by (nil for none).
func (r *Report) Source() *Source { return r.src }

// Add reports a problem with the setting at path. A problem at, inside or
// around a path whose value did not decode is left out: the decoding
// error already names it.
func (r *Report) Add(path, format string, args ...any) {
	if r.src.related(path) {
		return
	}
	r.errs = append(r.errs, r.src.Errorf(path, format, args...))
}

// Errors are the problems reported, in the order of Add.
func (r *Report) Errors() []*Error { return r.errs }
