package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// narrator tells the demo's story: numbered steps, the commands they run
// and what those print, explanations, and live progress. On a terminal
// the current step's line carries a spinner, its elapsed time and a
// progress status, redrawn in place while other lines scroll above it;
// elsewhere (a pipe, a file, CI) every line is plain text and progress is
// printed only when it says something new, at most every plainEvery.
//
// Every line except live progress also goes to the transcript, plain.
// The methods are safe for concurrent use.
type narrator struct {
	mu         sync.Mutex
	w          io.Writer
	transcript io.Writer // may be nil
	tty        bool
	color      bool
	width      func() int // terminal columns; nil: 100
	now        func() time.Time

	total int // steps
	n     int // current step, 0 before the first
	title string
	start time.Time
	open  bool // a step is running

	status      string  // live progress text
	frac        float64 // progress bar fill in [0, 1]; < 0 none
	lastPlain   string
	lastPlainAt time.Time
	frame       int
	drawn       bool // a live line is on screen (tty)

	quit chan struct{}
	done chan struct{}
}

// plainEvery is the least time between two progress lines in plain mode.
const plainEvery = 10 * time.Second

var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// ANSI styles, used on a terminal only.
const (
	ansiReset = "\x1b[0m"
	ansiBold  = "\x1b[1m"
	ansiDim   = "\x1b[2m"
	ansiRed   = "\x1b[31m"
	ansiGreen = "\x1b[32m"
	ansiCyan  = "\x1b[36m"
	ansiClear = "\r\x1b[2K"
)

func newNarrator(w, transcript io.Writer, tty, color bool, total int) *narrator {
	n := &narrator{w: w, transcript: transcript, tty: tty, color: color && tty, total: total, frac: -1, now: time.Now}
	if tty {
		n.quit, n.done = make(chan struct{}), make(chan struct{})
		go n.spin()
	}
	return n
}

// Close stops the spinner; the narrator prints nothing live afterwards.
func (n *narrator) Close() {
	if n.quit == nil {
		return
	}
	n.mu.Lock()
	select {
	case <-n.quit:
		n.mu.Unlock()
		return
	default:
	}
	close(n.quit)
	n.mu.Unlock()
	<-n.done
	n.mu.Lock()
	n.clearLive()
	n.mu.Unlock()
}

func (n *narrator) spin() {
	defer close(n.done)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.quit:
			return
		case <-t.C:
			n.mu.Lock()
			n.frame++
			n.drawLive()
			n.mu.Unlock()
		}
	}
}

func (n *narrator) style(s, code string) string {
	if !n.color || s == "" {
		return s
	}
	return code + s + ansiReset
}

// println writes a permanent line: above the live line on a terminal.
func (n *narrator) println(line, plain string) {
	n.clearLive()
	fmt.Fprintln(n.w, line)
	if n.transcript != nil {
		fmt.Fprintln(n.transcript, plain)
	}
	n.drawLive()
}

func (n *narrator) clearLive() {
	if n.tty && n.drawn {
		io.WriteString(n.w, ansiClear)
		n.drawn = false
	}
}

// drawLive draws the running step's line under its title: spinner,
// number, elapsed time, progress.
func (n *narrator) drawLive() {
	if !n.tty || !n.open {
		return
	}
	select {
	case <-n.quit:
		return
	default:
	}
	width := 100
	if n.width != nil {
		if w := n.width(); w > 20 {
			width = w
		}
	}
	elapsed := n.now().Sub(n.start)
	head := fmt.Sprintf("%s %s %s", spinnerFrames[n.frame%len(spinnerFrames)], n.counter(), fmtSeconds(elapsed))
	line := head
	if n.frac >= 0 {
		line += "  " + bar(n.frac, 20)
	}
	if n.status != "" {
		line += "  " + n.status
	}
	line = truncate(line, width-1)
	// Style after truncating, so escape codes never count as columns.
	styled := line
	if n.color {
		if len(line) > len(head) {
			styled = n.style(head, ansiCyan) + n.style(line[len(head):], ansiDim)
		} else {
			styled = n.style(line, ansiCyan)
		}
	}
	io.WriteString(n.w, ansiClear+styled)
	n.drawn = true
}

