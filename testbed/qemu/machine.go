package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FleetIP is the address at which a guest reaches the host services in
// Config.Forwards.
const FleetIP = "10.0.2.100"

// SeedDir is where the guest sees its seed disk (read-only).
const SeedDir = "/run/edgefleet/seed"

// Defaults.
const (
	DefaultCPUs      = 1
	DefaultMemoryMiB = 512
	// DefaultCPU is the emulated CPU: every feature QEMU has, with the
	// implementation-defined pointer authentication algorithm, which
	// QEMU's TCG computes far faster than the architected one.
	DefaultCPU = "max,pauth-impdef=on"
	// DefaultQEMU is the emulator (Debian package qemu-system-arm).
	DefaultQEMU = "qemu-system-aarch64"
	// CommandPort is the virtio-serial port of the command channel.
	CommandPort = "org.edgefleet.cmd"
)

// Errors callers branch on.
var (
	// ErrTool is wrapped when a program the testbed runs is missing; the
	// message names the Debian package that provides it.
	ErrTool = errors.New("qemu: missing program")
	// ErrConfig is wrapped by every invalid Config.
	ErrConfig = errors.New("qemu: invalid configuration")
	// ErrNotRunning is returned by operations on a machine that is not
	// running (never started, stopped, powered off or exited).
	ErrNotRunning = errors.New("qemu: machine not running")
	// ErrRunning is returned by Start on a machine that runs already.
	ErrRunning = errors.New("qemu: machine already running")
	// ErrAgentFailed is wrapped by WaitReady when edge-agent.service
	// failed.
	ErrAgentFailed = errors.New("qemu: edge-agent.service failed")
)

// Image is a built device image (firmware/image): the kernel, its
// initramfs and the root filesystem that every machine's overlay is
// backed by. The files are only read.
type Image struct {
	Kernel string // vmlinuz
	Initrd string // initrd.img
	RootFS string // raw ext4 image of the root filesystem
}

// Forward makes a loopback service of the host reachable from the guest at
// FleetIP:GuestPort.
type Forward struct {
	GuestPort int
	// HostAddr is a loopback "IP:port" on this machine; anything else is
	// refused.
	HostAddr string
}

