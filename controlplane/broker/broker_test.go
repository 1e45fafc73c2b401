package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

func TestInlineSubscribeAndIngest(t *testing.T) {
	var mu sync.Mutex
	var ingested []DeviceMessage
	b := newBroker(t, func(c *Config) {
		c.Ingest = func(m DeviceMessage) error {
			mu.Lock()
			defer mu.Unlock()
			ingested = append(ingested, m)
			return nil
		}
	})

	// A retained status published before fleetd subscribes is handed to
	// the subscription at once.
	dc := mustDial(t, b.Addr(), "dev-c", "dev-c", devices["dev-c"])
	if err := dc.publish(t, topic("dev-c", protocol.KindStatus), []byte("online"), true); err != nil {
		t.Fatal(err)
	}
	got := make(chan Message, 16)
	cancel, err := b.Subscribe(protocol.Filter(protocol.KindStatus), func(m Message) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	if m := recv(t, got); m.Topic != topic("dev-c", protocol.KindStatus) || !m.Retained || string(m.Payload) != "online" {
		t.Fatalf("retained status: %+v", m)
	}
	cancel()
	cancel()

	tel := make(chan Message, 16)
	if _, err := b.Subscribe(protocol.Filter(protocol.KindTelemetry), func(m Message) { tel <- m }); err != nil {
		t.Fatal(err)
	}
	a := mustDial(t, b.Addr(), devA, devA, devices[devA])
	if err := a.publish(t, topic(devA, protocol.KindTelemetry), []byte(`{"v":1}`), false); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, tel); m.Topic != topic(devA, protocol.KindTelemetry) || string(m.Payload) != `{"v":1}` || m.Retained {
		t.Fatalf("telemetry: %+v", m)
	}
	// The cancelled status subscription no longer fires.
	if err := dc.publish(t, topic("dev-c", protocol.KindStatus), []byte("offline"), true); err != nil {
		t.Fatal(err)
	}
	if err := a.publish(t, topic(devA, protocol.KindTelemetry), []byte("after"), false); err != nil {
		t.Fatal(err)
	}
	recv(t, tel)
	// (The live copy of "online" may also have reached the subscription:
	// the device's PUBACK goes out before the broker forwards a message.)
	for len(got) > 0 {
		if m := <-got; string(m.Payload) != "online" {
			t.Fatalf("cancelled subscription got %+v", m)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	var kinds []string
	for _, m := range ingested {
		kinds = append(kinds, m.DeviceID+"/"+string(m.Kind))
	}
	if want := "dev-c/status dev-a/telemetry dev-c/status dev-a/telemetry"; strings.Join(kinds, " ") != want {
		t.Fatalf("ingested %v, want %s", kinds, want)
	}
	if !ingested[0].Retained || ingested[0].QoS != 1 {
		t.Fatalf("ingest flags: %+v", ingested[0])
	}
}

func recv(t *testing.T, ch <-chan Message) Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(wait):
		t.Fatal("no message")
	}
	return Message{}
}

