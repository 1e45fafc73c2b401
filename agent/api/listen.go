package api

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// ErrSocketInUse is returned by ListenUnix when another process serves the
// socket path.
var ErrSocketInUse = errors.New("socket in use")

// A ListenError is a listener ListenUnix or ListenTCP could not make: the
// socket path or address, and why, without the net package's operation
// prefix ("address already in use", "permission denied", ErrSocketInUse,
// ...). Err keeps the syscall errno where there is one, so that
// errors.Is(err, syscall.EADDRINUSE) holds.
type ListenError struct {
	Addr string
	Err  error
}

func (e *ListenError) Error() string { return "api: cannot listen on " + e.Addr + ": " + e.Err.Error() }
func (e *ListenError) Unwrap() error { return e.Err }

// listenError is a ListenError for addr. A *net.OpError (listen tcp
// 127.0.0.1:8080: bind: address already in use) becomes its errno.
func listenError(addr string, err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		err = se.Err
	}
	return &ListenError{Addr: addr, Err: err}
}

// ListenUnix listens on a unix socket at path with permissions mode (e.g.
// 0o660: the agent's user and group may connect). It creates the parent
// directory (0o755) if missing. A socket left at path by a process that is
// gone is replaced; a live one gives ErrSocketInUse, and anything else at
// path (a file, a directory) is left alone and refused. Failures to bind
// are *ListenError.
//
// The socket is bound under a temporary name, given its mode, then renamed
// into place, so it is never reachable with other permissions. Closing the
// listener removes the socket if it is still the one it created.
func ListenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("api: unix socket path is empty")
	}
	if mode&^os.ModePerm != 0 {
		return nil, fmt.Errorf("api: unix socket %s: mode %v has bits other than permissions", path, mode)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, listenError(path, err)
	}
	if err := checkStale(path); err != nil {
		return nil, err
	}
	tmp := filepath.Join(dir, "."+filepath.Base(path)+"."+strconv.Itoa(os.Getpid())+".tmp")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, listenError(path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, listenError(path, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, listenError(path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &unixListener{UnixListener: ln, path: path, fi: fi}, nil
}

// checkStale makes path free for a new socket: nothing there, or a socket
// nobody answers on (removed).
func checkStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return listenError(path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return listenError(path, fmt.Errorf("path exists and is not a socket (%v); refusing to replace it", fi.Mode().Type()))
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return listenError(path, fmt.Errorf("%w: another process is listening on it", ErrSocketInUse))
	}
	// Nobody answers: a stale socket of a process that is gone. The
	// rename in ListenUnix replaces it atomically; remove it now anyway
	// so that a failure later leaves no stale socket behind.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return listenError(path, fmt.Errorf("removing the stale socket: %w", err))
	}
	return nil
}

type unixListener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo
	once sync.Once
}

// Close closes the listener and removes its socket, unless another
// process has put its own there since.
func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.fi) {
			os.Remove(l.path)
		}
	})
	return err
}

// ListenTCP listens on a loopback TCP address, e.g. "127.0.0.1:8080" or
// "[::1]:8080" or "localhost:8080". Other addresses are refused: the API
// has no authentication, so it must not be reachable from the network.
// Failures to bind are *ListenError.
func ListenTCP(addr string) (net.Listener, error) {
	if err := CheckLoopback(addr); err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, listenError(addr, err)
	}
	return ln, nil
}

// ListenAnyTCP listens on any TCP address, e.g. "0.0.0.0:8081", for a
// listener whose clients authenticate (the gRPC API with MutualTLS); the
// unauthenticated REST API takes ListenTCP. Failures to bind are
// *ListenError.
func ListenAnyTCP(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, listenError(addr, err)
	}
	return ln, nil
}

// CheckLoopback reports whether addr is host:port with a loopback IP
// address or "localhost" as host.
func CheckLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("api: address %q: %w", addr, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
		return fmt.Errorf("api: address %q: invalid port %q", addr, port)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("api: address %q: host must be a loopback address (127.0.0.1, ::1 or localhost): the API has no authentication", addr)
	}
	return nil
}
