package uplink

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/shared/protocol"
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