// Config describes one emulated device.
type Config struct {
	// Name is the device's name: its hostname (through the seed) and the
	// prefix of its log lines. Like a device id: 1 to 64 of A-Z a-z 0-9 . _ -
	Name  string
	Image Image
	// Dir holds the machine's files: the overlay (dev.qcow2), the seed
	// disk, console.log and qemu.log. It is created if missing; the
	// caller removes it.
	Dir string

	CPUs      int    // default DefaultCPUs
	MemoryMiB int    // default DefaultMemoryMiB
	CPU       string // -cpu, default DefaultCPU
	// MAC is the network card's address; default 52:54:00 and three
	// bytes of a hash of Name.
	MAC string
	// Seed holds the files of the seed disk by path relative to its root
	// ("etc/edge-agent/config.yaml"); the file "hostname" defaults to
	// Name. See the package documentation.
	Seed map[string][]byte
	// Forwards are the host services the guest may reach.
	Forwards []Forward
	// Relay is the relay program (BuildRelay); needed with Forwards.
	Relay string
	// KernelArgs are appended to the kernel command line.
	KernelArgs []string
	// QEMU is the emulator, default DefaultQEMU.
	QEMU string
	// Logger receives the machine's lifecycle logs; nil discards them.
	Logger *slog.Logger
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !nameRE.MatchString(c.Name) {
		bad("name %q: want 1 to 64 of A-Z a-z 0-9 . _ -", c.Name)
	}
	for what, p := range map[string]string{"image kernel": c.Image.Kernel, "image initrd": c.Image.Initrd, "image root filesystem": c.Image.RootFS} {
		if p == "" {
			bad("%s: not set", what)
		} else if _, err := os.Stat(p); err != nil {
			bad("%s: %w", what, err)
		}
	}
	if c.Dir == "" {
		bad("dir: not set")
	}
	if c.CPUs < 0 || c.CPUs > 8 {
		bad("cpus %d: want 1 to 8", c.CPUs)
	}
	if c.MemoryMiB != 0 && (c.MemoryMiB < 128 || c.MemoryMiB > 16384) {
		bad("memoryMiB %d: want 128 to 16384", c.MemoryMiB)
	}
	if c.MAC != "" {
		if hw, err := net.ParseMAC(c.MAC); err != nil || len(hw) != 6 {
			bad("mac %q: want six bytes like 52:54:00:12:34:56", c.MAC)
		}
	}
	ports := map[int]bool{}
	for _, f := range c.Forwards {
		if f.GuestPort < 1 || f.GuestPort > 65535 {
			bad("forward %d: guest port out of range", f.GuestPort)
		}
		if ports[f.GuestPort] {
			bad("forward %d: guest port listed twice", f.GuestPort)
		}
		ports[f.GuestPort] = true
		if err := loopback(f.HostAddr); err != nil {
			bad("forward %d: %w", f.GuestPort, err)
		}
	}
	if len(c.Forwards) > 0 {
		switch {
		case c.Relay == "":
			bad("relay: needed with forwards (BuildRelay)")
		case strings.ContainsAny(c.Relay, ", '\"\\"):
			bad("relay %q: the path must not hold commas, spaces, quotes or backslashes", c.Relay)
		}
	}
	for p := range c.Seed {
		if err := seedPath(p); err != nil {
			bad("seed: %w", err)
		}
	}
	for _, a := range c.KernelArgs {
		if a == "" || strings.ContainsAny(a, " \t\n") {
			bad("kernel argument %q: want one word", a)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return nil
}

// loopback accepts a loopback "IP:port" only.
func loopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("host address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("host address %q: only loopback addresses may be forwarded", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("host address %q: bad port", addr)
	}
	return nil
}

// Boot says how long a boot took, up to the agent being active.
type Boot struct {
	// Wall is the host's time from Start to WaitReady seeing the agent
	// active (including QEMU's start and the polling interval).
	Wall time.Duration
	// Userspace is the guest's time from kernel start to systemd's start
	// in the root filesystem (kernel and initramfs).
	Userspace time.Duration
	// Agent is the guest's time from kernel start to edge-agent.service
	// becoming active (READY=1: model loaded, API listening).
	Agent time.Duration
}

func (b Boot) String() string {
	return fmt.Sprintf("agent active %.1fs after kernel start (kernel+initramfs %.1fs), %.1fs after qemu start",
		b.Agent.Seconds(), b.Userspace.Seconds(), b.Wall.Seconds())
}

// Machine is one emulated device. Its methods are safe for concurrent use.
type Machine struct {
	cfg     Config
	log     *slog.Logger
	qemu    string
	overlay string
	seed    string
	console string
	qemuLog string
	sockDir string

	mu      sync.Mutex
	proc    *os.Process
	done    chan struct{} // closed when the current QEMU exits
	exitErr error
	started time.Time
	ch      *channel
	qmp     *qmpConn
	boots   int
	closed  bool
}

// New checks cfg and prepares the machine's disks (a qcow2 overlay of the
// image's root filesystem, the seed disk); it does not start it. It needs
// qemu-img (qemu-utils) and mkfs.ext4 (e2fsprogs).
func New(cfg Config) (*Machine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = DefaultCPUs
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = DefaultMemoryMiB
	}
	if cfg.CPU == "" {
		cfg.CPU = DefaultCPU
	}
	if cfg.QEMU == "" {
		cfg.QEMU = DefaultQEMU
	}
	if cfg.MAC == "" {
		h := sha256.Sum256([]byte(cfg.Name))
		cfg.MAC = fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2])
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	qemu, err := lookTool(cfg.QEMU, "qemu-system-arm")
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("qemu: machine %s: %w", cfg.Name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: machine %s: %w", cfg.Name, err)
	}
	m := &Machine{
		cfg:     cfg,
		log:     log.With("device", cfg.Name),
		qemu:    qemu,
		overlay: filepath.Join(dir, "dev.qcow2"),
		seed:    filepath.Join(dir, "seed.img"),
		console: filepath.Join(dir, "console.log"),
		qemuLog: filepath.Join(dir, "qemu.log"),
	}
	root, err := filepath.Abs(cfg.Image.RootFS)
	if err != nil {
		return nil, err
	}
	if err := run("qemu-utils", "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", root, m.overlay); err != nil {
		return nil, fmt.Errorf("qemu: machine %s: overlay: %w", cfg.Name, err)
	}
	seed := map[string][]byte{"hostname": []byte(cfg.Name + "\n")}
	for p, b := range cfg.Seed {
		seed[filepath.Clean(p)] = b
	}
	if err := writeSeed(m.seed, filepath.Join(dir, "seed.d"), seed); err != nil {
		return nil, fmt.Errorf("qemu: machine %s: seed: %w", cfg.Name, err)
	}
	// Unix socket paths are limited to 108 bytes: keep them short.
	if m.sockDir, err = os.MkdirTemp("", "efqemu-"); err != nil {
		return nil, fmt.Errorf("qemu: machine %s: %w", cfg.Name, err)
	}
	return m, nil
}

