package testenv

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestMosquitto: the broker takes its users' passwords and refuses others,
// and its ACL holds.
func TestMosquitto(t *testing.T) {
	addr := Mosquitto(t, MosquittoConfig{
		Users: map[string]string{"dev-1": "secret-1", "reader": "secret-2"},
		ACL:   "user dev-1\ntopic write t/#\n\nuser reader\ntopic read #\n",
	})
	connect := func(user, password string) (mqtt.Client, error) {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(user).
			SetUsername(user).SetPassword(password).SetAutoReconnect(false).SetProtocolVersion(4))
		tok := c.Connect()
		if !tok.WaitTimeout(time.Minute) {
			t.Fatalf("%s: no CONNACK", user)
		}
		return c, tok.Error()
	}
	if _, err := connect("dev-1", "wrong"); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	reader, err := connect("reader", "secret-2")
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Disconnect(0)
	got := make(chan string, 2)
	if tok := reader.Subscribe("#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	dev, err := connect("dev-1", "secret-1")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Disconnect(0)
	// Refused by the ACL (acknowledged and dropped over MQTT 3.1.1), then
	// allowed: the reader gets only the second.
	for _, p := range []struct{ topic, payload string }{{"u/x", "refused"}, {"t/x", "allowed"}} {
		if tok := dev.Publish(p.topic, 1, false, p.payload); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
			t.Fatalf("publish on %s: %v", p.topic, tok.Error())
		}
	}
	select {
	case m := <-got:
		if m != "allowed" {
			t.Fatalf("the reader got %q", m)
		}
	case <-time.After(time.Minute):
		t.Fatal("the reader got nothing")
	}
}

// TestMosquittoRestart: a broker with an Auth of its own and a second
// listener listens on both, and after Kill comes back on the same ports.
func TestMosquittoRestart(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", pw, "dev-1", "secret-1").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	b := StartMosquitto(t, MosquittoConfig{
		Auth:      "allow_anonymous false\npassword_file " + pw + "\n",
		Listeners: []string{""},
	})
	addrs := b.Addrs()
	if len(addrs) != 2 || addrs[0] != b.Addr() || addrs[0] == addrs[1] || b.URL() != "tcp://"+b.Addr() {
		t.Fatalf("Addr %s, URL %s, Addrs %v", b.Addr(), b.URL(), addrs)
	}
	connect := func(addr string) error {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("dev-1").
			SetUsername("dev-1").SetPassword("secret-1").SetAutoReconnect(false).SetProtocolVersion(4))
		tok := c.Connect()
		if !tok.WaitTimeout(WaitLimit) {
			t.Fatalf("%s: no CONNACK", addr)
		}
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return tok.Error()
	}
	for _, addr := range addrs {
		if err := connect(addr); err != nil {
			t.Fatalf("connect to %s: %v", addr, err)
		}
	}
	pid := b.Pid()
	b.Kill()
	if b.Pid() != 0 {
		t.Fatal("Pid after Kill is not 0")
	}
	if err := connect(b.Addr()); err == nil {
		t.Fatal("connected to a killed broker")
	}
	b.Start()
	if b.Pid() == 0 || b.Pid() == pid {
		t.Fatalf("Pid %d after Start (was %d)", b.Pid(), pid)
	}
	for _, addr := range addrs {
		if err := connect(addr); err != nil {
			t.Fatalf("connect to %s after Start: %v", addr, err)
		}
	}
}
