package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// MosquittoBinary is where Debian's mosquitto package installs the broker.
const MosquittoBinary = "/usr/sbin/mosquitto"

// MosquittoConfig is what Mosquitto runs the broker with.
type MosquittoConfig struct {
	// Users maps usernames to passwords, written with mosquitto_passwd.
	// With none (and no Auth), anonymous clients are allowed.
	Users map[string]string
	// Auth, when set, is the authentication part of mosquitto.conf in
	// place of the one Users makes (allow_anonymous and password_file):
	// for a configuration generated elsewhere (fleetd mosquitto-config,
	// broker.MosquittoConf) or certificate logins. Users must be empty.
	Auth string
	// ACL is the content of the ACL file (acl_file); none: no ACL.
	ACL string
	// Listener holds more settings of the broker's listener, the lines
	// after its `listener PORT 127.0.0.1` (cafile, certfile, keyfile,
	// require_certificate: a TLS listener).
	Listener string
	// Listeners are more listeners, each on a loopback port of its own
	// (MosquittoBroker.Addrs) with these settings after its listener line.
	Listeners []string
	// Conf holds more mosquitto.conf lines (use_username_as_clientid,
	// say). Persistence, if Conf or Auth turns it on, goes to the
	// broker's temporary directory.
	Conf string
}