// Name is the machine's Config.Name.
func (m *Machine) Name() string { return m.cfg.Name }

// Config is the machine's configuration, with the defaults filled in.
func (m *Machine) Config() Config { return m.cfg }

// ConsolePath is the file the serial console is written to (appended to
// across boots).
func (m *Machine) ConsolePath() string { return m.console }

// Console returns the serial console's log so far.
func (m *Machine) Console() ([]byte, error) { return os.ReadFile(m.console) }

// ConsoleTail returns at most n bytes of the end of the console log, for
// failure messages.
func (m *Machine) ConsoleTail(n int) string {
	b, err := m.Console()
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (m *Machine) args() []string {
	c := &m.cfg
	esc := func(s string) string { return strings.ReplaceAll(s, ",", ",,") }
	kernelArgs := append([]string{"root=/dev/vda", "ro", "rootwait", "console=ttyAMA0", "panic=5"}, c.KernelArgs...)
	netdev := "user,id=net0,restrict=on,ipv6=off"
	for _, f := range c.Forwards {
		netdev += fmt.Sprintf(",guestfwd=tcp:%s:%d-cmd:%s %s", FleetIP, f.GuestPort, c.Relay, f.HostAddr)
	}
	return []string{
		"-nodefaults", "-no-user-config", "-display", "none",
		"-M", "virt", "-cpu", c.CPU, "-smp", strconv.Itoa(c.CPUs), "-m", strconv.Itoa(c.MemoryMiB),
		"-kernel", c.Image.Kernel, "-initrd", c.Image.Initrd, "-append", strings.Join(kernelArgs, " "),
		"-chardev", "file,id=console,append=on,path=" + esc(m.console),
		"-serial", "chardev:console",
		// The root disk first: the guest names it /dev/vda.
		"-drive", "if=none,id=root,format=qcow2,discard=unmap,file=" + esc(m.overlay),
		"-device", "virtio-blk-pci,drive=root",
		"-drive", "if=none,id=seed,format=raw,readonly=on,file=" + esc(m.seed),
		"-device", "virtio-blk-pci,drive=seed",
		"-netdev", netdev,
		"-device", "virtio-net-pci,romfile=,netdev=net0,mac=" + c.MAC, // no PXE ROM (ipxe-qemu) needed
		"-device", "virtio-serial-pci,id=vser0",
		"-chardev", "socket,id=cmd,server=on,wait=off,path=" + esc(filepath.Join(m.sockDir, "cmd")),
		"-device", "virtserialport,bus=vser0.0,chardev=cmd,name=" + CommandPort,
		"-device", "virtio-rng-pci",
		"-qmp", "unix:" + esc(filepath.Join(m.sockDir, "qmp")) + ",server=on,wait=off",
	}
}

// Start boots the machine (again, after a Stop or PowerCut: its disk
// keeps what the last run wrote). It returns once QEMU runs and its
// control sockets are connected; WaitReady waits for the guest.
func (m *Machine) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("qemu: machine %s: closed", m.cfg.Name)
	}
	if m.runningLocked() {
		return fmt.Errorf("qemu: machine %s: %w", m.cfg.Name, ErrRunning)
	}
	m.boots++
	if err := appendLine(m.console, fmt.Sprintf("\n=== testbed: %s boot %d at %s ===\n", m.cfg.Name, m.boots, time.Now().Format(time.RFC3339))); err != nil {
		return fmt.Errorf("qemu: machine %s: %w", m.cfg.Name, err)
	}
	logf, err := os.OpenFile(m.qemuLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("qemu: machine %s: %w", m.cfg.Name, err)
	}
	for _, s := range []string{"cmd", "qmp"} {
		os.Remove(filepath.Join(m.sockDir, s))
	}
	cmd := exec.Command(m.qemu, m.args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group (Close and PowerCut kill the group), and
	// killed if this process dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("qemu: machine %s: starting %s: %w", m.cfg.Name, m.qemu, err)
	}
	done := make(chan struct{})
	m.proc, m.done, m.exitErr, m.started = cmd.Process, done, nil, time.Now()
	m.log.Info("qemu started", "pid", cmd.Process.Pid, "boot", m.boots)
	go func() {
		err := cmd.Wait()
		logf.Close()
		m.mu.Lock()
		m.exitErr = err
		m.mu.Unlock()
		m.log.Info("qemu exited", "pid", cmd.Process.Pid, "status", fmt.Sprint(err))
		close(done)
	}()

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	qmp, err := dialQMP(ctx, filepath.Join(m.sockDir, "qmp"), done)
	if err == nil {
		var conn net.Conn
		if conn, err = dialUnix(ctx, filepath.Join(m.sockDir, "cmd"), done); err == nil {
			m.qmp, m.ch = qmp, newChannel(conn, m.log)
			return nil
		}
		qmp.close()
	}
	m.killLocked()
	return fmt.Errorf("qemu: machine %s: %w\n%s", m.cfg.Name, err, tail(m.qemuLog, 2000))
}

