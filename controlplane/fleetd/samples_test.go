package fleetd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/registry"
	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// sampleRow is what the tests read of a Parquet sample row.
type sampleRow struct {
	Device   string    `parquet:"device_id"`
	Epoch    string    `parquet:"epoch"`
	RecordID int64     `parquet:"record_id"`
	Model    string    `parquet:"model"`
	Input    []float32 `parquet:"input_x,optional,list"`
	Time     time.Time `parquet:"time"`
}

// sampleBatch is a telemetry batch of device id with sample records
// from..to of vad@version (input x = [id + n/10]) and one metrics record
// after them.
func sampleBatch(t testing.TB, id, epoch, version string, from, to uint64) *protocol.TelemetryBatch {
	t.Helper()
	b := &protocol.TelemetryBatch{V: 1, DeviceID: id, Epoch: epoch}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for n := from; n <= to; n++ {
		s := protocol.SampleRecord{Time: t0.Add(time.Duration(n) * time.Second), Model: "vad@" + version,
			Labels: map[string]string{"site": "lab"},
			Inputs: []protocol.SampleTensor{protocol.NewSampleTensor(tensor.Tensor{Name: "x", Datatype: tensor.FP32,
				Shape: []int64{1}, Data: []float32{xOf(id, n)}})},
			Outputs: []protocol.SampleTensor{protocol.NewSampleTensor(tensor.Tensor{Name: "y", Datatype: tensor.FP32,
				Shape: []int64{1}, Data: []float32{1}})}}
		p, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		b.Records = append(b.Records, protocol.Record{ID: n, Kind: protocol.RecordSample, Time: s.Time, Payload: p})
	}
	b.Records = append(b.Records, protocol.Record{ID: to + 1, Kind: protocol.RecordPrediction, Time: t0,
		Payload: json.RawMessage(`{"model":"vad@1.0.0","latencyMs":3.2,"outputs":{"output":[0.5]}}`)})
	return b
}

// xOf is the input x of record n of device id.
func xOf(id string, n uint64) float32 {
	return float32(len(id)*1000) + float32(n)/10
}

