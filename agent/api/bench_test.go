package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// BenchmarkInfer compares, for the real Silero VAD input, the model called
// in process with the same inference POSTed over the unix socket (HTTP
// client, JSON decode, inference, JSON encode, response read). The
// "added-µs" metric of the socket case is what the API costs on top.
func BenchmarkInfer(b *testing.B) {
	silero := sileroPredictor(b, "5.0.0")
	in := sileroInputs()
	ctx := context.Background()
	var inProcess float64 // ns/op

	b.Run("in-process", func(b *testing.B) {
		agentProcs(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := silero.Infer(ctx, model.Input{Tensors: in}); err != nil {
				b.Fatal(err)
			}
		}
		inProcess = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	// The server passes the request's context, which can be cancelled:
	// ONNX Runtime then runs with RunOptions it can terminate, which
	// costs the model a little more than context.Background does.
	b.Run("in-process-cancellable", func(b *testing.B) {
		agentProcs(b)
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := silero.Infer(ctx, model.Input{Tensors: in}); err != nil {
				b.Fatal(err)
			}
		}
	})

	s := serve(b, Options{Backend: newRegistry(silero)})
	body := requestBody(b, "", in)
	b.Run("unix-socket", func(b *testing.B) {
		agentProcs(b)
		b.ReportAllocs()
		var buf bytes.Buffer
		for b.Loop() {
			if err := inferOnce(s.client, body, &buf, "Content-Type", "application/json"); err != nil {
				b.Fatal(err)
			}
		}
		ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric((ns-inProcess)/1e3, "added-µs")
	})
}

// BenchmarkInferBinary is the socket case of BenchmarkInfer with the
// binary tensor data extension: inputs and outputs as raw little-endian
// bytes after the JSON header, as a KServe or Triton client sends them.
func BenchmarkInferBinary(b *testing.B) {
	silero := sileroPredictor(b, "5.0.0")
	s := serve(b, Options{Backend: newRegistry(silero)})
	body, n := binaryBody(b, sileroInputs(), []string{"input", "state", "sr"}, map[string]any{"binary_data_output": true}, nil)
	headerLen := strconv.Itoa(n)
	b.Run("unix-socket", func(b *testing.B) {
		agentProcs(b)
		b.ReportAllocs()
		var buf bytes.Buffer
		for b.Loop() {
			if err := inferOnce(s.client, body, &buf, "Content-Type", "application/octet-stream", BinaryHeader, headerLen); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkInferConcurrent keeps clients requests in flight at once,
// each client on its own connection to the unix socket (b.N requests in
// all), as OIP JSON. ns/op is wall time over requests, so requests/s is
// 1e9/ns-op; p99-µs is the slowest percentile of one request's latency,
// which shows a client starving.
func BenchmarkInferConcurrent(b *testing.B) {
	silero := sileroPredictor(b, "5.0.0")
	s := serve(b, Options{Backend: newRegistry(silero)})
	body := requestBody(b, "", sileroInputs())
	for _, clients := range []int{2, 4} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			agentProcs(b)
			var next atomic.Int64
			lat := make([][]time.Duration, clients)
			var wg sync.WaitGroup
			b.ResetTimer()
			for c := range clients {
				client := unixClient(s.socket)
				defer client.CloseIdleConnections()
				wg.Go(func() {
					var buf bytes.Buffer
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						if err := inferOnce(client, body, &buf, "Content-Type", "application/json"); err != nil {
							b.Error(err)
							return
						}
						lat[c] = append(lat[c], time.Since(t0))
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) > 0 {
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}

// BenchmarkInferRaw is BenchmarkInfer for the raw path: one PCM frame
// through the WASM pre-processor, in process and as an
// application/octet-stream POST (no JSON to decode).
func BenchmarkInferRaw(b *testing.B) {
	silero := sileroPredictor(b, "5.0.0")
	frame := testbundle.PCM(testbundle.TwoSine())
	ctx := context.Background()
	var inProcess float64
	b.Run("in-process", func(b *testing.B) {
		agentProcs(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := silero.Infer(ctx, model.Input{Raw: frame}); err != nil {
				b.Fatal(err)
			}
		}
		inProcess = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	s := serve(b, Options{Backend: newRegistry(silero)})
	b.Run("unix-socket", func(b *testing.B) {
		agentProcs(b)
		b.ReportAllocs()
		var buf bytes.Buffer
		for b.Loop() {
			if err := inferOnce(s.client, frame, &buf, "Content-Type", "application/octet-stream"); err != nil {
				b.Fatal(err)
			}
		}
		ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric((ns-inProcess)/1e3, "added-µs")
	})
}

// inferOnce POSTs body to Silero's infer URL with the headers given as
// name, value pairs, reads the answer into buf and fails unless it is a
// 200.
func inferOnce(c *http.Client, body []byte, buf *bytes.Buffer, header ...string) error {
	req, err := http.NewRequest("POST", "http://edge-agent/v2/models/silero-vad/infer", bytes.NewReader(body))
	if err != nil {
		return err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	buf.Reset()
	if _, err := io.Copy(buf, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d: %s", resp.StatusCode, buf.Bytes())
	}
	return nil
}

// agentProcs runs a (sub-)benchmark with the GOMAXPROCS the edge-agent
// daemon sets for itself (onnx.GoMaxProcs: one P fewer per ONNX Runtime
// intra-op worker thread), restoring it afterwards; the testing package
// sets -cpu's value before each benchmark, so it is called in each. The
// -N suffix of the names still shows the -cpu value.
func agentProcs(b *testing.B) {
	prev := runtime.GOMAXPROCS(onnx.GoMaxProcs(0))
	b.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// BenchmarkCodec is the server's JSON work for one Silero request: decode
// the request, encode the response.
func BenchmarkCodec(b *testing.B) {
	silero := sileroPredictor(b, "5.0.0")
	body := requestBody(b, "", sileroInputs())
	out, err := silero.Infer(context.Background(), model.Input{Tensors: sileroInputs()})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeInferRequest(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 16<<10)
		for b.Loop() {
			if _, err := appendResponse(buf[:0], "silero-vad", "5.0.0", "", out.Tensors, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
