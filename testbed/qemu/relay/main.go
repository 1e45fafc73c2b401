// Command relay joins a guest's TCP connection to a loopback service of the
// host. QEMU's user-mode network runs it once per connection the guest
// opens to a guestfwd address (guestfwd=tcp:10.0.2.100:PORT-cmd:relay
// 127.0.0.1:PORT), with the connection as its standard input and output; it
// dials the host address and copies both ways until both sides are done.
//
// It dials loopback addresses only: an emulated device may reach the
// services its test started on this machine and nothing else. It never
// writes to its standard error, which is the guest's connection too; with
// -log FILE it appends one line per connection there.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

func main() {
	logFile := flag.String("log", "", "append a line per connection to this file")
	flag.Parse()
	logf := func(format string, args ...any) {
		if *logFile == "" {
			return
		}
		f, err := os.OpenFile(*logFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return
		}
		defer f.Close()
		fmt.Fprintf(f, "%s relay[%d] %s\n", time.Now().Format(time.RFC3339Nano), os.Getpid(), fmt.Sprintf(format, args...))
	}
	if flag.NArg() != 1 {
		logf("usage: relay [-log FILE] HOST:PORT (got %q)", flag.Args())
		os.Exit(2)
	}
	if err := relay(flag.Arg(0)); err != nil {
		logf("%s: %v", flag.Arg(0), err)
		os.Exit(1)
	}
	logf("%s: done", flag.Arg(0))
}

// relay copies between standard input/output (one socket, from QEMU) and
// addr.
func relay(addr string) error {
	if err := loopback(addr); err != nil {
		return err
	}
	guest, err := net.FileConn(os.Stdin)
	if err != nil {
		return fmt.Errorf("standard input is not a socket: %w", err)
	}
	defer guest.Close()
	host, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer host.Close()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	pipe := func(i int, dst, src net.Conn) {
		defer wg.Done()
		_, errs[i] = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go pipe(0, host, guest)
	go pipe(1, guest, host)
	wg.Wait()
	return errors.Join(errs...)
}

// loopback refuses every address that is not a loopback IP with a port.
func loopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s is not a loopback address", addr)
	}
	return nil
}
