package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/edgefleet/edgefleet/agent/api/oipgrpc"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// servedGRPC is a served Server that also serves gRPC on a unix socket of
// its own, with a client generated from the proto connected to it.
type servedGRPC struct {
	*served
	grpcSocket string
	rpc        oipgrpc.GRPCInferenceServiceClient
}

// serveGRPC starts a server for opts on a REST and a gRPC unix socket in
// a temporary directory; both stop when the test ends.
func serveGRPC(t testing.TB, opts Options) *servedGRPC {
	t.Helper()
	s := serve(t, opts)
	sock := filepath.Join(t.TempDir(), "grpc.sock")
	ln, err := ListenUnix(sock, 0o660)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.srv.ServeGRPC(context.Background(), ln, nil) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("ServeGRPC: %v", err)
		}
	})
	return &servedGRPC{served: s, grpcSocket: sock, rpc: oipgrpc.NewGRPCInferenceServiceClient(conn)}
}

func callCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// grpcTyped is a ModelInferRequest for inputs with typed contents.
func grpcTyped(t testing.TB, name, id string, inputs []tensor.Tensor) *oipgrpc.ModelInferRequest {
	t.Helper()
	req := &oipgrpc.ModelInferRequest{ModelName: name, Id: id}
	for _, in := range inputs {
		req.Inputs = append(req.Inputs, &oipgrpc.ModelInferRequest_InferInputTensor{
			Name: in.Name, Datatype: string(in.Datatype), Shape: in.Shape, Contents: outputContents(in.Data),
		})
	}
	return req
}

// grpcRaw is a ModelInferRequest for inputs with raw_input_contents, as
// tritonclient and KServe's client send numpy arrays.
func grpcRaw(name string, inputs []tensor.Tensor) *oipgrpc.ModelInferRequest {
	req := &oipgrpc.ModelInferRequest{ModelName: name}
	for _, in := range inputs {
		req.Inputs = append(req.Inputs, &oipgrpc.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: string(in.Datatype), Shape: in.Shape})
		req.RawInputContents = append(req.RawInputContents, tensor.AppendData(nil, in.Data))
	}
	return req
}

// grpcOutputs are the tensors of a ModelInferResponse, typed or raw.
func grpcOutputs(t testing.TB, resp *oipgrpc.ModelInferResponse) []tensor.Tensor {
	t.Helper()
	raw := resp.GetRawOutputContents()
	if len(raw) > 0 && len(raw) != len(resp.GetOutputs()) {
		t.Fatalf("%d raw_output_contents for %d outputs", len(raw), len(resp.GetOutputs()))
	}
	var out []tensor.Tensor
	for i, o := range resp.GetOutputs() {
		tt := tensor.Tensor{Name: o.GetName(), Datatype: tensor.Datatype(o.GetDatatype()), Shape: o.GetShape()}
		if len(raw) > 0 {
			if contentsField(o.GetContents()) != "" {
				t.Fatalf("output %s has contents and raw_output_contents", tt.Name)
			}
			v, err := tensor.DataFromBytes(tt.Datatype, raw[i])
			if err != nil {
				t.Fatal(err)
			}
			tt.Data = v
		} else {
			m := &oipgrpc.ModelInferRequest_InferInputTensor{Name: tt.Name, Datatype: o.GetDatatype(), Shape: tt.Shape, Contents: o.GetContents()}
			v, err := grpcInput(m, false, nil)
			if err != nil {
				t.Fatalf("output %s: %v", tt.Name, err)
			}
			tt = v
		}
		out = append(out, tt)
	}
	return out
}

// sameTensors fails unless got and want are the same tensors, bit for
// bit, in the same order.
func sameTensors(t testing.TB, what string, got, want []tensor.Tensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d outputs, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.Datatype != w.Datatype || !slices.Equal(g.Shape, w.Shape) {
			t.Errorf("%s: output %d is %s %s %v, want %s %s %v", what, i, g.Name, g.Datatype, g.Shape, w.Name, w.Datatype, w.Shape)
			continue
		}
		if !bytes.Equal(tensor.AppendData(nil, g.Data), tensor.AppendData(nil, w.Data)) {
			t.Errorf("%s: output %s differs: got %v, want %v", what, w.Name, g.Data, w.Data)
		}
	}
}