// MosquittoBroker is a mosquitto process StartMosquitto started.
type MosquittoBroker struct {
	tb    testing.TB
	dir   string
	conf  string // c, less the listener lines
	c     MosquittoConfig
	addrs []string
	out   *SyncBuffer

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// Mosquitto is StartMosquitto for a test that needs only the address,
// 127.0.0.1:PORT.
func Mosquitto(tb testing.TB, c MosquittoConfig) string {
	tb.Helper()
	return StartMosquitto(tb, c).Addr()
}

// StartMosquitto starts the Debian mosquitto broker on free loopback
// ports for the rest of tb, once it accepts connections on every
// listener. It runs without persistence and is killed when tb ends; its
// log is shown if tb failed. A missing mosquitto fails tb with the
// package that provides it. It is for a test that needs a real MQTT
// broker and may not import the control plane's (agent/ may not import
// controlplane/broker), or a test of mosquitto itself.
func StartMosquitto(tb testing.TB, c MosquittoConfig) *MosquittoBroker {
	tb.Helper()
	if _, err := os.Stat(MosquittoBinary); err != nil {
		tb.Fatalf("testenv: %s not found (apt-get install mosquitto): %v", MosquittoBinary, err)
	}
	if c.Auth != "" && len(c.Users) > 0 {
		tb.Fatalf("testenv: MosquittoConfig with both Users and Auth")
	}
	b := &MosquittoBroker{tb: tb, dir: tb.TempDir(), c: c, out: &SyncBuffer{Max: 8 << 20}}
	b.conf = b.settings()
	tb.Cleanup(func() {
		b.Kill()
		if tb.Failed() {
			tb.Logf("mosquitto log:\n%s", b.out.String())
		}
	})
	// A port is free when chosen but could be taken before mosquitto
	// binds it: then mosquitto exits, and other ports are tried.
	var logs []string
	for range 3 {
		b.addrs = b.addrs[:0]
		for range 1 + len(c.Listeners) {
			port, err := freePort()
			if err != nil {
				tb.Fatalf("testenv: %v", err)
			}
			b.addrs = append(b.addrs, fmt.Sprintf("127.0.0.1:%d", port))
		}
		if err := b.run(); err != nil {
			logs = append(logs, fmt.Sprintf("%v\n%s", err, b.out.String()))
			continue
		}
		return b
	}
	tb.Fatalf("testenv: mosquitto did not start:\n%s", strings.Join(logs, "\n"))
	return nil
}

// settings writes the password and ACL files and returns the
// configuration's lines other than the listeners.
func (b *MosquittoBroker) settings() string {
	tb, c := b.tb, b.c
	tb.Helper()
	var conf strings.Builder
	switch {
	case c.Auth != "":
		conf.WriteString(c.Auth)
		if !strings.HasSuffix(c.Auth, "\n") {
			conf.WriteString("\n")
		}
	case len(c.Users) == 0:
		conf.WriteString("allow_anonymous true\n")
	default:
		pw := filepath.Join(b.dir, "passwd")
		if err := os.WriteFile(pw, nil, 0o600); err != nil {
			tb.Fatalf("testenv: %v", err)
		}
		names := make([]string, 0, len(c.Users))
		for name := range c.Users {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			if out, err := exec.Command("mosquitto_passwd", "-b", pw, name, c.Users[name]).CombinedOutput(); err != nil {
				tb.Fatalf("testenv: mosquitto_passwd (apt-get install mosquitto): %v\n%s", err, out)
			}
		}
		fmt.Fprintf(&conf, "allow_anonymous false\npassword_file %s\n", pw)
	}
	if c.ACL != "" {
		acl := filepath.Join(b.dir, "acl")
		if err := os.WriteFile(acl, []byte(c.ACL), 0o600); err != nil {
			tb.Fatalf("testenv: %v", err)
		}
		fmt.Fprintf(&conf, "acl_file %s\n", acl)
	}
	fmt.Fprintf(&conf, "persistence_location %s/\n", b.dir)
	conf.WriteString("log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
	if os.Getuid() == 0 {
		conf.WriteString("user root\n") // otherwise it drops to "mosquitto", who cannot read the temp dir
	}
	conf.WriteString(c.Conf)
	if c.Conf != "" && !strings.HasSuffix(c.Conf, "\n") {
		conf.WriteString("\n")
	}
	return conf.String()
}

// run writes mosquitto.conf for b.addrs, starts mosquitto and waits until
// it listens on all of them; on an error mosquitto is not running.
func (b *MosquittoBroker) run() error {
	var conf strings.Builder
	listener := func(addr, settings string) {
		_, port, _ := net.SplitHostPort(addr)
		fmt.Fprintf(&conf, "listener %s 127.0.0.1\n%s", port, settings)
		if settings != "" && !strings.HasSuffix(settings, "\n") {
			conf.WriteString("\n")
		}
	}
	listener(b.addrs[0], b.c.Listener)
	conf.WriteString(b.conf)
	for i, settings := range b.c.Listeners {
		listener(b.addrs[1+i], settings)
	}
	path := filepath.Join(b.dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(MosquittoBinary, "-c", path)
	cmd.Stdout, cmd.Stderr = b.out, b.out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting mosquitto: %w", err)
	}
	b.cmd, b.exited = cmd, make(chan struct{})
	go func() { b.waitErr = cmd.Wait(); close(b.exited) }()
	for _, addr := range b.addrs {
		if err := b.waitListening(addr); err != nil {
			b.Kill()
			return err
		}
	}
	return nil
}

// waitListening waits until addr accepts a TCP connection, mosquitto
// exits, or WaitLimit has passed.
func (b *MosquittoBroker) waitListening(addr string) error {
	deadline := time.Now().Add(WaitLimit)
	for {
		select {
		case <-b.exited:
			return fmt.Errorf("mosquitto exited: %v", b.waitErr)
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mosquitto not listening on %s after %v", addr, WaitLimit)
		}
		time.Sleep(pollInterval)
	}
}

// Addr is the address of the broker's listener, 127.0.0.1:PORT.
func (b *MosquittoBroker) Addr() string { return b.addrs[0] }

// URL is Addr as a plain MQTT broker URL, tcp://127.0.0.1:PORT.
func (b *MosquittoBroker) URL() string { return "tcp://" + b.Addr() }

// Addrs are the addresses of every listener: Addr's, then those of
// MosquittoConfig.Listeners in order.
func (b *MosquittoBroker) Addrs() []string { return slices.Clone(b.addrs) }

// Pid is the running mosquitto's process id (0 after Kill), for a test
// that signals it (SIGHUP: reload the password file).
func (b *MosquittoBroker) Pid() int {
	if b.cmd == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// Log is what mosquitto has logged (since StartMosquitto).
func (b *MosquittoBroker) Log() string { return b.out.String() }

// Kill ends mosquitto with SIGKILL (no clean shutdown) and waits for it;
// it does nothing if mosquitto is not running.
func (b *MosquittoBroker) Kill() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Kill()
	<-b.exited
	b.cmd = nil
}

// Start starts mosquitto again after Kill, on the same ports with the
// same configuration, and waits until it listens; it fails the test if
// it cannot (a port taken meanwhile, say).
func (b *MosquittoBroker) Start() {
	b.tb.Helper()
	if b.cmd != nil {
		b.tb.Fatalf("testenv: mosquitto is running")
	}
	if err := b.run(); err != nil {
		b.tb.Fatalf("testenv: restarting mosquitto: %v\n%s", err, b.out.String())
	}
}

// freePort returns a loopback TCP port no one listens on now. It is not
// exported: the port can be taken before it is used, and only a caller
// that tries again with another (StartMosquitto) uses it safely.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
