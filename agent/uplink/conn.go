package uplink

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// Reasons written in the offline Status.
const (
	reasonConnectionLost = "connection-lost" // the last will
	reasonShutdown       = "shutdown"        // Run ending
	reasonSetupFailed    = "setup-failed"    // the connection was made but its setup failed
)

// stableAfter: a connection that lasted this long resets the reconnect
// backoff; one that drops sooner (a broker that accepts and then kicks the
// device) keeps backing off.
const stableAfter = 30 * time.Second

var (
	errConnLost = errors.New("connection lost")
	errTimeout  = errors.New("no acknowledgement in time")
)

// conn is one MQTT connection: a paho client that never reconnects by
// itself. Each connection gets a fresh client, so a publish token can only
// complete on the PUBACK of the connection it was sent on (paho's own
// reconnect would complete re-queued tokens without one; see
// docs/protocol.md), and each connection gets its own last will with its
// own session number.
type conn struct {
	client  mqtt.Client
	session uint64
	// since is the Status.Time of the connection (online, will and
	// offline alike); connected is when the CONNACK arrived.
	since, connected time.Time

	lostOnce sync.Once
	lost     chan struct{} // closed when paho reports the connection lost
	lostErr  error         // set before lost is closed
}

func (c *conn) setLost(err error) {
	c.lostOnce.Do(func() {
		c.lostErr = err
		close(c.lost)
	})
}

func (c *conn) isLost() bool {
	select {
	case <-c.lost:
		return true
	default:
		return false
	}
}

// wait waits for tok, bounded by timeout, the connection and ctx.
func (c *conn) wait(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-c.lost:
		return fmt.Errorf("%w: %w", errConnLost, c.lostErr)
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return fmt.Errorf("%w (%s)", errTimeout, timeout)
	}
}

// publish sends payload at QoS 1 and waits for the broker's PUBACK.
func (u *Uplink) publish(ctx context.Context, c *conn, topic string, retained bool, payload []byte) error {
	tok := c.client.Publish(topic, 1, retained, payload)
	if err := c.wait(ctx, tok, u.cfg.PublishTimeout); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// connLoop connects, waits for the connection to end and reconnects with
// jittered exponential backoff, until ctx ends.
func (u *Uplink) connLoop(ctx context.Context) {
	var bo backoff
	bo.min, bo.max = u.cfg.MinBackoff, u.cfg.MaxBackoff
	for ctx.Err() == nil {
		c, err := u.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			u.stats.connectFailures.Add(1)
			d := bo.next()
			u.log.Warn("uplink: connect failed", "err", err, "retry_in", d.Round(time.Millisecond))
			u.waitRetry(ctx, d)
			continue
		}
		u.setConn(c)
		u.stats.connects.Add(1)
		u.log.Info("uplink: connected", "session", c.session)
		u.kickReport() // the state may have changed while connecting

		select {
		case <-ctx.Done():
			u.clearConn(c)
			u.shutdown(c)
			return
		case <-c.lost:
			u.clearConn(c)
			u.stats.connectionsLost.Add(1)
			if time.Since(c.connected) >= stableAfter {
				bo.reset()
			}
			d := bo.next()
			u.log.Warn("uplink: connection lost", "err", c.lostErr, "session", c.session, "retry_in", d.Round(time.Millisecond))
			u.waitRetry(ctx, d)
		}
	}
}

// waitRetry waits d before the next connection attempt, or less when the
// network was the problem: it probes the brokers with plain TCP
// connections, and once a probe has found none accepting and a later one
// finds one that does (the broker restarted, the link came back), it
// returns after a random part of one ProbeInterval, so that the device
// reconnects within about a second whatever the backoff has grown to, and
// a fleet that lost its broker together does not come back in the same
// instant. While no broker refuses, probes come every ProbeInterval; while
// one accepts TCP (and so refused or dropped the MQTT connection, or is
// about to go away), they come less and less often, up to maxProbeWait
// apart, and such a broker gets the whole backoff.
func (u *Uplink) waitRetry(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	pctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	down := false
	wait := u.cfg.ProbeInterval
	for {
		up := u.reachable(pctx)
		if pctx.Err() != nil {
			return
		}
		switch {
		case up && down:
			u.log.Info("uplink: a broker accepts connections again; reconnecting")
			sleep(pctx, rand.N(u.cfg.ProbeInterval))
			return
		case up:
			sleep(pctx, wait)
			wait = min(2*wait, maxProbeWait)
		default:
			down = true
			u.stats.probesRefused.Add(1)
			wait = u.cfg.ProbeInterval
			sleep(pctx, u.cfg.ProbeInterval/2+rand.N(u.cfg.ProbeInterval/2+1))
		}
	}
}

