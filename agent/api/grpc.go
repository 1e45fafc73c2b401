package api

// The API's gRPC form: KServe's GRPCInferenceService (the Open Inference
// Protocol over gRPC, agent/api/oipgrpc) served from the same models,
// checks, errors, metrics and prediction reports as REST, and the gRPC
// servers' life cycle (ServeGRPC, stopped by Shutdown).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/edgefleet/edgefleet/agent/api/oipgrpc"
	"github.com/edgefleet/edgefleet/shared/model"
)

// GRPCBundleHeader is the gRPC response header (metadata key) naming the
// bundle that answered, as "name@version": BundleHeader's counterpart.
const GRPCBundleHeader = "x-edgefleet-bundle"

// Extensions are the Open Inference Protocol extensions the server
// reports in its metadata, in both protocols.
var Extensions = []string{"edgefleet_raw_input"}

// ServeGRPC serves the API's gRPC form (service
// inference.GRPCInferenceService, and gRPC server reflection so that
// grpcurl and other tools can list and describe it) on ln, with TLS when
// tlsConfig is not nil (the agent's TCP listener: mutual TLS) and in
// the clear otherwise (a unix socket). Like Serve, it returns nil after
// Shutdown or once ctx is done (it stops accepting on ln; Shutdown
// still drains the calls in flight), and an error if ln fails. It may be
// called for several listeners at once.
func (s *Server) ServeGRPC(ctx context.Context, ln net.Listener, tlsConfig *tls.Config) error {
	opts := []grpc.ServerOption{
		// The REST body limit bounds a gRPC request message too.
		grpc.MaxRecvMsgSize(int(s.maxBody)),
		grpc.ConnectionTimeout(10 * time.Second),
	}
	if tlsConfig != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	g := grpc.NewServer(opts...)
	oipgrpc.RegisterGRPCInferenceServiceServer(g, &grpcService{s: s})
	reflection.Register(g)

	s.grpcMu.Lock()
	if s.grpcClosed {
		s.grpcMu.Unlock()
		ln.Close()
		return nil
	}
	s.grpcServers = append(s.grpcServers, g)
	s.grpcMu.Unlock()

	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	err := g.Serve(ln)
	if err == nil || errors.Is(err, grpc.ErrServerStopped) || ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("api: serving gRPC on %s: %w", ln.Addr(), err)
}

// stopGRPC stops the gRPC servers: gracefully, waiting for the calls in
// flight until ctx is done, then at once.
func (s *Server) stopGRPC(ctx context.Context) error {
	s.grpcMu.Lock()
	s.grpcClosed = true
	servers := s.grpcServers
	s.grpcServers = nil
	s.grpcMu.Unlock()
	var err error
	for _, g := range servers {
		done := make(chan struct{})
		go func() {
			g.GracefulStop()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			g.Stop()
			<-done
			err = fmt.Errorf("gRPC calls still in flight: %w", ctx.Err())
		}
	}
	return err
}

// grpcService implements oipgrpc.GRPCInferenceServiceServer on a Server.
type grpcService struct {
	oipgrpc.UnimplementedGRPCInferenceServiceServer
	s *Server
}

const grpcMethod = "/inference.GRPCInferenceService/"

// ServerLive: the server answers, so it is live.
func (g *grpcService) ServerLive(context.Context, *oipgrpc.ServerLiveRequest) (*oipgrpc.ServerLiveResponse, error) {
	return &oipgrpc.ServerLiveResponse{Live: true}, nil
}

// ServerReady is the REST server readiness (GET /v2/health/ready).
func (g *grpcService) ServerReady(context.Context, *oipgrpc.ServerReadyRequest) (*oipgrpc.ServerReadyResponse, error) {
	return &oipgrpc.ServerReadyResponse{Ready: g.s.backend.Ready()}, nil
}

// ModelReady is the REST model readiness: ready false while the model
// loads, NotFound for an unknown model or version.
func (g *grpcService) ModelReady(ctx context.Context, req *oipgrpc.ModelReadyRequest) (*oipgrpc.ModelReadyResponse, error) {
	res, err := g.s.lookup(req.GetName(), req.GetVersion())
	switch {
	case err == nil:
		setBundle(ctx, res.bundle[0])
		return &oipgrpc.ModelReadyResponse{Ready: true}, nil
	case errors.Is(err, ErrNotReady):
		return &oipgrpc.ModelReadyResponse{Ready: false}, nil
	}
	return nil, g.s.grpcError(grpcMethod+"ModelReady", "", err)
}

// ServerMetadata is GET /v2's answer.
func (g *grpcService) ServerMetadata(context.Context, *oipgrpc.ServerMetadataRequest) (*oipgrpc.ServerMetadataResponse, error) {
	return &oipgrpc.ServerMetadataResponse{Name: g.s.name, Version: g.s.version, Extensions: Extensions}, nil
}