// restAnswer is REST's answer to inputs, outputs as binary data (exact).
func restAnswer(t *testing.T, s *served, inputs []tensor.Tensor, outputs ...string) inferResponse {
	t.Helper()
	bin := map[string]bool{}
	for _, o := range outputs {
		bin[o] = true
	}
	body, n := binaryBody(t, inputs, nil, map[string]any{"binary_data_output": true}, bin, outputs...)
	r := s.postBinary(t, "/v2/models/silero-vad/infer", body, strconv.Itoa(n))
	if r.code != 200 {
		t.Fatalf("REST: %d %s", r.code, r.body)
	}
	return splitBinary(t, r)
}

// TestGRPCMatchesREST: the real Silero model answers a gRPC ModelInfer,
// with typed contents or raw_input_contents, exactly as it answers the
// same tensors over REST, and the request is reported and counted as a
// REST one is.
func TestGRPCMatchesREST(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	preds := make(chan Prediction, 16)
	s := serveGRPC(t, Options{Backend: newRegistry(silero), OnPrediction: func(p Prediction) { preds <- p }})
	in := sileroInputs()
	want := restAnswer(t, s.served, in)
	<-preds // REST's

	for _, tc := range []struct {
		name    string
		req     *oipgrpc.ModelInferRequest
		raw     bool // the answer comes as raw_output_contents
		outputs []string
	}{
		{name: "typed contents", req: grpcTyped(t, "silero-vad", "req-1", in)},
		{name: "raw contents", req: grpcRaw("silero-vad", in), raw: true},
		{name: "raw contents, typed answer", req: func() *oipgrpc.ModelInferRequest {
			r := grpcRaw("silero-vad", in)
			r.Parameters = map[string]*oipgrpc.InferParameter{"binary_data_output": {ParameterChoice: &oipgrpc.InferParameter_BoolParam{BoolParam: false}}}
			return r
		}()},
		{name: "typed contents, raw answer", req: func() *oipgrpc.ModelInferRequest {
			r := grpcTyped(t, "silero-vad", "", in)
			r.Parameters = map[string]*oipgrpc.InferParameter{"binary_data_output": {ParameterChoice: &oipgrpc.InferParameter_BoolParam{BoolParam: true}}}
			return r
		}(), raw: true},
		{name: "one output asked for", req: func() *oipgrpc.ModelInferRequest {
			r := grpcTyped(t, "silero-vad", "", in)
			r.Outputs = []*oipgrpc.ModelInferRequest_InferRequestedOutputTensor{{Name: "stateN"}}
			return r
		}(), outputs: []string{"stateN"}},
		{name: "version given", req: func() *oipgrpc.ModelInferRequest {
			r := grpcRaw("silero-vad", in)
			r.ModelVersion = "5.0.0"
			return r
		}(), raw: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var header metadata.MD
			resp, err := s.rpc.ModelInfer(callCtx(t), tc.req, grpc.Header(&header))
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetModelName() != "silero-vad" || resp.GetModelVersion() != "5.0.0" || resp.GetId() != tc.req.GetId() {
				t.Errorf("model %q version %q id %q", resp.GetModelName(), resp.GetModelVersion(), resp.GetId())
			}
			if got := header.Get(GRPCBundleHeader); !slices.Equal(got, []string{"silero-vad@5.0.0"}) {
				t.Errorf("%s header %v", GRPCBundleHeader, got)
			}
			if got := len(resp.GetRawOutputContents()) > 0; got != tc.raw {
				t.Errorf("raw_output_contents used: %v, want %v", got, tc.raw)
			}
			ref := want.Outputs
			if tc.outputs != nil {
				ref = restAnswer(t, s.served, in, tc.outputs...).Outputs
				<-preds
			}
			sameTensors(t, "gRPC against REST", grpcOutputs(t, resp), ref)
			p := <-preds
			if p.Model != "silero-vad" || p.Version != "5.0.0" || p.Code != 200 || p.Err != nil || p.Output == nil || p.RequestID != tc.req.GetId() || p.Raw {
				t.Errorf("prediction reported: %+v", p)
			}
		})
	}
	metrics := scrape(t, s.srv)
	if line := grep(metrics, `edge_agent_api_inference_requests_total{code="200",model="silero-vad"}`); !strings.HasSuffix(line, " 8") {
		t.Errorf("requests counted: %q, want 8 (2 REST, 6 gRPC)", line)
	}
}