// TestIngestRefusalIsNotAcknowledged: when fleetd cannot take a message,
// the device does not get a PUBACK it would delete the record on, and
// resends.
func TestIngestRefusalIsNotAcknowledged(t *testing.T) {
	var calls atomic.Int32
	b := newBroker(t, func(c *Config) {
		c.Ingest = func(m DeviceMessage) error {
			if strings.HasPrefix(string(m.Payload), "fail-once") && calls.Add(1) == 1 {
				return errors.New("disk full")
			}
			if string(m.Payload) == "always-fail" {
				return errors.New("disk full")
			}
			return nil
		}
	})
	tel := make(chan Message, 16)
	if _, err := b.Subscribe(protocol.Filter(protocol.KindTelemetry), func(m Message) { tel <- m }); err != nil {
		t.Fatal(err)
	}

	// MQTT 3.1.1 (paho): the broker drops the connection instead of
	// acknowledging, so the publish fails; the device keeps the record and
	// sends it again on its next connection. (This is the agent's pattern:
	// clean session, no paho auto-reconnect, because paho completes a
	// pending token without error when it re-queues it after a reconnect.)
	c := mustDial(t, b.Addr(), devA, devA, devices[devA])
	tok := c.Publish(topic(devA, protocol.KindTelemetry), 1, false, []byte("fail-once"))
	if !tok.WaitTimeout(wait) {
		t.Fatal("publish neither acknowledged nor failed")
	}
	if tok.Error() == nil {
		t.Fatal("a publish fleetd refused was acknowledged")
	}
	c = mustDial(t, b.Addr(), devA, devA, devices[devA])
	if err := c.publish(t, topic(devA, protocol.KindTelemetry), []byte("fail-once"), false); err != nil {
		t.Fatalf("resend: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("ingest called %d times, want 2 (refused, then resent)", n)
	}
	if m := recv(t, tel); string(m.Payload) != "fail-once" {
		t.Fatalf("got %q", m.Payload)
	}
	select {
	case m := <-tel:
		t.Fatalf("refused attempt was forwarded too: %q", m.Payload)
	default:
	}

	// MQTT 5 (mosquitto_pub): a PUBACK with reason 0x80.
	out, _ := runCLI(t, "mosquitto_pub", append(cliArgs(b.Addr(), devB, devB, devices[devB], true),
		"-t", topic(devB, protocol.KindTelemetry), "-m", "always-fail", "-q", "1")...)
	if !strings.Contains(strings.ToLower(out), "unspecified error") {
		t.Fatalf("MQTT 5 publish refused by ingest: output %q, want an 'Unspecified error' PUBACK", out)
	}
	if b.Refused(RefusedIngest) != 2 {
		t.Fatalf("ingest refusals %d, want 2", b.Refused(RefusedIngest))
	}
}

// TestRestartKeepsRetainedAndSessions: retained desired states and
// persistent device sessions survive a broker restart (bbolt store).
func TestRestartKeepsRetainedAndSessions(t *testing.T) {
	dir := t.TempDir()
	persistent := func(o *paho.ClientOptions) { o.SetCleanSession(false) }

	b1 := newBroker(t, func(c *Config) { c.DataDir = dir })
	d := &protocol.DesiredState{
		V: protocol.Version, DeviceID: devA, Seq: 7,
		IssuedAt: time.Now().UTC().Truncate(time.Second), ExpiresAt: time.Now().UTC().Add(time.Hour).Truncate(time.Second),
		Action: protocol.ActionRollback,
		Bundle: protocol.BundleRef{Name: "vad", Version: "1.0.0", URL: "https://r.example/b", SigURL: "https://r.example/s",
			SHA256: strings.Repeat("0f", 32), Size: 1},
	}
	if err := b1.PublishDesired(d); err != nil {
		t.Fatal(err)
	}
	// B subscribes in a persistent session and leaves cleanly; fleetd
	// then sends it a (non-retained) QoS 1 message, queued in its session.
	cb := mustDial(t, b1.Addr(), devB, devB, devices[devB], persistent)
	cb.subscribe(t, topic(devB, protocol.KindDesired), make(chan paho.Message, 4))
	cb.Disconnect(100)
	if err := b1.Publish(topic(devB, protocol.KindDesired), []byte("queued"), false, 1); err != nil {
		t.Fatal(err)
	}
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, StoreFile)); err != nil {
		t.Fatalf("store: %v", err)
	}

	b2 := newBroker(t, func(c *Config) { c.DataDir = dir })
	// A connects for the first time and finds its desired state.
	ca := mustDial(t, b2.Addr(), devA, devA, devices[devA])
	ch := make(chan paho.Message, 4)
	ca.subscribe(t, topic(devA, protocol.KindDesired), ch)
	select {
	case m := <-ch:
		got, err := protocol.DecodeDesired(m.Payload())
		if err != nil || got.Seq != 7 || got.Action != protocol.ActionRollback {
			t.Fatalf("desired after restart: %+v, %v", got, err)
		}
	case <-time.After(wait):
		t.Fatal("retained desired state lost across the restart")
	}
	// B's session, its subscription and the queued message survived: B
	// gets it on reconnect without subscribing again.
	reconnectB := func(b *Broker) (*client, chan paho.Message) {
		chB := make(chan paho.Message, 4)
		c := mustDial(t, b.Addr(), devB, devB, devices[devB], persistent, func(o *paho.ClientOptions) {
			o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { chB <- m })
		})
		return c, chB
	}
	cB, chB := reconnectB(b2)
	if err := b2.Publish(topic(devB, protocol.KindDesired), []byte("live"), false, 1); err != nil {
		t.Fatal(err)
	}
	// (The resent message may come second: mochi resends it right after
	// the CONNACK, racing the live one.)
	var got []string
	for len(got) < 2 {
		select {
		case m := <-chB:
			got = append(got, string(m.Payload()))
		case <-time.After(wait):
			t.Fatalf("B got only %q: persistent session lost across the restart", got)
		}
	}
	if slices.Sort(got); strings.Join(got, ",") != "live,queued" {
		t.Fatalf("B got %q, want queued and live", got)
	}
	// Acknowledged messages are gone from the store: after another
	// restart B gets only what is new.
	testenv.Eventually(t, "B's PUBACKs", func() bool {
		cl, ok := b2.srv.Clients.Get(devB)
		return ok && cl.State.Inflight.Len() == 0
	})
	cB.Disconnect(100)
	testenv.Eventually(t, "B disconnected", func() bool { return !b2.Connected(devB) })
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	b3 := newBroker(t, func(c *Config) { c.DataDir = dir })
	_, chB = reconnectB(b3)
	if err := b3.Publish(topic(devB, protocol.KindDesired), []byte("after"), false, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-chB:
		if string(m.Payload()) != "after" {
			t.Fatalf("B got %q again after acknowledging it", m.Payload())
		}
	case <-time.After(wait):
		t.Fatal("B's session lost on the second restart")
	}
}

