package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/agent/outbox"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

const (
	devID      = "dev-1"
	devPass    = "device-secret-0001"
	fleetdUser = "_fleetd"
	viewerUser = "_viewer"
	svcPass    = "service-secret-0123456789"
	// waitLimit bounds every wait for something to happen; tests normally
	// take milliseconds.
	waitLimit = testenv.WaitLimit
)

// aclFile is the ACL of docs/protocol.md: devices only in their subtree.
const aclFile = `pattern read ef/v1/dev/%u/desired
pattern write ef/v1/dev/%u/reported
pattern write ef/v1/dev/%u/events
pattern write ef/v1/dev/%u/telemetry
pattern write ef/v1/dev/%u/status

user _fleetd
topic readwrite ef/v1/#

user _viewer
topic read ef/v1/#
`

// startBroker starts mosquitto with password authentication for the
// test devices and service users and the ACL of docs/protocol.md.
func startBroker(t testing.TB) *testenv.MosquittoBroker {
	t.Helper()
	return testenv.StartMosquitto(t, testenv.MosquittoConfig{
		Users: map[string]string{devID: devPass, "dev-2": devPass, fleetdUser: svcPass, viewerUser: svcPass},
		ACL:   aclFile,
		Conf:  "use_username_as_clientid true\n",
	})
}

// proxy is a TCP proxy between the uplink and the broker that the test
// can sever (abruptly, RST), close to new connections, pause in the
// client-to-broker direction, or take down and up again on its port.
type proxy struct {
	addr   string // the proxy's own host:port, kept across down and up
	target string

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	shut   bool          // refuse new connections (accept and close)
	resume chan struct{} // non-nil while paused; closed to resume
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, addr: ln.Addr().String(), target: target, conns: make(map[net.Conn]struct{})}
	go p.accept(ln)
	t.Cleanup(func() {
		p.mu.Lock()
		p.ln.Close()
		p.mu.Unlock()
		p.pause(false)
		p.sever()
	})
	return p
}

func (p *proxy) url() string { return "tcp://" + p.addr }

// down closes the proxy's port, so that connecting is refused as if the
// broker's host were gone, and severs the proxied connections.
func (p *proxy) down() {
	p.mu.Lock()
	p.ln.Close()
	p.mu.Unlock()
	p.sever()
}

// up listens on the proxy's port again after down.
func (p *proxy) up(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("proxy up again on %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go p.accept(ln)
}

func (p *proxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		shut := p.shut
		p.mu.Unlock()
		if shut {
			c.Close()
			continue
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[b] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.pipe(b, c, true)
		go p.pipe(c, b, false)
	}
}

// pipe copies src to dst until either fails, then closes both.
func (p *proxy) pipe(dst, src net.Conn, pausable bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if pausable {
				p.mu.Lock()
				wait := p.resume
				p.mu.Unlock()
				if wait != nil {
					<-wait
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	src.Close()
	dst.Close()
	p.mu.Lock()
	delete(p.conns, src)
	delete(p.conns, dst)
	p.mu.Unlock()
}

// sever resets every proxied connection, as a network cut the peers
// notice at once.
func (p *proxy) sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
		delete(p.conns, c)
	}
}

// refuse makes the proxy accept and immediately close new connections.
func (p *proxy) refuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.shut = on
}

// pause holds the bytes from the uplink to the broker (the broker gets no
// publish and sends no PUBACK) until pause(false).
func (p *proxy) pause(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && p.resume == nil:
		p.resume = make(chan struct{})
	case !on && p.resume != nil:
		close(p.resume)
		p.resume = nil
	}
}

// fleetd is a paho client acting as the control plane: it publishes
// desired states and records everything the device publishes.
type fleetd struct {
	t      testing.TB
	client mqtt.Client
	codec  *protocol.Codec

	mu   sync.Mutex
	msgs []mqttMsg
	hook func(mqttMsg) // called for each message, after it is recorded
}

// setHook makes fn see every message fleetd receives from now on, on
// paho's delivery goroutine.
func (f *fleetd) setHook(fn func(mqttMsg)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = fn
}

type mqttMsg struct {
	kind     protocol.Kind
	payload  []byte
	retained bool
}