// TestGRPCMetadata: the health, readiness and metadata calls answer what
// their REST routes do.
func TestGRPCMetadata(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	reg := newRegistry(silero)
	s := serveGRPC(t, Options{Backend: reg, ServerName: "edge-agent", ServerVersion: "1.2.3"})
	ctx := callCtx(t)

	live, err := s.rpc.ServerLive(ctx, &oipgrpc.ServerLiveRequest{})
	if err != nil || !live.GetLive() {
		t.Errorf("ServerLive: %v %v", live, err)
	}
	ready, err := s.rpc.ServerReady(ctx, &oipgrpc.ServerReadyRequest{})
	if err != nil || !ready.GetReady() {
		t.Errorf("ServerReady: %v %v", ready, err)
	}
	mr, err := s.rpc.ModelReady(ctx, &oipgrpc.ModelReadyRequest{Name: "silero-vad"})
	if err != nil || !mr.GetReady() {
		t.Errorf("ModelReady: %v %v", mr, err)
	}

	sm, err := s.rpc.ServerMetadata(ctx, &oipgrpc.ServerMetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var restServer struct {
		Name       string   `json:"name"`
		Version    string   `json:"version"`
		Extensions []string `json:"extensions"`
	}
	if r := s.do(t, "GET", "/v2", "", nil); r.code != 200 || json.Unmarshal(r.body, &restServer) != nil {
		t.Fatalf("GET /v2: %d %s", r.code, r.body)
	}
	if sm.GetName() != restServer.Name || sm.GetVersion() != restServer.Version || !slices.Equal(sm.GetExtensions(), restServer.Extensions) || sm.GetVersion() != "1.2.3" {
		t.Errorf("ServerMetadata %v, REST %+v", sm, restServer)
	}

	md, err := s.rpc.ModelMetadata(ctx, &oipgrpc.ModelMetadataRequest{Name: "silero-vad"})
	if err != nil {
		t.Fatal(err)
	}
	var restModel struct {
		Name     string        `json:"name"`
		Versions []string      `json:"versions"`
		Platform string        `json:"platform"`
		Inputs   []tensor.Spec `json:"inputs"`
		Outputs  []tensor.Spec `json:"outputs"`
	}
	if r := s.do(t, "GET", "/v2/models/silero-vad", "", nil); r.code != 200 || json.Unmarshal(r.body, &restModel) != nil {
		t.Fatalf("GET /v2/models/silero-vad: %d %s", r.code, r.body)
	}
	specs := func(ms []*oipgrpc.ModelMetadataResponse_TensorMetadata) []tensor.Spec {
		var out []tensor.Spec
		for _, m := range ms {
			out = append(out, tensor.Spec{Name: m.GetName(), Datatype: tensor.Datatype(m.GetDatatype()), Shape: m.GetShape()})
		}
		return out
	}
	same := func(a, b []tensor.Spec) bool {
		return slices.EqualFunc(a, b, func(x, y tensor.Spec) bool {
			return x.Name == y.Name && x.Datatype == y.Datatype && slices.Equal(x.Shape, y.Shape)
		})
	}
	if md.GetName() != restModel.Name || !slices.Equal(md.GetVersions(), restModel.Versions) || md.GetPlatform() != restModel.Platform ||
		!same(specs(md.GetInputs()), restModel.Inputs) || !same(specs(md.GetOutputs()), restModel.Outputs) || len(restModel.Inputs) != 3 {
		t.Errorf("ModelMetadata %v, REST %+v", md, restModel)
	}

	// While a model loads: not ready, in both protocols.
	reg.Loading("next")
	if r, err := s.rpc.ServerReady(ctx, &oipgrpc.ServerReadyRequest{}); err != nil || r.GetReady() {
		t.Errorf("ServerReady while a model loads: %v %v", r, err)
	}
	if r, err := s.rpc.ModelReady(ctx, &oipgrpc.ModelReadyRequest{Name: "next"}); err != nil || r.GetReady() {
		t.Errorf("ModelReady while it loads: %v %v", r, err)
	}
	if r := s.do(t, "GET", "/v2/models/next/ready", "", nil); r.code != 503 {
		t.Errorf("REST model readiness while it loads: %d %s", r.code, r.body)
	}
}

// TestGRPCErrors: every refused call has the gRPC code of REST's status
// and a message that names what was wrong.
func TestGRPCErrors(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	reg := newRegistry(silero)
	reg.Loading("warming")
	s := serveGRPC(t, Options{Backend: reg})
	// Each request has inputs of its own: typed contents share the
	// tensors' slices.
	with := func(f func(r *oipgrpc.ModelInferRequest)) *oipgrpc.ModelInferRequest {
		r := grpcTyped(t, "silero-vad", "", sileroInputs())
		f(r)
		return r
	}
	withRaw := func(f func(r *oipgrpc.ModelInferRequest)) *oipgrpc.ModelInferRequest {
		r := grpcRaw("silero-vad", sileroInputs())
		f(r)
		return r
	}
	for _, tc := range []struct {
		name string
		req  *oipgrpc.ModelInferRequest
		code codes.Code
		msg  string
	}{
		{"unknown model", with(func(r *oipgrpc.ModelInferRequest) { r.ModelName = "nope" }), codes.NotFound, `no model named "nope" is installed (installed: silero-vad)`},
		{"other version", with(func(r *oipgrpc.ModelInferRequest) { r.ModelVersion = "4.0.0" }), codes.NotFound, `model "silero-vad" has no version "4.0.0" (serving 5.0.0)`},
		{"model loading", with(func(r *oipgrpc.ModelInferRequest) { r.ModelName = "warming" }), codes.Unavailable, `model "warming" is loading`},
		{"no inputs", with(func(r *oipgrpc.ModelInferRequest) { r.Inputs = nil }), codes.InvalidArgument, `inputs: the request has no inputs`},
		{"wrong shape", with(func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[0].Shape = []int64{2, 256}
		}), codes.InvalidArgument, `tensor "input": shape mismatch: got shape [2 256], model expects [-1 512]`},
		{"wrong datatype", with(func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[2] = &oipgrpc.ModelInferRequest_InferInputTensor{Name: "sr", Datatype: "INT32", Shape: []int64{1}, Contents: &oipgrpc.InferTensorContents{IntContents: []int32{16000}}}
		}), codes.InvalidArgument, `tensor "sr": datatype mismatch: got INT32, model expects INT64`},
		{"contents of another datatype", with(func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[2].Contents = &oipgrpc.InferTensorContents{IntContents: []int32{16000}}
		}), codes.InvalidArgument, `inputs[2]: datatype mismatch: input "sr": contents.int_contents given; INT64 data goes in contents.int64_contents`},
		{"contents of two datatypes", with(func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[2].Contents.Fp32Contents = []float32{16000}
		}), codes.InvalidArgument, `input "sr": contents.fp32_contents given; INT64 data goes in contents.int64_contents`},
		{"unsupported datatype", with(func(r *oipgrpc.ModelInferRequest) { r.Inputs[1].Datatype = "FP16" }), codes.InvalidArgument, `input "state": unsupported datatype "FP16"`},
		{"too few elements", with(func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[0].Contents.Fp32Contents = r.Inputs[0].Contents.Fp32Contents[:500]
		}), codes.InvalidArgument, `input "input": shape [1 512] holds 512 elements, contents.fp32_contents has 500`},
		{"no data", with(func(r *oipgrpc.ModelInferRequest) { r.Inputs[1].Contents = nil }), codes.InvalidArgument, `input "state": missing data: shape [2 1 128] holds 256 elements`},
		{"unknown input", with(func(r *oipgrpc.ModelInferRequest) { r.Inputs[2].Name = "rate" }), codes.InvalidArgument, `"rate"`},
		{"input twice", with(func(r *oipgrpc.ModelInferRequest) { r.Inputs[2] = r.Inputs[1] }), codes.InvalidArgument, `inputs[2]: input "state" given twice`},
		{"non-finite", with(func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[0].Contents.Fp32Contents[7] = float32(math.NaN())
		}), codes.InvalidArgument, `tensor "input": non-finite value at element 7`},
		{"unknown output", with(func(r *oipgrpc.ModelInferRequest) {
			r.Outputs = []*oipgrpc.ModelInferRequest_InferRequestedOutputTensor{{Name: "prob"}}
		}), codes.InvalidArgument, `model silero-vad@5.0.0 has no output "prob" (outputs: output, stateN)`},
		{"raw contents too short", withRaw(func(r *oipgrpc.ModelInferRequest) {
			r.RawInputContents[1] = r.RawInputContents[1][:1000]
		}), codes.InvalidArgument, `inputs[1]: shape mismatch: input "state": shape [2 1 128] of FP32 is 1024 bytes, its raw_input_contents entry has 1000`},
		{"raw contents missing an input", withRaw(func(r *oipgrpc.ModelInferRequest) {
			r.RawInputContents = r.RawInputContents[:2]
		}), codes.InvalidArgument, `raw_input_contents has 2 entries for 3 inputs`},
		{"raw and typed contents", withRaw(func(r *oipgrpc.ModelInferRequest) {
			r.Inputs[2].Contents = &oipgrpc.InferTensorContents{Int64Contents: []int64{16000}}
		}), codes.InvalidArgument, `input "sr" has both contents.int64_contents and raw_input_contents`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.rpc.ModelInfer(callCtx(t), tc.req)
			st, _ := status.FromError(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Errorf("got %v: %q\nwant %v: ...%s...", st.Code(), st.Message(), tc.code, tc.msg)
			}
		})
	}
	ctx := callCtx(t)
	if _, err := s.rpc.ModelMetadata(ctx, &oipgrpc.ModelMetadataRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("ModelMetadata of an unknown model: %v", err)
	}
	if _, err := s.rpc.ModelReady(ctx, &oipgrpc.ModelReadyRequest{Name: "silero-vad", Version: "1"}); status.Code(err) != codes.NotFound {
		t.Errorf("ModelReady of another version: %v", err)
	}
	metrics := scrape(t, s.srv)
	for _, want := range []string{
		`edge_agent_api_inference_errors_total{model="silero-vad",reason="bad_request"} 15`,
		`edge_agent_api_inference_errors_total{model="",reason="not_found"} 2`,
		`edge_agent_api_inference_errors_total{model="",reason="not_ready"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(metrics, "errors_total"))
		}
	}
}

// TestGRPCMessageTooLarge: api.maxBodyBytes bounds a gRPC request too.
func TestGRPCMessageTooLarge(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	s := serveGRPC(t, Options{Backend: newRegistry(silero), MaxBodyBytes: 1024})
	_, err := s.rpc.ModelInfer(callCtx(t), grpcRaw("silero-vad", sileroInputs()))
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a message over the cap: %v", err)
	}
}

// TestGRPCMutualTLS: on TCP with mutual TLS, a client with a certificate
// of the client CA is served; one without a certificate, or with one of
// another CA, is refused.
func TestGRPCMutualTLS(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	s := serve(t, Options{Backend: newRegistry(silero)})
	dir := t.TempDir()
	ca := testenv.NewCA(t, dir, "edgefleet test CA")
	serverCert, serverKey := ca.Issue("server", "edge-agent", true)
	clientCert, clientKey := ca.Issue("client", "app", false)
	other := testenv.NewCA(t, t.TempDir(), "another CA")
	otherCert, otherKey := other.Issue("intruder", "intruder", false)

	cfg, err := MutualTLS(serverCert, serverKey, ca.File)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.srv.ServeGRPC(ctx, ln, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeGRPC: %v", err)
		}
	})

	call := func(t *testing.T, certs []tls.Certificate) error {
		conf := &tls.Config{RootCAs: ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS12}
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(conf)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := oipgrpc.NewGRPCInferenceServiceClient(conn)
		ictx, icancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer icancel()
		resp, err := c.ModelInfer(ictx, grpcRaw("silero-vad", sileroInputs()))
		if err == nil && len(resp.GetOutputs()) != 2 {
			return fmt.Errorf("%d outputs", len(resp.GetOutputs()))
		}
		return err
	}
	load := func(cert, key string) []tls.Certificate {
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	t.Run("client certificate", func(t *testing.T) {
		if err := call(t, load(clientCert, clientKey)); err != nil {
			t.Errorf("refused: %v", err)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		if err := call(t, nil); status.Code(err) != codes.Unavailable {
			t.Errorf("got %v, want Unavailable (handshake refused)", err)
		}
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		if err := call(t, load(otherCert, otherKey)); status.Code(err) != codes.Unavailable {
			t.Errorf("got %v, want Unavailable (handshake refused)", err)
		}
	})
	t.Run("plaintext", func(t *testing.T) {
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = oipgrpc.NewGRPCInferenceServiceClient(conn).ServerLive(callCtx(t), &oipgrpc.ServerLiveRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Errorf("got %v, want Unavailable", err)
		}
	})
}

func TestMutualTLSErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, dir, "ca")
	cert, key := ca.Issue("server", "edge-agent", true)
	for _, tc := range []struct {
		name, cert, key, ca, want string
	}{
		{"missing cert", filepath.Join(dir, "none.pem"), key, ca.File, "none.pem"},
		{"key of nothing", cert, ca.File, ca.File, "server certificate"},
		{"missing CA", cert, key, filepath.Join(dir, "ca-none.pem"), "client CA"},
		{"CA not PEM", cert, key, key, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := MutualTLS(tc.cert, tc.key, tc.ca); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ...%s...", err, tc.want)
			}
		})
	}
}

// grpcurl runs the pinned grpcurl against the unix socket sock, with the
// request data (if not "") and then args (the verb or method).
func grpcurl(t *testing.T, sock, data string, args ...string) (string, error) {
	t.Helper()
	bin := testenv.Tool(t, "grpcurl")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	flags := []string{"-plaintext", "-unix"}
	if data != "" {
		flags = append(flags, "-d", data)
	}
	cmd := exec.CommandContext(ctx, bin, append(append(flags, sock), args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("grpcurl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), err
}

// TestGRPCurl: grpcurl, as an operator would use it, finds the service
// through reflection, describes it, and gets from ModelInfer (JSON in
// and out) the answer REST gives.
func TestGRPCurl(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	s := serveGRPC(t, Options{Backend: newRegistry(silero)})

	out, err := grpcurl(t, s.grpcSocket, "", "list")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "inference.GRPCInferenceService\n") {
		t.Errorf("list:\n%s", out)
	}
	out, err = grpcurl(t, s.grpcSocket, "", "describe", "inference.GRPCInferenceService")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"} {
		if !strings.Contains(out, "rpc "+m+" ") {
			t.Errorf("describe lacks %s:\n%s", m, out)
		}
	}
	out, err = grpcurl(t, s.grpcSocket, "", "inference.GRPCInferenceService/ServerReady")
	if err != nil || !strings.Contains(out, `"ready": true`) {
		t.Errorf("ServerReady: %v\n%s", err, out)
	}

	// ModelInfer with the inputs as JSON typed contents (protobuf's JSON
	// mapping: int64 values may be strings).
	in := sileroInputs()
	req := map[string]any{"model_name": "silero-vad", "id": "grpcurl-1"}
	var inputs []map[string]any
	for _, x := range in {
		c := map[string]any{}
		switch v := x.Data.(type) {
		case []float32:
			c["fp32_contents"] = v
		case []int64:
			c["int64_contents"] = v
		}
		inputs = append(inputs, map[string]any{"name": x.Name, "datatype": x.Datatype, "shape": x.Shape, "contents": c})
	}
	req["inputs"] = inputs
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	out, err = grpcurl(t, s.grpcSocket, string(body), "inference.GRPCInferenceService/ModelInfer")
	if err != nil {
		t.Fatal(err)
	}
	var resp oipgrpc.ModelInferResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if resp.GetId() != "grpcurl-1" || resp.GetModelVersion() != "5.0.0" {
		t.Errorf("id %q version %q", resp.GetId(), resp.GetModelVersion())
	}
	sameTensors(t, "grpcurl against REST", grpcOutputs(t, &resp), restAnswer(t, s.served, in).Outputs)

	// An error comes back with its code and message.
	_, err = grpcurl(t, s.grpcSocket, `{"model_name": "nope", "inputs": []}`, "inference.GRPCInferenceService/ModelInfer")
	if err == nil || !strings.Contains(err.Error(), "NotFound") || !strings.Contains(err.Error(), `no model named "nope"`) {
		t.Errorf("unknown model through grpcurl: %v", err)
	}
}

// FuzzDecodeGRPCRequest: whatever ModelInferRequest arrives, decoding it
// does not panic, and what it accepts is consistent tensors.
func FuzzDecodeGRPCRequest(f *testing.F) {
	for _, r := range []*oipgrpc.ModelInferRequest{
		grpcTyped(f, "silero-vad", "x", sileroInputs()),
		grpcRaw("silero-vad", sileroInputs()),
		{Inputs: []*oipgrpc.ModelInferRequest_InferInputTensor{{Name: "b", Datatype: "BOOL", Shape: []int64{2}}}, RawInputContents: [][]byte{{0, 1}}},
		{Inputs: []*oipgrpc.ModelInferRequest_InferInputTensor{{Name: "i", Datatype: "INT8", Shape: []int64{1}, Contents: &oipgrpc.InferTensorContents{IntContents: []int32{300}}}}},
	} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m oipgrpc.ModelInferRequest
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		req, _, err := DecodeGRPCRequest(&m)
		if err != nil {
			if !errors.Is(err, ErrRequest) {
				t.Fatalf("error does not wrap ErrRequest: %v", err)
			}
			return
		}
		for _, in := range req.Inputs {
			if err := in.Check(); err != nil {
				t.Fatalf("accepted an inconsistent tensor: %v", err)
			}
		}
	})
}

// TestDecodeGRPCRequestDatatypes: every datatype round-trips through
// typed contents and raw contents, and back through the response.
func TestDecodeGRPCRequestDatatypes(t *testing.T) {
	ts := []tensor.Tensor{
		{Name: "bool", Datatype: tensor.Bool, Shape: []int64{3}, Data: []bool{true, false, true}},
		{Name: "u8", Datatype: tensor.Uint8, Shape: []int64{2}, Data: []uint8{0, 255}},
		{Name: "i8", Datatype: tensor.Int8, Shape: []int64{2}, Data: []int8{-128, 127}},
		{Name: "i16", Datatype: tensor.Int16, Shape: []int64{2}, Data: []int16{-32768, 32767}},
		{Name: "i32", Datatype: tensor.Int32, Shape: []int64{1, 2}, Data: []int32{math.MinInt32, math.MaxInt32}},
		{Name: "i64", Datatype: tensor.Int64, Shape: []int64{2}, Data: []int64{math.MinInt64, math.MaxInt64}},
		{Name: "f32", Datatype: tensor.FP32, Shape: []int64{2}, Data: []float32{-1.5, 3.25e-7}},
		{Name: "f64", Datatype: tensor.FP64, Shape: []int64{2}, Data: []float64{math.Pi, -0}},
		{Name: "scalar", Datatype: tensor.FP32, Data: []float32{7}},
	}
	for _, mode := range []string{"typed", "raw"} {
		t.Run(mode, func(t *testing.T) {
			m := grpcTyped(t, "m", "", ts)
			if mode == "raw" {
				m = grpcRaw("m", ts)
			}
			req, raw, err := DecodeGRPCRequest(m)
			if err != nil {
				t.Fatal(err)
			}
			if raw != (mode == "raw") {
				t.Errorf("raw %v", raw)
			}
			for i := range ts {
				ts[i].Shape = append([]int64{}, ts[i].Shape...)
			}
			sameTensors(t, "decoded", req.Inputs, ts)
			resp, err := grpcResponse("m", "1", "", req.Inputs, raw)
			if err != nil {
				t.Fatal(err)
			}
			sameTensors(t, "response", grpcOutputs(t, resp), ts)
		})
	}
	for _, tc := range []struct {
		name string
		in   *oipgrpc.ModelInferRequest_InferInputTensor
		want string
	}{
		{"INT8 out of range", &oipgrpc.ModelInferRequest_InferInputTensor{Name: "x", Datatype: "INT8", Shape: []int64{1}, Contents: &oipgrpc.InferTensorContents{IntContents: []int32{128}}}, `input "x": element 0: 128 is not an INT8`},
		{"UINT8 out of range", &oipgrpc.ModelInferRequest_InferInputTensor{Name: "x", Datatype: "UINT8", Shape: []int64{2}, Contents: &oipgrpc.InferTensorContents{UintContents: []uint32{1, 256}}}, `element 1: 256 is not a UINT8`},
		{"BYTES", &oipgrpc.ModelInferRequest_InferInputTensor{Name: "x", Datatype: "BYTES", Shape: []int64{1}, Contents: &oipgrpc.InferTensorContents{BytesContents: [][]byte{{1}}}}, `unsupported datatype "BYTES"`},
		{"no name", &oipgrpc.ModelInferRequest_InferInputTensor{Datatype: "FP32", Shape: []int64{1}}, `tensor without a name`},
		{"negative dimension", &oipgrpc.ModelInferRequest_InferInputTensor{Name: "x", Datatype: "FP32", Shape: []int64{-1}}, `invalid shape [-1]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DecodeGRPCRequest(&oipgrpc.ModelInferRequest{Inputs: []*oipgrpc.ModelInferRequest_InferInputTensor{tc.in}})
			if err == nil || !errors.Is(err, ErrRequest) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ...%s...", err, tc.want)
			}
		})
	}
}

// TestGRPCShutdown: Shutdown waits for a call in flight, which completes;
// then the gRPC socket is gone and ServeGRPC has returned.
func TestGRPCShutdown(t *testing.T) {
	silero := sileroPredictor(t, "5.0.0")
	s := serveGRPC(t, Options{Backend: newRegistry(silero)})
	if _, err := s.rpc.ModelInfer(callCtx(t), grpcRaw("silero-vad", sileroInputs())); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("unix", s.grpcSocket); err == nil {
		t.Error("the gRPC socket still answers after Shutdown")
	}
	// A listener handed over after Shutdown is closed at once.
	ln, err := ListenUnix(filepath.Join(t.TempDir(), "late.sock"), 0o660)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.srv.ServeGRPC(context.Background(), ln, nil); err != nil {
		t.Errorf("ServeGRPC after Shutdown: %v", err)
	}
}