func (m *Machine) runningLocked() bool {
	if m.done == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// Running says whether QEMU runs.
func (m *Machine) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.runningLocked()
}

// Exited is closed when the current run's QEMU exits (nil before Start).
func (m *Machine) Exited() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done
}

// Wait waits until QEMU exits (the guest powered off, or a PowerCut or
// Close killed it) and returns its exit error: nil after a clean
// power-off.
func (m *Machine) Wait(ctx context.Context) error {
	m.mu.Lock()
	done := m.done
	m.mu.Unlock()
	if done == nil {
		return fmt.Errorf("qemu: machine %s: %w", m.cfg.Name, ErrNotRunning)
	}
	select {
	case <-done:
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.exitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// live returns the running machine's channels.
func (m *Machine) live() (*channel, *qmpConn, chan struct{}, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.runningLocked() {
		return nil, nil, nil, fmt.Errorf("qemu: machine %s: %w", m.cfg.Name, ErrNotRunning)
	}
	return m.ch, m.qmp, m.done, nil
}

// ExitError is a command that ran in the guest and exited non-zero.
type ExitError struct {
	Command string
	Code    int
	Output  []byte
}

func (e *ExitError) Error() string {
	out := bytes.TrimSpace(e.Output)
	if len(out) > 2000 {
		out = append([]byte("..."), out[len(out)-2000:]...)
	}
	return fmt.Sprintf("qemu: %q exited %d: %s", e.Command, e.Code, out)
}

// Exec runs a bash command line as root in the guest and returns its
// standard output and standard error, combined. A command that exits
// non-zero returns its output and an *ExitError. With a deadline on ctx
// the command is killed in the guest (timeout(1)) when it passes. The
// command's standard input is /dev/null; commands run one at a time.
func (m *Machine) Exec(ctx context.Context, command string) ([]byte, error) {
	ch, _, done, err := m.live()
	if err != nil {
		return nil, err
	}
	out, code, err := ch.exec(ctx, command, done)
	if err != nil {
		return out, fmt.Errorf("qemu: machine %s: %q: %w", m.cfg.Name, command, err)
	}
	if code != 0 {
		return out, &ExitError{Command: command, Code: code, Output: out}
	}
	return out, nil
}

// WaitShell waits until the guest's command channel answers.
func (m *Machine) WaitShell(ctx context.Context) error {
	ch, _, done, err := m.live()
	if err != nil {
		return err
	}
	if err := ch.waitReady(ctx, done); err != nil {
		return fmt.Errorf("qemu: machine %s: waiting for the command channel: %w", m.cfg.Name, err)
	}
	return nil
}

// WaitReady waits until edge-agent.service is active in the guest (the
// agent sent READY=1) and says how long the boot took. If the unit failed
// the error wraps ErrAgentFailed and holds its status and journal.
func (m *Machine) WaitReady(ctx context.Context) (Boot, error) {
	m.mu.Lock()
	started := m.started
	m.mu.Unlock()
	if err := m.WaitShell(ctx); err != nil {
		return Boot{}, err
	}
	for {
		out, _ := m.Exec(ctx, "systemctl is-active edge-agent.service")
		state := strings.TrimSpace(string(out))
		if state == "active" {
			break
		}
		if state == "failed" {
			st, _ := m.Exec(ctx, "systemctl status --no-pager edge-agent.service; journalctl -b --no-pager -n 60 -u edge-agent.service")
			return Boot{}, fmt.Errorf("qemu: machine %s: %w:\n%s", m.cfg.Name, ErrAgentFailed, st)
		}
		select {
		case <-ctx.Done():
			return Boot{}, fmt.Errorf("qemu: machine %s: edge-agent.service is %q: %w", m.cfg.Name, state, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	b := Boot{Wall: time.Since(started)}
	out, err := m.Exec(ctx, "systemctl show -p UserspaceTimestampMonotonic --value; systemctl show -p ActiveEnterTimestampMonotonic --value edge-agent.service")
	if err != nil {
		return b, err
	}
	f := strings.Fields(string(out))
	if len(f) == 2 {
		us, _ := strconv.ParseInt(f[0], 10, 64)
		agent, _ := strconv.ParseInt(f[1], 10, 64)
		b.Userspace, b.Agent = time.Duration(us)*time.Microsecond, time.Duration(agent)*time.Microsecond
	}
	m.log.Info("agent active", "boot", b.String())
	return b, nil
}

// QMP runs a QEMU Machine Protocol command (https://qemu.org/docs/master/interop/qemu-qmp-ref.html)
// and returns its "return" value.
func (m *Machine) QMP(ctx context.Context, command string, args any) (json.RawMessage, error) {
	_, q, _, err := m.live()
	if err != nil {
		return nil, err
	}
	r, err := q.exec(ctx, command, args)
	if err != nil {
		return nil, fmt.Errorf("qemu: machine %s: qmp %s: %w", m.cfg.Name, command, err)
	}
	return r, nil
}

// SetLink takes the device's network link down (up=false: a network cut;
// the guest sees its cable pulled) or up again.
func (m *Machine) SetLink(ctx context.Context, up bool) error {
	_, err := m.QMP(ctx, "set_link", map[string]any{"name": "net0", "up": up})
	if err == nil {
		m.log.Info("link", "up", up)
	}
	return err
}

// PowerCut kills QEMU at once (SIGKILL): the guest loses what it had not
// written to its disk, as in a power loss. What QEMU had written to the
// overlay stays; Start boots it again.
func (m *Machine) PowerCut() error {
	m.mu.Lock()
	if !m.runningLocked() {
		m.mu.Unlock()
		return fmt.Errorf("qemu: machine %s: %w", m.cfg.Name, ErrNotRunning)
	}
	done := m.done
	m.killLocked()
	m.mu.Unlock()
	<-done
	m.log.Info("power cut")
	return nil
}

// killLocked kills QEMU's process group and closes the control sockets.
func (m *Machine) killLocked() {
	if m.proc != nil {
		syscall.Kill(-m.proc.Pid, syscall.SIGKILL)
		m.proc.Kill()
	}
	if m.ch != nil {
		m.ch.close()
		m.ch = nil
	}
	if m.qmp != nil {
		m.qmp.close()
		m.qmp = nil
	}
}

// Stop shuts the guest down cleanly (systemctl poweroff through the
// command channel) and waits for QEMU to exit. If it has not when ctx
// ends, the power is cut and the error says so. Stopping a machine that
// does not run does nothing.
func (m *Machine) Stop(ctx context.Context) error {
	_, _, done, err := m.live()
	if err != nil {
		return nil
	}
	ask, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = m.Exec(ask, "systemctl --no-block poweroff")
	cancel()
	if err != nil {
		// The shutdown may have closed the channel before the answer
		// came; waiting tells.
		m.log.Info("poweroff: no answer from the command channel; waiting for qemu to exit", "err", err)
	}
	select {
	case <-done:
		m.log.Info("powered off")
		m.mu.Lock()
		m.killLocked() // the sockets
		m.mu.Unlock()
		return nil
	case <-ctx.Done():
		m.PowerCut()
		return fmt.Errorf("qemu: machine %s: no clean power-off, power cut: %w", m.cfg.Name, ctx.Err())
	}
}

// Close kills the machine if it runs and removes its sockets. The files in
// Config.Dir stay.
func (m *Machine) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	done := m.done
	m.killLocked()
	m.mu.Unlock()
	if done != nil {
		<-done
	}
	return os.RemoveAll(m.sockDir)
}

// dialUnix connects to a socket QEMU creates, retrying until it exists.
func dialUnix(ctx context.Context, path string, done <-chan struct{}) (net.Conn, error) {
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return c, nil
		}
		select {
		case <-done:
			return nil, fmt.Errorf("qemu exited before %s was ready", filepath.Base(path))
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to %s: %w (last: %v)", path, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// lookTool finds a program or fails naming its Debian package.
func lookTool(name, pkg string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: %s not found: apt-get install %s", ErrTool, name, pkg)
	}
	return p, nil
}

// run runs a program from Debian package pkg and returns its output in the
// error when it fails.
func run(pkg, name string, args ...string) error {
	p, err := lookTool(name, pkg)
	if err != nil {
		return err
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func appendLine(path, s string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = io.WriteString(f, s)
	return errors.Join(err, f.Close())
}

// tail is the end of a file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
