package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// The control plane's service user on the test broker.
const (
	fleetdUser     = "_fleetd"
	fleetdPassword = "service-secret-0123456789"
)

// brokerACL is the ACL of docs/protocol.md: a device reads its desired
// state and writes the rest of its subtree; fleetd reads and writes all.
const brokerACL = `pattern read ef/v1/dev/%u/desired
pattern write ef/v1/dev/%u/reported
pattern write ef/v1/dev/%u/events
pattern write ef/v1/dev/%u/telemetry
pattern write ef/v1/dev/%u/status

user ` + fleetdUser + `
topic readwrite ef/v1/#
`

// fleet is the control plane's side of the uplink: a mosquitto broker
// set up as docs/protocol.md describes (the agent may not import the
// control plane's embedded one), a paho client on it acting as fleetd,
// and what the device published.
type fleet struct {
	addr   string // the broker's, host:port
	client mqtt.Client

	mu       sync.Mutex
	reported *protocol.ReportedState
	status   *protocol.Status
	events   []protocol.Event
	records  []protocol.Record
	batches  []int // the number of records of each telemetry batch
}

func newFleet(t *testing.T, deviceID, password string) *fleet {
	t.Helper()
	f := &fleet{addr: testenv.Mosquitto(t, testenv.MosquittoConfig{
		Users: map[string]string{deviceID: password, fleetdUser: fleetdPassword},
		ACL:   brokerACL,
		Conf:  "use_username_as_clientid true\n",
	})}
	f.client = mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + f.addr).SetClientID(fleetdUser).
		SetUsername(fleetdUser).SetPassword(fleetdPassword).SetCleanSession(true).
		SetAutoReconnect(false).SetProtocolVersion(4).SetOrderMatters(true))
	if tok := f.client.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("fleetd connect: %v", tok.Error())
	}
	t.Cleanup(func() { f.client.Disconnect(0) })
	// QoS 0: the broker writes every message out at once rather than
	// holding it behind a QoS 1 in-flight window.
	tok := f.client.Subscribe(protocol.DevicePrefix+deviceID+"/#", 0, func(_ mqtt.Client, m mqtt.Message) {
		f.receive(t, m.Topic(), m.Payload())
	})
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("fleetd subscribe: %v", tok.Error())
	}
	return f
}

// PublishDesired publishes d as its device's retained desired state, as
// fleetd does.
func (f *fleet) PublishDesired(d *protocol.DesiredState) error {
	payload, err := protocol.Encode(d)
	if err != nil {
		return err
	}
	topic, err := protocol.Topic(d.DeviceID, protocol.KindDesired)
	if err != nil {
		return err
	}
	tok := f.client.Publish(topic, protocol.KindDesired.QoS(), true, payload)
	if !tok.WaitTimeout(30 * time.Second) {
		return fmt.Errorf("publishing the desired state: no PUBACK")
	}
	return tok.Error()
}

