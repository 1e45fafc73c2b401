// Package bundle holds the signed model bundle: its manifest, how it is
// built, signed and verified, and the defensive unpacker that both
// fleetctl and the edge agent use (one code path). See docs/bundle-format.md.
package bundle

import (
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// SchemaVersion is the manifest schema this code writes and reads.
const SchemaVersion = 1

// ManifestName is the path of the manifest inside a bundle.
const ManifestName = "manifest.json"

// Manifest describes a bundle: what it is, the files it holds and how to
// run it.
type Manifest struct {
	SchemaVersion int `json:"schemaVersion"`
	// Name is the bundle's name ([a-z0-9][a-z0-9._-]*), e.g. "silero-vad".
	Name string `json:"name"`
	// Version is a semantic version without a leading v, e.g. "1.4.0".
	Version string `json:"version"`
	// MinAgentVersion is the oldest agent that may run the bundle.
	MinAgentVersion string `json:"minAgentVersion,omitempty"`
	// Created is when the bundle was built (RFC 3339), informational.
	Created string `json:"created,omitempty"`
	// Files lists every file of the bundle except the manifest itself.
	Files []File `json:"files"`
	// Runtime says how to run the bundle's model.
	Runtime Runtime `json:"runtime"`
	// Profile is the path of the reference drift profile, if any.
	Profile string `json:"profile,omitempty"`
	// Smoke holds test vectors the installer runs before activation.
	Smoke []SmokeVector `json:"smoke,omitempty"`
	// Lineage says where the model came from, if the build knew.
	Lineage *Lineage `json:"lineage,omitempty"`
	// Sampling, if set, has devices keep a sample of the model's inputs
	// and outputs for the feature store (docs/integrations.md).
	Sampling *Sampling `json:"sampling,omitempty"`
}

// Lineage says where a bundle's model came from: the training run that
// made it, as the model registry it was taken from records it (fleetctl
// bundle build --from-mlflow fills it from the MLmodel file). It is for
// people and the control plane; devices neither need nor check it.
type Lineage struct {
	// Source is the kind of registry, e.g. "mlflow".
	Source string `json:"source"`
	// RunID is the training run (MLflow's run_id).
	RunID string `json:"runId,omitempty"`
	// ModelUUID identifies the logged model (MLflow's model_uuid).
	ModelUUID string `json:"modelUuid,omitempty"`
	// URI is where the model can be found again, e.g.
	// "runs:/RUN_ID/model" or "models:/vad/3".
	URI string `json:"uri,omitempty"`
	// SourceVersion is the version of the tool that wrote the model
	// (MLflow's mlflow_version).
	SourceVersion string `json:"sourceVersion,omitempty"`
	// Created is when the model was made (RFC 3339, UTC).
	Created string `json:"created,omitempty"`
}

// File is one file of the bundle.
type File struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Runtime says how to run the bundle's model.
type Runtime struct {
	// Model is the path of the ONNX model file.
	Model string `json:"model"`
	// Inputs and Outputs are the model's tensors, checked at build time
	// against the ONNX file and at request time against what callers send.
	Inputs  []tensor.Spec `json:"inputs"`
	Outputs []tensor.Spec `json:"outputs"`
	// Pre and Post are optional WASM processors (see docs/wasm-abi.md).
	Pre  *Processor `json:"pre,omitempty"`
	Post *Processor `json:"post,omitempty"`
	// ExecutionProviders is the ordered preference list, e.g.
	// ["tensorrt", "cuda", "cpu"]. CPU is always the implicit last resort.
	ExecutionProviders []string `json:"executionProviders,omitempty"`
	// AllowNonFinite accepts NaN and Inf in float inputs; by default
	// they are refused.
	AllowNonFinite bool `json:"allowNonFinite,omitempty"`
}

// Processor is a WASM pre- or post-processor module.
type Processor struct {
	// Module is the path of the .wasm file inside the bundle.
	Module string `json:"module"`
}

// SmokeVector is one test the installer runs: inputs (tensors or raw
// bytes for the pre-processor) and the outputs expected within tolerance.
type SmokeVector struct {
	Name string `json:"name"`
	// Inputs are tensors for the model (or for the pre-processor).
	Inputs []tensor.Tensor `json:"inputs,omitempty"`
	// Raw is a raw byte input for the pre-processor (base64 in JSON).
	Raw []byte `json:"raw,omitempty"`
	// Expected outputs, compared within Tolerance.
	Expected  []tensor.Tensor `json:"expected"`
	Tolerance Tolerance       `json:"tolerance"`
}

// Tolerance bounds |got - want| <= Abs + Rel*|want|.
type Tolerance struct {
	Abs float64 `json:"abs"`
	Rel float64 `json:"rel,omitempty"`
}
