package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/edgefleet/edgefleet/controlplane/api"
)

// view shows successive states of one thing (a watched rollout): on a
// terminal each change replaces the previous one in place; otherwise, and
// with -o json, yaml or name, each change is appended (text after a "--- TIME" line), so that
// a log or a pipe reads as a history.
type view struct {
	w     io.Writer
	out   *outputFlag
	tty   bool
	last  string
	lines int // lines of last on the terminal
}

func newView(w io.Writer, out *outputFlag) *view {
	return &view{w: w, out: out, tty: !out.machine() && isTerminal(w)}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// show prints st if it differs from what was shown last.
func (v *view) show(st *api.RolloutStatus) {
	var b strings.Builder
	if v.out.machine() {
		_ = v.out.write(&b, st)
	} else {
		_ = printStatus(&b, st)
	}
	text := b.String()
	if text == v.last {
		return
	}
	switch {
	case v.tty && v.lines > 0:
		// Up to the first line of the previous block, clear to the end
		// of the screen, draw the new one.
		fmt.Fprintf(v.w, "\x1b[%dF\x1b[J", v.lines)
	case v.last != "" && !v.out.machine():
		fmt.Fprintf(v.w, "--- %s\n", time.Now().UTC().Format(time.RFC3339))
	}
	io.WriteString(v.w, text)
	v.last, v.lines = text, strings.Count(text, "\n")
}