// newFleetd connects as user (a service user) and subscribes to the
// device's subtree at QoS 0, so that the broker writes every message out
// at once rather than holding it behind a QoS 1 in-flight window.
func newFleetd(t testing.TB, brokerURL, user string, extra ...func(*mqtt.ClientOptions)) *fleetd {
	t.Helper()
	codec, err := protocol.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	f := &fleetd{t: t, codec: codec}
	opts := mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID(user).
		SetUsername(user).SetPassword(svcPass).SetCleanSession(true).
		SetAutoReconnect(false).SetProtocolVersion(4).SetOrderMatters(true)
	for _, fn := range extra {
		fn(opts)
	}
	f.client = mqtt.NewClient(opts)
	if tok := f.client.Connect(); !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		t.Fatalf("fleetd connect: %v", tok.Error())
	}
	filter := protocol.DevicePrefix + devID + "/#"
	tok := f.client.Subscribe(filter, 0, func(_ mqtt.Client, m mqtt.Message) {
		_, kind, err := protocol.ParseTopic(m.Topic())
		if err != nil {
			t.Errorf("fleetd: %v", err)
			return
		}
		msg := mqttMsg{kind: kind, payload: append([]byte(nil), m.Payload()...), retained: m.Retained()}
		f.mu.Lock()
		f.msgs = append(f.msgs, msg)
		hook := f.hook
		f.mu.Unlock()
		if hook != nil {
			hook(msg)
		}
	})
	if !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		t.Fatalf("fleetd subscribe: %v", tok.Error())
	}
	t.Cleanup(func() {
		f.client.Disconnect(0)
		codec.Close()
	})
	return f
}

func (f *fleetd) messages(kind protocol.Kind) []mqttMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []mqttMsg
	for _, m := range f.msgs {
		if m.kind == kind {
			out = append(out, m)
		}
	}
	return out
}

// publishDesired publishes payload as the device's retained desired state.
func (f *fleetd) publishDesired(payload []byte) {
	f.t.Helper()
	topic, _ := protocol.Topic(devID, protocol.KindDesired)
	tok := f.client.Publish(topic, 1, true, payload)
	if !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		f.t.Fatalf("fleetd publish desired: %v", tok.Error())
	}
}

// decodeAll decodes every message of kind fleetd received, in order.
func decodeAll[T any](f *fleetd, kind protocol.Kind, decode func([]byte) (*T, error)) []T {
	var out []T
	for _, m := range f.messages(kind) {
		v, err := decode(m.payload)
		if err != nil {
			f.t.Fatalf("fleetd: %s: %v", kind, err)
		}
		out = append(out, *v)
	}
	return out
}

// last is the latest of vs, if any.
func last[T any](vs []T) (T, bool) {
	if len(vs) == 0 {
		var zero T
		return zero, false
	}
	return vs[len(vs)-1], true
}

func (f *fleetd) statuses() []protocol.Status {
	return decodeAll(f, protocol.KindStatus, protocol.DecodeStatus)
}

func (f *fleetd) lastStatus() (protocol.Status, bool) { return last(f.statuses()) }

// waitStatus waits until the latest status is in state and returns the
// latest status.
func (f *fleetd) waitStatus(what string, state protocol.State) protocol.Status {
	f.t.Helper()
	testenv.Eventually(f.t, what, func() bool {
		s, ok := f.lastStatus()
		return ok && s.State == state
	})
	s, _ := f.lastStatus()
	return s
}

func (f *fleetd) reported() []protocol.ReportedState {
	return decodeAll(f, protocol.KindReported, protocol.DecodeReported)
}

func (f *fleetd) lastReported() (protocol.ReportedState, bool) { return last(f.reported()) }

// waitInstall waits until the latest reported state shows the install of
// seq in phase and returns the latest reported state.
func (f *fleetd) waitInstall(what string, seq uint64, phase protocol.InstallPhase) protocol.ReportedState {
	f.t.Helper()
	testenv.Eventually(f.t, what, func() bool {
		rep, _ := f.lastReported()
		return rep.Install != nil && rep.Install.Seq == seq && rep.Install.Phase == phase
	})
	rep, _ := f.lastReported()
	return rep
}

func (f *fleetd) events() []protocol.Event {
	return decodeAll(f, protocol.KindEvents, protocol.DecodeEvent)
}

