package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/edgefleet/edgefleet/agent/api/oipgrpc"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// grpcRequest is the two-sine frame (the smoke vector tensorRequest
// sends) as a gRPC ModelInferRequest with raw_input_contents.
func grpcRequest(t testing.TB) *oipgrpc.ModelInferRequest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.Root(t), "testbed", "bundles", "silero-vad", "smoke", "two-sine.inputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ins []tensor.Tensor
	if err := json.Unmarshal(b, &ins); err != nil {
		t.Fatal(err)
	}
	req := &oipgrpc.ModelInferRequest{ModelName: "silero-vad"}
	for _, in := range ins {
		req.Inputs = append(req.Inputs, &oipgrpc.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: string(in.Datatype), Shape: in.Shape})
		req.RawInputContents = append(req.RawInputContents, tensor.AppendData(nil, in.Data))
	}
	return req
}

// grpcOutput calls ModelInfer on conn and returns the first element of
// output "output" and the version that answered.
func grpcOutput(t testing.TB, conn *grpc.ClientConn) (float64, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := oipgrpc.NewGRPCInferenceServiceClient(conn).ModelInfer(ctx, grpcRequest(t))
	if err != nil {
		return 0, "", err
	}
	for i, o := range resp.GetOutputs() {
		if o.GetName() == "output" && i < len(resp.GetRawOutputContents()) {
			v, err := tensor.DataFromBytes(tensor.FP32, resp.GetRawOutputContents()[i])
			if err != nil || len(v.([]float32)) == 0 {
				return 0, "", fmt.Errorf("output: %v", err)
			}
			return float64(v.([]float32)[0]), resp.GetModelVersion(), nil
		}
	}
	return 0, "", fmt.Errorf("no raw output \"output\" in %v", resp)
}

// TestGRPC: with api.grpcSocket and api.grpcListen set, the agent serves
// the gRPC API on its own unix socket and on TCP with mutual TLS, and
// both answer what the REST socket answers.
func TestGRPC(t *testing.T) {
	v1 := sileroBundle(t, spec{version: "1.0.0"})
	ca := testenv.NewCA(t, t.TempDir(), "agent test CA")
	cert, key := ca.Issue("server", "edge-agent", true)
	clientCert, clientKey := ca.Issue("client", "app", false)
	addr := freeAddr(t)
	run := shortDir(t)
	sock := filepath.Join(run, "grpc.sock")
	s := newSetupWith(t, setupOptions{rate: 1, api: fmt.Sprintf("  grpcSocket: %s\n  grpcListen: %s\n  grpcTLS: {cert: %s, key: %s, clientCA: %s}\n", sock, addr, cert, key, ca.File)})
	a := startAgent(t, s)
	if _, err := a.Install(t.Context(), v1.path, "", InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	// REST writes the shortest decimal of the float32: compared as float32.
	want := infer(t, a.client, tensorRequest(t, ""), false).output(t)

	unix, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close()
	got, version, err := grpcOutput(t, unix)
	if err != nil || float32(got) != float32(want) || version != "1.0.0" {
		t.Errorf("over the gRPC socket: %v (version %q, %v), REST %v", got, version, err, want)
	}

	pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"client certificate", []tls.Certificate{pair}, true},
		{"no client certificate", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), Certificates: tc.certs, MinVersion: tls.VersionTLS12})))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			got, _, err := grpcOutput(t, conn)
			switch {
			case tc.ok && (err != nil || float32(got) != float32(want)):
				t.Errorf("over TCP with mutual TLS: %v (%v), REST %v", got, err, want)
			case !tc.ok && err == nil:
				t.Error("a client without a certificate was served")
			}
		})
	}

	a.stop(t)
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the gRPC socket is left after the agent stopped: %v", err)
	}
}

// TestGRPCBadCertificate: an unreadable api.grpcTLS file stops the start
// with the key named, before anything is bound.
func TestGRPCBadCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, dir, "ca")
	missing := filepath.Join(dir, "missing.pem")
	s := newSetupWith(t, setupOptions{rate: 1, api: fmt.Sprintf("  grpcListen: %s\n  grpcTLS: {cert: %s, key: %s, clientCA: %s}\n", freeAddr(t), missing, missing, ca.File)})
	a, err := New(s.config(t), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	err = a.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "api.grpcTLS") || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("Run: %v", err)
	}
	if _, serr := os.Stat(s.socket); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("the REST socket was bound: %v", serr)
	}
}
