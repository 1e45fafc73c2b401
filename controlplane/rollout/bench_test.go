package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// BenchmarkRollout is a whole rollout over 1,000 devices (canary, 5%,
// 25%, 100%, zero bake, install/error/latency gates) through the engine
// with the in-memory fleet and a real bbolt file: Create, then Tick until
// it succeeded. Beside it, "floor" does the least any engine must: one
// Fleet.Assign per device and the per-device records written to bbolt in
// one transaction. Reported per device: wall time and CPU time (user +
// system, all goroutines).
func BenchmarkRollout(b *testing.B) {
	const n = 1000
	spec := `
target: ""
bundle: vad@1.1.0
waves: [{name: canary, count: 1}, {percent: 5}, {percent: 25}, {percent: 100}]
gates: {errorRate: {max: 0.05}, latencyP95: {maxRatio: 1.5}}
`
	b.Run("engine", func(b *testing.B) {
		var cpu time.Duration
		for range b.N {
			b.StopTimer()
			e := newEnv(b, n)
			s, err := ParseSpec([]byte(spec))
			if err != nil {
				b.Fatal(err)
			}
			c0 := cpuTime()
			b.StartTimer()
			r, err := e.eng.Create(context.Background(), s)
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; r.State == StateRunning; i++ {
				if i > 10 {
					b.Fatalf("rollout not done: %+v", r)
				}
				e.tick()
				r = e.get(r.ID)
			}
			b.StopTimer()
			cpu += cpuTime() - c0
			wantState(b, r, StateSucceeded)
			e.close()
			b.StartTimer()
		}
		report(b, n, cpu)
	})
	b.Run("floor", func(b *testing.B) {
		var cpu time.Duration
		for range b.N {
			b.StopTimer()
			e := newEnv(b, n)
			c0 := cpuTime()
			b.StartTimer()
			err := e.db.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists([]byte("floor"))
				if err != nil {
					return err
				}
				for i := range n {
					ds, err := e.fleet.Assign(context.Background(), devID(i), Assignment{RolloutID: "x", Action: protocol.ActionInstall, Bundle: v2})
					if err != nil {
						return err
					}
					v, _ := json.Marshal(&Device{ID: devID(i), Order: i, Seq: ds.Seq, Mode: ModeInstall, Phase: PhaseAssigned, Previous: &v1, PreviousKnown: true})
					if err := bk.Put([]byte(devID(i)), v); err != nil {
						return err
					}
				}
				return nil
			})
			b.StopTimer()
			cpu += cpuTime() - c0
			if err != nil {
				b.Fatal(err)
			}
			e.close()
			b.StartTimer()
		}
		report(b, n, cpu)
	})
}

func report(b *testing.B, n int, cpu time.Duration) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/device")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/device")
}

// cpuTime is the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(fmt.Sprintf("getrusage: %v", err))
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
