package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// MosquittoBinary is where Debian's mosquitto package installs the broker.
const MosquittoBinary = "/usr/sbin/mosquitto"

// MosquittoConfig is what Mosquitto runs the broker with.
type MosquittoConfig struct {
	// Users maps usernames to passwords, written with mosquitto_passwd.
	// With none, anonymous clients are allowed.
	Users map[string]string
	// ACL is the content of the ACL file (acl_file); none: no ACL.
	ACL string
	// Conf holds more mosquitto.conf lines (use_username_as_clientid,
	// say).
	Conf string
}

// Mosquitto starts the Debian mosquitto broker on a free loopback port
// for the rest of tb and returns its address, 127.0.0.1:PORT, once it
// accepts connections. It runs without persistence and is killed when tb
// ends; its log is shown if tb failed. A missing mosquitto fails tb with
// the package that provides it. It is for a test that needs a real MQTT
// broker and may not import the control plane's (agent/ may not import
// controlplane/broker).
func Mosquitto(tb testing.TB, c MosquittoConfig) string {
	tb.Helper()
	if _, err := os.Stat(MosquittoBinary); err != nil {
		tb.Fatalf("testenv: %s not found (apt-get install mosquitto): %v", MosquittoBinary, err)
	}
	dir := tb.TempDir()
	var conf strings.Builder
	if len(c.Users) == 0 {
		conf.WriteString("allow_anonymous true\n")
	} else {
		pw := filepath.Join(dir, "passwd")
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
		acl := filepath.Join(dir, "acl")
		if err := os.WriteFile(acl, []byte(c.ACL), 0o600); err != nil {
			tb.Fatalf("testenv: %v", err)
		}
		fmt.Fprintf(&conf, "acl_file %s\n", acl)
	}
	conf.WriteString("persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
	if os.Getuid() == 0 {
		conf.WriteString("user root\n") // otherwise it drops to "mosquitto", who cannot read the temp dir
	}
	conf.WriteString(c.Conf)

	// The port is free when chosen but could be taken before mosquitto
	// binds it: then mosquitto exits, and another port is tried.
	var logs []string
	for range 3 {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("testenv: %v", err)
		}
		path := filepath.Join(dir, "mosquitto.conf")
		if err := os.WriteFile(path, fmt.Appendf(nil, "listener %d 127.0.0.1\n%s", port, conf.String()), 0o600); err != nil {
			tb.Fatalf("testenv: %v", err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		out := new(syncBuffer)
		cmd := exec.Command(MosquittoBinary, "-c", path)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			tb.Fatalf("testenv: starting mosquitto: %v", err)
		}
		var waitErr error
		exited := make(chan struct{})
		go func() { waitErr = cmd.Wait(); close(exited) }()
		if err := waitListening(addr, exited, &waitErr); err != nil {
			_ = cmd.Process.Kill()
			<-exited
			logs = append(logs, fmt.Sprintf("%v\n%s", err, out.String()))
			continue
		}
		tb.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
			if tb.Failed() {
				tb.Logf("mosquitto log:\n%s", out.String())
			}
		})
		return addr
	}
	tb.Fatalf("testenv: mosquitto did not start:\n%s", strings.Join(logs, "\n"))
	return ""
}

// waitListening waits until addr accepts a TCP connection, the process
// ends (exited is closed, *waitErr set), or a minute has passed.
func waitListening(addr string, exited <-chan struct{}, waitErr *error) error {
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-exited:
			return fmt.Errorf("mosquitto exited: %v", *waitErr)
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mosquitto not listening on %s after a minute", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freePort returns a loopback TCP port no one listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer is a bytes.Buffer safe for a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
