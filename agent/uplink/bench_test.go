package uplink

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// BenchmarkDrain measures device-to-broker throughput per record (a
// ~110-byte prediction) against mosquitto on loopback, side by side:
//
//   - uplink: outbox Peek, batch, zstd, QoS 1 publish, wait for PUBACK,
//     outbox Ack (one fsync per batch);
//   - paho-batch: the same batches published with raw paho and no outbox
//     (the cost of the outbox and the bookkeeping is the difference);
//   - paho-each: one raw QoS 1 publish per record, waiting for each
//     PUBACK (what sending records one by one would cost).
func BenchmarkDrain(b *testing.B) {
	br := startBroker(b)

	b.Run("uplink", func(b *testing.B) {
		// The backlog is appended first (untimed); the timed part is
		// connecting (a few milliseconds) and draining it.
		r := newRig(b, testConfig(b, br.URL()))
		b.StopTimer()
		for i := range b.N {
			if _, err := r.ob.Append(context.Background(), protocol.RecordPrediction, predictionPayload(i)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		r.start()
		for r.ob.Stats().Records > 0 {
			time.Sleep(200 * time.Microsecond)
		}
		b.StopTimer()
		r.stop()
	})

	client := func(b *testing.B) mqtt.Client {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(br.URL()).SetClientID(devID).
			SetUsername(devID).SetPassword(devPass).SetProtocolVersion(4).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
			b.Fatalf("connect: %v", tok.Error())
		}
		b.Cleanup(func() { c.Disconnect(0) })
		return c
	}
	topic, _ := protocol.Topic(devID, protocol.KindTelemetry)
	publish := func(b *testing.B, c mqtt.Client, payload []byte) {
		if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
			b.Fatalf("publish: %v", tok.Error())
		}
	}

	b.Run("paho-batch", func(b *testing.B) {
		c := client(b)
		codec, err := protocol.NewCodec()
		if err != nil {
			b.Fatal(err)
		}
		defer codec.Close()
		now := time.Now().UTC()
		b.ResetTimer()
		for start := 0; start < b.N; start += DefaultBatchRecords {
			batch := protocol.TelemetryBatch{V: protocol.Version, DeviceID: devID}
			for i := start; i < min(start+DefaultBatchRecords, b.N); i++ {
				batch.Records = append(batch.Records, protocol.Record{ID: uint64(i + 1), Kind: protocol.RecordPrediction, Time: now, Payload: json.RawMessage(predictionPayload(i))})
			}
			payload, err := codec.EncodeTelemetry(&batch)
			if err != nil {
				b.Fatal(err)
			}
			publish(b, c, payload)
		}
	})

	b.Run("paho-each", func(b *testing.B) {
		c := client(b)
		b.ResetTimer()
		for i := range b.N {
			publish(b, c, predictionPayload(i))
		}
	})
}