// maxProbeWait bounds the time between probes of a broker that accepts
// TCP while the uplink waits out its backoff.
const maxProbeWait = 30 * time.Second

// reachable reports whether any broker accepts a TCP connection (closed
// at once), trying each in turn within ctx and ConnectTimeout.
func (u *Uplink) reachable(ctx context.Context) bool {
	for _, addr := range u.probeAddrs {
		dctx, cancel := context.WithTimeout(ctx, u.cfg.ConnectTimeout)
		c, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
		cancel()
		if err == nil {
			c.Close()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
	}
	return false
}

// probeAddrs returns the host:port each broker URL dials (checked by
// Config.check), with the scheme's default port where the URL has none.
func probeAddrs(brokers []string) []string {
	addrs := make([]string, 0, len(brokers))
	for _, b := range brokers {
		u, err := url.Parse(b)
		if err != nil {
			continue
		}
		port := u.Port()
		if port == "" {
			port = defaultPorts[u.Scheme]
		}
		addrs = append(addrs, net.JoinHostPort(u.Hostname(), port))
	}
	return addrs
}

// defaultPorts are the ports paho dials for a broker URL without one.
var defaultPorts = map[string]string{"tcp": "1883", "mqtt": "1883", "ssl": "8883", "tls": "8883", "mqtts": "8883", "ws": "80", "wss": "443"}

// connect makes one connection: CONNECT with a last will (offline, this
// session), then the online status, the desired-state subscription and
// the reported state, each acknowledged by the broker.
func (u *Uplink) connect(ctx context.Context) (*conn, error) {
	now := time.Now().UTC()
	session, err := u.state.nextSession(now)
	if err != nil {
		u.log.Error("uplink: could not persist the session counter; continuing with the time-based one", "err", err)
	}
	u.mu.Lock()
	u.session = session
	u.mu.Unlock()
	agentVersion := u.agent.Reported().AgentVersion
	will, err := u.status(protocol.StateOffline, session, now, agentVersion, reasonConnectionLost)
	if err != nil {
		return nil, err
	}
	online, err := u.status(protocol.StateOnline, session, now, agentVersion, "")
	if err != nil {
		return nil, err
	}

	c := &conn{session: session, since: now, lost: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		SetClientID(u.cfg.DeviceID).
		SetUsername(u.cfg.Username).
		SetPassword(u.cfg.Password).
		SetCleanSession(u.cfg.CleanSession).
		SetProtocolVersion(4). // MQTT 3.1.1, no silent fallback to 3.1
		SetKeepAlive(u.cfg.KeepAlive).
		SetPingTimeout(min(u.cfg.KeepAlive, u.cfg.PublishTimeout)).
		SetConnectTimeout(u.cfg.ConnectTimeout).
		SetWriteTimeout(u.cfg.PublishTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true). // desired states in arrival order; the handler never blocks
		SetBinaryWill(u.topics.status, will, 1, true).
		SetDefaultPublishHandler(u.onUnexpected).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			c.setLost(err)
			u.clearConn(c)
		})
	if u.tls != nil {
		opts.SetTLSConfig(u.tls.Clone())
	}
	for _, b := range u.cfg.Brokers {
		opts.AddBroker(b)
	}
	c.client = mqtt.NewClient(opts)
	// Before Connect: a persistent session may deliver queued desired
	// states right after the CONNACK.
	c.client.AddRoute(u.topics.desired, u.onDesired)

	tok := c.client.Connect()
	if err := c.wait(ctx, tok, u.cfg.ConnectTimeout*time.Duration(len(u.cfg.Brokers))+time.Second); err != nil {
		// Let a connection that is still being made finish before
		// disconnecting it, so no client is left behind.
		select {
		case <-tok.Done():
		case <-time.After(u.cfg.ConnectTimeout):
		}
		c.client.Disconnect(0)
		return nil, fmt.Errorf("connect to %v: %w", u.cfg.Brokers, err)
	}
	c.connected = time.Now()

	setup := func() error {
		if err := u.publish(ctx, c, u.topics.status, true, online); err != nil {
			return err
		}
		stok := c.client.Subscribe(u.topics.desired, 1, nil)
		if err := c.wait(ctx, stok, u.cfg.PublishTimeout); err != nil {
			return fmt.Errorf("subscribe %s: %w", u.topics.desired, err)
		}
		if qos, ok := stok.(*mqtt.SubscribeToken).Result()[u.topics.desired]; !ok || qos > 2 {
			return fmt.Errorf("subscribe %s: refused by the broker (return code %#x)", u.topics.desired, qos)
		}
		if err := u.publishReported(ctx, c, true); err != nil {
			// Not fatal: the connection is good and the reported state
			// is published again on the next change.
			u.log.Error("uplink: publishing the reported state", "err", err)
		}
		return nil
	}
	if err := setup(); err != nil {
		reason := reasonSetupFailed
		if ctx.Err() != nil {
			reason = reasonShutdown
		}
		u.goOffline(c, reason)
		return nil, err
	}
	return c, nil
}

