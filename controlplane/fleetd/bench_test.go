package fleetd_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// The benchmarks simulate a fleet with real paho MQTT clients on
// loopback:
//
//	go test -run '^$' -bench . -benchtime 3x ./controlplane/fleetd/
//
// BenchmarkIngest: every round, each of benchDevices devices publishes one
// telemetry batch of benchRecords records (QoS 1, zstd as the agent's
// codec writes it, 1000 batches in flight); a round ends when fleetd has
// stored and counted every record. Embedded broker and external mosquitto
// side by side. BenchmarkDeviceMemory: fleetd's heap per connected idle
// device, the devices running in a child process so that their own
// memory is not counted.

const (
	benchDevices = 1000
	benchRecords = 50
	// envFarm makes the test binary a device farm (see TestMain).
	envFarm = "FLEETD_TEST_DEVICE_FARM"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(envFarm); spec != "" {
		os.Exit(deviceFarm(spec))
	}
	os.Exit(m.Run())
}

// fleet is a set of enrolled devices with their credentials.
type fleet struct {
	ids, passwords []string
}

func enrolFleet(b *testing.B, ts *testServer, n int) *fleet {
	b.Helper()
	f := &fleet{ids: make([]string, n), passwords: make([]string, n)}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		f.ids[i] = fmt.Sprintf("bench-%04d", i)
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			f.passwords[i] = ts.enroll(b, f.ids[i], nil)
		})
	}
	wg.Wait()
	return f
}

// connectAll connects every device of f to addr, concurrently.
func (f *fleet) connectAll(b *testing.B, addr string) []*device {
	b.Helper()
	devs := make([]*device, len(f.ids))
	errs := make(chan error, len(f.ids))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range f.ids {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			var err error
			deadline := time.Now().Add(wait)
			for {
				if devs[i], err = dialDevice(b, addr, f.ids[i], f.passwords[i]); err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		for _, d := range devs {
			d.close()
		}
	})
	return devs
}

// encodedBatches returns each device's next batch, encoded like the agent
// does (zstd over 2 KiB).
func encodedBatches(b *testing.B, codec *protocol.Codec, ids []string, round int) [][]byte {
	out := make([][]byte, len(ids))
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, id := range ids {
		bt := &protocol.TelemetryBatch{V: 1, DeviceID: id, Epoch: "bench"}
		for r := range benchRecords {
			n := uint64(round*benchRecords + r + 1)
			bt.Records = append(bt.Records, protocol.Record{ID: n, Kind: protocol.RecordPrediction, Time: t0.Add(time.Duration(n) * time.Millisecond),
				Payload: json.RawMessage(fmt.Sprintf(`{"model":"silero-vad@1.4.0","latencyMs":%d.%d,"outputs":{"output":[0.%07d]}}`, n%7, n%10, n*7919%10000000))})
		}
		p, err := codec.EncodeTelemetry(bt)
		if err != nil {
			b.Fatal(err)
		}
		out[i] = p
	}
	return out
}

func BenchmarkIngest(b *testing.B) {
	b.Run("embedded", func(b *testing.B) {
		ts := startServer(b, baseConfig(b))
		f := enrolFleet(b, ts, benchDevices)
		benchIngest(b, ts, f.connectAll(b, ts.srv.MQTTAddr()))
	})
	b.Run("mosquitto", func(b *testing.B) {
		m := startMosquitto(b, "_fleetd")
		cfg := externalConfig(b, m, "_fleetd")
		cfg.Broker.Mosquitto.PIDFile = "" // one reload after enrolling, below
		ts := startServer(b, cfg)
		ts.ready(b)
		f := enrolFleet(b, ts, benchDevices)
		pid, _ := strconv.Atoi(strings.TrimSpace(cptest.ReadFile(b, m.pidFile)))
		syscall.Kill(pid, syscall.SIGHUP)
		benchIngest(b, ts, f.connectAll(b, m.addr))
	})
}

func benchIngest(b *testing.B, ts *testServer, devs []*device) {
	codec, err := protocol.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	defer codec.Close()
	ids := make([]string, len(devs))
	for i, d := range devs {
		ids[i] = d.id
	}
	var wireBytes int64
	total := 0
	b.ResetTimer()
	for round := 0; round < b.N; round++ {
		b.StopTimer()
		payloads := encodedBatches(b, codec, ids, round)
		b.StartTimer()
		var wg sync.WaitGroup
		for i, d := range devs {
			wireBytes += int64(len(payloads[i]))
			wg.Go(func() {
				if err := d.publish(protocol.KindTelemetry, payloads[i]); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		total += len(devs) * benchRecords
		// With the embedded broker the PUBACK means stored; through
		// mosquitto fleetd stores after the broker acknowledged.
		for metric(b, ts, "fleetd_records_delivered_total") < float64(total) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	b.StopTimer()
	if got := metric(b, ts, "fleetd_records_delivered_total"); got != float64(total) {
		b.Fatalf("delivered %v records, want %d", got, total)
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(total)/sec, "records/s")
	b.ReportMetric(float64(b.N*len(devs))/sec, "batches/s")
	b.ReportMetric(float64(wireBytes)/float64(b.N*len(devs)), "wireB/batch")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkDeviceMemory measures fleetd's heap per connected idle device
// (embedded broker: the connection, its session and subscription).
func BenchmarkDeviceMemory(b *testing.B) {
	for range b.N {
		ts := startServer(b, baseConfig(b))
		f := enrolFleet(b, ts, benchDevices)
		spec, err := os.CreateTemp(b.TempDir(), "farm")
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintln(spec, ts.srv.MQTTAddr())
		for i := range f.ids {
			fmt.Fprintln(spec, f.ids[i], f.passwords[i])
		}
		spec.Close()

		before := heap()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envFarm+"="+spec.Name())
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "ready" {
			b.Fatalf("device farm: %q, %v", line, err)
		}
		testenv.EventuallyState(b, "every device online", func() (bool, string) {
			n := metric(b, ts, `fleetd_devices{state="online"}`)
			return n == benchDevices, fmt.Sprint(n)
		})
		after := heap()
		b.ReportMetric(float64(after-before)/benchDevices, "heapB/device")
		stdin.Close()
		cmd.Wait()
	}
	b.ReportMetric(0, "ns/op")
}

// heap is the live heap after a full collection.
func heap() uint64 {
	var ms runtime.MemStats
	for range 2 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// deviceFarm runs in a child process: it connects the devices listed in
// the spec file (first line the broker address, then "id password"
// lines), publishes each one's online status, prints "ready" and waits
// for stdin to close.
func deviceFarm(spec string) int {
	b, err := os.ReadFile(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	addr := lines[0]
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var mu sync.Mutex
	var clients []mqtt.Client
	failed := false
	for _, l := range lines[1:] {
		id, pw, _ := strings.Cut(l, " ")
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername(id).SetPassword(pw).
				SetAutoReconnect(false).SetKeepAlive(5 * time.Minute))
			tok := c.Connect()
			tok.Wait()
			st, _ := protocol.Encode(&protocol.Status{V: 1, DeviceID: id, State: protocol.StateOnline, Session: 1})
			topic, _ := protocol.Topic(id, protocol.KindStatus)
			ptok := c.Publish(topic, 1, true, st)
			ptok.Wait()
			mu.Lock()
			defer mu.Unlock()
			if tok.Error() != nil || ptok.Error() != nil {
				fmt.Fprintln(os.Stderr, id, tok.Error(), ptok.Error())
				failed = true
			}
			clients = append(clients, c)
		})
	}
	wg.Wait()
	if failed {
		return 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range clients {
		c.Disconnect(0)
	}
	return 0
}
