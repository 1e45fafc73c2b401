// Package api serves the edge agent's local inference API: the Open
// Inference Protocol (the KServe/Triton "v2" REST protocol), so that
// clients written for KServe, Triton or MLServer work unchanged, and its
// gRPC form (see gRPC below). It listens on a unix socket (ListenUnix)
// and, optionally, on loopback TCP (ListenTCP); REST has no
// authentication, so it never listens elsewhere. gRPC may listen on any
// TCP address, with mutual TLS only (MutualTLS).
// Prometheus metrics are served by a separate handler (MetricsHandler)
// for the agent's metrics listener.
//
// # Routes
//
//	GET  /v2/health/live                      {"live": true}
//	GET  /v2/health/ready                     {"live": r, "ready": r}; 503 when not ready
//	GET  /v2                                  server metadata: name, version, extensions
//	GET  /v2/models/NAME[/versions/V]         model metadata
//	GET  /v2/models/NAME[/versions/V]/ready   {"name": NAME, "ready": r}; 503 when not ready
//	POST /v2/models/NAME[/versions/V]/infer   inference
//
// NAME is the bundle name. A model has one version at a time, the active
// bundle version: model metadata lists it in "versions", a request for
// another version gets 404 (naming the version being served), and every
// inference response carries the version that answered in
// "model_version" and in the header X-Edgefleet-Bundle: NAME@VERSION.
// The platform is "onnx_onnxv1", the protocol's name for ONNX models; the
// metadata's "properties" name the bundle, the execution provider in use
// and, for a bundle with a pre-processor, the raw input type.
//
// The server readiness schema in the protocol names its field "live" (a
// slip carried over from KServe); the body carries both "live" and
// "ready", set to the readiness, so that clients reading either work.
//
// # Inference
//
// The request body is the protocol's $inference_request: optional "id"
// (echoed in the response), optional "parameters" (string, number or
// boolean values; accepted and ignored), "inputs" (name, shape, datatype,
// data as a flat or nested JSON array), optional "outputs" (names to
// return, in that order; all outputs otherwise). Datatypes are BOOL,
// UINT8, INT8, INT16, INT32, INT64, FP32 and FP64. Any Content-Type other
// than application/octet-stream is read as JSON, so curl -d works.
//
// Binary tensors (the protocol's binary tensor data extension, as KServe
// and Triton clients send it): a request with an
// Inference-Header-Content-Length header carries that many bytes of JSON
// request, then raw tensor data. An input whose parameters have
// "binary_data_size" (and no "data") takes that many bytes of it, in
// input order: row-major, little endian, BOOL one byte. Outputs asked for
// with "parameters": {"binary_data": true}, or all of them with the
// request parameter "binary_data_output": true, come back the same way:
// the response's Inference-Header-Content-Length is the length of its
// JSON, each such output has "binary_data_size" instead of "data", and
// their bytes follow the JSON in output order (Content-Type
// application/octet-stream). The header decides, whatever the
// Content-Type; answers are the same as the JSON path's, bit for bit.
//
// Raw input (extension "edgefleet_raw_input"): for a bundle with a WASM
// pre-processor, a POST to the same infer URL with
// Content-Type: application/octet-stream sends the body as raw bytes to
// the pre-processor (an image file, PCM audio, ...). The answer is the
// normal JSON inference response. A bundle without a pre-processor
// answers 400.
//
//	curl --unix-socket /run/edge-agent/api.sock \
//	  -H 'Content-Type: application/octet-stream' --data-binary @frame.pcm \
//	  http://localhost/v2/models/silero-vad/infer
//
// # gRPC
//
// ServeGRPC serves the same API in the protocol's gRPC form, KServe's
// grpc_predict_v2.proto (package oipgrpc has it and the generated code):
// service inference.GRPCInferenceService with ServerLive, ServerReady,
// ModelReady, ServerMetadata, ModelMetadata and ModelInfer, plus gRPC
// server reflection. It runs on the REST inference path (track, run,
// selectOutputs): the same models, checks, messages, metrics and
// Predictions. Errors are status codes of the REST statuses' meaning:
// 400 InvalidArgument, 404 NotFound, 413 ResourceExhausted, 503
// Unavailable (DeadlineExceeded for a deadline), 500 Internal. An input's
// data is its typed contents (the field of its datatype: fp32_contents,
// int64_contents, int_contents for INT8 to INT32, uint_contents for
// UINT8, ...) or raw_input_contents for all inputs (row-major, little
// endian, BOOL one byte: DecodeGRPCRequest); outputs are
// raw_output_contents when the inputs were raw and typed contents
// otherwise, unless the request parameter "binary_data_output" says. The
// response header x-edgefleet-bundle names the bundle that answered. On
// a unix socket it runs in the clear; on TCP the agent gives it a
// MutualTLS configuration (client certificates required).
//
// # Errors
//
// Every error is the protocol's {"error": "message"} with a message that
// names the problem (the tensor, element, key or limit):
//
//	400  malformed JSON, a request that is not a valid $inference_request,
//	     or input the model refuses (unknown or missing input, wrong
//	     datatype or shape, non-finite values): ErrRequest, model.ErrInput
//	404  unknown model, or a version that is not the active one
//	405  wrong method for the path (with Allow)
//	413  body larger than Options.MaxBodyBytes (api.maxBodyBytes)
//	503  model not loaded yet (ErrNotReady), server not ready
//	500  the model failed at run time; the details go to the agent's log,
//	     the client gets the bundle's name and version only
//
// # Observing predictions
//
// Options.OnPrediction sees every inference request that reached a model
// (Prediction: bundle, version, provider, latencies, status, error, and
// the full model.Output with the pre-processor's Features, for sampling
// and drift). It runs on its own goroutine behind a bounded queue; the
// request path never waits for it, and what does not fit is dropped and
// counted in edge_agent_api_predictions_dropped_total.
//
// # Speed
//
// Request bodies are read into pooled buffers and decoded in one pass
// straight into typed tensors (DecodeInferRequest, about 20 times faster
// than encoding/json with the shared/tensor codec); responses are encoded
// into the same pooled buffer. BenchmarkInfer compares the real Silero
// model called in process with the same request over the unix socket;
// BenchmarkGRPCvsREST one client's p50 and p99 latency over the socket
// for REST (JSON, binary tensors) and gRPC (typed, raw contents).
package api
