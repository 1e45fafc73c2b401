package mlflow_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/mlflow"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// sileroMLmodel is the MLmodel file mlflow.onnx.log_model writes for the
// Silero VAD model (MLflow 2.14, a tensor signature inferred from numpy
// arrays).
func sileroMLmodel(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "silero", mlflow.MLmodelFile))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// modelDir lays out an MLflow model directory: MLmodel with the given
// contents and, unless data is "", the Silero model under that name.
func modelDir(t *testing.T, mlmodel, data string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, mlflow.MLmodelFile), []byte(mlmodel), 0o644); err != nil {
		t.Fatal(err)
	}
	if data != "" {
		if err := os.Symlink(testenv.SileroModel(t), filepath.Join(dir, data)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// sileroSignature is the Silero model's signature, as its bundle declares
// it.
var sileroSignature = struct{ in, out []tensor.Spec }{
	in:  testbundle.SileroManifest("5.0.0").Runtime.Inputs,
	out: testbundle.SileroManifest("5.0.0").Runtime.Outputs,
}

func TestLoad(t *testing.T) {
	dir := modelDir(t, sileroMLmodel(t), "model.onnx")
	m, err := mlflow.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.ONNX != filepath.Join(dir, "model.onnx") {
		t.Errorf("ONNX %s", m.ONNX)
	}
	if !reflect.DeepEqual(m.Inputs, sileroSignature.in) || !reflect.DeepEqual(m.Outputs, sileroSignature.out) {
		t.Errorf("signature\n in  %v\n out %v", m.Inputs, m.Outputs)
	}
	want := &bundle.Lineage{
		Source:        "mlflow",
		RunID:         "3f2a9d1c5b7e4f0a8e6d2c1b0a9f8e7d",
		ModelUUID:     "8c8e0a3ac0a2454f9c2b7f4a2d6b8e31",
		URI:           "runs:/3f2a9d1c5b7e4f0a8e6d2c1b0a9f8e7d/model",
		SourceVersion: "2.14.1",
		Created:       "2024-06-20T09:41:27Z",
	}
	if got := m.Lineage(""); !reflect.DeepEqual(got, want) {
		t.Errorf("Lineage\n got %+v\nwant %+v", got, want)
	}
	if got := m.Lineage("models:/vad/3").URI; got != "models:/vad/3" {
		t.Errorf("Lineage(uri).URI = %q", got)
	}
	// The signature holds to the graph itself.
	if err := model.CheckIO(m.ONNX, m.Inputs, m.Outputs, model.Options{ORTLibrary: testenv.ORTLibrary(t)}); err != nil {
		t.Errorf("CheckIO: %v", err)
	}
}

// TestSignatureMismatch: a signature that does not describe the graph is
// refused naming the tensor and what differs.
func TestSignatureMismatch(t *testing.T) {
	m, err := mlflow.Load(modelDir(t, sileroMLmodel(t), "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	opts := model.Options{ORTLibrary: testenv.ORTLibrary(t)}
	clone := func(s []tensor.Spec) []tensor.Spec {
		out := make([]tensor.Spec, len(s))
		for i, sp := range s {
			sp.Shape = append([]int64(nil), sp.Shape...)
			out[i] = sp
		}
		return out
	}
	for _, c := range []struct {
		name   string
		change func(in, out []tensor.Spec) ([]tensor.Spec, []tensor.Spec)
		want   string
	}{
		{"dtype", func(in, out []tensor.Spec) ([]tensor.Spec, []tensor.Spec) {
			in[0].Datatype = tensor.FP64
			return in, out
		}, `input "input" is declared FP64, the model takes FP32`},
		{"name", func(in, out []tensor.Spec) ([]tensor.Spec, []tensor.Spec) {
			out[1].Name = "hidden"
			return in, out
		}, `the model's output "stateN"`},
		{"shape", func(in, out []tensor.Spec) ([]tensor.Spec, []tensor.Spec) {
			in[1].Shape = []int64{3, -1, 128}
			return in, out
		}, `input "state": dimension 0 is declared 3, the model's is 2`},
		{"missing input", func(in, out []tensor.Spec) ([]tensor.Spec, []tensor.Spec) {
			return in[:2], out
		}, `the model's input "sr"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			in, out := c.change(clone(m.Inputs), clone(m.Outputs))
			err := model.CheckIO(m.ONNX, in, out, opts)
			if !errors.Is(err, model.ErrManifest) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("CheckIO: %v, want ErrManifest naming %q", err, c.want)
			}
		})
	}
}

func TestLoadRefuses(t *testing.T) {
	good := sileroMLmodel(t)
	replace := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("the MLmodel fixture has no %q", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	sigInputs := good[strings.Index(good, "  inputs: '"):strings.Index(good, "  outputs: '")]
	withInputs := func(json string) string { return strings.Replace(good, sigInputs, "  inputs: '"+json+"'\n", 1) }
	for _, c := range []struct {
		name    string
		mlmodel string // "" writes no MLmodel file
		data    string // the data file laid out
		want    string
	}{
		{"no MLmodel", "", "model.onnx", "no MLmodel in"},
		{"malformed YAML", "flavors: [onnx\n", "model.onnx", "malformed YAML"},
		{"no onnx flavor", replace("  onnx:\n    code: null\n    data: model.onnx\n", "  sklearn:\n    pickled_model: model.pkl\n"), "model.onnx", "no onnx flavor (flavors: python_function, sklearn)"},
		{"no data key", replace("    data: model.onnx\n    onnx_version", "    onnx_version"), "model.onnx", "flavors.onnx has no data file"},
		{"data file missing", good, "", "the onnx flavor's data file"},
		{"data outside the directory", replace("    data: model.onnx\n    onnx_version", "    data: ../model.onnx\n    onnx_version"), "model.onnx", `flavors.onnx.data "../model.onnx" leaves the model directory`},
		{"no signature", good[:strings.Index(good, "signature:")] + "utc_time_created: '2024-06-20 09:41:27.512345'\n", "model.onnx", "no signature"},
		{"malformed signature JSON", withInputs(`[{"type": "tensor", "tensor-spec": {`), "model.onnx", "signature.inputs: " + mlflow.ErrModel.Error() + ": malformed signature JSON"},
		{"column-based signature", withInputs(`[{"type": "double", "name": "x", "required": true}]`), "model.onnx", `entry "x" is of type "double", not a tensor`},
		{"unnamed tensor", withInputs(`[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 512]}}]`), "model.onnx", "a tensor without a name"},
		{"unsupported dtype", withInputs(`[{"type": "tensor", "tensor-spec": {"dtype": "float16", "shape": [-1]}, "name": "x"}]`), "model.onnx", `tensor "x" has dtype "float16"; supported: bool, float32`},
		{"zero dimension", withInputs(`[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [0, 3]}, "name": "x"}]`), "model.onnx", `tensor "x": dimension 0 is 0`},
		{"tensor named twice", withInputs(`[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [1]}, "name": "x"}, {"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [1]}, "name": "x"}]`), "model.onnx", `tensor "x" is named twice`},
		{"bad creation time", replace("'2024-06-20 09:41:27.512345'", "'yesterday'"), "model.onnx", `utc_time_created "yesterday" is not a time`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var dir string
			if c.mlmodel == "" {
				dir = t.TempDir()
			} else {
				dir = modelDir(t, c.mlmodel, c.data)
			}
			m, err := mlflow.Load(dir)
			if !errors.Is(err, mlflow.ErrModel) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load: %v, %v; want ErrModel naming %q", m, err, c.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "silero", mlflow.MLmodelFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("flavors: {onnx: {data: m.onnx}}\nsignature: {inputs: '[]', outputs: '[]'}\n"))
	f.Add([]byte("flavors: {onnx: {data: /etc/passwd}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := mlflow.Parse(b)
		if err != nil {
			if !errors.Is(err, mlflow.ErrModel) {
				t.Fatalf("error outside ErrModel: %v", err)
			}
			return
		}
		if !filepath.IsLocal(filepath.FromSlash(m.ONNX)) || len(m.Inputs) == 0 || len(m.Outputs) == 0 {
			t.Fatalf("accepted %+v", m)
		}
	})
}

func FuzzParseSignature(f *testing.F) {
	f.Add(`[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 512]}, "name": "input"}]`)
	f.Add(`[{"type": "double", "name": "x"}]`)
	f.Add(`[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [null]}, "name": "x"}]`)
	f.Fuzz(func(t *testing.T, s string) {
		specs, err := mlflow.ParseSignature(s)
		if err != nil {
			if !errors.Is(err, mlflow.ErrModel) {
				t.Fatalf("error outside ErrModel: %v", err)
			}
			return
		}
		for _, sp := range specs {
			if sp.Name == "" || !sp.Datatype.Valid() {
				t.Fatalf("accepted %+v", sp)
			}
			for _, d := range sp.Shape {
				if d == 0 || d < -1 {
					t.Fatalf("accepted dimension %d in %+v", d, sp)
				}
			}
		}
	})
}

// TestFormatSignature: FormatSignature writes what ParseSignature reads.
func TestFormatSignature(t *testing.T) {
	for _, specs := range [][]tensor.Spec{sileroSignature.in, sileroSignature.out, {{Name: "flag", Datatype: tensor.Bool, Shape: []int64{}}}} {
		js, err := mlflow.FormatSignature(specs)
		if err != nil {
			t.Fatal(err)
		}
		back, err := mlflow.ParseSignature(js)
		if err != nil || !reflect.DeepEqual(back, specs) {
			t.Errorf("ParseSignature(FormatSignature(%v)) = %v, %v (%s)", specs, back, err, js)
		}
	}
}
