package main

// The demo's gRPC check: one device answers the same tensors the same over
// the Open Inference Protocol's gRPC form (KServe's GRPCInferenceService,
// on the agent's api.grpcSocket) as over REST.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	agentapi "github.com/edgefleet/edgefleet/agent/api"
	"github.com/edgefleet/edgefleet/agent/api/oipgrpc"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// grpcSocketOf is the gRPC socket of the device whose REST socket is
// sock: grpc.sock beside api.sock, ID.grpc.sock beside ID.sock.
func grpcSocketOf(sock string) string {
	dir, base := filepath.Split(sock)
	if base == "api.sock" {
		return filepath.Join(dir, "grpc.sock")
	}
	return filepath.Join(dir, strings.TrimSuffix(base, ".sock")+".grpc.sock")
}

// checkGRPC sends the bundle's two-sine smoke frame as tensors to the
// first device over REST and over gRPC (raw_input_contents, as
// tritonclient sends numpy arrays) and fails unless both answer the same
// speech probability from the same version.
func (d *demo) checkGRPC(ctx context.Context) error {
	dev := d.devices[0]
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	path := filepath.Join(d.cfg.Repo, "testbed", "bundles", "silero-vad", "smoke", "two-sine.inputs.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("the gRPC check's input: %w", err)
	}
	var inputs []tensor.Tensor
	if err := json.Unmarshal(raw, &inputs); err != nil {
		return fmt.Errorf("the gRPC check's input %s: %w", path, err)
	}

	d.n.Say("The same API speaks KServe's gRPC protocol (inference.GRPCInferenceService) on a socket of its own, for")
	d.n.Say("tritonclient, KServe's client or grpcurl (grpcurl -plaintext -unix %s list).", d.rel(grpcSocketOf(dev.Socket)))
	d.n.Say("One frame as tensors, over REST and over gRPC (raw_input_contents, as tritonclient sends numpy arrays):")

	restP, restVersion, err := restProbability(ctx, dev.Socket, d.good.Name, raw)
	if err != nil {
		return fmt.Errorf("%s over REST: %w", dev.ID, err)
	}
	conn, err := grpc.NewClient("unix://"+grpcSocketOf(dev.Socket), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("%s over gRPC: %w", dev.ID, err)
	}
	defer conn.Close()
	req := &oipgrpc.ModelInferRequest{ModelName: d.good.Name, Id: "demo-grpc"}
	for _, in := range inputs {
		req.Inputs = append(req.Inputs, &oipgrpc.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: string(in.Datatype), Shape: in.Shape})
		req.RawInputContents = append(req.RawInputContents, tensor.AppendData(nil, in.Data))
	}
	resp, err := oipgrpc.NewGRPCInferenceServiceClient(conn).ModelInfer(ctx, req)
	if err != nil {
		return fmt.Errorf("%s over gRPC: %w", dev.ID, err)
	}
	grpcP, found := float32(0), false
	for i, o := range resp.GetOutputs() {
		if o.GetName() == "output" && i < len(resp.GetRawOutputContents()) {
			if v, err := tensor.DataFromBytes(tensor.FP32, resp.GetRawOutputContents()[i]); err == nil && len(v.([]float32)) > 0 {
				grpcP, found = v.([]float32)[0], true
			}
		}
	}
	if !found {
		return fmt.Errorf("%s over gRPC: no raw output \"output\" in the answer", dev.ID)
	}
	d.n.Out(fmt.Sprintf("%-12s REST  %s  speech probability %.7f", dev.ID, restVersion, restP))
	d.n.Out(fmt.Sprintf("%-12s gRPC  %s  speech probability %.7f", dev.ID, resp.GetModelName()+"@"+resp.GetModelVersion(), grpcP))
	if restNumber(grpcP) != restP || resp.GetModelName()+"@"+resp.GetModelVersion() != restVersion {
		return fmt.Errorf("%s answers gRPC (%s: %v) and REST (%s: %v) differently", dev.ID, resp.GetModelVersion(), grpcP, restVersion, restP)
	}
	d.n.Say("Both answers are the same bits, from the same version.")
	return nil
}

// restProbability POSTs the inputs (JSON) to model on the REST socket and
// returns the first value of output "output" (FP32), as api.Response
// reads it, and the bundle that answered.
func restProbability(ctx context.Context, socket, model string, inputs []byte) (float64, string, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	defer c.CloseIdleConnections()
	body := append(append([]byte(`{"id": "demo-rest", "inputs": `), inputs...), '}')
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/v2/models/"+model+"/infer", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var r agentapi.Response
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, "", fmt.Errorf("decoding the answer: %w", err)
	}
	for _, o := range r.Outputs {
		if o.Name == "output" && len(o.Data) > 0 {
			if o.Datatype != string(tensor.FP32) {
				return 0, "", fmt.Errorf("output \"output\" is %s, not %s", o.Datatype, tensor.FP32)
			}
			return o.Data[0], r.ModelName + "@" + r.ModelVersion, nil
		}
	}
	return 0, "", fmt.Errorf("no output \"output\" in the answer")
}

// restNumber is the number the agent's REST answer carries for the FP32
// value x, as api.Response reads it: the shortest decimal that reads back
// as x (agent/api/encode.go), read as the nearest float64. Distinct
// float32 have distinct decimals of at most 9 digits, too far apart to
// read as the same float64, so restNumber(x) == restNumber(y) exactly when
// x and y are the same bits. Narrowing the float64 instead would not do:
// for some float32 (7.038531e-26 is one) the nearest float64 to the
// decimal is the midpoint between two float32 and narrows to the other.
func restNumber(x float32) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
	return f
}
