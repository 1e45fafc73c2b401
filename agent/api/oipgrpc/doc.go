// Package oipgrpc is the Open Inference Protocol's gRPC form as Go code:
// the messages and the inference.GRPCInferenceService client and server
// stubs that protoc generates from KServe's grpc_predict_v2.proto (the
// file beside this one, kept as KServe publishes it). The agent's
// server is in package api (api.Server.ServeGRPC); clients dial the
// agent's gRPC socket and call NewGRPCInferenceServiceClient.
//
// The generated files are committed; make proto (scripts/proto.sh)
// regenerates them with Debian's protoc and the pinned protoc-gen-go and
// protoc-gen-go-grpc, and TestGeneratedCodeIsCurrent fails when they are
// not what it gives.
package oipgrpc
