package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
	"github.com/edgefleet/edgefleet/testbed/audio"
	"github.com/edgefleet/edgefleet/testbed/fleet"
)

const (
	// sampleDevices run the bundle with a sampling policy of rate 1.
	sampleDevices = 3
	// sampleRequests is each device's requests: raw PCM frames through
	// the pre-processor and tensor requests, with ids, in turn.
	sampleRequests = 40
)

// TestSamplesToParquet: real agents serve a bundle whose signed manifest
// has a sampling policy (rate 1); they append every request's model
// inputs (after the pre-processor for raw requests) and outputs to their
// outboxes, the uplink carries them to fleetd, which writes them as
// Hive-partitioned Parquet into the file registry's directory. DuckDB
// (@duckdb/node-api) reads the files back: every request of every
// device is there exactly once, with the device's labels and the
// tensors the model was fed.
func TestSamplesToParquet(t *testing.T) {
	ctx := t.Context()
	art := fleet.TestArtifacts(t)
	pub := fleet.TestPublisher(t)
	b, err := pub.BuildSilero(ctx, t.TempDir(), testbundle.Silero{
		Version: "5.2.0", Model: art.SileroModel, Pre: art.PreWASM, Smoke: testbundle.SmokeNone,
		Sampling: "{rate: 1, maxBytesPerDay: 4MiB}",
	})
	if err != nil {
		t.Fatal(err)
	}
	if b.Manifest.Sampling == nil || b.Manifest.Sampling.Rate != 1 {
		t.Fatalf("manifest sampling %+v", b.Manifest.Sampling)
	}
	f := fleet.Start(t, fleet.Options{
		Devices: sampleDevices, Artifacts: art, TrustKeys: []string{pub.PublicKey}, SampleRate: -1,
	})
	if err := f.Push(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := f.AssignAll(ctx, b.ID()); err != nil {
		t.Fatal(err)
	}
	f.WaitAll(t, b.ID()+" active on every device", fleet.Active(b.ID()))

	// Every device: raw frames of synthetic speech and tensor requests,
	// each with a request id of its own (raw requests carry none: they are
	// told apart by record id).
	var wg sync.WaitGroup
	for i, a := range f.Agents {
		wg.Go(func() {
			g, err := audio.New(audio.Normal(uint64(300 + i)))
			if err != nil {
				t.Error(err)
				return
			}
			frame := make([]byte, 1024)
			for n := range sampleRequests {
				var err error
				if n%2 == 0 {
					g.Read(frame)
					_, err = a.Predict(ctx, "silero-vad", frame, true)
				} else {
					var body []byte
					if body, err = art.TensorRequest(fmt.Sprintf("%s-req-%d", a.ID, n)); err == nil {
						_, err = a.Predict(ctx, "silero-vad", body, false)
					}
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// What each agent appended (off the request path), it says in its
	// status.
	for _, a := range f.Agents {
		var last string
		testenv.EventuallyState(t, a.ID+" appends every sample", func() (bool, string) {
			st, err := a.Status()
			if err != nil || st.Samples == nil {
				return false, fmt.Sprint(err)
			}
			last = fmt.Sprintf("%+v", *st.Samples)
			return st.Samples.Appended == sampleRequests, last
		})
		t.Logf("%s: %s", a.ID, last)
	}
	want := uint64(sampleDevices * sampleRequests)
	wctx, cancel := context.WithTimeout(ctx, fleet.WaitTimeout)
	defer cancel()
	testenv.Eventually(t, fmt.Sprintf("fleetd accepts %d samples", want), func() bool {
		return f.Server.SampleStats().Accepted == want || wctx.Err() != nil
	})
	if got := f.Server.SampleStats().Accepted; got != want {
		t.Fatalf("fleetd accepted %d samples, want %d", got, want)
	}
	files, err := f.Server.FlushSamples(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d Parquet files under %s", len(files), f.Server.SamplesLocation())

	res := testenv.DuckDB(t, fmt.Sprintf(`SELECT device_id, epoch, record_id, request_id, raw, bundle, version, CAST(date AS VARCHAR) AS date,
		labels['ring'] AS ring, len(input_input) AS n_input, input_input_shape AS shape, input_sr[1] AS sr,
		len(input_state) AS n_state, output_output[1] AS speech, time
		FROM read_parquet('%s/**/*.parquet', hive_partitioning = true)`, f.Server.SamplesLocation()))
	if len(res.Rows) != int(want) {
		t.Errorf("DuckDB read %d rows, the devices sampled %d requests", len(res.Rows), want)
	}
	seen := map[string]bool{}
	perDevice := map[string]int{}
	raw := map[string]int{}
	for _, r := range res.Rows {
		k := fmt.Sprintf("%v/%v/%v", r["device_id"], r["epoch"], r["record_id"])
		if seen[k] {
			t.Errorf("record %s read twice", k)
		}
		seen[k] = true
		dev := r["device_id"].(string)
		perDevice[dev]++
		if r["raw"] == true {
			raw[dev]++
			if r["request_id"] != nil {
				t.Errorf("raw sample %s has request id %v", k, r["request_id"])
			}
		} else if id, _ := r["request_id"].(string); id == "" || id[:len(dev)] != dev {
			t.Errorf("tensor sample %s: request id %v", k, r["request_id"])
		} else if seen[id] {
			t.Errorf("request %s sampled twice", id)
		} else {
			seen[id] = true
		}
		// The partition's date is the UTC day of the request.
		if ts, _ := r["time"].(string); r["bundle"] != "silero-vad" || r["version"] != "5.2.0" || len(ts) < 10 || r["date"] != ts[:10] {
			t.Errorf("sample %s: partition %v/%v/%v", k, r["bundle"], r["version"], r["date"])
		}
		if fmt.Sprint(r["n_input"]) != "512" || fmt.Sprint(r["n_state"]) != "256" || r["sr"] != "16000" {
			t.Errorf("sample %s: inputs %v elements of input, %v of state, sr %v", k, r["n_input"], r["n_state"], r["sr"])
		}
		if sp, ok := r["speech"].(float64); !ok || sp < 0 || sp > 1 {
			t.Errorf("sample %s: output %v", k, r["speech"])
		}
		if r["ring"] == nil {
			t.Errorf("sample %s: no ring label", k)
		}
	}
	for _, a := range f.Agents {
		if perDevice[a.ID] != sampleRequests || raw[a.ID] != sampleRequests/2 {
			t.Errorf("%s: %d samples (%d raw) in the files, want %d (%d raw)", a.ID, perDevice[a.ID], raw[a.ID], sampleRequests, sampleRequests/2)
		}
	}
}
