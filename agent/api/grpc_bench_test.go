package api

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkGRPCvsREST compares one client's latency for the real Silero
// VAD request over the unix socket in the API's two forms: REST with a
// JSON body and with the binary tensor data extension, and gRPC
// (ModelInfer) with typed contents and with raw_input_contents (what
// tritonclient and KServe's client send for numpy arrays). Each request
// is timed from the call to the decoded answer; p50-µs and p99-µs are the
// median and 99th percentile over the b.N requests.
func BenchmarkGRPCvsREST(b *testing.B) {
	silero := sileroPredictor(b, "5.0.0")
	s := serveGRPC(b, Options{Backend: newRegistry(silero)})
	in := sileroInputs()
	jsonBody := requestBody(b, "", in)
	binBody, n := binaryBody(b, in, []string{"input", "state", "sr"}, map[string]any{"binary_data_output": true}, nil)
	headerLen := strconv.Itoa(n)
	typed := grpcTyped(b, "silero-vad", "", in)
	raw := grpcRaw("silero-vad", in)
	ctx := context.Background()
	var buf bytes.Buffer
	for _, c := range []struct {
		name string
		call func() error
	}{
		{"rest-json", func() error {
			return inferOnce(s.client, jsonBody, &buf, "Content-Type", "application/json")
		}},
		{"rest-binary", func() error {
			return inferOnce(s.client, binBody, &buf, "Content-Type", "application/octet-stream", BinaryHeader, headerLen)
		}},
		{"grpc-typed", func() error { _, err := s.rpc.ModelInfer(ctx, typed); return err }},
		{"grpc-raw", func() error { _, err := s.rpc.ModelInfer(ctx, raw); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			agentProcs(b)
			b.ReportAllocs()
			lat := make([]time.Duration, 0, 1<<16)
			for b.Loop() {
				t0 := time.Now()
				if err := c.call(); err != nil {
					b.Fatal(err)
				}
				if len(lat) < cap(lat) {
					lat = append(lat, time.Since(t0))
				}
			}
			reportPercentiles(b, lat)
		})
	}
}

// reportPercentiles reports the median and 99th percentile of lat.
func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(us(lat[len(lat)/2]), "p50-µs")
	b.ReportMetric(us(lat[len(lat)*99/100]), "p99-µs")
}