// BenchmarkDrainAfterCut is a network cut and its end, with the default
// backoffs: the broker's port goes away (connections refused) while a
// live appender adds a record every 2 ms and 100,000 more pile up; once
// the uplink has failed to connect twice (its backoff is at 2 to 4 s and
// growing), the port comes back. Timed: from the port coming back until
// the backlog is acked. Reported: reconnect-ms (port back to connected),
// backlog-records/s (connected to backlog acked), and the delay of the
// live records appended during the drain (append to fleetd receiving
// them), live-p99-ms and live-max-ms.
func BenchmarkDrainAfterCut(b *testing.B) {
	const (
		backlog   = 100_000
		appenders = 64
		liveEvery = 2 * time.Millisecond
	)
	br := startBroker(b)
	f := newFleetd(b, br.URL(), fleetdUser)
	var (
		arrMu    sync.Mutex
		arrivals []arrival
	)
	f.setHook(func(m mqttMsg) {
		if m.kind == protocol.KindTelemetry {
			at := time.Now()
			arrMu.Lock()
			arrivals = append(arrivals, arrival{at, m.payload})
			arrMu.Unlock()
		}
	})
	// received decodes a copy of the arrivals, so that fleetd's delivery
	// goroutine never waits for the decoding (that would delay the
	// arrivals it is measuring).
	received := func() map[uint64]time.Time {
		arrMu.Lock()
		snapshot := slices.Clone(arrivals)
		arrMu.Unlock()
		return receivedAt(b, f.codec, snapshot)
	}
	p := newProxy(b, br.Addr())
	cfg := testConfig(b, p.url())
	cfg.MinBackoff, cfg.MaxBackoff, cfg.ProbeInterval = DefaultMinBackoff, DefaultMaxBackoff, DefaultProbeInterval
	r := newRig(b, cfg)
	u := r.start()
	r.waitConnected()

	var reconnect, drain time.Duration
	var delays []time.Duration
	b.ResetTimer()
	b.StopTimer()
	for range b.N {
		arrMu.Lock()
		arrivals = arrivals[:0]
		arrMu.Unlock()
		live := startLive(b, r, liveEvery)

		p.down()
		testenv.Eventually(b, "the uplink to notice the cut", func() bool { return !u.Connected() })
		failures := u.Stats().ConnectFailures
		var wg sync.WaitGroup
		for a := range appenders {
			wg.Go(func() {
				for i := a; i < backlog; i += appenders {
					if _, err := r.ob.Append(context.Background(), protocol.RecordPrediction, predictionPayload(i)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		testenv.Eventually(b, "two failed connects", func() bool { return u.Stats().ConnectFailures >= failures+2 })
		last := r.ob.Stats().LastID // the newest record of the backlog

		b.StartTimer()
		back := time.Now()
		p.up(b)
		for !u.Connected() {
			time.Sleep(100 * time.Microsecond)
		}
		connected := time.Now()
		for {
			recs, err := r.ob.Peek(1)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 || recs[0].ID > last {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		drained := time.Now()
		b.StopTimer()
		reconnect += connected.Sub(back)
		drain += drained.Sub(connected)

		// The live records appended while the backlog drained: how long
		// each took to reach fleetd.
		appended := live.stop()
		testenv.Eventually(b, "fleetd to receive the live records", func() bool {
			got := received()
			for id, at := range appended {
				if at.After(connected) && at.Before(drained) {
					if _, ok := got[id]; !ok {
						return false
					}
				}
			}
			return true
		})
		got := received()
		for id, at := range appended {
			if at.After(connected) && at.Before(drained) {
				delays = append(delays, got[id].Sub(at))
			}
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(reconnect.Milliseconds())/n, "reconnect-ms")
	b.ReportMetric(backlog*n/drain.Seconds(), "backlog-records/s")
	if len(delays) == 0 {
		b.Fatal("no live record was appended during the drain")
	}
	slices.Sort(delays)
	b.ReportMetric(float64(delays[len(delays)*99/100].Microseconds())/1e3, "live-p99-ms")
	b.ReportMetric(float64(delays[len(delays)-1].Microseconds())/1e3, "live-max-ms")
}

type arrival struct {
	at      time.Time
	payload []byte
}

// receivedAt maps each record id in the telemetry batches to when the
// first batch carrying it arrived.
func receivedAt(b *testing.B, codec *protocol.Codec, arrivals []arrival) map[uint64]time.Time {
	got := make(map[uint64]time.Time)
	for _, a := range arrivals {
		batch, err := codec.DecodeTelemetry(a.payload)
		if err != nil {
			b.Fatal(err)
		}
		for _, rec := range batch.Records {
			if _, ok := got[rec.ID]; !ok {
				got[rec.ID] = a.at
			}
		}
	}
	return got
}

// liveAppender appends a record every interval until stop, at most
// maxLive, remembering when each was appended.
type liveAppender struct {
	quit chan struct{}
	done chan struct{}
	at   map[uint64]time.Time
}

const maxLive = 100_000

func startLive(b *testing.B, r *rig, every time.Duration) *liveAppender {
	l := &liveAppender{quit: make(chan struct{}), done: make(chan struct{}), at: make(map[uint64]time.Time)}
	go func() {
		defer close(l.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; i < maxLive; i++ {
			select {
			case <-l.quit:
				return
			case <-t.C:
			}
			at := time.Now()
			id, err := r.ob.Append(context.Background(), protocol.RecordPrediction, predictionPayload(i))
			if err != nil {
				b.Error(err)
				return
			}
			l.at[id] = at
		}
	}()
	return l
}

// stop ends the appender and returns the append time of each record.
func (l *liveAppender) stop() map[uint64]time.Time {
	close(l.quit)
	<-l.done
	return l.at
}