func TestStoreLocked(t *testing.T) {
	dir := t.TempDir()
	newBroker(t, func(c *Config) { c.DataDir = dir })
	_, err := New(Config{Addr: "127.0.0.1:0", Auth: devices, DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), StoreFile) {
		t.Fatalf("second broker on the same data dir: %v, want a store error", err)
	}
}

func TestReservedAndServiceClientIDs(t *testing.T) {
	b := newBroker(t, func(c *Config) {
		c.Auth = StaticAuth{"inline": "pw-inline-000", devA: devices[devA]}
	})
	if _, err := dial(t, b.Addr(), "inline", "inline", "pw-inline-000"); err == nil {
		t.Fatal("device id \"inline\" (mochi's own client) accepted")
	}
	if b.Refused(RefusedReservedID) != 1 {
		t.Fatalf("reserved refusals: %v", b.Refusals())
	}
	if _, err := dial(t, b.Addr(), devA, svcUser, svcPass); err == nil {
		t.Fatal("service user took a device's client id")
	}
	if b.Refused(RefusedServiceClient) != 1 {
		t.Fatalf("service client refusals: %v", b.Refusals())
	}
	s := mustDial(t, b.Addr(), svcUser+"-tool", svcUser, svcPass)
	if err := s.publish(t, "ef/v1/dev/dev-a/desired", []byte("x"), false); err != nil {
		t.Fatalf("service publish: %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	log, _ := testLogger(t)
	b, err := New(Config{Addr: "127.0.0.1:0", Auth: devices, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("ef/v1/x", nil, false, 1); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Publish before Start: %v", err)
	}
	if _, err := b.Subscribe("#", func(Message) {}); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("Subscribe before Start: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var addr string
	for addr == "" {
		select {
		case err := <-done:
			t.Fatalf("Run: %v", err)
		case <-time.After(10 * time.Millisecond):
			addr = b.Addr()
		}
	}
	if err := b.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}
	mustDial(t, addr, devA, devA, devices[devA])
	if !b.Connected(devA) {
		t.Fatal("Connected(dev-a) false")
	}
	if err := b.Publish("ef/v1/+", nil, false, 1); err == nil {
		t.Fatal("Publish to a wildcard accepted")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Publish("ef/v1/x", nil, false, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if err := b.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("still listening after Close")
	}
}

func TestConfigErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no auth", Config{}, "no way for devices to authenticate"},
		{"service user is a device id", Config{Auth: devices, ServiceUsers: map[string]string{"fleetd": svcPass}}, "must not be a valid device id"},
		{"service user inline", Config{Auth: devices, ServiceUsers: map[string]string{"inline": svcPass}}, "must not be a valid device id"},
		{"short service password", Config{Auth: devices, ServiceUsers: map[string]string{"_f": "short"}}, "shorter than"},
		{"negative session expiry", Config{Auth: devices, SessionExpiry: -time.Second}, "session expiry"},
		{"data dir is a file", Config{Auth: devices, DataDir: file}, "data dir"},
		{"tls without addr", Config{Auth: devices, TLS: &TLSConfig{}}, "TLS.Addr"},
		{"tls missing cert", Config{Auth: devices, TLS: &TLSConfig{Addr: ":0", CertFile: file + "x", KeyFile: file}}, "TLS certificate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := New(c.cfg)
			if err == nil {
				b.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
		})
	}
	// A port in use fails Start, not later.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b, err := New(Config{Addr: l.Addr().String(), Auth: devices})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Start(); err == nil {
		t.Fatal("Start on a busy port succeeded")
	}
}

func TestPublishDesiredRefusesInvalid(t *testing.T) {
	b := newBroker(t, nil)
	err := b.PublishDesired(&protocol.DesiredState{V: 1, DeviceID: devA})
	if !errors.Is(err, protocol.ErrInvalid) {
		t.Fatalf("PublishDesired(invalid): %v", err)
	}
}

func ExampleBroker() {
	b, err := New(Config{
		Addr:    "127.0.0.1:0",
		Auth:    StaticAuth{"jetson-0042": "device-secret"},
		DataDir: "", // in memory; fleetd passes its data dir
	})
	if err != nil {
		panic(err)
	}
	if err := b.Start(); err != nil {
		panic(err)
	}
	defer b.Close()
	cancel, _ := b.Subscribe(protocol.Filter(protocol.KindTelemetry), func(m Message) {
		fmt.Println("telemetry on", m.Topic)
	})
	defer cancel()
	fmt.Println(b.Addr() != "")
	// Output: true
}

// TestRapidReconnect: a device that reconnects right after disconnecting
// (or while its old connection is still open) must end up with a working
// session. mochi v2.7.9 alone loses it now and then (see Broker.retire;
// without it this test fails within a few runs under -race).
func TestRapidReconnect(t *testing.T) {
	b := newBroker(t, nil)
	desired := topic(devA, protocol.KindDesired)
	var prev *client
	for i := range 40 {
		ch := make(chan paho.Message, 4)
		if prev != nil && i%2 == 0 {
			prev.Disconnect(0) // DISCONNECT racing the new CONNECT
		}
		c := mustDial(t, b.Addr(), devA, devA, devices[devA])
		if code := c.subscribe(t, desired, ch); code != 1 {
			t.Fatalf("round %d: SUBACK %#x", i, code)
		}
		p := fmt.Sprintf("round-%d", i)
		if err := b.Publish(desired, []byte(p), false, 1); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-ch:
			if string(m.Payload()) != p {
				t.Fatalf("round %d: got %q", i, m.Payload())
			}
		case <-time.After(wait):
			t.Fatalf("round %d: the new session receives nothing", i)
		}
		prev = c
	}
}

// TestLogsHoldNoPayloads: mochi attaches whole packets to some log lines;
// the broker strips them, so device payloads stay out of the logs.
func TestLogsHoldNoPayloads(t *testing.T) {
	log, buf := testLogger(t)
	b := newBroker(t, func(c *Config) { c.Logger = log })
	c := mustDial(t, b.Addr(), devA, devA, devices[devA])
	_ = c.publish(t, topic(devB, protocol.KindTelemetry), []byte("secret-payload"), false)
	testenv.Eventually(t, "the refusal to be logged", func() bool { return strings.Contains(buf.String(), "error processing packet") })
	if s := buf.String(); strings.Contains(s, "Payload:") || strings.Contains(s, "secret-payload") {
		t.Fatalf("a payload reached the logs:\n%s", s)
	}
}
