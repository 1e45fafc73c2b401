package cross_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

// The doc test: TestFirstDevice runs the section "Your first device" of
// docs/operations.md, block by block, as its reader would, so that the
// section cannot drift from what the product does.
//
// Each fenced block of the section that runs is marked, in the line before
// it, with an HTML comment saying where it runs:
//
//	<!-- first-device: operator -->           the operator's shell, in a checkout
//	<!-- first-device: operator, background until "TEXT" -->
//	                                          the same, left running (a terminal of its own) until its output says TEXT
//	<!-- first-device: copy to device -->     one `scp SRC... root@HOST:` line
//	<!-- first-device: device -->             a root shell on the device
//
// The operator's shell is one bash session (variables and the working
// directory carry over from block to block, as in a terminal) in a copy of
// this working tree, with this machine's Go and build caches. The device
// is a plain Debian 12 root (minbase with systemd installed but not
// running, and curl; scripts/debian-root.sh device, cached by
// scripts/setup.sh) entered with chroot, with its own /proc, /sys, /dev and
// /run. Both run in a network namespace of the test's own with nothing but
// a loopback interface, so the doc's fixed ports cannot collide with
// anything on this machine and nothing in it can reach another address.
//
// What the test translates, and only that:
//
//   - the copy block: the sources, expanded by the operator's shell, are
//     copied (cp -r) into the device's /root, where root@HOST: puts them;
//   - on the device, the one line `systemctl restart edge-agent` (or
//     `start`): systemd does not run in the chroot, so the test does what
//     the unit asks of it: it creates the unit's StateDirectory and
//     RuntimeDirectory (owner and mode), runs ExecStart as User/Group with
//     UMask and the environment systemd gives (NOTIFY_SOCKET included), and
//     waits for READY=1, as systemctl does for Type=notify. The unit's
//     sandboxing options are not applied. The agent is stopped with
//     SIGTERM (KillSignal) by its process id when the test ends.
//
// Every other line runs as written; any other systemctl line fails the
// test. The last block's answer must be the Silero VAD speech probability
// of the two-sine frame.

// firstDeviceSection is the heading of the section the test runs.
const firstDeviceSection = "## Your first device"

// docBlock is one marked block of the section.
type docBlock struct {
	line  int    // of the opening fence, in docs/operations.md
	where string // operator, device, copy
	until string // operator background blocks: the output that says it is up
	text  string
}

var markerRE = regexp.MustCompile(`^<!-- first-device: (operator|device|copy to device)(?:, background until "([^"]+)")? -->$`)

// parseFirstDevice reads the section's marked blocks. A marker must be
// followed by a fenced block, and every shell block of the section must be
// marked (an unmarked one would be a step the test skips).
func parseFirstDevice(t *testing.T, path string) []docBlock {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	start := -1
	for i, l := range lines {
		if strings.TrimSpace(l) == firstDeviceSection {
			start = i
			break
		}
	}
	if start < 0 {
		t.Fatalf("%s: no section %q", path, firstDeviceSection)
	}
	var blocks []docBlock
	var pending *docBlock
	for i := start + 1; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "## ") {
			break
		}
		if strings.HasPrefix(l, "<!-- first-device") {
			m := markerRE.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("%s:%d: marker %q: want <!-- first-device: operator|device|copy to device[, background until \"TEXT\"] -->", path, i+1, l)
			}
			if m[2] != "" && m[1] != "operator" {
				t.Fatalf("%s:%d: only operator blocks run in the background", path, i+1)
			}
			where := m[1]
			if where == "copy to device" {
				where = "copy"
			}
			pending = &docBlock{where: where, until: m[2]}
			continue
		}
		if !strings.HasPrefix(l, "```") {
			if pending != nil && strings.TrimSpace(l) != "" {
				t.Fatalf("%s:%d: the marker before is not followed by a fenced block", path, i+1)
			}
			continue
		}
		lang := strings.TrimPrefix(l, "```")
		var body []string
		open := i
		for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: unclosed fenced block", path, open+1)
		}
		switch {
		case pending != nil:
			pending.line, pending.text = open+1, strings.Join(body, "\n")+"\n"
			blocks = append(blocks, *pending)
			pending = nil
		case lang == "sh" || lang == "bash":
			t.Fatalf("%s:%d: a shell block of %q without a first-device marker: mark it (it is then run by this test) or make it plain text", path, open+1, firstDeviceSection)
		}
	}
	return blocks
}

