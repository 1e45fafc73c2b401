package fleetd

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// externalSessionExpiry is how long the external broker keeps fleetd's
// session (its subscriptions and the QoS 1 messages not acknowledged yet)
// while fleetd is down.
const externalSessionExpiry = 7 * 24 * time.Hour

// external is fleetd's MQTT 5 client of an external broker (paho.golang's
// autopaho): it consumes device messages with acknowledgements sent only
// after they are stored, and publishes desired states.
//
// Telemetry and events come through shared subscriptions
// ($share/GROUP/ef/v1/dev/+/KIND), so replicas split them; statuses and
// reported states through plain subscriptions, because the broker does
// not send retained messages to shared subscriptions and every replica
// wants the current state at start (storing them is idempotent).
type external struct {
	s   *Server
	cfg autopaho.ClientConfig
	cm  *autopaho.ConnectionManager

	work    chan received
	workers sync.WaitGroup
	stopped chan struct{}

	// subscribed is closed when the first subscription succeeded.
	subscribed     chan struct{}
	subscribedOnce sync.Once

	mu     sync.Mutex
	cancel context.CancelFunc
}

// received is a publish handed to an ingest worker, with the client to
// acknowledge it on (acknowledgements belong to their connection).
type received struct {
	client *paho.Client
	pub    *paho.Publish
}

func newExternal(s *Server) (*external, error) {
	c := s.cfg.Broker
	u, err := url.Parse(c.External)
	if err != nil {
		return nil, fmt.Errorf("%w: broker.external: %w", ErrConfig, err)
	}
	pw, err := os.ReadFile(c.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("%w: broker.passwordFile: %w", ErrConfig, err)
	}
	tlsCfg, err := tlsConfigFor(u, c.CAFile)
	if err != nil {
		return nil, err
	}
	e := &external{s: s, work: make(chan received, c.IngestWorkers), stopped: make(chan struct{}), subscribed: make(chan struct{})}
	log := s.log.With("component", "mqtt")
	e.cfg = autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		TlsCfg:                        tlsCfg,
		KeepAlive:                     30,
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         uint32(externalSessionExpiry / time.Second),
		ReconnectBackoff:              autopaho.NewExponentialBackoff(500*time.Millisecond, 30*time.Second, time.Second, 2),
		ConnectTimeout:                10 * time.Second,
		ConnectUsername:               c.Username,
		ConnectPassword:               []byte(strings.TrimSpace(string(pw))),
		OnConnectionUp:                e.onUp,
		OnConnectError: func(err error) {
			log.Warn("fleetd: connecting to the external broker failed; retrying", "broker", c.External, "err", err)
		},
		ClientConfig: paho.ClientConfig{
			ClientID:                   c.ClientID,
			EnableManualAcknowledgment: true,
			SendAcksInterval:           5 * time.Millisecond,
			OnPublishReceived:          []func(paho.PublishReceived) (bool, error){e.onPublish},
			OnClientError: func(err error) {
				log.Warn("fleetd: external broker connection error", "err", err)
			},
			OnServerDisconnect: func(d *paho.Disconnect) {
				log.Warn("fleetd: external broker disconnected fleetd", "reason_code", d.ReasonCode)
			},
		},
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			// Bound what the broker sends before fleetd acknowledges.
			rm := uint16(max(64, min(4*c.IngestWorkers, 65535)))
			cp.Properties.ReceiveMaximum = &rm
			return cp, nil
		},
	}
	return e, nil
}

// start connects (in the background; autopaho reconnects) and starts the
// ingest workers.
func (e *external) start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	e.mu.Lock()
	e.cancel = cancel
	e.mu.Unlock()
	for range cap(e.work) {
		e.workers.Go(e.worker)
	}
	cm, err := autopaho.NewConnection(ctx, e.cfg)
	if err != nil {
		cancel()
		return fmt.Errorf("fleetd: external broker: %w", err)
	}
	e.mu.Lock()
	e.cm = cm
	e.mu.Unlock()
	return nil
}

// onUp subscribes on every connection (the session normally keeps the
// subscriptions; subscribing again is harmless and repairs a lost one).
func (e *external) onUp(cm *autopaho.ConnectionManager, ca *paho.Connack) {
	log := e.s.log.With("component", "mqtt")
	log.Info("fleetd: connected to the external broker", "broker", e.s.cfg.Broker.External, "session_present", ca.SessionPresent)
	group := e.s.cfg.Broker.SharedGroup
	sub := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: protocol.SharedFilter(group, protocol.KindTelemetry), QoS: 1},
		{Topic: protocol.SharedFilter(group, protocol.KindEvents), QoS: 1},
		{Topic: protocol.Filter(protocol.KindStatus), QoS: 1},
		{Topic: protocol.Filter(protocol.KindReported), QoS: 1},
	}}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sa, err := cm.Subscribe(ctx, sub)
		if err != nil {
			log.Error("fleetd: subscribing on the external broker", "err", err)
			return
		}
		ok := true
		for i, rc := range sa.Reasons {
			if rc >= 0x80 {
				ok = false
				log.Error("fleetd: the external broker refused a subscription (check the ACL for the service user)",
					"filter", sub.Subscriptions[i].Topic, "reason_code", rc)
			}
		}
		if ok {
			e.subscribedOnce.Do(func() { close(e.subscribed) })
		}
	}()
}

