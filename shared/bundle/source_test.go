package bundle_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

var testLineage = &bundle.Lineage{
	Source: "mlflow", RunID: "run-1", ModelUUID: "model-1", URI: "models:/vad/1",
	SourceVersion: "2.14.1", Created: "2024-06-20T09:41:27Z",
}

func testSource(t *testing.T) bundle.ModelSource {
	return bundle.ModelSource{
		Path:    filepath.Join("testdata", "spec", "model.onnx"),
		Inputs:  []tensor.Spec{{Name: "x", Datatype: tensor.FP32, Shape: []int64{-1, 4}}},
		Outputs: []tensor.Spec{{Name: "y", Datatype: tensor.FP32, Shape: []int64{-1, 3}}},
		Lineage: testLineage,
	}
}

// TestBuildFromModelSource: a spec completed from a model source (an
// MLflow model) carries its file, signature and lineage into the
// manifest, which a device reads back unchanged.
func TestBuildFromModelSource(t *testing.T) {
	spec := bundle.NewSpec(t.TempDir(), "vad", "1.0.0")
	if err := spec.UseModel(testSource(t)); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "vad.bundle")
	m, err := bundle.BuildSpec(context.Background(), spec, out, bundle.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	read, err := bundle.ReadManifest(context.Background(), out, bundle.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range []*bundle.Manifest{m, read} {
		if !reflect.DeepEqual(got.Lineage, testLineage) || got.Runtime.Inputs[0].Name != "x" || got.Runtime.Outputs[0].Name != "y" {
			t.Errorf("manifest lineage %+v, inputs %v, outputs %v", got.Lineage, got.Runtime.Inputs, got.Runtime.Outputs)
		}
	}
}

func TestUseModelRefuses(t *testing.T) {
	// A bundle.yaml that names the model itself: one of the two would be
	// ignored.
	spec, err := bundle.ReadSpec("testdata/spec")
	if err != nil {
		t.Fatal(err)
	}
	err = spec.UseModel(testSource(t))
	if !errors.Is(err, bundle.ErrSpec) || !strings.Contains(err.Error(), `the spec sets "model"`) {
		t.Fatalf("UseModel on a spec with a model: %v", err)
	}

	// A lineage a manifest would not hold is refused before anything is
	// built.
	for _, c := range []struct {
		change func(*bundle.Lineage)
		want   string
	}{
		{func(l *bundle.Lineage) { l.Source = "MLflow 2" }, `lineage.source "MLflow 2" must match`},
		{func(l *bundle.Lineage) { l.RunID = "run\x00" }, "lineage.runId"},
		{func(l *bundle.Lineage) { l.URI = strings.Repeat("u", 600) }, "lineage.uri is 600 bytes"},
		{func(l *bundle.Lineage) { l.Created = "2024-06-20 09:41:27" }, `lineage.created "2024-06-20 09:41:27" is not an RFC 3339 time`},
	} {
		src := testSource(t)
		l := *testLineage
		c.change(&l)
		src.Lineage = &l
		spec := bundle.NewSpec(t.TempDir(), "vad", "1.0.0")
		if err := spec.UseModel(src); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "vad.bundle")
		_, err := bundle.BuildSpec(context.Background(), spec, out, bundle.BuildOptions{})
		if !errors.Is(err, bundle.ErrSpec) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("BuildSpec: %v, want ErrSpec naming %q", err, c.want)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a bundle was written despite the error (%v)", err)
		}
	}
}