// TestFirstDeviceDoc checks the section's markers without running it.
func TestFirstDeviceDoc(t *testing.T) {
	blocks := parseFirstDevice(t, filepath.Join(testenv.Root(t), "docs", "operations.md"))
	seen := map[string]int{}
	for _, b := range blocks {
		seen[b.where]++
	}
	if seen["operator"] < 3 || seen["device"] < 2 || seen["copy"] != 1 {
		t.Fatalf("blocks by place %v: want operator and device blocks and one copy", seen)
	}
}

// TestFirstDevice runs the section (see the top of this file). Root only:
// chroot, mounts and a network namespace; it fails, never skips, without.
func TestFirstDevice(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Fatalf("the device doc test needs linux, not %s", runtime.GOOS)
	}
	if runtime.GOARCH != "amd64" {
		t.Fatalf("the section installs the amd64 package on an amd64 device root; this is %s", runtime.GOARCH)
	}
	if os.Geteuid() != 0 {
		t.Fatal("the device doc test needs root (chroot, mounts, a network namespace): run it as root (sudo go test ./cross/ -run TestFirstDevice)")
	}
	repo := testenv.Root(t)
	blocks := parseFirstDevice(t, filepath.Join(repo, "docs", "operations.md"))
	out, err := exec.Command(filepath.Join(repo, "scripts", "debian-root.sh"), "--check", "device").CombinedOutput()
	if err != nil {
		t.Fatalf("the device doc test needs the cached device root, which scripts/setup.sh makes with debootstrap (and installs debootstrap for): %s", out)
	}
	tarball := strings.TrimSpace(string(out))
	// The doc's build runs where nothing can be downloaded: every module it
	// needs must be in the module cache already (make test's lint and
	// builds fetch them).
	list := exec.Command("go", "list", "-deps", "./agent/cmd/edge-agent", "./controlplane/cmd/fleetd", "./controlplane/cmd/fleetctl", "./cross/cmd/mkdeb")
	list.Dir, list.Env = repo, append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly")
	if b, err := list.CombinedOutput(); err != nil {
		t.Fatalf("the Go module cache lacks what the doc's `make build cross-amd64` needs, and the doc test runs offline: run `go mod download` first (make test does)\n%s", b)
	}
	started := time.Now()

	cleanStaleRuns(t)
	work, err := os.MkdirTemp("", firstDevicePrefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := newDevice(t, work, tarball)
	ns := newNetns(t, work)
	checkout := copyCheckout(t, repo, filepath.Join(work, "checkout"))
	t.Logf("device root and checkout ready in %v", time.Since(started).Round(time.Millisecond))

	op := startSession(t, ns, "operator", operatorShell(t, work, checkout))
	devsh := startSession(t, ns, "device", dev.shell())
	// The agent stops first (it flushes its outbox to fleetd while it can).
	t.Cleanup(dev.stopAgent(t))

	var last string
	for i, b := range blocks {
		t0 := time.Now()
		what := fmt.Sprintf("block %d (docs/operations.md:%d, %s)", i+1, b.line, b.where)
		switch {
		case b.where == "operator" && b.until != "":
			op.background(t, what, b.text, b.until)
		case b.where == "operator":
			last = op.run(t, what, b.text, 15*time.Minute)
		case b.where == "copy":
			copyToDevice(t, op, dev, what, b.text)
		case b.where == "device":
			last = dev.run(t, ns, devsh, what, b.text)
		}
		t.Logf("%s: %v", what, time.Since(t0).Round(time.Millisecond))
	}

	// The last block asked the device's local API: the raw frame through
	// the bundle's pre-processor and the model, answered by the rolled-out
	// version.
	if !regexp.MustCompile(`"model_version":"5\.0\.0"`).MatchString(last) ||
		!regexp.MustCompile(`"name":"output","datatype":"FP32","shape":\[1,1\],"data":\[0\.0690`).MatchString(last) {
		t.Fatalf("the device's answer is not silero-vad 5.0.0's speech probability 0.0690874:\n%s", last)
	}
	// The package's default runtime.ortLibrary ("") found ONNX Runtime
	// where the package put it: there is no other copy on the device.
	libs := dev.find(t, "libonnxruntime.so*")
	if len(libs) != 1 || libs[0] != "/usr/lib/edge-agent/libonnxruntime.so.1" {
		t.Errorf("ONNX Runtime on the device: %q, want only the package's /usr/lib/edge-agent/libonnxruntime.so.1", libs)
	}
	t.Logf("the section ran in %v", time.Since(started).Round(time.Millisecond))
}

