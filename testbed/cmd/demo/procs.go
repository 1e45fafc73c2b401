package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// supervisor starts the demo's long-running processes (fleetd, the
// agents) and short commands (fleetctl, go build), and stops every one of
// them. Each child runs in a process group of its own, so that
//
//   - a Ctrl-C on the terminal reaches only the demo, which then stops
//     the agents before fleetd, in order, instead of every process at
//     once;
//   - stopping a child signals its whole group, so nothing it started
//     itself survives it (go build's compilers, for one).
//
// On Linux a child also gets SIGTERM should the demo die without cleaning
// up (SIGKILL), through the parent-death signal.
type supervisor struct {
	log *slog.Logger

	mu       sync.Mutex
	procs    []*proc
	stopping bool
	// onExit is called, once per process, when a long-running process
	// exits while the demo is not stopping it.
	onExit func(p *proc, err error)
}

// proc is a long-running child process.
type proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error // Wait's, once done is closed
	stopped bool  // asked to stop by the supervisor
}

// Pid is the process id (also its process group id).
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *proc) Done() <-chan struct{} { return p.done }

// Err is how the process ended (valid once Done is closed).
func (p *proc) Err() error { return p.err }

// Start starts argv in dir with env (added to the demo's own), its
// output appended to logPath.
func (s *supervisor) Start(name, dir string, env []string, logPath string, argv ...string) (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil, errors.New("stopping: not starting " + name)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, argv[0], err)
	}
	p := &proc{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	s.procs = append(s.procs, p)
	s.log.Info("started", "name", name, "pid", p.Pid(), "argv", argv)
	go func() {
		err := cmd.Wait()
		logf.Close()
		s.mu.Lock()
		p.err = err
		expected := p.stopped || s.stopping
		s.mu.Unlock()
		close(p.done)
		s.log.Info("exited", "name", name, "pid", p.Pid(), "err", err, "expected", expected)
		if !expected && s.onExit != nil {
			s.onExit(p, err)
		}
	}()
	return p, nil
}

// Stop asks p's process group to stop (SIGTERM), and kills it (SIGKILL)
// if it has not exited after grace. It returns once the process exited.
func (s *supervisor) Stop(p *proc, grace time.Duration) {
	s.mu.Lock()
	p.stopped = true
	s.mu.Unlock()
	select {
	case <-p.done:
		return
	default:
	}
	// fleetd and the agents start no processes of their own, so once the
	// group's leader has exited (and been reaped) the group is empty;
	// signalling it afterwards could only reach a stranger reusing the
	// id.
	killGroup(p.Pid(), syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	s.log.Warn("did not stop in time: killing", "name", p.Name, "pid", p.Pid(), "grace", grace)
	killGroup(p.Pid(), syscall.SIGKILL)
	p.cmd.Process.Kill() // in case it left its group
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		s.log.Error("still running after SIGKILL", "name", p.Name, "pid", p.Pid())
	}
}

// StopAll stops every process and returns when they have exited: those
// first selects (the agents) together, then the rest one by one, the
// latest started first (fleetd). After it, nothing new starts.
func (s *supervisor) StopAll(grace time.Duration, first func(*proc) bool) {
	s.mu.Lock()
	s.stopping = true
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	var wg sync.WaitGroup
	var rest []*proc
	for _, p := range procs {
		if first != nil && first(p) {
			wg.Go(func() { s.Stop(p, grace) })
		} else {
			rest = append(rest, p)
		}
	}
	wg.Wait()
	for i := len(rest) - 1; i >= 0; i-- {
		s.Stop(rest[i], grace)
	}
}

// KillAll kills every running process group at once, without waiting
// (StopAll, running or to come, still waits for them to exit): for a
// second interrupt while stopping.
func (s *supervisor) KillAll() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	for _, p := range s.Running() {
		killGroup(p.Pid(), syscall.SIGKILL)
	}
}

// Running returns the processes that have not exited.
func (s *supervisor) Running() []*proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*proc
	for _, p := range s.procs {
		select {
		case <-p.done:
		default:
			out = append(out, p)
		}
	}
	return out
}

// result is what a short command printed.
type result struct {
	Stdout, Stderr []byte
}

// Run runs a short command in its own process group and returns its
// output; the group is killed when ctx ends. An exit status other than 0
// is an error carrying the end of its stderr.
func (s *supervisor) Run(ctx context.Context, dir string, env []string, argv ...string) (result, error) {
	s.mu.Lock()
	stopping := s.stopping
	s.mu.Unlock()
	if stopping {
		return result{}, errors.New("stopping: not running " + argv[0])
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = childAttr()
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	s.log.Info("ran", "argv", argv, "took", time.Since(start), "err", err, "stdout", stdout.String(), "stderr", stderr.String())
	res := result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if err != nil {
		if ctx.Err() != nil {
			return res, context.Cause(ctx)
		}
		return res, fmt.Errorf("%s: %w%s", shellJoin(argv), err, tail(stderr.Bytes(), 12))
	}
	return res, nil
}

// killGroup signals process group pgid; a group that is gone is no error.
func killGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 0 {
		return nil
	}
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling process group %d: %w", pgid, err)
	}
	return nil
}

// tail returns the last n lines of b, indented on lines of their own, or
// "" when b is empty.
func tail(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) == 1 && len(lines[0]) == 0 {
		return ""
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var buf bytes.Buffer
	for _, l := range lines {
		buf.WriteString("\n    ")
		buf.Write(l)
	}
	return buf.String()
}

// tailFile returns the last n lines of the file at path (for errors).
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
		f.Seek(-64<<10, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return tail(b, n)
}
