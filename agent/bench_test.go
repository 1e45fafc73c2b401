package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// BenchmarkPredict compares the paths of one Silero VAD frame, side by
// side in one run:
//
//   - ort-bare: onnxruntime_go's AdvancedSession with preallocated tensors
//     and the same thread settings, the least a Go caller can do (as
//     shared/model's BenchmarkSilero);
//   - model-infer: model.Infer on tensors, what the agent runs per request
//     (validation, conversions, output copies);
//   - api-handler: the agent's API handler called in process with a
//     cancellable context, as the server calls it: JSON decode,
//     model.Infer, JSON encode, the prediction hook (sampling at the
//     default rate into the outbox);
//   - unix-socket: the same request POSTed over the running agent's unix
//     socket by an HTTP client;
//   - model-infer-raw, model-infer-raw-cancellable, api-handler-raw and
//     unix-socket-raw: raw PCM through the WASM pre-processor.
//
// added-µs is each path's time per request above ort-bare (above
// model-infer-raw for the raw paths), x-bare the ratio.
func BenchmarkPredict(b *testing.B) {
	v1 := sileroBundle(b, spec{version: "1.0.0"})
	s := newSetupRate(b, config.DefaultPredictionSampleRate, "")
	a := startAgent(b, s)
	ctx := context.Background()
	mdl := serve(b, a.Agent, v1)
	body := tensorRequest(b, "")
	var in struct{ Inputs []tensor.Tensor }
	if err := json.Unmarshal(body, &in); err != nil {
		b.Fatal(err)
	}
	pcm := pcmFrame(b)

	var base float64 // ns/op of the reference path
	perOp := func(b *testing.B) float64 { return float64(b.Elapsed().Nanoseconds()) / float64(b.N) }
	added := func(b *testing.B) {
		ns := perOp(b)
		b.ReportMetric((ns-base)/1e3, "added-µs")
		b.ReportMetric(ns/base, "x-bare")
	}

	// ort-bare runs twice, before and after model-infer, and the faster
	// run is the reference: the machine is shared and noisy.
	bare := func(b *testing.B) {
		runBare(b, in.Inputs)
		if ns := perOp(b); base == 0 || ns < base {
			base = ns
		}
	}
	b.Run("ort-bare", bare)
	b.Run("model-infer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := mdl.Infer(ctx, model.Input{Tensors: in.Inputs}); err != nil {
				b.Fatal(err)
			}
		}
		added(b)
	})
	b.Run("ort-bare-again", bare)
	// The handler in process, with a cancellable context as the server
	// gives it: only the HTTP transport is missing.
	handler := func(body []byte, raw bool) func(b *testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			h := a.srv.Handler()
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ct := "application/json"
			if raw {
				ct = "application/octet-stream"
			}
			for b.Loop() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/v2/models/silero-vad/infer", bytes.NewReader(body))
				req.ContentLength = int64(len(body))
				req.Header.Set("Content-Type", ct)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("%d %s", rec.Code, rec.Body.Bytes())
				}
			}
			added(b)
		}
	}
	b.Run("api-handler", handler(body, false))
	socket := func(body []byte, raw bool) func(b *testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			ct := "application/json"
			if raw {
				ct = "application/octet-stream"
			}
			var buf bytes.Buffer
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodPost, "http://edge-agent/v2/models/silero-vad/infer", bytes.NewReader(body))
				req.Header.Set("Content-Type", ct)
				resp, err := a.client.HTTP.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				buf.Reset()
				io.Copy(&buf, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("%d %s", resp.StatusCode, buf.Bytes())
				}
			}
			added(b)
		}
	}
	b.Run("unix-socket", socket(body, false))
	b.Run("model-infer-raw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := mdl.Infer(ctx, model.Input{Raw: pcm}); err != nil {
				b.Fatal(err)
			}
		}
		added(b)
		base = perOp(b)
	})
	// The server passes the request's context, which can be cancelled.
	b.Run("model-infer-raw-cancellable", func(b *testing.B) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := mdl.Infer(ctx, model.Input{Raw: pcm}); err != nil {
				b.Fatal(err)
			}
		}
		added(b)
	})
	b.Run("api-handler-raw", handler(pcm, true))
	b.Run("unix-socket-raw", socket(pcm, true))
}