// firstDevicePrefix names the test's work directories in $TMPDIR.
const firstDevicePrefix = "edgefleet-firstdevice-"

// cleanStaleRuns ends, unmounts and removes what a run killed without its
// cleanups (SIGKILL) left: for each work directory whose owner.pid names
// a process that no longer runs, the processes still in its network
// namespace and its device root.
func cleanStaleRuns(t *testing.T) {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), firstDevicePrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(string(b)); err != nil || alive(pid) {
			continue
		}
		t.Logf("cleaning up %s, left by an earlier run", dir)
		if id, err := os.ReadFile(filepath.Join(dir, "netns")); err == nil {
			killInNetns(t, string(id))
		}
		(&device{root: filepath.Join(dir, "device")}).cleanup(t, dir)
	}
}

// within bounds a wait by the test's deadline, keeping a minute for the
// cleanups (which unmount the device's file systems).
func within(t *testing.T, d time.Duration) time.Duration {
	if dl, ok := t.Deadline(); ok {
		if left := time.Until(dl) - time.Minute; left < d {
			return max(left, time.Second)
		}
	}
	return d
}

// ---- the network namespace ----

// netns starts processes in a network namespace with only a loopback
// interface: a goroutine locked to a thread that left the test's
// namespace forks them (children inherit the forking thread's namespace;
// the Go runtime makes its other threads from a template thread, so none
// of them is in it).
type netns struct {
	reqs chan func()
	id   string // as /proc/PID/ns/net reads, e.g. net:[4026532301]
}

// newNetns makes the namespace and records its id in work/netns, so that
// a later run can find what a killed one left running in it.
func newNetns(t *testing.T, work string) *netns {
	t.Helper()
	n := &netns{reqs: make(chan func())}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		id, err := os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- err
			return
		}
		n.id = id
		if err := loopbackUp(); err != nil {
			errc <- fmt.Errorf("bringing lo up: %w", err)
			return
		}
		errc <- nil
		for f := range n.reqs {
			f()
		}
	}()
	if err := <-errc; err != nil {
		t.Fatalf("network namespace: %v", err)
	}
	if err := os.WriteFile(filepath.Join(work, "netns"), []byte(n.id), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(n.reqs)
		killInNetns(t, n.id)
	})
	return n
}

