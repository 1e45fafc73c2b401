package qemu

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startOnSocketPair starts cmd with its standard input, output and error
// on one end of a socket pair, as QEMU connects a relay or a serial port's
// program, and returns the other end; the test's cleanup closes it, kills
// cmd and waits for it.
func startOnSocketPair(t *testing.T, cmd *exec.Cmd) net.Conn {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	child := os.NewFile(uintptr(fds[0]), "child")
	mine := os.NewFile(uintptr(fds[1]), "mine")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = child, child, child
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	conn, err := net.FileConn(mine)
	if err != nil {
		t.Fatal(err)
	}
	mine.Close()
	t.Cleanup(func() {
		conn.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return conn
}

// startRelay runs the relay as QEMU does: its standard input and output
// are one end of a socket pair; the other end, returned, is the guest's
// connection.
func startRelay(t *testing.T, relay string, args ...string) (net.Conn, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(relay, args...)
	return startOnSocketPair(t, cmd), cmd
}

func TestRelay(t *testing.T) {
	dir := t.TempDir()
	relay, err := BuildRelay(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	// An upper-casing line server on loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					io.WriteString(c, strings.ToUpper(sc.Text())+"\n")
				}
			}()
		}
	}()
	logFile := filepath.Join(dir, "relay.log")

	t.Run("both ways, then both closed", func(t *testing.T) {
		conn, cmd := startRelay(t, relay, "-log", logFile, ln.Addr().String())
		r := bufio.NewReader(conn)
		for _, s := range []string{"hello", "mqtt connect"} {
			io.WriteString(conn, s+"\n")
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := r.ReadString('\n')
			if err != nil || got != strings.ToUpper(s)+"\n" {
				t.Fatalf("got %q %v", got, err)
			}
		}
		// The guest closes its side: the server sees EOF and closes,
		// and the relay exits.
		conn.(*net.UnixConn).CloseWrite()
		if _, err := r.ReadString('\n'); err != io.EOF {
			t.Fatalf("after the guest's close: %v, want EOF", err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("relay: %v", err)
		}
	})

	t.Run("refuses other addresses", func(t *testing.T) {
		for _, addr := range []string{"10.0.2.2:80", "0.0.0.0:1883", "localhost:1883", "example.com:80"} {
			conn, cmd := startRelay(t, relay, "-log", logFile, addr)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := conn.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("%s: read %d, %v; want EOF", addr, n, err)
			}
			if err := cmd.Wait(); err == nil {
				t.Errorf("%s: relay exited 0", addr)
			}
		}
		b, _ := os.ReadFile(logFile)
		if !strings.Contains(string(b), "10.0.2.2:80 is not a loopback address") {
			t.Errorf("relay log:\n%s", b)
		}
	})

	t.Run("nothing listening", func(t *testing.T) {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := l.Addr().String()
		l.Close()
		conn, cmd := startRelay(t, relay, addr)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("read: %v; want EOF", err)
		}
		if err := cmd.Wait(); err == nil {
			t.Error("relay exited 0")
		}
	})
}
