package bundle_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

func buildTestSpec(t *testing.T, opts bundle.BuildOptions) (string, *bundle.Manifest) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "test-model.bundle")
	m, err := bundle.Build(context.Background(), "testdata/spec", out, opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return out, m
}

// TestBuildGoldenManifest pins the manifest built from testdata/spec.
func TestBuildGoldenManifest(t *testing.T) {
	out, _ := buildTestSpec(t, bundle.BuildOptions{})
	dest := filepath.Join(t.TempDir(), "unpacked")
	if _, err := bundle.Unpack(context.Background(), out, dest, bundle.Limits{}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dest, bundle.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Golden(t, filepath.Join("testdata", "golden", "manifest.json"), got)
}

func TestBuildDeterministic(t *testing.T) {
	a, _ := buildTestSpec(t, bundle.BuildOptions{})
	b, _ := buildTestSpec(t, bundle.BuildOptions{})
	ab, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ab, bb) {
		t.Fatalf("two builds of the same spec differ (%d and %d bytes)", len(ab), len(bb))
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	_, m := buildTestSpec(t, bundle.BuildOptions{Created: created})
	if m.Created != "2026-01-02T03:04:05Z" {
		t.Errorf("Created = %q", m.Created)
	}
}

func TestBuildManifestContents(t *testing.T) {
	_, m := buildTestSpec(t, bundle.BuildOptions{})
	if m.ID() != "test-model@1.2.3-rc.1" || m.FileName() != "test-model-1.2.3-rc.1.bundle" {
		t.Errorf("ID %q, FileName %q", m.ID(), m.FileName())
	}
	var paths []string
	for _, f := range m.Files {
		paths = append(paths, f.Path)
	}
	if got, want := strings.Join(paths, ","), "labels.txt,model.onnx,pre.wasm,profile.json"; got != want {
		t.Errorf("files %s, want %s", got, want)
	}
	if m.Runtime.Model != bundle.ModelFile || m.Runtime.Pre == nil || m.Runtime.Pre.Module != bundle.PreFile || m.Runtime.Post != nil || m.Profile != bundle.ProfileFile {
		t.Errorf("runtime %+v, profile %q", m.Runtime, m.Profile)
	}
	if len(m.Smoke) != 3 || string(m.Smoke[2].Raw) != "\x01\x00\x02\x00\x03\x00\x04\x00" || len(m.Smoke[1].Inputs) != 1 {
		t.Errorf("smoke vectors: %+v", m.Smoke)
	}
}

func TestBuildRunsCheckOnStagedFiles(t *testing.T) {
	var sawDir string
	check := func(ctx context.Context, dir string, m *bundle.Manifest) error {
		sawDir = dir
		for _, f := range append(m.Files, bundle.File{Path: bundle.ManifestName}) {
			if _, err := os.Stat(filepath.Join(dir, f.Path)); err != nil {
				return err
			}
		}
		return nil
	}
	buildTestSpec(t, bundle.BuildOptions{Check: check})
	if sawDir == "" {
		t.Fatal("Check was not called")
	}
	if _, err := os.Stat(sawDir); !os.IsNotExist(err) {
		t.Errorf("staging directory %s left behind", sawDir)
	}

	errBad := errors.New("smoke vector off by 0.3")
	out := filepath.Join(t.TempDir(), "x.bundle")
	_, err := bundle.Build(context.Background(), "testdata/spec", out, bundle.BuildOptions{
		Check: func(context.Context, string, *bundle.Manifest) error { return errBad },
	})
	if !errors.Is(err, errBad) {
		t.Fatalf("Build with failing check: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("bundle written although the check failed")
	}
	entries, _ := os.ReadDir(filepath.Dir(out))
	if len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestBuildRefusesBadSpecs(t *testing.T) {
	model := map[string][]byte{"m.onnx": []byte("model")}
	const head = "name: a\nversion: 1.0.0\nmodel: m.onnx\ninputs: [{name: x, datatype: FP32, shape: [1]}]\noutputs: [{name: \"y\", datatype: FP32, shape: [1]}]\n"
	tests := []struct {
		name  string
		yaml  string
		files map[string][]byte
		want  error
		msg   string
	}{
		{"unknown key", head + "colour: blue\n", model, bundle.ErrSpec, `unknown field "colour"`},
		{"unquoted yaml 1.1 boolean", strings.Replace(head, `{name: "y"`, "{name: y", 1), model, bundle.ErrSpec, `line 5: unquoted y reads as a boolean`},
		{"unknown nested key", "name: a\nversion: 1.0.0\nmodel: m.onnx\ninputs: [{name: x, datatype: FP32, shape: [1], dims: 2}]\noutputs: [{name: \"y\", datatype: FP32, shape: [1]}]\n", model, bundle.ErrSpec, `unknown field "dims"`},
		{"unknown tensor key", head + "smoke: [{name: s, inputs: [{name: x, datatype: FP32, shape: [1], data: [1], extra: 1}], expected: [{name: \"y\", datatype: FP32, shape: [1], data: [1]}], tolerance: {abs: 0}}]\n", model, bundle.ErrSpec, `unknown field "extra"`},
		{"duplicate key", head + "name: b\n", model, bundle.ErrSpec, `"name"`},
		{"bad name", strings.Replace(head, "name: a\n", "name: Bad_Name\n", 1), model, bundle.ErrSpec, `name "Bad_Name"`},
		{"bad version", strings.Replace(head, "version: 1.0.0", "version: v1.0", 1), model, bundle.ErrSpec, "semantic version"},
		{"missing model", strings.Replace(head, "model: m.onnx\n", "", 1), model, bundle.ErrSpec, `missing field "model"`},
		{"missing inputs", strings.Replace(head, "inputs: [{name: x, datatype: FP32, shape: [1]}]\n", "", 1), model, bundle.ErrSpec, `missing field "inputs"`},
		{"bad datatype", strings.Replace(head, "datatype: FP32, shape: [1]}]\noutputs", "datatype: FLOAT, shape: [1]}]\noutputs", 1), model, bundle.ErrSpec, `unknown datatype "FLOAT"`},
		{"zero dimension", strings.Replace(head, "shape: [1]}]\noutputs", "shape: [0]}]\noutputs", 1), model, bundle.ErrSpec, "dimension 0 is 0"},
		{"model file missing", head, nil, bundle.ErrSpec, "m.onnx"},
		{"model is a directory", head, map[string][]byte{"m.onnx/x": nil}, bundle.ErrSpec, "not a regular file"},
		{"extra collides", head + "extra: [sub/model.onnx]\n", map[string][]byte{"m.onnx": []byte("m"), "sub/model.onnx": []byte("x")}, bundle.ErrSpec, `stored as "model.onnx", which model already uses`},
		{"extra bad name", head + "extra: [.hidden]\n", map[string][]byte{"m.onnx": []byte("m"), ".hidden": []byte("x")}, bundle.ErrUnsafePath, ".hidden"},
		{"smoke without tolerance", head + "smoke: [{name: s, inputs: [{name: x, datatype: FP32, shape: [1], data: [1]}], expected: [{name: \"y\", datatype: FP32, shape: [1], data: [1]}]}]\n", model, bundle.ErrSpec, `missing field "tolerance"`},
		{"smoke two input kinds", head + "smoke: [{name: s, inputsFile: a.json, rawFile: b.raw, expected: [{name: \"y\", datatype: FP32, shape: [1], data: [1]}], tolerance: {abs: 0}}]\n", model, bundle.ErrSpec, "exactly one of inputs"},
		{"smoke wrong input", head + "smoke: [{name: s, inputs: [{name: q, datatype: FP32, shape: [1], data: [1]}], expected: [{name: \"y\", datatype: FP32, shape: [1], data: [1]}], tolerance: {abs: 0}}]\n", model, bundle.ErrManifest, `input "q" is not a model input`},
		{"smoke wrong shape", head + "smoke: [{name: s, inputs: [{name: x, datatype: FP32, shape: [2], data: [1, 2]}], expected: [{name: \"y\", datatype: FP32, shape: [1], data: [1]}], tolerance: {abs: 0}}]\n", model, bundle.ErrManifest, "shape mismatch"},
		{"smoke missing input", strings.Replace(head, "inputs: [{name: x, datatype: FP32, shape: [1]}]", "inputs: [{name: x, datatype: FP32, shape: [1]}, {name: w, datatype: INT64, shape: [1]}]", 1) + "smoke: [{name: s, inputs: [{name: x, datatype: FP32, shape: [1], data: [1]}], expected: [{name: \"y\", datatype: FP32, shape: [1], data: [1]}], tolerance: {abs: 0}}]\n", model, bundle.ErrManifest, `model input "w" is missing`},
		{"smoke unknown output", head + "smoke: [{name: s, inputs: [{name: x, datatype: FP32, shape: [1], data: [1]}], expected: [{name: nope, datatype: FP32, shape: [1], data: [1]}], tolerance: {abs: 0}}]\n", model, bundle.ErrManifest, `"nope" is not a model output`},
		{"smoke raw without pre", head + "smoke: [{name: s, rawFile: r.raw, expected: [{name: \"y\", datatype: FP32, shape: [1], data: [1]}], tolerance: {abs: 0}}]\n", map[string][]byte{"m.onnx": []byte("m"), "r.raw": []byte("r")}, bundle.ErrManifest, "needs a pre-processor"},
		{"smoke negative tolerance", head + "smoke: [{name: s, inputs: [{name: x, datatype: FP32, shape: [1], data: [1]}], expected: [{name: \"y\", datatype: FP32, shape: [1], data: [1]}], tolerance: {abs: -1}}]\n", model, bundle.ErrManifest, "tolerance"},
		{"smoke inputsFile not an array", head + "smoke: [{name: s, inputsFile: in.json, expected: [{name: \"y\", datatype: FP32, shape: [1], data: [1]}], tolerance: {abs: 0}}]\n", map[string][]byte{"m.onnx": []byte("m"), "in.json": []byte(`{"inputs": []}`)}, bundle.ErrSpec, "JSON array of tensors"},
		{"smoke bad tensor data", head + "smoke: [{name: s, inputs: [{name: x, datatype: FP32, shape: [2], data: [1]}], expected: [{name: \"y\", datatype: FP32, shape: [1], data: [1]}], tolerance: {abs: 0}}]\n", model, bundle.ErrSpec, "holds 2 elements"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeSpec(t, tc.yaml, tc.files)
			out := filepath.Join(t.TempDir(), "out.bundle")
			_, err := bundle.Build(context.Background(), dir, out, bundle.BuildOptions{})
			if err == nil {
				t.Fatal("Build succeeded")
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Build error = %v\nwant %v containing %q", err, tc.want, tc.msg)
			}
			if _, serr := os.Stat(out); !os.IsNotExist(serr) {
				t.Errorf("output written despite %v", err)
			}
		})
	}
}

func TestBuildEnforcesLimits(t *testing.T) {
	dir := writeSpec(t, "name: a\nversion: 1.0.0\nmodel: m.onnx\ninputs: [{name: x, datatype: FP32, shape: [1]}]\noutputs: [{name: \"y\", datatype: FP32, shape: [1]}]\n",
		map[string][]byte{"m.onnx": bytes.Repeat([]byte("weights "), 1000)})
	for _, lim := range []bundle.Limits{{MaxFileBytes: 100}, {MaxTotalBytes: 100}, {MaxBundleBytes: 100}, {MaxFiles: 1}} {
		_, err := bundle.Build(context.Background(), dir, filepath.Join(t.TempDir(), "o.bundle"), bundle.BuildOptions{Limits: lim})
		if !errors.Is(err, bundle.ErrLimit) {
			t.Errorf("limits %+v: err %v, want ErrLimit", lim, err)
		}
	}
}

func TestLoadSpecAcceptsFilePath(t *testing.T) {
	s, err := bundle.LoadSpec("testdata/spec/bundle.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Dir() != "testdata/spec" || s.Name != "test-model" {
		t.Errorf("dir %q, name %q", s.Dir(), s.Name)
	}
}