// killInNetns kills every process in the network namespace id but this
// one (whose thread that made the namespace may be its main thread).
func killInNetns(t *testing.T, id string) {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		if l, err := os.Readlink(p + "/ns/net"); err == nil && l == id {
			pid, _ := strconv.Atoi(filepath.Base(p))
			if pid == os.Getpid() {
				continue
			}
			cmdline, _ := os.ReadFile(p + "/cmdline")
			t.Logf("killing process %d left in the test's network namespace: %s", pid, bytes.ReplaceAll(bytes.TrimSuffix(cmdline, []byte{0}), []byte{0}, []byte{' '}))
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// start starts cmd inside the namespace.
func (n *netns) start(cmd *exec.Cmd) error {
	done := make(chan error)
	n.reqs <- func() { done <- cmd.Start() }
	return <-done
}

// loopbackUp sets lo up in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// ---- shell sessions ----

// session is one persistent bash, fed the blocks on stdin, with its
// output (stdout and stderr together, in order) collected.
type session struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *notifyBuffer
	exited chan struct{}
	// files is where block scripts go, as the session sees it (inside)
	// and as the test writes it (outside).
	inside, outside string
	n               int
}

// shellSpec is how to start a session's bash.
type shellSpec struct {
	cmd             *exec.Cmd
	inside, outside string // the directory for block scripts
}

func startSession(t *testing.T, ns *netns, name string, spec shellSpec) *session {
	t.Helper()
	s := &session{name: name, cmd: spec.cmd, out: newNotifyBuffer(), exited: make(chan struct{}), inside: spec.inside, outside: spec.outside}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if s.cmd.SysProcAttr == nil {
		s.cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	s.cmd.SysProcAttr.Setpgid = true
	var err error
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := ns.start(s.cmd); err != nil {
		t.Fatalf("%s shell: %v", name, err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop ends the session and everything it started (its process group):
// SIGTERM, then SIGKILL for what is still there after 30 s.
func (s *session) stop(t *testing.T) {
	pg := s.cmd.Process.Pid
	s.stdin.Close()
	syscall.Kill(-pg, syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(-pg, 0) == nil {
		if time.Now().After(deadline) {
			t.Logf("%s: processes still running 30 s after SIGTERM: SIGKILL", s.name)
			syscall.Kill(-pg, syscall.SIGKILL)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	<-s.exited
	if t.Failed() {
		t.Logf("%s session output:\n%s", s.name, s.out.String())
	}
}

// script writes text as the session's next block file and returns its
// path inside the session.
func (s *session) script(t *testing.T, text string) (string, int) {
	t.Helper()
	s.n++
	name := fmt.Sprintf("block-%d.sh", s.n)
	if err := os.WriteFile(filepath.Join(s.outside, name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(s.inside, name), s.n
}

// run runs text in the session and returns what it printed. A command
// that fails ends the shell (bash -e), and the test.
func (s *session) run(t *testing.T, what, text string, timeout time.Duration) string {
	t.Helper()
	path, n := s.script(t, text)
	from := s.out.Len()
	marker := fmt.Sprintf("@@first-device %s %d done", s.name, n)
	fmt.Fprintf(s.stdin, "source %s\necho '%s'\n", path, marker)
	timeout = within(t, timeout)
	got, ok := s.out.waitFor(from, marker+"\n", s.exited, timeout)
	out := strings.TrimSuffix(got, marker+"\n")
	if !ok {
		select {
		case <-s.exited:
			t.Fatalf("%s failed (the shell exited %d):\n%s\n--- output:\n%s", what, s.cmd.ProcessState.ExitCode(), text, got)
		default:
			t.Fatalf("%s did not finish in %v:\n%s\n--- output:\n%s", what, timeout, text, got)
		}
	}
	t.Logf("%s:\n%s--- output:\n%s", what, text, out)
	return out
}

// background runs text in a subshell of the session, left running, and
// returns once its output holds until.
func (s *session) background(t *testing.T, what, text, until string) {
	t.Helper()
	path, n := s.script(t, text)
	log := filepath.Join(s.outside, fmt.Sprintf("block-%d.log", n))
	pidLine := fmt.Sprintf("@@first-device %s %d pid ", s.name, n)
	from := s.out.Len()
	fmt.Fprintf(s.stdin, "( source %s ) >%s 2>&1 &\necho \"%s$!\"\n", path, filepath.Join(s.inside, filepath.Base(log)), pidLine)
	got, ok := s.out.waitFor(from, pidLine, s.exited, time.Minute)
	if !ok {
		t.Fatalf("%s: the shell did not start it:\n%s", what, got)
	}
	rest, _ := s.out.waitFor(from+strings.Index(got, pidLine), "\n", s.exited, time.Minute)
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(strings.SplitN(rest, "\n", 2)[0], pidLine)))
	if err != nil {
		t.Fatalf("%s: no pid in %q", what, rest)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(log); err == nil && t.Failed() {
			t.Logf("%s output:\n%s", what, b)
		}
	})
	// Wait for the condition: its output says it is up (or it ended).
	wait := within(t, 3*time.Minute)
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(log)
		if bytes.Contains(b, []byte(until)) {
			t.Logf("%s:\n%s--- running (pid %d); its output so far:\n%s", what, text, pid, b)
			return
		}
		if !alive(pid) {
			t.Fatalf("%s ended before saying %q:\n%s\n--- output:\n%s", what, until, text, b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not say %q within %v:\n%s\n--- output:\n%s", what, until, wait, text, b)
		}
		<-tick.C
	}
}

// alive reports whether process pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...: comm may hold spaces and parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// notifyBuffer is a concurrency-safe buffer that wakes waiters on writes.
type notifyBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newNotifyBuffer() *notifyBuffer { return &notifyBuffer{changed: make(chan struct{}, 1)} }

func (b *notifyBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return n, err
}

func (b *notifyBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

func (b *notifyBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *notifyBuffer) since(from int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf.Bytes()[from:])
}

// waitFor waits until what was written after from contains s (true), or
// done is closed or timeout passes (false); it returns what was written.
func (b *notifyBuffer) waitFor(from int, s string, done <-chan struct{}, timeout time.Duration) (string, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		got := b.since(from)
		if i := strings.Index(got, s); i >= 0 {
			return got[:i+len(s)], true
		}
		select {
		case <-b.changed:
		case <-done:
			// Take what was written before the end.
			if got := b.since(from); strings.Contains(got, s) {
				continue
			}
			return b.since(from), false
		case <-timer.C:
			return b.since(from), false
		}
	}
}

// ---- the operator machine ----

// copyCheckout copies this working tree (tracked and untracked files git
// does not ignore, and the built WASM pre-processor) to dir: the
// operator's checkout, whose builds, keys and fleetd data stay out of the
// real one. Its .cache/deps is this checkout's (make deps), linked.
func copyCheckout(t *testing.T, repo, dir string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	files := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	files = append(files, "testbed/bundles/silero-vad/pre.wasm")
	for _, f := range files {
		src := filepath.Join(repo, f)
		fi, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the working tree, or not built (make builds it)
		}
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, dst); err != nil {
				t.Fatal(err)
			}
			continue
		case !fi.Mode().IsRegular():
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
		// make compares times: pre.wasm stays newer than its sources.
		if err := os.Chtimes(dst, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, ".cache"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(testenv.CacheDir(t), filepath.Join(dir, ".cache", "deps")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// operatorShell is a root login's bash in the checkout, with this
// machine's Go and its caches, and nothing of the test's environment.
func operatorShell(t *testing.T, work, checkout string) shellSpec {
	t.Helper()
	home := filepath.Join(work, "operator-home")
	blocks := filepath.Join(work, "operator-blocks")
	tmp := filepath.Join(work, "operator-tmp") // what a killed run leaves goes with work
	for _, d := range []string{home, blocks, tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"HOME=" + home, "USER=root", "LOGNAME=root", "SHELL=/bin/bash", "LANG=C.UTF-8", "TERM=dumb",
		"PATH=" + os.Getenv("PATH"), "TMPDIR=" + tmp}
	// The Go caches of this machine (the operator's would be warm too).
	for _, k := range []string{"GOCACHE", "GOMODCACHE", "GOPATH"} {
		v, err := exec.Command("go", "env", k).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", k, err)
		}
		env = append(env, k+"="+strings.TrimSpace(string(v)))
	}
	for _, k := range []string{"GOFLAGS", "GOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GOTOOLCHAIN", "WASM_CC"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	cmd := exec.Command("bash", "--noprofile", "--norc", "-e")
	cmd.Dir, cmd.Env = checkout, env
	return shellSpec{cmd: cmd, inside: blocks, outside: blocks}
}

// scpRE is the copy block: scp [-r] SRC... root@HOST:
var scpRE = regexp.MustCompile(`^scp( -r)? ((?:[^ '"\\$;&|]+ )+)root@[A-Za-z0-9.-]+:$`)

// copyToDevice does the copy block: the sources, as the operator's shell
// expands them, into the device's /root.
func copyToDevice(t *testing.T, op *session, dev *device, what, text string) {
	t.Helper()
	line := strings.TrimSpace(strings.ReplaceAll(text, "\\\n", " "))
	m := scpRE.FindStringSubmatch(line)
	if m == nil || strings.Contains(line, "\n") {
		t.Fatalf("%s: want one line `scp [-r] SRC... root@HOST:`, got:\n%s", what, text)
	}
	srcs := strings.Fields(m[2])
	out := op.run(t, what+": the sources", fmt.Sprintf("printf '@@src %%s\\n' \"$PWD\"/%s\n", strings.Join(srcs, " \"$PWD\"/")), time.Minute)
	for _, l := range strings.Split(out, "\n") {
		src, ok := strings.CutPrefix(l, "@@src ")
		if !ok {
			continue
		}
		if _, err := os.Stat(src); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		args := []string{"--preserve=mode"}
		if m[1] != "" {
			args = append(args, "-r")
		}
		if b, err := exec.Command("cp", append(args, src, filepath.Join(dev.root, "root")+"/")...).CombinedOutput(); err != nil {
			t.Fatalf("%s: cp %s: %v\n%s", what, src, err, b)
		}
		t.Logf("%s: copied %s to the device's /root", what, src)
	}
}

// ---- the device ----

// device is the clean Debian root the doc's device commands run in.
type device struct {
	root   string
	mounts []string // made by the test, in order
	agent  *unitProcess
}

// newDevice unpacks the cached root into work/device and mounts what a
// booted machine has: /proc, /sys (read-only), a /dev of its own (tmpfs
// with the usual nodes and a private devpts) and /run (tmpfs). When the
// test ends it kills what still runs in the root, unmounts everything
// under it and removes work; with mounts left it removes nothing.
func newDevice(t *testing.T, work, tarball string) *device {
	t.Helper()
	d := &device{root: filepath.Join(work, "device")}
	t.Cleanup(func() { d.cleanup(t, work) })
	if err := os.Mkdir(d.root, 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("tar", "-C", d.root, "--numeric-owner", "-xf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", tarball, err, b)
	}
	if err := os.Chmod(d.root, 0o755); err != nil { // a root directory, whatever the tarball says
		t.Fatal(err)
	}
	mount := func(src, target, fstype string, flags uintptr, data string) {
		t.Helper()
		path := filepath.Join(d.root, target)
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(src, path, fstype, flags, data); err != nil {
			t.Fatalf("mount %s on %s: %v", fstype, path, err)
		}
		d.mounts = append(d.mounts, path)
	}
	mount("proc", "proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	mount("sysfs", "sys", "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	mount("tmpfs", "dev", "tmpfs", unix.MS_NOSUID, "mode=0755,size=16m")
	for _, n := range []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}} {
		p := filepath.Join(d.root, "dev", n.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
			t.Fatalf("mknod %s: %v", p, err)
		}
		if err := os.Chmod(p, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"} {
		if err := os.Symlink(target, filepath.Join(d.root, "dev", link)); err != nil {
			t.Fatal(err)
		}
	}
	mount("devpts", "dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
	shm := filepath.Join(d.root, "dev", "shm")
	if err := os.Mkdir(shm, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shm, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	mount("tmpfs", "run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=64m")
	if err := os.MkdirAll(filepath.Join(d.root, "run", "first-device"), 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// mountsUnder lists the mount points at or under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			ms = append(ms, mp)
		}
	}
	// Deepest (and latest) first.
	for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
		ms[i], ms[j] = ms[j], ms[i]
	}
	return ms
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// stopAgent returns a cleanup that stops the agent the test started.
func (d *device) stopAgent(t *testing.T) func() {
	return func() {
		if d.agent != nil {
			d.agent.stop(t)
			d.agent = nil
		}
	}
}

func (d *device) cleanup(t *testing.T, work string) {
	d.stopAgent(t)()
	// Anything else still running in the root.
	if procs, _ := filepath.Glob("/proc/[0-9]*"); len(procs) > 0 {
		for _, p := range procs {
			if r, err := os.Readlink(p + "/root"); err == nil && (r == d.root || strings.HasPrefix(r, d.root+"/")) {
				pid, _ := strconv.Atoi(filepath.Base(p))
				t.Logf("device: killing process %d left in the root", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for _, m := range mountsUnder(d.root) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
	if left := mountsUnder(d.root); len(left) > 0 {
		t.Errorf("mounts left under %s: %q; not removing %s", d.root, left, work)
		return
	}
	if err := os.RemoveAll(work); err != nil {
		t.Errorf("removing %s: %v", work, err)
	}
}

// shell is a root login's bash on the device, in /root.
func (d *device) shell() shellSpec {
	cmd := exec.Command("/bin/bash", "--noprofile", "--norc", "-e")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: d.root}
	cmd.Dir = "/root"
	cmd.Env = []string{"HOME=/root", "USER=root", "LOGNAME=root", "SHELL=/bin/bash", "LANG=C.UTF-8", "TERM=dumb",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	return shellSpec{cmd: cmd, inside: "/run/first-device", outside: filepath.Join(d.root, "run", "first-device")}
}

var systemctlRE = regexp.MustCompile(`^systemctl (restart|start) edge-agent$`)

// run runs a device block in the device's shell; the line
// `systemctl restart|start edge-agent` is done by the test (startUnit).
func (d *device) run(t *testing.T, ns *netns, sh *session, what, text string) string {
	t.Helper()
	var out strings.Builder
	var chunk []string
	flush := func() {
		if len(chunk) > 0 {
			out.WriteString(sh.run(t, what, strings.Join(chunk, "\n")+"\n", 10*time.Minute))
			chunk = nil
		}
	}
	for _, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		switch {
		case systemctlRE.MatchString(strings.TrimSpace(l)):
			flush()
			d.startUnit(t, ns, what)
		case strings.Contains(l, "systemctl"):
			t.Fatalf("%s: %q: systemd does not run on the test's device, which does only `systemctl restart|start edge-agent`", what, l)
		default:
			chunk = append(chunk, l)
		}
	}
	flush()
	return out.String()
}

// find lists the files under the device's root matching the name pattern,
// as paths on the device.
func (d *device) find(t *testing.T, pattern string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(d.root, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if e.IsDir() && (p == filepath.Join(d.root, "proc") || p == filepath.Join(d.root, "sys") || p == filepath.Join(d.root, "dev")) {
			return filepath.SkipDir
		}
		if ok, _ := filepath.Match(pattern, e.Name()); ok && !e.IsDir() {
			found = append(found, strings.TrimPrefix(p, d.root))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// unitProcess is the agent the test started for the unit.
type unitProcess struct {
	cmd     *exec.Cmd
	journal *notifyBuffer
	exited  chan struct{}
	timeout time.Duration // TimeoutStopSec
}

func (u *unitProcess) stop(t *testing.T) {
	select {
	case <-u.exited:
	default:
		syscall.Kill(-u.cmd.Process.Pid, syscall.SIGTERM) // KillSignal=SIGTERM, to the unit's processes
		select {
		case <-u.exited:
		case <-time.After(u.timeout):
			t.Errorf("edge-agent did not stop within TimeoutStopSec (%v) of SIGTERM: SIGKILL", u.timeout)
			syscall.Kill(-u.cmd.Process.Pid, syscall.SIGKILL)
			<-u.exited
		}
	}
	t.Logf("edge-agent (pid %d) exited: %v; its journal:\n%s", u.cmd.Process.Pid, u.cmd.ProcessState, u.journal.String())
}

// startUnit is `systemctl restart edge-agent` on a machine without
// systemd: the installed unit's ExecStart, run as systemd would (see the
// top of this file), and a wait for its READY=1.
func (d *device) startUnit(t *testing.T, ns *netns, what string) {
	t.Helper()
	if d.agent != nil {
		d.agent.stop(t)
		d.agent = nil
	}
	unitPath := filepath.Join(d.root, "lib/systemd/system/edge-agent.service")
	u := readUnit(t, unitPath)
	svc := func(key string) string {
		v := u["Service."+key]
		if len(v) != 1 {
			t.Fatalf("%s: Service.%s is set %d times; the test runs a unit with it set once", unitPath, key, len(v))
		}
		return v[0]
	}
	if svc("Type") != "notify" {
		t.Fatalf("%s: Type=%s; the test knows Type=notify", unitPath, svc("Type"))
	}
	exe := svc("ExecStart")
	if strings.ContainsAny(exe, `"'$%\;`) {
		t.Fatalf("%s: ExecStart=%s: the test splits ExecStart on spaces only", unitPath, exe)
	}
	argv := strings.Fields(exe)
	user, group := svc("User"), svc("Group")
	uid, gid, home, shell := lookupUser(t, d.root, user)
	if g := lookupGroup(t, d.root, group); g != gid {
		t.Fatalf("group %s is %d, the user's primary group %d", group, g, gid)
	}
	umask, err := strconv.ParseUint(svc("UMask"), 8, 32)
	if err != nil {
		t.Fatalf("UMask=%s: %v", svc("UMask"), err)
	}
	stopTimeout, err := time.ParseDuration(svc("TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec=%s: %v", svc("TimeoutStopSec"), err)
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
		"HOME=" + home, "USER=" + user, "LOGNAME=" + user, "SHELL=" + shell}
	// StateDirectory=, RuntimeDirectory=, ConfigurationDirectory=:
	// /var/lib/X, /run/X (owned by the unit's user) and /etc/X.
	for _, dir := range []struct{ key, base, env string }{
		{"StateDirectory", "/var/lib", "STATE_DIRECTORY"},
		{"RuntimeDirectory", "/run", "RUNTIME_DIRECTORY"},
		{"ConfigurationDirectory", "/etc", "CONFIGURATION_DIRECTORY"},
	} {
		name := svc(dir.key)
		mode, err := strconv.ParseUint(svc(dir.key+"Mode"), 8, 32)
		if err != nil {
			t.Fatalf("%sMode: %v", dir.key, err)
		}
		inside := filepath.Join(dir.base, name)
		p := filepath.Join(d.root, inside)
		if err := os.MkdirAll(p, os.FileMode(mode)); err != nil {
			t.Fatal(err)
		}
		if dir.key != "ConfigurationDirectory" { // systemd chowns only state, runtime, cache and logs
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, os.FileMode(mode)); err != nil {
				t.Fatal(err)
			}
		}
		env = append(env, dir.env+"="+inside)
	}
	// NOTIFY_SOCKET: where the agent says READY=1 (and later STATUS=
	// and WATCHDOG=1, read until it exits).
	notifyInside := "/run/first-device/notify.sock"
	notifyPath := filepath.Join(d.root, notifyInside)
	os.Remove(notifyPath)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(notifyPath, 0o777); err != nil {
		conn.Close()
		t.Fatal(err)
	}
	env = append(env, "NOTIFY_SOCKET="+notifyInside)

	cmd := exec.Command("/bin/sh", append([]string{"-c", fmt.Sprintf(`umask %04o && exec "$@"`, umask), "sh"}, argv...)...)
	cmd.Dir, cmd.Env = "/", env
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: d.root, Setpgid: true,
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}}
	p := &unitProcess{cmd: cmd, journal: newNotifyBuffer(), exited: make(chan struct{}), timeout: stopTimeout}
	cmd.Stdout, cmd.Stderr = p.journal, p.journal
	if err := ns.start(cmd); err != nil {
		conn.Close()
		t.Fatalf("%s: starting %s: %v", what, exe, err)
	}
	d.agent = p
	go func() {
		cmd.Wait()
		close(p.exited)
		conn.Close()
	}()
	ready := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if msg := string(buf[:n]); slices.Contains(strings.Split(msg, "\n"), "READY=1") {
				select {
				case ready <- strings.ReplaceAll(msg, "\n", " "):
				default:
				}
			}
		}
	}()
	t.Logf("%s: systemctl restart edge-agent: started %s as %s:%s (pid %d), waiting for READY=1", what, exe, user, group, cmd.Process.Pid)
	select {
	case msg := <-ready:
		t.Logf("%s: edge-agent ready: %s", what, msg)
	case <-p.exited:
		t.Fatalf("%s: edge-agent exited before READY=1: %v\n%s", what, cmd.ProcessState, p.journal.String())
	case <-time.After(within(t, 3*time.Minute)):
		t.Fatalf("%s: no READY=1 from edge-agent:\n%s", what, p.journal.String())
	}
}

// readUnit reads a systemd unit into section.Key -> values.
func readUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the package's unit: %v", err)
	}
	kv := map[string][]string{}
	section := ""
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "["):
			section = strings.Trim(l, "[]")
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				t.Fatalf("%s: %q is not KEY=VALUE", path, l)
			}
			kv[section+"."+k] = append(kv[section+"."+k], v)
		}
	}
	return kv
}

// lookupUser reads the device's /etc/passwd.
func lookupUser(t *testing.T, root, name string) (uid, gid int, home, shell string) {
	t.Helper()
	for _, f := range colonFile(t, filepath.Join(root, "etc", "passwd")) {
		if len(f) >= 7 && f[0] == name {
			uid, _ = strconv.Atoi(f[2])
			gid, _ = strconv.Atoi(f[3])
			return uid, gid, f[5], f[6]
		}
	}
	t.Fatalf("no user %s on the device (the package's postinst creates it)", name)
	return
}

// lookupGroup reads the device's /etc/group.
func lookupGroup(t *testing.T, root, name string) int {
	t.Helper()
	for _, f := range colonFile(t, filepath.Join(root, "etc", "group")) {
		if len(f) >= 3 && f[0] == name {
			gid, _ := strconv.Atoi(f[2])
			return gid
		}
	}
	t.Fatalf("no group %s on the device", name)
	return 0
}

func colonFile(t *testing.T, path string) [][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, strings.Split(l, ":"))
		}
	}
	return out
}