func (f *fleetd) eventsOf(typ protocol.EventType) []protocol.Event {
	var out []protocol.Event
	type key struct {
		epoch string
		id    uint64
	}
	seen := map[key]bool{}
	for _, e := range f.events() {
		// Events are delivered at least once (one sent as the uplink
		// stops comes again in the next session): count each once, as
		// fleetd does.
		if k := (key{e.Epoch, e.ID}); e.Type == typ && !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	return out
}

// batches decodes every telemetry batch and says how many were compressed.
func (f *fleetd) batches() (out []protocol.TelemetryBatch, compressed int) {
	for _, m := range f.messages(protocol.KindTelemetry) {
		if protocol.IsCompressed(m.payload) {
			compressed++
		}
		b, err := f.codec.DecodeTelemetry(m.payload)
		if err != nil {
			f.t.Fatalf("fleetd: telemetry: %v", err)
		}
		out = append(out, *b)
	}
	return out, compressed
}

// recordIDs lists the outbox ids of everything received (events and
// telemetry records), in arrival order, duplicates included.
func (f *fleetd) recordIDs() []uint64 {
	f.mu.Lock()
	msgs := append([]mqttMsg(nil), f.msgs...)
	f.mu.Unlock()
	var ids []uint64
	for _, m := range msgs {
		switch m.kind {
		case protocol.KindEvents:
			e, err := protocol.DecodeEvent(m.payload)
			if err != nil {
				f.t.Fatalf("fleetd: event: %v", err)
			}
			ids = append(ids, e.ID)
		case protocol.KindTelemetry:
			b, err := f.codec.DecodeTelemetry(m.payload)
			if err != nil {
				f.t.Fatalf("fleetd: telemetry: %v", err)
			}
			for _, r := range b.Records {
				ids = append(ids, r.ID)
			}
		}
	}
	return ids
}

// testAgent records Apply calls. An Apply blocks while its seq is in
// block (until the channel is closed or its context ends), and fails with
// the first of failures (removing it), else with fail if set.
type testAgent struct {
	mu       sync.Mutex
	applied  []uint64
	active   *protocol.BundleID
	block    map[uint64]chan struct{}
	fail     error
	failures []error
	started  chan uint64
}

func newTestAgent() *testAgent {
	return &testAgent{block: make(map[uint64]chan struct{}), started: make(chan uint64, 16)}
}

func (a *testAgent) Apply(ctx context.Context, d *protocol.DesiredState, progress ProgressFunc) error {
	a.mu.Lock()
	a.applied = append(a.applied, d.Seq)
	block, fail := a.block[d.Seq], a.fail
	if len(a.failures) > 0 {
		fail, a.failures = a.failures[0], a.failures[1:]
	}
	a.mu.Unlock()
	select {
	case a.started <- d.Seq:
	default:
	}
	progress(protocol.PhaseDownloading, &protocol.Progress{Done: 0, Total: d.Bundle.Size})
	progress(protocol.PhaseDownloading, &protocol.Progress{Done: d.Bundle.Size, Total: d.Bundle.Size})
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return fmt.Errorf("download: %w", context.Cause(ctx))
		}
	}
	progress(protocol.PhaseVerifying, nil)
	progress(protocol.PhaseActivating, nil)
	if fail != nil {
		return fail
	}
	a.mu.Lock()
	a.active = &protocol.BundleID{Name: d.Bundle.Name, Version: d.Bundle.Version}
	a.mu.Unlock()
	return nil
}

func (a *testAgent) Reported() protocol.ReportedState {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := protocol.ReportedState{AgentVersion: "0.3.1", Labels: map[string]string{"site": "lab"}, Provider: "cpu"}
	if a.active != nil {
		cp := *a.active
		r.Active = &cp
	}
	return r
}

func (a *testAgent) appliedSeqs() []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]uint64(nil), a.applied...)
}

func (a *testAgent) setBlock(seq uint64) chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch := make(chan struct{})
	a.block[seq] = ch
	return ch
}

// rig is an uplink under test with its outbox, agent and state dir; it
// can be stopped and started again on the same state.
type rig struct {
	t     testing.TB
	cfg   Config
	agent *testAgent
	ob    *outbox.Outbox
	log   *testenv.SyncBuffer

	u   *Uplink
	run *testenv.Running
}

// testConfig is a Config with short backoffs for tests, and connect,
// publish and keepalive limits long enough that a busy machine never
// meets them by accident (a test about one of them sets it itself).
func testConfig(t testing.TB, brokers ...string) Config {
	return Config{
		DeviceID:       devID,
		Brokers:        brokers,
		Username:       devID,
		Password:       devPass,
		StateDir:       filepath.Join(t.TempDir(), "state"),
		KeepAlive:      15 * time.Second,
		ConnectTimeout: 15 * time.Second,
		PublishTimeout: 15 * time.Second,
		MinBackoff:     20 * time.Millisecond,
		MaxBackoff:     200 * time.Millisecond,
		ReportDebounce: 20 * time.Millisecond,
	}
}

