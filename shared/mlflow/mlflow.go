// Package mlflow reads an MLflow model directory with the onnx flavor (the
// layout mlflow.onnx.save_model and log_model write): the MLmodel file,
// its ONNX data file, the tensor signature and the lineage of the run
// that logged it, so that fleetctl bundle build --from-mlflow can make a
// bundle of it. See docs/integrations.md.
package mlflow

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// MLmodelFile is the name of the file that describes an MLflow model.
const MLmodelFile = "MLmodel"

// maxMLmodelBytes bounds the MLmodel file (real ones are a few KiB).
const maxMLmodelBytes = 1 << 20

// ErrModel: the directory is not an MLflow model this package can make a
// bundle of; the error names the file and field that are wrong.
var ErrModel = errors.New("mlflow: not a usable MLflow ONNX model")

// Model is an MLflow model directory's ONNX model, signature and lineage.
type Model struct {
	// Dir is the model directory.
	Dir string
	// ONNX is the path of the onnx flavor's data file.
	ONNX string
	// Inputs and Outputs are the signature, as tensor specs.
	Inputs, Outputs []tensor.Spec
	// RunID, ModelUUID, ArtifactPath and MLflowVersion are the MLmodel
	// file's run_id, model_uuid, artifact_path and mlflow_version.
	RunID, ModelUUID, ArtifactPath, MLflowVersion string
	// Created is utc_time_created; zero if the file has none.
	Created time.Time
}

// mlmodel is the part of the MLmodel file read here; other keys are
// MLflow's and left alone.
type mlmodel struct {
	ArtifactPath   string               `yaml:"artifact_path"`
	Flavors        map[string]yaml.Node `yaml:"flavors"`
	MLflowVersion  string               `yaml:"mlflow_version"`
	ModelUUID      string               `yaml:"model_uuid"`
	RunID          string               `yaml:"run_id"`
	Signature      *signature           `yaml:"signature"`
	UTCTimeCreated string               `yaml:"utc_time_created"`
}

// signature holds the inputs and outputs as MLflow writes them: each a
// JSON document in a YAML string.
type signature struct {
	Inputs  string `yaml:"inputs"`
	Outputs string `yaml:"outputs"`
}

type onnxFlavor struct {
	Data string `yaml:"data"`
}

// Load reads the MLflow model in dir. It checks that the MLmodel file has
// an onnx flavor whose data file is in dir, and a tensor-based signature
// that names every tensor; it does not open the ONNX file (CheckIO in
// shared/model holds the signature to the graph).
func Load(dir string) (*Model, error) {
	path := filepath.Join(dir, MLmodelFile)
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	m, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Dir = dir
	m.ONNX = filepath.Join(dir, filepath.FromSlash(m.ONNX))
	fi, err := os.Stat(m.ONNX)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: %s: the onnx flavor's data file %s does not exist", ErrModel, path, m.ONNX)
	case err != nil:
		return nil, fmt.Errorf("%w: %s: %w", ErrModel, path, err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%w: %s: the onnx flavor's data %s is not a regular file", ErrModel, path, m.ONNX)
	}
	return m, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s in %s (is it an MLflow model directory?)", ErrModel, MLmodelFile, filepath.Dir(path))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMLmodelBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	if len(b) > maxMLmodelBytes {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrModel, path, maxMLmodelBytes)
	}
	return b, nil
}

// Parse reads an MLmodel file's contents; Model.ONNX is the data path as
// written there (relative to the model directory) and Dir is empty.
func Parse(b []byte) (*Model, error) {
	var mm mlmodel
	if err := yaml.Unmarshal(b, &mm); err != nil {
		return nil, fmt.Errorf("%w: malformed YAML: %v", ErrModel, err)
	}
	node, ok := mm.Flavors["onnx"]
	if !ok {
		flavors := make([]string, 0, len(mm.Flavors))
		for f := range mm.Flavors {
			flavors = append(flavors, f)
		}
		return nil, fmt.Errorf("%w: no onnx flavor (flavors: %s); log the model with mlflow.onnx.log_model", ErrModel, listOrNone(flavors))
	}
	var fl onnxFlavor
	if err := node.Decode(&fl); err != nil {
		return nil, fmt.Errorf("%w: flavors.onnx: %v", ErrModel, err)
	}
	switch data := filepath.FromSlash(fl.Data); {
	case fl.Data == "":
		return nil, fmt.Errorf("%w: flavors.onnx has no data file", ErrModel)
	case !filepath.IsLocal(data):
		return nil, fmt.Errorf("%w: flavors.onnx.data %q leaves the model directory", ErrModel, fl.Data)
	}
	if mm.Signature == nil {
		return nil, fmt.Errorf("%w: no signature; log the model with one (mlflow.models.infer_signature)", ErrModel)
	}
	m := &Model{ONNX: fl.Data, RunID: mm.RunID, ModelUUID: mm.ModelUUID, ArtifactPath: mm.ArtifactPath, MLflowVersion: mm.MLflowVersion}
	var err error
	if m.Inputs, err = ParseSignature(mm.Signature.Inputs); err != nil {
		return nil, fmt.Errorf("signature.inputs: %w", err)
	}
	if m.Outputs, err = ParseSignature(mm.Signature.Outputs); err != nil {
		return nil, fmt.Errorf("signature.outputs: %w", err)
	}
	if mm.UTCTimeCreated != "" {
		if m.Created, err = parseCreated(mm.UTCTimeCreated); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

// parseCreated reads utc_time_created, which MLflow writes as Python's
// str(datetime.utcnow()): "2006-01-02 15:04:05.999999", no zone.
func parseCreated(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: utc_time_created %q is not a time (want YYYY-MM-DD HH:MM:SS[.ffffff])", ErrModel, s)
}

// Lineage is the model's lineage as a bundle records it. uri, if not
// empty, is where the model was taken from (e.g. "models:/vad/3");
// otherwise it is runs:/RUN_ID/ARTIFACT_PATH when the MLmodel file names
// both.
func (m *Model) Lineage(uri string) *bundle.Lineage {
	if uri == "" && m.RunID != "" && m.ArtifactPath != "" {
		uri = "runs:/" + m.RunID + "/" + m.ArtifactPath
	}
	l := &bundle.Lineage{Source: "mlflow", RunID: m.RunID, ModelUUID: m.ModelUUID, URI: uri, SourceVersion: m.MLflowVersion}
	if !m.Created.IsZero() {
		l.Created = m.Created.Format(time.RFC3339)
	}
	return l
}

// Source is the model as a bundle spec takes it (bundle.Spec.UseModel).
func (m *Model) Source(uri string) bundle.ModelSource {
	return bundle.ModelSource{Path: m.ONNX, Inputs: m.Inputs, Outputs: m.Outputs, Lineage: m.Lineage(uri)}
}
