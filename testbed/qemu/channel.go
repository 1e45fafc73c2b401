package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The command channel's framing. The guest's shell (firmware/image,
// edgefleet-shell) prints markerReady when it starts; every command is
// sent as one line that prints a begin marker, runs the command with its
// output combined, and prints an end marker with the exit status:
//
//	\036EF-READY
//	\036EF<id>{
//	...output...
//	\036EF<id>}<status>
//
// The markers are made by printf from octal escapes, so the command line
// itself never holds them.
const (
	marker      = "\x1eEF"
	markerReady = "-READY"
	// maxOutput caps one command's output kept in memory.
	maxOutput = 64 << 20
)

// ErrShellRestarted is returned for a command whose shell went away (the
// guest rebooted, or the shell service restarted) before it finished.
var ErrShellRestarted = errors.New("qemu: the guest's command shell restarted")

type result struct {
	out  []byte
	code int
	err  error
}

// channel is the host side of the command channel.
type channel struct {
	conn net.Conn
	log  *slog.Logger
	exMu sync.Mutex // one command at a time

	mu      sync.Mutex
	next    int
	ready   chan struct{} // closed when the shell has announced itself
	waiting map[int]chan result
	cur     int // the command whose output is being read; 0: none
	out     bytes.Buffer
	pending []byte
	err     error // the connection's end
	closed  chan struct{}
}

func newChannel(conn net.Conn, log *slog.Logger) *channel {
	c := &channel{conn: conn, log: log, ready: make(chan struct{}), waiting: map[int]chan result{}, closed: make(chan struct{})}
	go c.read()
	return c
}

func (c *channel) close() { c.conn.Close() }

func (c *channel) read() {
	buf := make([]byte, 64<<10)
	for {
		n, err := c.conn.Read(buf)
		c.feed(buf[:n])
		if err != nil {
			c.mu.Lock()
			c.err = err
			for id, w := range c.waiting {
				w <- result{err: fmt.Errorf("command channel closed: %w", err)}
				delete(c.waiting, id)
			}
			c.mu.Unlock()
			close(c.closed)
			return
		}
	}
}

// feed parses what the guest wrote.
func (c *channel) feed(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, p...)
	for {
		i := bytes.Index(c.pending, []byte(marker))
		if i < 0 {
			// Keep what may be the start of a marker.
			keep := 0
			for k := min(len(c.pending), len(marker)-1); k > 0; k-- {
				if bytes.HasSuffix(c.pending, []byte(marker[:k])) {
					keep = k
					break
				}
			}
			c.emit(c.pending[:len(c.pending)-keep])
			c.pending = append(c.pending[:0], c.pending[len(c.pending)-keep:]...)
			return
		}
		c.emit(c.pending[:i])
		j := bytes.IndexByte(c.pending[i:], '\n')
		if j < 0 {
			c.pending = append(c.pending[:0], c.pending[i:]...)
			return
		}
		line := string(c.pending[i+len(marker) : i+j])
		c.pending = append(c.pending[:0], c.pending[i+j+1:]...)
		c.marker(line)
	}
}

func (c *channel) emit(b []byte) {
	if len(b) == 0 {
		return
	}
	if c.cur == 0 {
		c.log.Debug("command channel: output outside a command", "bytes", len(b))
		return
	}
	if c.out.Len()+len(b) <= maxOutput {
		c.out.Write(b)
	}
}

func (c *channel) marker(line string) {
	if line == markerReady {
		select {
		case <-c.ready:
			c.log.Info("command shell restarted")
		default:
			close(c.ready)
		}
		if w, ok := c.waiting[c.cur]; ok {
			w <- result{err: ErrShellRestarted}
			delete(c.waiting, c.cur)
		}
		c.cur = 0
		return
	}
	if id, ok := strings.CutSuffix(line, "{"); ok {
		if n, err := strconv.Atoi(id); err == nil && n > 0 {
			c.cur = n
			c.out.Reset()
			return
		}
	}
	id, status, ok := strings.Cut(line, "}")
	n, err1 := strconv.Atoi(id)
	code, err2 := strconv.Atoi(status)
	if !ok || err1 != nil || err2 != nil || n != c.cur || n == 0 {
		// Not a marker of ours: output that happens to look like one.
		c.emit([]byte(marker + line + "\n"))
		return
	}
	out := bytes.Clone(c.out.Bytes())
	// The end marker's printf starts with a newline of its own.
	out = bytes.TrimSuffix(out, []byte("\n"))
	if w, ok := c.waiting[n]; ok {
		w <- result{out: out, code: code}
		delete(c.waiting, n)
	}
	c.cur = 0
	c.out.Reset()
}

func (c *channel) waitReady(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-c.ready:
		return nil
	case <-c.closed:
		return fmt.Errorf("command channel closed: %w", c.err)
	case <-done:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
}

// quote makes s one single-quoted bash word.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// exec runs command in the guest and returns its output and exit status.
func (c *channel) exec(ctx context.Context, command string, done <-chan struct{}) ([]byte, int, error) {
	if err := c.waitReady(ctx, done); err != nil {
		return nil, 0, err
	}
	c.exMu.Lock()
	defer c.exMu.Unlock()
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, 0, fmt.Errorf("command channel closed: %w", c.err)
	}
	c.next++
	id := c.next
	w := make(chan result, 1)
	c.waiting[id] = w
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
	}()

	run := "bash -c " + quote(command)
	if dl, ok := ctx.Deadline(); ok {
		secs := math.Ceil(time.Until(dl).Seconds())
		if secs < 1 {
			return nil, 0, context.DeadlineExceeded
		}
		run = fmt.Sprintf("timeout -k 2 %d %s", int(secs), run)
	}
	line := fmt.Sprintf("printf '\\036EF%%d{\\n' %d; %s </dev/null 2>&1; printf '\\n\\036EF%%d}%%d\\n' %d $?\n", id, run, id)
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	} else {
		c.conn.SetWriteDeadline(time.Time{})
	}
	if _, err := c.conn.Write([]byte(line)); err != nil {
		return nil, 0, fmt.Errorf("writing to the command channel: %w", err)
	}
	select {
	case r := <-w:
		return r.out, r.code, r.err
	case <-done:
		return nil, 0, ErrNotRunning
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}
