package testenv

import (
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
