package bundle_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// sileroSHA256 is the pinned digest of silero_vad_v5.onnx (DESIGN.md §10).
const sileroSHA256 = "2623a2953f6ff3d2c1e61740c6cdb7168133479b267dfef114a4a3cc5bdd788f"

// twoSine is the Silero smoke frame: 0.5·sin(2π·220·i/16000) +
// 0.1·sin(2π·1375·i/16000), i < 512.
func twoSine() []float64 {
	x := make([]float64, 512)
	for i := range x {
		x[i] = 0.5*math.Sin(2*math.Pi*220*float64(i)/16000) + 0.1*math.Sin(2*math.Pi*1375*float64(i)/16000)
	}
	return x
}

// sileroSmokeFiles are the contents of testbed/bundles/silero-vad/smoke.
func sileroSmokeFiles(t *testing.T) (inputsJSON, pcm []byte) {
	x := twoSine()
	input := make([]float32, len(x))
	pcm = make([]byte, 2*len(x))
	for i, v := range x {
		input[i] = float32(v)
		binary.LittleEndian.PutUint16(pcm[2*i:], uint16(int16(math.Round(v*32768))))
	}
	state, err := tensor.Zeros("state", tensor.FP32, []int64{2, 1, 128})
	if err != nil {
		t.Fatal(err)
	}
	ts := []tensor.Tensor{
		{Name: "input", Datatype: tensor.FP32, Shape: []int64{1, 512}, Data: input},
		state,
		{Name: "sr", Datatype: tensor.Int64, Shape: []int64{1}, Data: []int64{16000}},
	}
	var b bytes.Buffer
	b.WriteString("[\n")
	for i, tt := range ts {
		enc, err := json.Marshal(tt)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("  ")
		b.Write(enc)
		if i < len(ts)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("]\n")
	return b.Bytes(), pcm
}

// TestSileroSpec checks the example spec: its smoke data is the documented
// frame, and it builds (with the cached model and a stand-in for the
// git-ignored pre.wasm) into a bundle whose manifest validates. Running
// the smoke vectors through ONNX Runtime is model.Check's job.
func TestSileroSpec(t *testing.T) {
	specDir := filepath.Join(testenv.Root(t), "testbed", "bundles", "silero-vad")
	wantInputs, wantPCM := sileroSmokeFiles(t)
	inputsPath := filepath.Join(specDir, "smoke", "two-sine.inputs.json")
	pcmPath := filepath.Join(specDir, "smoke", "two-sine.pcm")
	testenv.Golden(t, inputsPath, wantInputs)
	testenv.Golden(t, pcmPath, wantPCM)

	// A copy of the spec with absolute paths to the cached model and a
	// stand-in pre-processor, so that the build needs neither make wasm
	// nor writes into the repository.
	spec, err := os.ReadFile(filepath.Join(specDir, bundle.SpecName))
	if err != nil {
		t.Fatal(err)
	}
	modelLine := "model: ../../../.cache/deps/models/silero_vad_v5.onnx"
	if !bytes.Contains(spec, []byte(modelLine)) {
		t.Fatalf("bundle.yaml no longer has %q", modelLine)
	}
	yaml := strings.Replace(string(spec), modelLine, "model: "+testenv.SileroModel(t), 1)
	yaml = strings.Replace(yaml, "smoke/", filepath.Join(specDir, "smoke")+"/", -1)
	yaml = strings.Replace(yaml, "profile: profile.json", "profile: "+filepath.Join(specDir, "profile.json"), 1)
	dir := writeSpec(t, yaml, map[string][]byte{"pre.wasm": []byte("\x00asm stand-in")})

	out := filepath.Join(t.TempDir(), "silero-vad-5.0.0.bundle")
	check := func(ctx context.Context, dir string, m *bundle.Manifest) error {
		f, ok := m.File(bundle.ModelFile)
		if !ok || f.SHA256 != sileroSHA256 {
			t.Errorf("model.onnx in the manifest: %+v, want sha256 %s", f, sileroSHA256)
		}
		return nil
	}
	m, err := bundle.Build(context.Background(), dir, out, bundle.BuildOptions{Check: check})
	if err != nil {
		t.Fatalf("building the Silero spec: %v", err)
	}
	if m.ID() != "silero-vad@5.0.0" || len(m.Smoke) != 2 || m.Runtime.Pre == nil || m.Profile == "" {
		t.Fatalf("manifest: %s, %d smoke vectors, pre %v", m.ID(), len(m.Smoke), m.Runtime.Pre)
	}
	if len(m.Smoke[0].Inputs) != 3 || len(m.Smoke[0].Raw) != 0 || len(m.Smoke[1].Raw) != 1024 {
		t.Errorf("smoke vectors: tensors %d/%d raw bytes, raw %d bytes", len(m.Smoke[0].Inputs), len(m.Smoke[0].Raw), len(m.Smoke[1].Raw))
	}
	want := tensor.Tensor{Name: "output", Datatype: tensor.FP32, Shape: []int64{1, 1}, Data: []float32{0.0690874}}
	for _, v := range m.Smoke {
		if len(v.Expected) != 1 || tensor.Close(v.Expected[0], want, 0, 0) != nil || v.Tolerance.Abs != 1e-4 {
			t.Errorf("smoke %q: expected %+v, tolerance %+v", v.Name, v.Expected, v.Tolerance)
		}
	}
	if got := strings.Join(m.Runtime.ExecutionProviders, ","); got != "cuda,cpu" {
		t.Errorf("execution providers %s", got)
	}
}