// ModelMetadata is GET /v2/models/NAME's answer, less its "properties"
// (the message has no field for them); the bundle is in the
// x-edgefleet-bundle header.
func (g *grpcService) ModelMetadata(ctx context.Context, req *oipgrpc.ModelMetadataRequest) (*oipgrpc.ModelMetadataResponse, error) {
	res, err := g.s.lookup(req.GetName(), req.GetVersion())
	if err != nil {
		return nil, g.s.grpcError(grpcMethod+"ModelMetadata", "", err)
	}
	setBundle(ctx, res.bundle[0])
	m := &oipgrpc.ModelMetadataResponse{Name: res.name, Versions: []string{res.version}, Platform: Platform}
	for _, sp := range res.manifest.Runtime.Inputs {
		m.Inputs = append(m.Inputs, &oipgrpc.ModelMetadataResponse_TensorMetadata{Name: sp.Name, Datatype: string(sp.Datatype), Shape: sp.Shape})
	}
	for _, sp := range res.manifest.Runtime.Outputs {
		m.Outputs = append(m.Outputs, &oipgrpc.ModelMetadataResponse_TensorMetadata{Name: sp.Name, Datatype: string(sp.Datatype), Shape: sp.Shape})
	}
	return m, nil
}

// ModelInfer is POST /v2/models/NAME/infer: the same model, checks,
// errors, metrics and prediction report.
func (g *grpcService) ModelInfer(ctx context.Context, req *oipgrpc.ModelInferRequest) (*oipgrpc.ModelInferResponse, error) {
	s := g.s
	const method = grpcMethod + "ModelInfer"
	name, version := req.GetModelName(), req.GetModelVersion()
	var resp *oipgrpc.ModelInferResponse
	var gerr error
	s.track(name, version, time.Now(),
		func(err error) int {
			gerr = s.grpcError(method, "", err)
			return statusOf(err)
		},
		func(res *resolved, pred *Prediction) (int, error) {
			var err error
			resp, err = s.serveGRPCInfer(ctx, req, name, version, res, pred)
			if err != nil {
				gerr = s.grpcError(method, pred.Model+"@"+pred.Version, err)
				return statusOf(err), err
			}
			setBundle(ctx, pred.Model+"@"+pred.Version)
			return http.StatusOK, nil
		})
	if gerr != nil {
		return nil, gerr
	}
	return resp, nil
}

// serveGRPCInfer decodes, runs and answers a gRPC inference request for
// a model found by lookup, filling pred.
func (s *Server) serveGRPCInfer(ctx context.Context, m *oipgrpc.ModelInferRequest, name, version string, res *resolved, pred *Prediction) (*oipgrpc.ModelInferResponse, error) {
	req, raw, err := DecodeGRPCRequest(m)
	if err != nil {
		return nil, err
	}
	pred.RequestID = req.ID
	out, res, err := s.run(ctx, name, version, res, model.Input{Tensors: req.Inputs}, pred)
	if err != nil {
		return nil, err
	}
	outputs := out.Tensors
	if len(req.Outputs) > 0 {
		if outputs, err = selectOutputs(res.bundle[0], out.Tensors, req.Outputs); err != nil {
			return nil, err
		}
	}
	resp, err := grpcResponse(res.name, res.version, req.ID, outputs, rawOutputs(req, raw))
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", res.bundle[0], err)
	}
	return resp, nil
}

// grpcError is err as a gRPC status: REST's message, and the code of
// REST's HTTP status (grpcCode).
func (s *Server) grpcError(method, bundleID string, err error) error {
	code, msg := s.refusal(method, bundleID, err)
	return status.Error(grpcCode(code, err), msg)
}

// grpcCode maps the HTTP status REST answers an error with to the gRPC
// code of the same meaning.
func grpcCode(httpCode int, err error) codes.Code {
	switch httpCode {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusRequestEntityTooLarge:
		return codes.ResourceExhausted
	case statusClientClosed:
		return codes.Canceled
	case http.StatusServiceUnavailable:
		if errors.Is(err, context.DeadlineExceeded) {
			return codes.DeadlineExceeded
		}
		return codes.Unavailable
	}
	return codes.Internal
}

// setBundle sends the x-edgefleet-bundle response header.
func setBundle(ctx context.Context, id string) {
	// Fails only outside a gRPC call or after the header went out.
	_ = grpc.SetHeader(ctx, metadata.Pairs(GRPCBundleHeader, id))
}

// MutualTLS is the TLS configuration of a listener that requires and
// verifies client certificates: the server certificate and key from
// certFile and keyFile (PEM), the CAs that sign the clients' certificates
// from clientCAFile (PEM), TLS 1.2 at least.
func MutualTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("api: server certificate %s, key %s: %w", certFile, keyFile, err)
	}
	pem, err := os.ReadFile(clientCAFile)
	if err != nil {
		return nil, fmt.Errorf("api: client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("api: client CA %s: no PEM certificate in it", clientCAFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, nil
}