// shutdown ends a connection cleanly: a clean DISCONNECT suppresses the
// last will, so the offline status is published first.
func (u *Uplink) shutdown(c *conn) {
	u.goOffline(c, reasonShutdown)
	u.log.Info("uplink: disconnected", "session", c.session)
}

// goOffline publishes the offline status of c (best effort, bounded by
// PublishTimeout) and disconnects.
func (u *Uplink) goOffline(c *conn, reason string) {
	payload, err := u.status(protocol.StateOffline, c.session, c.since, u.agent.Reported().AgentVersion, reason)
	if err == nil {
		err = u.publish(context.Background(), c, u.topics.status, true, payload)
	}
	if err != nil {
		u.log.Warn("uplink: could not publish the offline status", "err", err)
	}
	c.client.Disconnect(250)
}

// status encodes a Status message.
func (u *Uplink) status(state protocol.State, session uint64, at time.Time, agentVersion, reason string) ([]byte, error) {
	b, err := protocol.Encode(&protocol.Status{
		V:            protocol.Version,
		DeviceID:     u.cfg.DeviceID,
		State:        state,
		Session:      session,
		Time:         at.UTC(),
		AgentVersion: agentVersion,
		Reason:       reason,
	})
	if err != nil {
		return nil, fmt.Errorf("uplink: status: %w", err)
	}
	return b, nil
}

// setConn makes c the connection in use, unless it is already lost.
func (u *Uplink) setConn(c *conn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if c.isLost() {
		return
	}
	u.cur = c
	close(u.up)
}

func (u *Uplink) clearConn(c *conn) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cur == c {
		u.cur = nil
		u.up = make(chan struct{})
	}
}

// current returns the connection in use, or nil.
func (u *Uplink) current() *conn {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cur
}

// waitConn waits until a connection is up (without spinning while there
// is none) and returns it; nil when ctx ended.
func (u *Uplink) waitConn(ctx context.Context) *conn {
	for {
		u.mu.Lock()
		c, up := u.cur, u.up
		u.mu.Unlock()
		if c != nil {
			return c
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil
		}
	}
}

// onUnexpected handles messages on topics the uplink did not subscribe
// to (none, unless a broker misroutes).
func (u *Uplink) onUnexpected(_ mqtt.Client, m mqtt.Message) {
	u.log.Warn("uplink: message on an unexpected topic ignored", "topic", m.Topic(), "bytes", len(m.Payload()))
}

// backoff is an exponential backoff with "equal jitter": each wait is
// uniformly random in [d/2, d], d doubling from min up to max, so that a
// fleet that lost its broker at once does not come back at once.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return half + rand.N(b.cur-half+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