// onPublish hands a message to the workers; it blocks when they are all
// busy, which is fleetd's back-pressure on the broker.
func (e *external) onPublish(pr paho.PublishReceived) (bool, error) {
	select {
	case e.work <- received{client: pr.Client, pub: pr.Packet}:
	case <-e.stopped:
		// Not acknowledged: the broker sends it again (persistent
		// session).
	}
	return true, nil
}

func (e *external) worker() {
	for {
		var r received
		select {
		case r = <-e.work:
		case <-e.stopped:
			return
		}
		e.handle(r)
	}
}

// handle stores one message and acknowledges it. A message fleetd cannot
// store is retried until it is stored or fleetd stops, and never
// acknowledged before: acknowledgements go out in order, so skipping it
// would acknowledge it with the ones after it.
func (e *external) handle(r received) {
	s := e.s
	id, kind, err := protocol.ParseTopic(r.pub.Topic)
	if err != nil || !kind.FromDevice() {
		s.metrics.refused.WithLabelValues(protocol.ReasonTopic).Inc()
		s.log.Warn("fleetd: message on an unexpected topic dropped", "topic", r.pub.Topic)
		e.ack(r)
		return
	}
	delay := 100 * time.Millisecond
	for {
		if !s.ingestBegin() {
			return
		}
		err := s.ingest(id, kind, r.pub.Payload)
		s.ingestWG.Done()
		if err == nil {
			e.ack(r)
			return
		}
		select {
		case <-e.stopped:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

func (e *external) ack(r received) {
	if r.pub.QoS == 0 {
		return
	}
	if err := r.client.Ack(r.pub); err != nil {
		// The connection it came on is gone; the broker sends it again.
		e.s.log.Debug("fleetd: acknowledging on a closed connection", "topic", r.pub.Topic, "err", err)
	}
}

// stop stops the workers (running ones finish their message) and
// disconnects.
func (e *external) stop(ctx context.Context) {
	select {
	case <-e.stopped:
		return
	default:
	}
	close(e.stopped)
	e.workers.Wait()
	e.mu.Lock()
	cm, cancel := e.cm, e.cancel
	e.mu.Unlock()
	if cm != nil {
		// Let the acknowledgements of the last stored messages go out.
		time.Sleep(2 * e.cfg.SendAcksInterval)
		_ = cm.Disconnect(ctx)
	}
	if cancel != nil {
		cancel()
	}
}

// awaitConnection waits until the client is connected.
func (e *external) awaitConnection(ctx context.Context) error {
	e.mu.Lock()
	cm := e.cm
	e.mu.Unlock()
	if cm == nil {
		return errors.New("fleetd: external broker: not started")
	}
	return cm.AwaitConnection(ctx)
}

// awaitSubscribed waits until fleetd's subscriptions are in place.
func (e *external) awaitSubscribed(ctx context.Context) error {
	select {
	case <-e.subscribed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publishDesired publishes d retained at QoS 1 and waits for the PUBACK.
func (e *external) publishDesired(ctx context.Context, d *protocol.DesiredState) error {
	e.mu.Lock()
	cm := e.cm
	e.mu.Unlock()
	if cm == nil {
		return errors.New("external broker: not connected yet")
	}
	b, err := protocol.Encode(d)
	if err != nil {
		return err
	}
	topic, err := protocol.Topic(d.DeviceID, protocol.KindDesired)
	if err != nil {
		return err
	}
	res, err := cm.Publish(ctx, &paho.Publish{QoS: 1, Retain: true, Topic: topic, Payload: b})
	if err != nil {
		return fmt.Errorf("external broker: %w", err)
	}
	if res != nil && res.ReasonCode >= 0x80 {
		return fmt.Errorf("external broker refused the publish on %s (reason code 0x%02x; check the ACL)", topic, res.ReasonCode)
	}
	return nil
}

// clear removes the retained message of topic (an empty retained
// publish).
func (e *external) clear(ctx context.Context, topic string) error {
	e.mu.Lock()
	cm := e.cm
	e.mu.Unlock()
	if cm == nil {
		return errors.New("external broker: not connected yet")
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	_, err := cm.Publish(ctx, &paho.Publish{QoS: 1, Retain: true, Topic: topic})
	return err
}

func loadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificates", file)
	}
	return pool, nil
}
