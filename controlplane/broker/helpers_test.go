package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

// wait bounds every wait for something that should happen; it is a
// safety net against hangs, never a measurement.
const wait = 30 * time.Second

// testLogger returns a logger whose output is printed if the test fails.
func testLogger(t *testing.T) (*slog.Logger, *testenv.SyncBuffer) {
	buf := new(testenv.SyncBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// Test credentials.
const (
	svcUser = "_fleetd"
	svcPass = "service-password-0123456789"
	devA    = "dev-a"
	devB    = "dev-b"
)

var devices = StaticAuth{devA: "pass-a", devB: "pass-b", "dev-c": "pass-c"}

// newBroker starts an embedded broker on a random loopback port.
func newBroker(t *testing.T, mod func(*Config)) *Broker {
	t.Helper()
	log, _ := testLogger(t)
	cfg := Config{
		Addr:         "127.0.0.1:0",
		Auth:         devices,
		ServiceUsers: map[string]string{svcUser: svcPass},
		Logger:       log,
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// client is a paho MQTT 3.1.1 client with its connection-lost signal.
type client struct {
	paho.Client
	lost chan error
	conn chan net.Conn // the raw connections it opened
}

// dial connects a paho client; mods adjust the options.
func dial(t *testing.T, addr, clientID, user, pass string, mods ...func(*paho.ClientOptions)) (*client, error) {
	t.Helper()
	c := &client{lost: make(chan error, 1), conn: make(chan net.Conn, 4)}
	opts := paho.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(clientID).
		SetUsername(user).
		SetPassword(pass).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(wait).
		SetWriteTimeout(wait).
		SetKeepAlive(30 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case c.lost <- err:
			default:
			}
		}).
		SetCustomOpenConnectionFn(func(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
			conn, err := net.DialTimeout("tcp", u.Host, wait)
			if err == nil {
				select {
				case c.conn <- conn:
				default:
				}
			}
			return conn, err
		})
	for _, m := range mods {
		m(opts)
	}
	c.Client = paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		return nil, fmt.Errorf("connect %s: timed out", clientID)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(100)
		}
	})
	return c, nil
}

func mustDial(t *testing.T, addr, clientID, user, pass string, mods ...func(*paho.ClientOptions)) *client {
	t.Helper()
	c, err := dial(t, addr, clientID, user, pass, mods...)
	if err != nil {
		t.Fatalf("connect %s: %v", clientID, err)
	}
	return c
}

// publish publishes at QoS 1 and waits for the PUBACK or the connection
// to drop; it returns the token's error, or errLost.
func (c *client) publish(t *testing.T, topic string, payload []byte, retain bool) error {
	t.Helper()
	tok := c.Publish(topic, 1, retain, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case err := <-c.lost:
		return fmt.Errorf("%w: %v", errLost, err)
	case <-time.After(wait):
		t.Fatalf("publish %s: neither acknowledged nor disconnected", topic)
	}
	return nil
}

var errLost = fmt.Errorf("connection lost")

// subscribe subscribes at QoS 1 and returns the granted code (0x80 for a
// refusal).
func (c *client) subscribe(t *testing.T, filter string, ch chan<- paho.Message) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) { ch <- m })
	if !tok.WaitTimeout(wait) {
		t.Fatalf("subscribe %s: timed out", filter)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

// observer is a service client subscribed to the whole tree.
type observer struct {
	ch chan paho.Message
}

func newObserver(t *testing.T, addr, user, pass string) *observer {
	t.Helper()
	o := &observer{ch: make(chan paho.Message, 1024)}
	c := mustDial(t, addr, user+"-observer", user, pass)
	if code := c.subscribe(t, "ef/v1/#", o.ch); code != 1 {
		t.Fatalf("observer subscribe: code %#x", code)
	}
	return o
}

// until collects messages up to and including the first on topic with
// payload, failing if it does not arrive.
func (o *observer) until(t *testing.T, topic, payload string) []paho.Message {
	t.Helper()
	var got []paho.Message
	deadline := time.After(wait)
	for {
		select {
		case m := <-o.ch:
			got = append(got, m)
			if m.Topic() == topic && string(m.Payload()) == payload {
				return got
			}
		case <-deadline:
			t.Fatalf("no message %q on %s; got %d others", payload, topic, len(got))
		}
	}
}

// marker publishes a fresh message from device id to its own telemetry
// and waits for the observer to see it, returning everything the observer
// saw before. Anything a refused publish had leaked would be in there.
func marker(t *testing.T, addr string, o *observer, id, pass string) []paho.Message {
	t.Helper()
	c := mustDial(t, addr, id, id, pass)
	topic := "ef/v1/dev/" + id + "/telemetry"
	payload := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	if err := c.publish(t, topic, []byte(payload), false); err != nil {
		t.Fatalf("marker publish: %v", err)
	}
	c.Disconnect(100)
	return o.until(t, topic, payload)
}

func assertNone(t *testing.T, msgs []paho.Message, payload string) {
	t.Helper()
	for _, m := range msgs {
		if string(m.Payload()) == payload {
			t.Fatalf("refused message %q arrived on %s", payload, m.Topic())
		}
	}
}

// runCLI runs a mosquitto client binary with a deadline and returns its
// combined output and exit code.
func runCLI(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	path := "/usr/bin/" + bin
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s not found (apt-get install mosquitto-clients): %v", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out; output:\n%s", bin, strings.Join(args, " "), out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	return string(out), code
}

// cliArgs returns the connection arguments for mosquitto_pub/sub.
func cliArgs(addr, clientID, user, pass string, v5 bool) []string {
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"-h", host, "-p", port, "-i", clientID, "-u", user, "-P", pass}
	if v5 {
		args = append(args, "-V", "5")
	} else {
		args = append(args, "-V", "311")
	}
	return args
}

// startMosquitto runs mosquitto (testenv.StartMosquitto) with the
// configuration MosquittoConf makes for the password file passwd and the
// ACL acl, and more listeners with the settings in listeners.
func startMosquitto(t testing.TB, passwd, acl string, listeners ...string) *testenv.MosquittoBroker {
	t.Helper()
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	aclFile := filepath.Join(dir, "acl")
	if err := os.WriteFile(pwFile, []byte(passwd), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(aclFile, []byte(acl), 0o600); err != nil {
		t.Fatal(err)
	}
	return testenv.StartMosquitto(t, testenv.MosquittoConfig{Auth: MosquittoConf(pwFile, aclFile), Listeners: listeners})
}