func (n *narrator) counter() string {
	w := len(fmt.Sprint(n.total))
	return fmt.Sprintf("[%*d/%d]", w, n.n, n.total)
}

// Header prints lines before the first step (or after the last).
func (n *narrator) Header(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := fmt.Sprintf(format, args...)
	n.println(n.style(s, ansiBold), s)
}

// Line prints a line as it is.
func (n *narrator) Line(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := fmt.Sprintf(format, args...)
	n.println(s, s)
}

// Step starts the next step.
func (n *narrator) Step(title string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.n++
	n.title, n.start, n.open = title, n.now(), true
	n.status, n.frac, n.lastPlain = "", -1, ""
	s := n.counter() + " " + title
	n.println("\n"+n.style(s, ansiBold), "\n"+s)
}

// Cmd shows a command being run, as the user would type it; a last
// argument "&" says it runs in the background.
func (n *narrator) Cmd(argv []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	bg := ""
	if len(argv) > 1 && argv[len(argv)-1] == "&" {
		argv, bg = argv[:len(argv)-1], " &"
	}
	s := "  $ " + shellJoin(argv) + bg
	n.println(n.style(s, ansiBold), s)
}

// Out shows a line a command printed.
func (n *narrator) Out(line string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := "    " + line
	n.println(n.style(s, ansiDim), s)
}

// Say explains something in plain words.
func (n *narrator) Say(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := "  " + fmt.Sprintf(format, args...)
	n.println(s, s)
}

// Progress sets the running step's live status; frac in [0, 1] adds a
// progress bar, frac < 0 none. In plain mode the status is printed when
// it changed and plainEvery has passed since the last one.
func (n *narrator) Progress(frac float64, format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.status, n.frac = fmt.Sprintf(format, args...), min(frac, 1)
	if n.tty {
		n.drawLive()
		return
	}
	now := n.now()
	if n.status == "" || n.status == n.lastPlain || now.Sub(n.lastPlainAt) < plainEvery {
		return
	}
	n.lastPlain, n.lastPlainAt = n.status, now
	fmt.Fprintln(n.w, "  … "+n.status)
}

// Done ends the running step successfully, with a short result.
func (n *narrator) Done(format string, args ...any) {
	n.end(true, fmt.Sprintf(format, args...))
}

// Fail ends the running step with an error.
func (n *narrator) Fail(err error) {
	n.end(false, err.Error())
}

func (n *narrator) end(ok bool, msg string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.open {
		return
	}
	n.open = false
	n.clearLive()
	elapsed := fmtSeconds(n.now().Sub(n.start))
	mark, code := "✓", ansiGreen
	if !ok {
		mark, code = "✗", ansiRed
	}
	s := fmt.Sprintf("%s %s %s (%s)", mark, n.counter(), msg, elapsed)
	if msg == "" {
		s = fmt.Sprintf("%s %s %s (%s)", mark, n.counter(), n.title, elapsed)
	}
	n.println(n.style(s, code), s)
}

// fmtSeconds prints a duration for people: 0.4s, 12.3s, 2m05s.
func fmtSeconds(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	d = d.Round(time.Second)
	return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
}

// bar draws a progress bar of width cells filled to frac.
func bar(frac float64, width int) string {
	frac = max(0, min(frac, 1))
	full := int(frac*float64(width) + 0.5)
	return "[" + strings.Repeat("█", full) + strings.Repeat("·", width-full) + "]"
}

// truncate cuts s to at most cols runes, marking the cut.
func truncate(s string, cols int) string {
	if cols <= 1 || utf8.RuneCountInString(s) <= cols {
		return s
	}
	r := []rune(s)
	return string(r[:cols-1]) + "…"
}

// shellJoin quotes argv for display the way a POSIX shell would read it.
func shellJoin(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		parts[i] = shellQuote(a)
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,@+%", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
