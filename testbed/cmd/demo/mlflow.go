package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/mlflow"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// The demo's MLflow run: the lineage the bundle records.
const (
	demoRunID     = "5e1f0c2d9a8b4c7e8f6a5b4c3d2e1f00"
	demoModelUUID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
)

// writeMLflowModel lays out dir as mlflow.onnx.log_model writes a model
// (MLflow 2.14): model.onnx, a copy of the spec's model, and an MLmodel
// file with the onnx flavor, the tensor signature of the spec in specDir
// and the demo run's lineage.
func writeMLflowModel(dir, specDir string) error {
	spec, err := bundle.LoadSpec(specDir)
	if err != nil {
		return fmt.Errorf("reading the Silero spec: %w", err)
	}
	src := spec.Model
	if !filepath.IsAbs(src) {
		src = filepath.Join(spec.Dir(), src)
	}
	onnx, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("reading the Silero model: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "model.onnx"), onnx, 0o644); err != nil {
		return err
	}
	// MLflow writes each side as JSON in a single-quoted YAML string.
	var sig [2]string
	for i, specs := range [][]tensor.Spec{spec.Inputs, spec.Outputs} {
		js, err := mlflow.FormatSignature(specs)
		if err != nil {
			return err
		}
		sig[i] = strings.ReplaceAll(js, "'", "''")
	}
	mlmodel := fmt.Sprintf(`artifact_path: model
flavors:
  onnx:
    code: null
    data: model.onnx
    onnx_version: 1.16.1
    providers:
    - CPUExecutionProvider
  python_function:
    data: model.onnx
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.onnx
    python_version: 3.11.9
mlflow_version: 2.14.1
model_size_bytes: %d
model_uuid: %s
run_id: %s
signature:
  inputs: '%s'
  outputs: '%s'
  params: null
utc_time_created: '2026-12-01 09:00:00.000000'
`, len(onnx), demoModelUUID, demoRunID, sig[0], sig[1])
	return atomicfile.WriteFile(filepath.Join(dir, mlflow.MLmodelFile), []byte(mlmodel), 0o644)
}