// newFleetRig starts a broker and connects fleetd to it, and opens a rig
// (not running yet) with the testConfig for that broker.
func newFleetRig(t testing.TB) (*fleetd, *rig) {
	t.Helper()
	b := startBroker(t)
	return newFleetd(t, b.URL(), fleetdUser), newRig(t, testConfig(t, b.URL()))
}

// newRig opens an outbox and an uplink (not running yet).
func newRig(t testing.TB, cfg Config) *rig {
	t.Helper()
	r := &rig{t: t, cfg: cfg, agent: newTestAgent(), log: new(testenv.SyncBuffer)}
	ob, err := outbox.Open(filepath.Join(t.TempDir(), "outbox.db"), outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.ob = ob
	t.Cleanup(func() {
		r.stop()
		ob.Close()
		if t.Failed() {
			t.Logf("uplink log:\n%s", r.log.String())
		}
	})
	return r
}

// start creates a new Uplink on the rig's state and runs it.
func (r *rig) start() *Uplink {
	r.t.Helper()
	logger := slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	u, err := New(r.cfg, r.agent, r.ob, logger)
	if err != nil {
		r.t.Fatal(err)
	}
	r.u, r.run = u, testenv.Start(u.Run)
	return u
}

// stop ends Run through its context and checks that it returned nil.
func (r *rig) stop() {
	r.t.Helper()
	if r.u == nil {
		return
	}
	if err := r.run.Stop(waitLimit); errors.Is(err, testenv.ErrNotStopped) {
		r.t.Fatal(err)
	} else if err != nil {
		r.t.Error(err)
	}
	if err := r.u.Close(); err != nil {
		r.t.Errorf("Close: %v", err)
	}
	r.u = nil
}

func (r *rig) waitConnected() {
	r.t.Helper()
	testenv.Eventually(r.t, "the uplink to connect", r.u.Connected)
}

// appendRecords appends n prediction records and returns their ids.
func (r *rig) appendRecords(n int) []uint64 {
	r.t.Helper()
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = r.appendRecord(protocol.RecordPrediction, predictionPayload(i))
	}
	return ids
}

// appendRecord appends a record of kind and returns its id.
func (r *rig) appendRecord(kind string, payload []byte) uint64 {
	r.t.Helper()
	id, err := r.ob.Append(context.Background(), kind, payload)
	if err != nil {
		r.t.Fatal(err)
	}
	return id
}

func predictionPayload(i int) []byte {
	return fmt.Appendf(nil, `{"model":"silero-vad@1.4.0","latencyMs":%d.%d,"outputs":{"output":[0.0690874]},"n":%d}`, i%7, i%10, i)
}

// desired returns a valid desired state for the test device.
func desired(seq uint64, action protocol.Action, version string) *protocol.DesiredState {
	now := time.Now().UTC().Truncate(time.Second)
	return &protocol.DesiredState{
		V:         protocol.Version,
		DeviceID:  devID,
		Seq:       seq,
		IssuedAt:  now.Add(-time.Minute),
		ExpiresAt: now.Add(24 * time.Hour),
		Action:    action,
		Bundle: protocol.BundleRef{
			Name:    "silero-vad",
			Version: version,
			URL:     "https://fleetd.example.com/v1/bundles/silero-vad-" + version + ".bundle",
			SigURL:  "https://fleetd.example.com/v1/bundles/silero-vad-" + version + ".bundle.sig",
			SHA256:  strings.Repeat("ab", 32),
			Size:    2359296,
		},
		RolloutID: "ro-1",
	}
}

func encode(t testing.TB, m protocol.Message) []byte {
	t.Helper()
	b, err := protocol.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dedup returns ids without repeats, in order of first arrival.
func dedup(ids []uint64) []uint64 {
	seen := make(map[uint64]bool, len(ids))
	var out []uint64
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func equalIDs(a, b []uint64) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d ids, want %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Errorf("id #%d is %d, want %d", i, a[i], b[i])
		}
	}
	return nil
}

var errApply = errors.New("smoke vector \"two-sines\": output[0] = 0.91, want 0.069 ± 0.001")