// receive records one message the device published.
func (f *fleet) receive(t *testing.T, topic string, payload []byte) {
	_, kind, err := protocol.ParseTopic(topic)
	if err != nil {
		t.Errorf("device published on %s: %v", topic, err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch kind {
	case protocol.KindReported:
		r, err := protocol.DecodeReported(payload)
		if err != nil {
			t.Errorf("reported state: %v", err)
			return
		}
		f.reported = r
	case protocol.KindStatus:
		s, err := protocol.DecodeStatus(payload)
		if err != nil {
			t.Errorf("status: %v", err)
			return
		}
		f.status = s
	case protocol.KindEvents:
		e, err := protocol.DecodeEvent(payload)
		if err != nil {
			t.Errorf("event: %v", err)
			return
		}
		f.events = append(f.events, *e)
	case protocol.KindTelemetry:
		b, err := protocol.DecodeTelemetry(payload)
		if err != nil {
			t.Errorf("telemetry: %v", err)
			return
		}
		f.records = append(f.records, b.Records...)
		f.batches = append(f.batches, len(b.Records))
	}
}

// until polls cond (under the fleet's lock) for up to 30s.
func (f *fleet) until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		f.mu.Lock()
		ok := cond()
		f.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newUplinkSetup starts the fleet side (mosquitto and a client playing
// fleetd) and writes an agent configuration whose uplink reaches it as
// test-device; uplink is more YAML for the uplink section (indented two
// spaces).
func newUplinkSetup(t *testing.T, uplink string) (*fleet, testSetup) {
	t.Helper()
	const password = "device-secret-0001"
	f := newFleet(t, "test-device", password)
	pw := filepath.Join(t.TempDir(), "mqtt.password")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f, newSetup(t, fmt.Sprintf("uplink:\n  broker: tcp://%s\n  username: test-device\n  passwordFile: %s\n%s", f.addr, pw, uplink))
}

// TestUplinkEndToEnd runs the agent against mosquitto: fleetd's desired
// states install and roll back, and the device reports its state,
// events and sampled predictions.
func TestUplinkEndToEnd(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	v2 := sileroBundle(t, spec{version: "2.0.0"})
	reg := newRegistry(t, v1, v2)
	f, s := newUplinkSetup(t, "")
	a := startAgent(t, s)

	f.until(t, "online status and a reported state", func() bool {
		return f.status != nil && f.status.State == protocol.StateOnline && f.reported != nil
	})
	if err := f.PublishDesired(desired(1, protocol.ActionInstall, reg.ref(t, v1))); err != nil {
		t.Fatal(err)
	}
	f.until(t, "1.0.0 reported active", func() bool {
		r := f.reported
		return r.Active != nil && r.Active.ID() == "silero-vad@1.0.0" && r.Install != nil && r.Install.Phase == protocol.PhaseSucceeded && r.Provider == "cpu"
	})
	for range 5 {
		infer(t, a.client, tensorRequest(t, "via-uplink"), false)
	}
	f.until(t, "the sampled predictions", func() bool {
		n := 0
		for _, r := range f.records {
			if r.Kind == protocol.RecordPrediction {
				n++
			}
		}
		return n == 5
	})

	if err := f.PublishDesired(desired(2, protocol.ActionInstall, reg.ref(t, v2))); err != nil {
		t.Fatal(err)
	}
	f.until(t, "2.0.0 reported active", func() bool {
		r := f.reported
		return r.Active != nil && r.Active.ID() == "silero-vad@2.0.0" && r.LastKnownGood != nil && r.LastKnownGood.ID() == "silero-vad@1.0.0"
	})
	before := reg.requests()
	if err := f.PublishDesired(desired(3, protocol.ActionRollback, reg.ref(t, v1))); err != nil {
		t.Fatal(err)
	}
	f.until(t, "the rollback to 1.0.0", func() bool {
		for _, e := range f.events {
			if e.Type == protocol.EventRollbackSucceeded && e.Seq == 3 {
				return f.reported.Active != nil && f.reported.Active.ID() == "silero-vad@1.0.0"
			}
		}
		return false
	})
	if n := reg.requests() - before; n != 0 {
		t.Errorf("the rollback downloaded %d files", n)
	}
	if r := infer(t, a.client, tensorRequest(t, ""), false); r.ModelVersion != "1.0.0" {
		t.Fatalf("serving %s", r.ModelVersion)
	}
	st, err := a.Status()
	if err != nil || st.Uplink == nil || !st.Uplink.Connected || st.Uplink.AcceptedSeq != 3 || st.Uplink.Applied != 3 {
		t.Fatalf("status %+v, %v", st.Uplink, err)
	}

	a.stop(t)
	f.until(t, "the offline status", func() bool { return f.status.State == protocol.StateOffline })
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[protocol.EventType]int{}
	for _, e := range f.events {
		seen[e.Type]++
	}
	if seen[protocol.EventAgentStarted] != 1 || seen[protocol.EventInstallSucceeded] != 2 || seen[protocol.EventRollbackSucceeded] != 1 {
		t.Errorf("events %v", seen)
	}
}
