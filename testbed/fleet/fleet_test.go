package fleet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
)

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip writes msg on c and reads it back.
func roundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if !bytes.Equal(b, []byte(msg)) {
		return errors.New("echo differs")
	}
	return nil
}

// TestProxy checks that Cut really drops connections and refuses new
// ones until Restore.
func TestProxy(t *testing.T) {
	p, err := NewProxy("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// No target yet: refused.
	if err := roundTrip(dial(), "x"); err == nil {
		t.Fatal("a connection went through before SetTarget")
	}
	p.SetTarget(echoServer(t))
	c1, c2 := dial(), dial()
	for _, c := range []net.Conn{c1, c2} {
		if err := roundTrip(c, "hello"); err != nil {
			t.Fatalf("through the proxy: %v", err)
		}
	}
	if n := p.Cut(); n != 2 {
		t.Fatalf("Cut closed %d connections, want 2", n)
	}
	for _, c := range []net.Conn{c1, c2} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("a cut connection stayed open")
			}
		}
	}
	if err := roundTrip(dial(), "again"); err == nil {
		t.Fatal("a new connection went through while cut")
	}
	p.Restore()
	if err := roundTrip(dial(), "back"); err != nil {
		t.Fatalf("after Restore: %v", err)
	}
	open, accepted, refused := p.Stats()
	if open != 1 || accepted != 3 || refused != 2 {
		t.Errorf("stats: %d open, %d accepted, %d refused; want 1, 3, 2", open, accepted, refused)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", p.Addr()); err == nil {
		t.Error("the proxy still listens after Close")
	}
}

// TestRemote runs agents against a fleetd the harness did not start
// (here another Fleet's, reached by URL and tokens): they enrol through
// its API, connect through their own proxy to its broker and show up
// online with their labels; cutting the link takes them offline.
func TestRemote(t *testing.T) {
	control := Start(t, Options{})
	labels := func(i int) map[string]string { return map[string]string{"site": "remote", "n": string(rune('0' + i))} }
	f := Start(t, Options{
		Devices:  2,
		IDPrefix: "far-",
		Labels:   labels,
		Remote:   &Remote{URL: control.Server.URL(), OperatorToken: control.OperatorToken, EnrolToken: control.EnrolToken},
	})
	if f.Server != nil {
		t.Fatal("a Remote fleet started its own fleetd")
	}
	f.WaitAll(t, "the remote devices online", func(d api.Device) bool { return Online(d) && d.Reported != nil })
	devs, err := f.Devices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range devs {
		if d.ID != f.Agents[i].ID || !maps.Equal(d.Labels, labels(i)) || !maps.Equal(d.Reported.Labels, labels(i)) {
			t.Errorf("device %d: %s with labels %v, reported %v", i, d.ID, d.Labels, d.Reported.Labels)
		}
	}
	f.CutBroker()
	f.WaitAll(t, "the remote devices offline", Offline)
	f.RestoreBroker()
	f.WaitAll(t, "the remote devices online again", Online)
}
