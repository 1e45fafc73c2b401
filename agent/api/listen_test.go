package api

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListenUnix(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "edge-agent") // created
	sock := filepath.Join(dir, "api.sock")
	ln, err := ListenUnix(sock, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want a socket with 0660", fi.Mode())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want just the socket", len(entries))
	}

	// A second agent must not steal a live socket.
	if _, err := ListenUnix(sock, 0o660); !errors.Is(err, ErrSocketInUse) {
		t.Errorf("second ListenUnix: %v, want ErrSocketInUse", err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind by Close: %v", err)
	}

	// A stale socket (its process gone, nobody listening) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err = ListenUnix(sock, 0o600)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dialing the new socket: %v", err)
	}
	c.Close()
	ln.Close()
}

func TestListenUnixRefusesNonSocket(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "api.sock")
	if err := os.WriteFile(file, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(file, 0o660); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "precious" {
		t.Error("the file was touched")
	}
	if _, err := ListenUnix(dir, 0o660); err == nil {
		t.Error("over a directory: no error")
	}
	if _, err := ListenUnix("", 0o660); err == nil {
		t.Error("empty path: no error")
	}
	if _, err := ListenUnix(filepath.Join(dir, "x.sock"), os.ModeSetuid|0o660); err == nil {
		t.Error("setuid mode: no error")
	}
}

func TestListenTCP(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "localhost:0", "[::1]:0"} {
		ln, err := ListenTCP(addr)
		if err != nil {
			if addr == "[::1]:0" && strings.Contains(err.Error(), "cannot assign") {
				continue // no IPv6 loopback on this machine
			}
			t.Errorf("%s: %v", addr, err)
			continue
		}
		if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
			t.Errorf("%s: listening on %v", addr, ip)
		}
		ln.Close()
	}
	for _, addr := range []string{"0.0.0.0:8080", ":8080", "192.168.1.10:8080", "example.com:80", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"} {
		if _, err := ListenTCP(addr); err == nil {
			t.Errorf("%s: accepted", addr)
		}
	}
}

// TestListenError: a failed bind is a *ListenError naming the address,
// with the errno (not the net package's "listen tcp ...: bind:" prefix).
func TestListenError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	_, err = ListenTCP(addr)
	var le *ListenError
	if !errors.As(err, &le) || le.Addr != addr || !errors.Is(err, syscall.EADDRINUSE) ||
		err.Error() != "api: cannot listen on "+addr+": address already in use" {
		t.Errorf("address in use: %v (%#v)", err, le)
	}
	_, err = ListenAnyTCP(addr)
	if !errors.As(err, &le) || le.Addr != addr || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("ListenAnyTCP, address in use: %v", err)
	}

	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := ListenUnix(sock, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = ListenUnix(sock, 0o660)
	if !errors.As(err, &le) || le.Addr != sock || !errors.Is(err, ErrSocketInUse) {
		t.Errorf("socket in use: %v", err)
	}
}