// runBare runs Silero through onnxruntime_go directly.
// serve installs bundle b on a and returns the model now serving.
func serve(tb testing.TB, a *Agent, b built) *model.Model {
	tb.Helper()
	if _, err := a.Install(tb.Context(), b.path, "", InstallOptions{}); err != nil {
		tb.Fatal(err)
	}
	a.modelMu.Lock()
	defer a.modelMu.Unlock()
	return a.serving
}

func runBare(b *testing.B, inputs []tensor.Tensor) {
	if err := onnx.Init(testenv.ORTLibrary(b)); err != nil {
		b.Fatal(err)
	}
	var frame []float32
	for _, t := range inputs {
		if t.Name == "input" {
			frame = t.Data.([]float32)
		}
	}
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	input, err := ort.NewTensor(ort.NewShape(1, 512), append([]float32(nil), frame...))
	must(err)
	defer input.Destroy()
	state, err := ort.NewEmptyTensor[float32](ort.NewShape(2, 1, 128))
	must(err)
	defer state.Destroy()
	sr, err := ort.NewTensor(ort.NewShape(1), []int64{16000})
	must(err)
	defer sr.Destroy()
	output, err := ort.NewEmptyTensor[float32](ort.NewShape(1, 1))
	must(err)
	defer output.Destroy()
	stateN, err := ort.NewEmptyTensor[float32](ort.NewShape(2, 1, 128))
	must(err)
	defer stateN.Destroy()
	so, err := ort.NewSessionOptions()
	must(err)
	defer so.Destroy()
	// The thread settings model.Load uses by default.
	must(so.SetIntraOpNumThreads(min(2, runtime.NumCPU())))
	must(so.SetInterOpNumThreads(1))
	must(so.SetExecutionMode(ort.ExecutionModeSequential))
	sess, err := ort.NewAdvancedSession(testenv.SileroModel(b),
		[]string{"input", "state", "sr"}, []string{"output", "stateN"},
		[]ort.Value{input, state, sr}, []ort.Value{output, stateN}, so)
	must(err)
	defer sess.Destroy()
	b.ReportAllocs()
	for b.Loop() {
		must(sess.Run())
	}
	if got := output.GetData()[0]; !near(float64(got), sileroOutput) {
		b.Fatalf("output %v", got)
	}
}

// BenchmarkAgentMemory measures the resident memory of a real edge-agent
// process (VmRSS from /proc/PID/status): idle with no model, with the
// Silero bundle loaded, and after 1000 predictions, reported as MiB
// metrics (go test -run '^$' -bench AgentMemory -benchtime 1x ./agent/).
// The target for the agent without a model is under 25 MB.
func BenchmarkAgentMemory(b *testing.B) {
	v1 := sileroBundle(b, spec{version: "1.0.0"})
	for b.Loop() {
		s := newSetupRate(b, config.DefaultPredictionSampleRate, "")
		d := startDaemon(b, s)
		d.waitReady(b, s)
		pid := d.cmd.Process.Pid
		settle := func() { time.Sleep(500 * time.Millisecond) }
		settle()
		idle := procMemory(b, pid)
		mustCLI(b, "install", "--config", s.cfgPath, v1.path)
		settle()
		loaded := procMemory(b, pid)
		c := NewClient(s.socket)
		body, pcm := tensorRequest(b, ""), pcmFrame(b)
		for i := range 1000 {
			if i%2 == 0 {
				infer(b, c, body, false)
			} else {
				infer(b, c, pcm, true)
			}
		}
		c.Close()
		settle()
		served := procMemory(b, pid)
		d.stop(b)
		mib := func(n int64) float64 { return float64(n) / (1 << 20) }
		b.ReportMetric(mib(idle.rss), "idle-MiB")
		b.ReportMetric(mib(loaded.rss), "loaded-MiB")
		b.ReportMetric(mib(served.rss), "served-MiB")
		b.ReportMetric(mib(served.hwm), "peak-MiB")
	}
}

type memory struct{ rss, hwm int64 }

func procMemory(t testing.TB, pid int) memory {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("/proc/%d/status: %s: %v", pid, sc.Text(), err)
		}
		if k == "VmRSS" {
			m.rss = n << 10
		} else {
			m.hwm = n << 10
		}
	}
	if m.rss == 0 {
		t.Fatalf("/proc/%d/status: no VmRSS", pid)
	}
	return m
}
