package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// testLogger logs to the test's log.
func testLogger(t testing.TB) *slog.Logger { return testenv.Logger(t) }

// unixClient is an HTTP client that reaches every URL through the unix
// socket at path.
func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 64,
	}}
}

// served is a Server listening on a real unix socket.
type served struct {
	srv    *Server
	socket string
	client *http.Client
	served chan error // Serve's result
}

// serve starts a server for opts on a unix socket in a temporary
// directory and shuts it down when the test ends.
func serve(t testing.TB, opts Options) *served {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := ListenUnix(sock, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	s := &served{srv: srv, socket: sock, client: unixClient(sock), served: make(chan error, 1)}
	go func() { s.served <- srv.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-s.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		s.client.CloseIdleConnections()
	})
	return s
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func (s *served) do(t testing.TB, method, path, contentType string, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(method, "http://edge-agent"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// inferResponse is the protocol's $inference_response, decoded strictly.
type inferResponse struct {
	ModelName    string          `json:"model_name"`
	ModelVersion string          `json:"model_version"`
	ID           string          `json:"id"`
	Parameters   map[string]any  `json:"parameters"`
	Outputs      []tensor.Tensor `json:"outputs"`
}

func strictDecode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func zeroState(in []tensor.Tensor) []tensor.Tensor {
	out := append([]tensor.Tensor(nil), in...)
	out[1].Data = make([]float32, 256)
	return out
}

// brokenManifest describes a stub model whose pipeline fails at run time.
func stubManifest(name string) *bundle.Manifest {
	return &bundle.Manifest{
		SchemaVersion: bundle.SchemaVersion, Name: name, Version: "1.0.0",
		Runtime: bundle.Runtime{
			Model:   "model.onnx",
			Inputs:  []tensor.Spec{{Name: "x", Datatype: tensor.FP32, Shape: []int64{-1}}},
			Outputs: []tensor.Spec{{Name: "y", Datatype: tensor.FP32, Shape: []int64{-1}}},
		},
	}
}

func TestRoutes(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	noPre := testbundle.SileroManifest("1.0.0")
	noPre.Name, noPre.Runtime.Pre = "silero-tensors", nil
	tensorsOnly, err := model.Load(context.Background(), testbundle.SileroDir(t), noPre, model.Options{ORTLibrary: testenv.ORTLibrary(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer tensorsOnly.Close()
	broken := &stubPredictor{manifest: stubManifest("broken"), infer: func(context.Context, model.Input) (*model.Output, error) {
		return nil, errors.New("onnxruntime: CUDA failure 700 at /src/internal/secret.cc:42")
	}}
	nonFinite := &stubPredictor{manifest: stubManifest("nan"), infer: func(context.Context, model.Input) (*model.Output, error) {
		return &model.Output{Tensors: []tensor.Tensor{{Name: "y", Datatype: tensor.FP32, Shape: []int64{2}, Data: []float32{1, float32(math.NaN())}}}}, nil
	}}
	backend := newRegistry(silero, tensorsOnly, broken, nonFinite)
	backend.Loading("loading")
	s := serve(t, Options{Backend: backend, MaxBodyBytes: 64 << 10, ServerVersion: "1.2.3"})

	in := zeroState(sileroInputs())
	good := requestBody(t, "req-7", in)
	wrongShape := append([]tensor.Tensor(nil), in...)
	wrongShape[0] = tensor.Tensor{Name: "input", Datatype: tensor.FP32, Shape: []int64{1, 511}, Data: make([]float32, 511)}
	wrongRank := append([]tensor.Tensor(nil), in...)
	wrongRank[0] = tensor.Tensor{Name: "input", Datatype: tensor.FP32, Shape: []int64{512}, Data: make([]float32, 512)}
	wrongType := append([]tensor.Tensor(nil), in...)
	wrongType[2] = tensor.Tensor{Name: "sr", Datatype: tensor.FP32, Shape: []int64{1}, Data: []float32{16000}}
	unknownInput := append(append([]tensor.Tensor(nil), in...), tensor.Tensor{Name: "extra", Datatype: tensor.FP32, Shape: []int64{1}, Data: []float32{1}})

	const ctJSON = "application/json"
	tests := []struct {
		name, method, path, ctype string
		body                      []byte
		code                      int
		want                      string // substring of the body
		bundle                    string // BundleHeader, if any
		check                     func(t *testing.T, r response)
	}{
		{name: "live", method: "GET", path: "/v2/health/live", code: 200, want: `{"live":true}`},
		{name: "not ready while a model loads", method: "GET", path: "/v2/health/ready", code: 503, want: `{"live":false,"ready":false}`},
		{name: "server metadata", method: "GET", path: "/v2", code: 200, check: func(t *testing.T, r response) {
			var m struct {
				Name       string   `json:"name"`
				Version    string   `json:"version"`
				Extensions []string `json:"extensions"`
			}
			if err := strictDecode(r.body, &m); err != nil || m.Name != "edge-agent" || m.Version != "1.2.3" || m.Extensions == nil {
				t.Errorf("server metadata %s (%v)", r.body, err)
			}
		}},
		{name: "server metadata slash", method: "GET", path: "/v2/", code: 200, want: `"name":"edge-agent"`},
		{name: "model metadata", method: "GET", path: "/v2/models/silero-vad", code: 200, bundle: "silero-vad@5.0.0", check: func(t *testing.T, r response) {
			var m struct {
				Name       string            `json:"name"`
				Versions   []string          `json:"versions"`
				Platform   string            `json:"platform"`
				Inputs     []tensor.Spec     `json:"inputs"`
				Outputs    []tensor.Spec     `json:"outputs"`
				Properties map[string]string `json:"properties"`
			}
			if err := strictDecode(r.body, &m); err != nil {
				t.Fatalf("%s: %v", r.body, err)
			}
			want := silero.Manifest().Runtime
			if m.Name != "silero-vad" || len(m.Versions) != 1 || m.Versions[0] != "5.0.0" || m.Platform != Platform ||
				fmt.Sprint(m.Inputs) != fmt.Sprint(want.Inputs) || fmt.Sprint(m.Outputs) != fmt.Sprint(want.Outputs) ||
				m.Properties["execution_provider"] != "cpu" || m.Properties["raw_input"] != "application/octet-stream" || m.Properties["bundle"] != "silero-vad@5.0.0" {
				t.Errorf("metadata %s", r.body)
			}
		}},
		{name: "model metadata version", method: "GET", path: "/v2/models/silero-vad/versions/5.0.0", code: 200, want: `"versions":["5.0.0"]`},
		{name: "model metadata other version", method: "GET", path: "/v2/models/silero-vad/versions/4.0.0", code: 404, want: `model \"silero-vad\" has no version \"4.0.0\" (serving 5.0.0)`},
		{name: "model metadata unknown", method: "GET", path: "/v2/models/nope", code: 404, want: `no model named \"nope\"`},
		{name: "model metadata not ready", method: "GET", path: "/v2/models/loading", code: 503, want: "loading"},
		{name: "model ready", method: "GET", path: "/v2/models/silero-vad/ready", code: 200, want: `{"name":"silero-vad","ready":true}`},
		{name: "model version ready", method: "GET", path: "/v2/models/silero-vad/versions/5.0.0/ready", code: 200, want: `"ready":true`},
		{name: "model ready loading", method: "GET", path: "/v2/models/loading/ready", code: 503, want: `{"name":"loading","ready":false}`},
		{name: "model ready unknown", method: "GET", path: "/v2/models/nope/ready", code: 404, want: "nope"},
		{name: "infer", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, body: good, code: 200, bundle: "silero-vad@5.0.0", check: func(t *testing.T, r response) {
			var resp inferResponse
			if err := strictDecode(r.body, &resp); err != nil {
				t.Fatalf("%s: %v", r.body, err)
			}
			if resp.ModelName != "silero-vad" || resp.ModelVersion != "5.0.0" || resp.ID != "req-7" || len(resp.Outputs) != 2 {
				t.Fatalf("response %s", r.body)
			}
			out := resp.Outputs[0]
			if out.Name != "output" || out.Datatype != tensor.FP32 || fmt.Sprint(out.Shape) != "[1 1]" || !near(float64(out.Data.([]float32)[0]), testbundle.SileroOutput) {
				t.Errorf("output %+v, want %g", out, testbundle.SileroOutput)
			}
			if st := resp.Outputs[1]; st.Name != "stateN" || fmt.Sprint(st.Shape) != "[2 1 128]" {
				t.Errorf("state output %v %v", st.Name, st.Shape)
			}
		}},
		{name: "infer no content type", method: "POST", path: "/v2/models/silero-vad/infer", body: good, code: 200, want: `"model_version":"5.0.0"`},
		{name: "infer version", method: "POST", path: "/v2/models/silero-vad/versions/5.0.0/infer", ctype: ctJSON, body: good, code: 200, want: `"model_version":"5.0.0"`},
		{name: "infer other version", method: "POST", path: "/v2/models/silero-vad/versions/4.0.0/infer", ctype: ctJSON, body: good, code: 404, want: `no version \"4.0.0\"`},
		{name: "infer selected output", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, body: requestBody(t, "", in, "stateN"), code: 200, check: func(t *testing.T, r response) {
			var resp inferResponse
			if err := strictDecode(r.body, &resp); err != nil {
				t.Fatal(err)
			}
			if len(resp.Outputs) != 1 || resp.Outputs[0].Name != "stateN" || resp.ID != "" || bytes.Contains(r.body, []byte(`"id"`)) {
				t.Errorf("response %s", r.body)
			}
		}},
		{name: "infer unknown output", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, body: requestBody(t, "", in, "prob"), code: 400, bundle: "silero-vad@5.0.0", want: `has no output \"prob\" (outputs: output, stateN)`},
		{name: "infer malformed", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, body: []byte(`{"inputs": [`), code: 400, want: "malformed JSON"},
		{name: "infer wrong shape", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, body: requestBody(t, "", wrongShape), code: 400, bundle: "silero-vad@5.0.0", want: `tensor \"input\": shape mismatch: got shape [1 511], model expects [-1 512] (dimension 1)`},
		{name: "infer wrong rank", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, body: requestBody(t, "", wrongRank), code: 400, want: `tensor \"input\": shape mismatch: got shape [512] (rank 1), model expects [-1 512] (rank 2)`},
		{name: "infer wrong datatype", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, body: requestBody(t, "", wrongType), code: 400, want: `tensor \"sr\": datatype mismatch: got FP32, model expects INT64`},
		{name: "infer missing input", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, body: requestBody(t, "", in[:2]), code: 400, want: `tensor \"sr\"`},
		{name: "infer unknown input", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, body: requestBody(t, "", unknownInput), code: 400, want: `tensor \"extra\"`},
		{name: "infer non-finite", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, body: bytes.Replace(good, []byte(`"data":[0,`), []byte(`"data":[NaN,`), 1), code: 400, want: "malformed JSON"},
		{name: "infer no inputs", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, body: []byte(`{"id":"x"}`), code: 400, want: "no inputs"},
		{name: "infer empty body", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, code: 400, want: "unexpected end of body"},
		{name: "infer raw", method: "POST", path: "/v2/models/silero-vad/infer", ctype: "application/octet-stream", body: testbundle.PCM(testbundle.TwoSine()), code: 200, bundle: "silero-vad@5.0.0", check: func(t *testing.T, r response) {
			var resp inferResponse
			if err := strictDecode(r.body, &resp); err != nil {
				t.Fatalf("%s: %v", r.body, err)
			}
			// 16-bit quantization moves the answer a little.
			if v := resp.Outputs[0].Data.([]float32)[0]; math.Abs(float64(v)-testbundle.SileroOutput) > 1e-3 || resp.ModelVersion != "5.0.0" || resp.ID != "" {
				t.Errorf("raw response %s, want output ≈ %g", r.body, testbundle.SileroOutput)
			}
		}},
		{name: "infer raw content type parameters", method: "POST", path: "/v2/models/silero-vad/versions/5.0.0/infer", ctype: "Application/Octet-Stream; foo=bar", body: testbundle.PCM(testbundle.TwoSine()), code: 200, want: `"name":"output"`},
		{name: "infer raw wrong length", method: "POST", path: "/v2/models/silero-vad/infer", ctype: "application/octet-stream", body: []byte{1, 2, 3, 4}, code: 400, want: "4 bytes of PCM, want exactly 1024"},
		{name: "infer raw without pre-processor", method: "POST", path: "/v2/models/silero-tensors/infer", ctype: "application/octet-stream", body: testbundle.PCM(testbundle.TwoSine()), code: 400, want: "no pre-processor for raw input"},
		{name: "infer pcm sent as JSON", method: "POST", path: "/v2/models/silero-vad/infer", body: testbundle.PCM(testbundle.TwoSine()), code: 400, want: "use Content-Type: application/octet-stream"},
		{name: "infer tensors without pre-processor", method: "POST", path: "/v2/models/silero-tensors/infer", ctype: ctJSON, body: good, code: 200, want: `"model_name":"silero-tensors"`},
		{name: "infer raw empty", method: "POST", path: "/v2/models/silero-vad/infer", ctype: "application/octet-stream", code: 400, want: "empty body"},
		{name: "infer too large", method: "POST", path: "/v2/models/silero-vad/infer", ctype: ctJSON, body: bytes.Repeat([]byte(" "), 65<<10), code: 413, want: "limit is 65536 bytes"},
		{name: "infer unknown model", method: "POST", path: "/v2/models/nope/infer", ctype: ctJSON, body: good, code: 404, want: `no model named \"nope\"`},
		{name: "infer not ready", method: "POST", path: "/v2/models/loading/infer", ctype: ctJSON, body: good, code: 503, want: "not ready"},
		{name: "infer runtime error", method: "POST", path: "/v2/models/broken/infer", ctype: ctJSON, body: []byte(`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`), code: 500, bundle: "broken@1.0.0", check: func(t *testing.T, r response) {
			if bytes.Contains(r.body, []byte("secret")) || !bytes.Contains(r.body, []byte("model broken@1.0.0: inference failed")) {
				t.Errorf("500 body %s leaks internals or names no model", r.body)
			}
		}},
		{name: "infer non-finite output", method: "POST", path: "/v2/models/nan/infer", ctype: ctJSON, body: []byte(`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`), code: 500, want: "inference failed"},
		{name: "infer wrong method", method: "GET", path: "/v2/models/silero-vad/infer", code: 405, want: "method GET not allowed"},
		{name: "live wrong method", method: "DELETE", path: "/v2/health/live", code: 405, want: "use GET"},
		{name: "unknown path", method: "GET", path: "/v1/models", code: 404, want: "no such endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.do(t, tt.method, tt.path, tt.ctype, tt.body)
			if r.code != tt.code {
				t.Fatalf("status %d, want %d; body %s", r.code, tt.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if !json.Valid(r.body) {
				t.Errorf("body is not JSON: %s", r.body)
			}
			if tt.code >= 400 && tt.code != 503 || strings.Contains(tt.want, "not ready") {
				var e struct {
					Error string `json:"error"`
				}
				if err := strictDecode(r.body, &e); err != nil || e.Error == "" {
					t.Errorf("error body %s is not {\"error\": message} (%v)", r.body, err)
				}
			}
			if !strings.Contains(string(r.body), tt.want) {
				t.Errorf("body %s does not contain %s", r.body, tt.want)
			}
			if tt.bundle != "" && r.header.Get(BundleHeader) != tt.bundle {
				t.Errorf("%s: %q, want %q", BundleHeader, r.header.Get(BundleHeader), tt.bundle)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
	drained(t, backend, "silero-vad", "silero-tensors", "broken", "nan")
}

func TestServerReadiness(t *testing.T) {
	reg := NewRegistry()
	s := serve(t, Options{Backend: reg})
	ready := func(want int) {
		t.Helper()
		r := s.do(t, "GET", "/v2/health/ready", "", nil)
		body := fmt.Sprintf(`{"live":%[1]v,"ready":%[1]v}`+"\n", want == 200)
		if r.code != want || string(r.body) != body {
			t.Errorf("ready: %d %s, want %d %s", r.code, r.body, want, body)
		}
		// Liveness does not depend on readiness.
		if r := s.do(t, "GET", "/v2/health/live", "", nil); r.code != 200 {
			t.Errorf("live: %d %s", r.code, r.body)
		}
	}
	ready(503) // nothing installed
	reg.Loading("silero-vad")
	ready(503)
	if r := s.do(t, "GET", "/v2/models/silero-vad/ready", "", nil); r.code != 503 {
		t.Errorf("model ready while loading: %d %s", r.code, r.body)
	}
	reg.Set(sileroPredictor(t, "5.0.0"))
	ready(200)
	reg.Loading("silero-vad") // a successor loading: the active one serves on
	ready(200)
	reg.Remove("silero-vad")
	ready(503)
}

// TestConcurrentInfer serves the real model to many clients at once while
// the active version is swapped underneath, under -race: every answer
// must be right and name, in body and header alike, the version that gave
// it.
func TestConcurrentInfer(t *testing.T) {
	v1, v2 := sileroPredictor(t, "5.0.0"), sileroPredictor(t, "5.0.1")
	backend := newRegistry(v1)
	var observed atomic.Int64
	s := serve(t, Options{Backend: backend, OnPrediction: func(Prediction) { observed.Add(1) }})

	good := requestBody(t, "c", zeroState(sileroInputs()))
	bad := requestBody(t, "c", sileroInputs()[:1])
	const workers, perWorker = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				body, want := good, 200
				if (w+i)%5 == 0 {
					body, want = bad, 400
				}
				r := s.do(t, "POST", "/v2/models/silero-vad/infer", "application/json", body)
				if r.code != want {
					errs <- fmt.Errorf("status %d, want %d: %s", r.code, want, r.body)
					continue
				}
				if want != 200 {
					continue
				}
				var resp inferResponse
				if err := strictDecode(r.body, &resp); err != nil {
					errs <- err
					continue
				}
				if got := r.header.Get(BundleHeader); got != "silero-vad@"+resp.ModelVersion {
					errs <- fmt.Errorf("header %s but body says version %s", got, resp.ModelVersion)
				}
				if v := resp.Outputs[0].Data.([]float32)[0]; !near(float64(v), testbundle.SileroOutput) {
					errs <- fmt.Errorf("output %g, want %g", v, testbundle.SileroOutput)
				}
			}
		}()
	}
	var waits []func(context.Context) error
	for i := range 20 {
		next := v1
		if i%2 == 0 {
			next = v2
		}
		_, wait := backend.Set(next)
		waits = append(waits, wait)
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	for _, wait := range waits {
		if err := wait(context.Background()); err != nil {
			t.Error(err)
		}
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := observed.Load(); n != workers*perWorker {
		t.Errorf("observer saw %d predictions, want %d", n, workers*perWorker)
	}
	drained(t, backend, "silero-vad")
}

// TestShutdownDrains checks that Shutdown waits for a running inference
// and that its answer still reaches the client.
func TestShutdownDrains(t *testing.T) {
	started, finish := make(chan struct{}), make(chan struct{})
	slow := &stubPredictor{manifest: stubManifest("slow"), infer: func(ctx context.Context, in model.Input) (*model.Output, error) {
		close(started)
		<-finish
		return &model.Output{Tensors: in.Tensors}, nil
	}}
	srv, err := New(Options{Backend: newRegistry(slow), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := ListenUnix(sock, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), ln) }()
	client := unixClient(sock)

	answered := make(chan error, 1)
	go func() {
		resp, err := client.Post("http://x/v2/models/slow/infer", "application/json",
			strings.NewReader(`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[3]}]}`))
		if err != nil {
			answered <- err
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"data":[3]`)) {
			answered <- fmt.Errorf("status %d: %s", resp.StatusCode, b)
			return
		}
		answered <- nil
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a request was in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(finish)
	if err := <-answered; err != nil {
		t.Fatalf("in-flight request: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Shutdown: %v", err)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	srv, err := New(Options{Backend: newRegistry(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/v2/health/live")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestOnPrediction(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	got := make(chan Prediction, 10)
	s := serve(t, Options{Backend: newRegistry(silero), OnPrediction: func(p Prediction) { got <- p }})

	s.do(t, "POST", "/v2/models/silero-vad/infer", "", requestBody(t, "p1", zeroState(sileroInputs()), "output"))
	s.do(t, "POST", "/v2/models/silero-vad/infer", "", requestBody(t, "p2", sileroInputs()[:2]))
	s.do(t, "POST", "/v2/models/silero-vad/infer", "application/octet-stream", testbundle.PCM(testbundle.TwoSine()))
	s.do(t, "POST", "/v2/models/nope/infer", "", nil) // never reaches a model: not a prediction

	p := <-got
	if p.Model != "silero-vad" || p.Version != "5.0.0" || p.Provider != "cpu" || p.RequestID != "p1" || p.Code != 200 || p.Err != nil ||
		p.Latency <= 0 || p.InferLatency <= 0 || p.InferLatency > p.Latency || p.Time.IsZero() || p.Raw {
		t.Errorf("prediction %+v", p)
	}
	// The observer sees every output, whatever the request selected.
	if p.Output == nil || len(p.Output.Tensors) != 2 {
		t.Errorf("output %+v", p.Output)
	}
	p = <-got
	if p.RequestID != "p2" || p.Code != 400 || !errors.Is(p.Err, model.ErrInput) || p.Output != nil {
		t.Errorf("failed prediction %+v", p)
	}
	// A raw request: the pre-processor's drift features come along.
	p = <-got
	if !p.Raw || p.Code != 200 || p.Output == nil || len(p.Output.Features) == 0 || p.Output.Features[0].Len() == 0 {
		t.Errorf("raw prediction %+v", p)
	}
	select {
	case p := <-got:
		t.Errorf("unexpected prediction %+v", p)
	case <-time.After(20 * time.Millisecond):
	}
}

// TestOnPredictionNeverBlocks checks that a stuck observer costs requests
// nothing: predictions beyond the queue are dropped and counted.
func TestOnPredictionNeverBlocks(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	entered, release := make(chan struct{}, 1), make(chan struct{})
	s := serve(t, Options{Backend: newRegistry(silero), PredictionQueue: 2, OnPrediction: func(Prediction) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	}})
	defer close(release)
	body := requestBody(t, "", zeroState(sileroInputs()))
	for i := range 10 {
		if i == 1 {
			<-entered // the observer holds the first prediction
		}
		if r := s.do(t, "POST", "/v2/models/silero-vad/infer", "", body); r.code != 200 {
			t.Fatalf("status %d: %s", r.code, r.body)
		}
	}
	// One prediction is with the observer, two wait in the queue.
	if m := scrape(t, s.srv); !strings.Contains(m, "edge_agent_api_predictions_dropped_total 7\n") {
		t.Errorf("metrics do not count 7 dropped predictions:\n%s", grep(m, "dropped"))
	}
}

func scrape(t testing.TB, s *Server) string {
	t.Helper()
	ln, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s.MetricsHandler()}
	go hs.Serve(ln)
	defer hs.Close()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestMetrics(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	s := serve(t, Options{
		Backend:     newRegistry(silero),
		BufferStats: func() BufferStats { return BufferStats{Records: 12, Bytes: 3456, Dropped: 7} },
	})
	good := requestBody(t, "", zeroState(sileroInputs()))
	for range 3 {
		s.do(t, "POST", "/v2/models/silero-vad/infer", "", good)
	}
	s.do(t, "POST", "/v2/models/silero-vad/infer", "", []byte("{"))
	s.do(t, "POST", "/v2/models/nope/infer", "", good)
	s.do(t, "POST", "/v2/models/another-random-name/infer", "", good)

	m := scrape(t, s.srv)
	for _, want := range []string{
		`edge_agent_api_inference_requests_total{code="200",model="silero-vad"} 3`,
		`edge_agent_api_inference_requests_total{code="400",model="silero-vad"} 1`,
		// Unknown names share one label value: clients cannot blow up
		// the series count.
		`edge_agent_api_inference_requests_total{code="404",model=""} 2`,
		`edge_agent_api_inference_errors_total{model="silero-vad",reason="bad_request"} 1`,
		`edge_agent_api_inference_errors_total{model="",reason="not_found"} 2`,
		`edge_agent_api_inference_request_duration_seconds_bucket{model="silero-vad",le="0.0001"}`,
		`edge_agent_api_inference_request_duration_seconds_count{model="silero-vad"} 4`,
		`edge_agent_api_model_inference_duration_seconds_count{model="silero-vad"} 3`,
		`edge_agent_api_inference_requests_in_flight 0`,
		`edge_agent_model_active{name="silero-vad",provider="cpu",version="5.0.0"} 1`,
		`edge_agent_buffer_records 12`,
		`edge_agent_buffer_bytes 3456`,
		`edge_agent_buffer_dropped_total 7`,
		`# TYPE edge_agent_buffer_dropped_total counter`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Log(grep(m, "edge_agent"))
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	log := testLogger(t)
	for _, tt := range []struct {
		opts Options
		want string
	}{
		{Options{Logger: log}, "Backend is required"},
		{Options{Backend: newRegistry()}, "Logger is required"},
		{Options{Backend: newRegistry(), Logger: log, MaxBodyBytes: -1}, "MaxBodyBytes must be >= 0"},
	} {
		if _, err := New(tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New: %v, want %q", err, tt.want)
		}
	}
	// Metrics go on the caller's registry; twice is a conflict.
	reg := prometheus.NewRegistry()
	if _, err := New(Options{Backend: newRegistry(), Logger: log, Registry: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Backend: newRegistry(), Logger: log, Registry: reg}); err == nil {
		t.Error("a second server registered the same metrics on one registry")
	}
}

// TestBodyTooLargeStreamed checks the cap on a body without a
// Content-Length (chunked), which only reading can find too large.
func TestBodyTooLargeStreamed(t *testing.T) {
	s := serve(t, Options{Backend: newRegistry(sileroPredictor(t, "5.0.0")), MaxBodyBytes: 1 << 10})
	body := io.MultiReader(strings.NewReader(`{"inputs":[`), strings.NewReader(strings.Repeat(" ", 2<<10)))
	req, err := http.NewRequest("POST", "http://x/v2/models/silero-vad/infer", body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if req.ContentLength != 0 || resp.StatusCode != 413 || !strings.Contains(string(b), "limit is 1024 bytes") {
		t.Errorf("chunked oversized body: %d %s (request length %d)", resp.StatusCode, b, req.ContentLength)
	}
}
