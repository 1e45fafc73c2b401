package broker

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// BenchmarkIngest measures device -> fleetd throughput: one device
// publishing 512-byte telemetry at QoS 1 (pipelined), one service client
// receiving at QoS 1, through our embedded broker (in memory and with the
// bbolt store), bare mochi with no access hook, and mosquitto with the
// generated ACL.
func BenchmarkIngest(b *testing.B) {
	run := func(b *testing.B, addr, svcU, svcP string) {
		b.Helper()
		recv := make(chan struct{}, 1<<16)
		sub := benchDial(b, addr, svcU+"-bench", svcU, svcP)
		tok := sub.Subscribe(topic(devA, protocol.KindTelemetry), 1, func(paho.Client, paho.Message) { recv <- struct{}{} })
		if !tok.WaitTimeout(wait) || tok.Error() != nil {
			b.Fatalf("subscribe: %v", tok.Error())
		}
		pub := benchDial(b, addr, devA, devA, devices[devA])
		payload := bytes.Repeat([]byte("x"), 512)
		tp := topic(devA, protocol.KindTelemetry)
		b.SetBytes(int64(len(payload)))
		b.ResetTimer()
		const window = 256
		toks := make([]paho.Token, 0, window)
		for i := 0; i < b.N; i++ {
			toks = append(toks, pub.Publish(tp, 1, false, payload))
			if len(toks) == window || i == b.N-1 {
				for _, tk := range toks {
					if !tk.WaitTimeout(wait) || tk.Error() != nil {
						b.Fatalf("publish: %v", tk.Error())
					}
				}
				toks = toks[:0]
			}
		}
		for i := 0; i < b.N; i++ {
			select {
			case <-recv:
			case <-time.After(wait):
				b.Fatalf("received %d of %d", i, b.N)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	}

	b.Run("edgefleet", func(b *testing.B) {
		br := benchBroker(b, "")
		run(b, br.Addr(), svcUser, svcPass)
	})
	b.Run("edgefleet+bolt", func(b *testing.B) {
		br := benchBroker(b, b.TempDir())
		run(b, br.Addr(), svcUser, svcPass)
	})
	b.Run("mochi-raw", func(b *testing.B) {
		srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
		if err := srv.AddHook(new(allowAll), nil); err != nil {
			b.Fatal(err)
		}
		l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
		if err := srv.AddListener(l); err != nil {
			b.Fatal(err)
		}
		if err := srv.Serve(); err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		run(b, l.Address(), svcUser, svcPass)
	})
	b.Run("mosquitto", func(b *testing.B) {
		acl, err := MosquittoACL(svcUser)
		if err != nil {
			b.Fatal(err)
		}
		var pw string
		for u, p := range map[string]string{devA: devices[devA], svcUser: svcPass} {
			line, err := MosquittoPasswd(u, p)
			if err != nil {
				b.Fatal(err)
			}
			pw += line + "\n"
		}
		addr := startMosquitto(b, pw, acl).Addr()
		run(b, addr, svcUser, svcPass)
	})
}

func benchBroker(b *testing.B, dataDir string) *Broker {
	br, err := New(Config{Addr: "127.0.0.1:0", Auth: devices, DataDir: dataDir,
		ServiceUsers: map[string]string{svcUser: svcPass}})
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	return br
}

func benchDial(b *testing.B, addr, clientID, user, pass string) paho.Client {
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetOrderMatters(false)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		b.Fatalf("connect %s: %v", clientID, tok.Error())
	}
	b.Cleanup(func() { c.Disconnect(100) })
	return c
}

// allowAll admits every client and topic: bare mochi, for comparison.
type allowAll struct{ mqtt.HookBase }

func (h *allowAll) ID() string { return "allow-all" }
func (h *allowAll) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *allowAll) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (h *allowAll) OnACLCheck(*mqtt.Client, string, bool) bool              { return true }
