package fleet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy between devices and the MQTT broker that a test can
// sever and restore: Cut closes every connection through it (both sides,
// so the broker sees the device go and publishes its last will, and the
// device's client sees its connection drop) and refuses new ones until
// Restore. The broker and fleetd keep running meanwhile, as when a
// device's network fails. It works the same for the embedded broker and
// mosquitto.
type Proxy struct {
	ln net.Listener

	mu     sync.Mutex
	target string
	cut    bool
	closed bool
	conns  map[*link]struct{}
	wg     sync.WaitGroup

	accepted, refused uint64
}

// link is one proxied connection.
type link struct {
	down, up net.Conn // device side, broker side
	once     sync.Once
}

func (l *link) close() {
	l.once.Do(func() {
		l.down.Close()
		l.up.Close()
	})
}

// ErrProxyClosed is returned by Proxy methods after Close.
var ErrProxyClosed = errors.New("fleet: proxy closed")

// NewProxy listens on addr ("127.0.0.1:0" picks a port). Connections are
// refused (accepted and closed) until SetTarget names the broker.
func NewProxy(addr string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fleet: proxy: %w", err)
	}
	p := &Proxy{ln: ln, conns: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address devices connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTarget sets the broker's address ("host:port") for new connections.
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

// Cut closes every connection through the proxy and refuses new ones
// until Restore. It returns the number of connections it closed.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	p.cut = true
	links := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		links = append(links, l)
	}
	clear(p.conns)
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	return len(links)
}

// Restore lets connections through again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// Stats returns the connections open now and the counts of connections
// proxied and refused (while cut or without a target) since NewProxy.
func (p *Proxy) Stats() (open int, accepted, refused uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns), p.accepted, p.refused
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return
		}
		p.mu.Lock()
		target, refuse := p.target, p.cut || p.closed || p.target == ""
		if refuse {
			p.refused++
		}
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.dial(c, target)
	}
}

// dial connects a device's connection to the broker and copies both ways
// until either side closes or Cut.
func (p *Proxy) dial(down net.Conn, target string) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		down.Close()
		return
	}
	l := &link{down: down, up: up}
	p.mu.Lock()
	if p.cut || p.closed {
		p.refused++
		p.mu.Unlock()
		l.close()
		return
	}
	p.accepted++
	p.conns[l] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		l.close()
	}
	wg.Add(2)
	go pipe(up, down)
	go pipe(down, up)
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, l)
	p.mu.Unlock()
}