// TestSamplesParquet: fleetd writes the sample records of simulated
// devices, each batch delivered twice and a restart in between, as
// Hive-partitioned Parquet files into the registry's storage, the file
// registry's directory (read back by DuckDB) or a MinIO bucket (read back
// with parquet-go): every sample exactly once, the other records of the
// batches in the record store.
func TestSamplesParquet(t *testing.T) {
	for _, storage := range []string{"fs", "s3"} {
		t.Run(storage, func(t *testing.T) {
			ctx := context.Background()
			cfg := baseConfig(t)
			var objects registry.ObjectStore
			if storage == "s3" {
				m := startMinIO(t)
				creds := filepath.Join(t.TempDir(), "s3.env")
				os.WriteFile(creds, []byte(fmt.Sprintf("AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", m.user, m.pass)), 0o600)
				cfg.Registry = fleetd.RegistryConfig{Type: "s3", TrustedKeys: cfg.Registry.TrustedKeys, S3: fleetd.S3Config{
					Endpoint: m.addr, Bucket: "fleetd-samples", Prefix: "prod/", CredentialsFile: creds, CreateBucket: true}}
				reg, err := registry.NewS3(ctx, registry.S3Config{Endpoint: m.addr, AccessKey: m.user, SecretKey: m.pass,
					Bucket: "fleetd-samples", Prefix: "prod/", CreateBucket: true})
				if err != nil {
					t.Fatal(err)
				}
				if objects, err = reg.Objects("lake"); err != nil {
					t.Fatal(err)
				}
			} else {
				objects = &registry.DirObjects{Dir: filepath.Join(cfg.DataDir, fleetd.RegistryDir, "lake")}
			}
			cfg.Samples = fleetd.SamplesConfig{Prefix: "lake", FlushRows: 4, RowGroupRows: 2}
			ts := startServer(t, cfg)
			pushSampled(t, ts, "vad", "1.0.0", "1MiB")
			pushSampled(t, ts, "vad", "2.0.0", "1MiB")

			versions := map[string]string{"dev-a": "1.0.0", "dev-bb": "1.0.0", "dev-ccc": "2.0.0"}
			passwords := map[string]string{}
			for id := range versions {
				passwords[id] = ts.enroll(t, id, map[string]string{"site": "lab"})
			}
			// deliver has every device publish records from..to, twice.
			deliver := func(from, to uint64) {
				for id, version := range versions {
					d := mustDialDevice(t, ts.srv.MQTTAddr(), id, passwords[id])
					b := sampleBatch(t, id, "e1", version, from, to)
					for range 2 {
						d.mustPublish(protocol.KindTelemetry, b)
					}
					d.close()
				}
			}
			deliver(1, 6)  // samples 1 to 6, a prediction 7
			ts.restart()   // Close writes what is staged
			deliver(1, 6)  // again, after they were written
			deliver(8, 14) // samples 8 to 14, a prediction 15
			files, err := ts.srv.FlushSamples(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(files) == 0 || !strings.HasPrefix(files[0], "bundle=vad/version=") {
				t.Fatalf("files %v", files)
			}

			// Read every file back.
			got := map[string]int{}
			values := map[string]float32{}
			if storage == "fs" {
				res := testenv.DuckDB(t, fmt.Sprintf(`SELECT device_id, epoch, record_id, bundle, version, model, input_x[1] AS x
					FROM read_parquet('%s/**/*.parquet', hive_partitioning = true)`, objects.Location("")))
				for _, r := range res.Rows {
					k := fmt.Sprintf("%v/%v/%v", r["device_id"], r["epoch"], r["record_id"])
					got[k]++
					values[k] = float32(r["x"].(float64))
					if r["model"] != fmt.Sprintf("%v@%v", r["bundle"], r["version"]) || r["version"] != versions[r["device_id"].(string)] {
						t.Errorf("row %v: partition and model disagree", r)
					}
				}
			} else {
				keys, err := objects.ListObjects(ctx, "")
				if err != nil {
					t.Fatal(err)
				}
				for _, key := range keys {
					if !strings.HasSuffix(key, ".parquet") || !strings.HasPrefix(key, "bundle=vad/version=") || !strings.Contains(key, "/date=2026-03-01/part-") {
						t.Errorf("object %s is not a Hive-partitioned part file", key)
						continue
					}
					b, err := objects.GetObject(ctx, key)
					if err != nil {
						t.Fatal(err)
					}
					rows, err := parquet.Read[sampleRow](bytes.NewReader(b), int64(len(b)))
					if err != nil {
						t.Fatalf("%s: %v", key, err)
					}
					for _, r := range rows {
						k := fmt.Sprintf("%s/%s/%d", r.Device, r.Epoch, r.RecordID)
						got[k]++
						if len(r.Input) == 1 {
							values[k] = r.Input[0]
						}
						if !strings.Contains(key, "version="+versions[r.Device]+"/") {
							t.Errorf("%s holds a sample of %s", key, r.Model)
						}
					}
				}
			}
			for id := range versions {
				for n := uint64(1); n <= 14; n++ {
					if n == 7 {
						continue // the prediction
					}
					k := fmt.Sprintf("%s/e1/%d", id, n)
					if got[k] != 1 {
						t.Errorf("sample %s is in the files %d times, want once", k, got[k])
					} else if values[k] != xOf(id, n) {
						t.Errorf("sample %s: x %v, want %v", k, values[k], xOf(id, n))
					}
					delete(got, k)
				}
				// The batches' other records are in the record store, the
				// samples are not.
				if recs, err := ts.srv.Records().Query(id, telemetryQuery(protocol.RecordSample)); err != nil || len(recs) != 0 {
					t.Errorf("%s: %d sample records in the record store (%v)", id, len(recs), err)
				}
				if recs, err := ts.srv.Records().Query(id, telemetryQuery(protocol.RecordPrediction)); err != nil || len(recs) != 2 {
					t.Errorf("%s: %d prediction records, want 2 (%v)", id, len(recs), err)
				}
			}
			if len(got) != 0 {
				t.Errorf("rows no device sent: %v", got)
			}
		})
	}
}

func telemetryQuery(kind string) telemetry.Query { return telemetry.Query{Kind: kind} }

// pushSampled builds, signs and pushes name@version, a bundle of
// testbundle.BuildFake's shape with the sampling policy {rate: 1,
// maxBytesPerDay: budget}.
func pushSampled(t testing.TB, ts *testServer, name, version, budget string) {
	t.Helper()
	dir := t.TempDir()
	spec := filepath.Join(dir, "spec")
	if err := os.Mkdir(spec, 0o755); err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf("name: %s\nversion: %s\nmodel: model.onnx\n"+
		"inputs: [{name: x, datatype: FP32, shape: [-1, 1]}]\noutputs: [{name: \"y\", datatype: FP32, shape: [-1, 1]}]\n"+
		"sampling: {rate: 1, maxBytesPerDay: %s}\n", name, version, budget)
	if err := os.WriteFile(filepath.Join(spec, bundle.SpecName), []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(spec, "model.onnx"), []byte("not run: "+name+version), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := testPublisher(t).Build(context.Background(), spec, filepath.Join(dir, name+"-"+version+".bundle"), bundle.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ts.api.Push(context.Background(), b.Path, b.Sig); err != nil {
		t.Fatal(err)
	}
}

// TestSamplesRefused: fleetd keeps a device's samples to its bundle's
// policy whatever the device sends: samples of a bundle version without
// a sampling policy, or not in the registry, and those beyond the
// device's daily budget are dropped and counted; when the staging area
// is full, the batch is not acknowledged, nothing of it stored, and it is
// accepted whole once files are written.
func TestSamplesRefused(t *testing.T) {
	ctx := context.Background()
	cfg := baseConfig(t)
	cfg.Samples = fleetd.SamplesConfig{FlushRows: 1000, FlushAge: fleetd.Duration(time.Hour), FlushBytes: 64 << 10, MaxStagedBytes: fleetd.ByteSize(4 * protocol.MaxPayloadSize)}
	ts := startServer(t, cfg)
	one := sampleBatch(t, "dev-a", "e1", "1.0.0", 1, 1).Records[0].Payload
	pushSampled(t, ts, "vad", "1.0.0", "1KiB")
	ts.push(t, testPublisher(t), "vad", "3.0.0", 64) // no sampling policy
	pw := ts.enroll(t, "dev-a", nil)
	d := mustDialDevice(t, ts.srv.MQTTAddr(), "dev-a", pw)

	// Budget and policy: the first fit samples fit the day's budget, the
	// next two do not; then one of a bundle version without a policy,
	// one of a version not in the registry.
	fit := uint64(1024 / len(one))
	b := sampleBatch(t, "dev-a", "e1", "1.0.0", 1, fit+2)
	b.Records = b.Records[:fit+2]
	b.Records = append(b.Records, sampleBatch(t, "dev-a", "e1", "3.0.0", fit+3, fit+3).Records[0],
		sampleBatch(t, "dev-a", "e1", "4.0.0", fit+4, fit+4).Records[0])
	d.mustPublish(protocol.KindTelemetry, b)
	if st := ts.srv.SampleStats(); st.Accepted != fit || st.Dropped != 2 || st.Invalid != 2 {
		t.Fatalf("after the batch: %+v, want %d accepted, 2 beyond the budget, 2 without a policy", st, fit)
	}

	// A full staging area: dev-b's batches of big samples, one partition
	// (day) each so that none is due for a file, until one is refused.
	pushSampled(t, ts, "vad", "2.0.0", "1GiB")
	pw2 := ts.enroll(t, "dev-b", nil)
	d2 := mustDialDevice(t, ts.srv.MQTTAddr(), "dev-b", pw2)
	batch := func(n uint64) []byte {
		b := &protocol.TelemetryBatch{V: 1, DeviceID: "dev-b", Epoch: "e1"}
		for i := n; i < n+4; i++ {
			at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).AddDate(0, 0, -int(i))
			x := make([]float32, 8000)
			x[0] = float32(i)
			p, err := json.Marshal(protocol.SampleRecord{Time: at, Model: "vad@2.0.0",
				Inputs:  []protocol.SampleTensor{protocol.NewSampleTensor(tensor.Tensor{Name: "x", Datatype: tensor.FP32, Shape: []int64{1, 8000}, Data: x})},
				Outputs: []protocol.SampleTensor{protocol.NewSampleTensor(tensor.Tensor{Name: "y", Datatype: tensor.FP32, Shape: []int64{1}, Data: []float32{1}})}})
			if err != nil {
				t.Fatal(err)
			}
			b.Records = append(b.Records, protocol.Record{ID: i, Kind: protocol.RecordSample, Time: at, Payload: p})
		}
		p, err := protocol.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	var refused []byte
	for n := uint64(1); n < 200 && refused == nil; n += 4 {
		before := ts.srv.SampleStats()
		if err := d2.publish(protocol.KindTelemetry, batch(n)); err != nil {
			refused = batch(n)
			if st := ts.srv.SampleStats(); st.Full != 1 || st.StagedBytes != before.StagedBytes || st.Accepted != before.Accepted {
				t.Fatalf("refused batch (%v): stats %+v, before %+v: want nothing of it staged", err, st, before)
			}
		}
	}
	if refused == nil {
		t.Fatal("the staging area never filled")
	}
	accepted := ts.srv.SampleStats().Accepted
	if _, err := ts.srv.FlushSamples(ctx); err != nil {
		t.Fatal(err)
	}
	d2 = mustDialDevice(t, ts.srv.MQTTAddr(), "dev-b", pw2)
	if err := d2.publish(protocol.KindTelemetry, refused); err != nil {
		t.Fatalf("the refused batch, delivered again after the flush: %v", err)
	}
	if st := ts.srv.SampleStats(); st.Accepted != accepted+4 || st.Duplicates != 0 {
		t.Fatalf("after the redelivery: %+v, want %d accepted", st, accepted+4)
	}
}

// TestSamplesConfig: the samples section is checked, each problem naming
// its key; relative paths are the file's.
func TestSamplesConfig(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want string // in the error; "" valid
	}{
		{"samples:\n  flushAge: 2s\n  flushRows: 10\n  dir: lake\n", ""},
		{"samples:\n  prefix: ../up\n", "samples.prefix"},
		{"samples:\n  prefix: /abs\n", "samples.prefix"},
		{"samples:\n  prefix: .\n", `samples.prefix: folder ".": must be a relative folder`},
		{"samples:\n  prefix: tmp\n", `samples.prefix: folder "tmp": tmp/ is the registry's own`},
		{"samples:\n  prefix: bundles/x\n", `samples.prefix: folder "bundles/x": bundles/ is the registry's own`},
		{"samples:\n  flushRows: -1\n", "samples.flushRows: must be 1 to 10000000"},
		{"samples:\n  flushBytes: 1KiB\n", "samples.flushBytes: must be at least 64KiB"},
		{"samples:\n  flushAge: 100ms\n", "samples.flushAge: must be 1s to 24h"},
		{"samples:\n  rowGroupRows: -5\n", "samples.rowGroupRows"},
		{"samples:\n  maxStagedBytes: 1MiB\n", "samples.maxStagedBytes: must be at least samples.flushBytes"},
		{"samples:\n  flushEvery: 2s\n", `samples.flushEvery: unknown key`},
	} {
		c, err := fleetd.ParseConfig([]byte(tc.yaml), "config.yaml", "/etc/fleetd")
		if err == nil {
			err = c.Validate()
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.yaml, err)
		case tc.want == "" && c.Samples.Dir != "/etc/fleetd/lake":
			t.Errorf("%q: dir %q, want it relative to the file", tc.yaml, c.Samples.Dir)
		case tc.want != "" && (!errors.Is(err, fleetd.ErrConfig) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: %v, want ErrConfig containing %q", tc.yaml, err, tc.want)
		}
	}
}
