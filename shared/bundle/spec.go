package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

// SpecName is the file name of a bundle spec inside its directory.
const SpecName = "bundle.yaml"

// Fixed names of files inside a bundle.
const (
	ModelFile   = "model.onnx"
	PreFile     = "pre.wasm"
	PostFile    = "post.wasm"
	ProfileFile = "profile.json"
)

// Bounds on what a spec may pull into the manifest.
const (
	maxSpecBytes     = 1 << 20
	maxSmokeRawBytes = 4 << 20
)

// Spec is a bundle.yaml: what fleetctl bundle build puts in a bundle.
// Paths are relative to the spec's directory (or absolute) and may point
// outside it. See docs/bundle-format.md.
type Spec struct {
	Name            string        `json:"name"`
	Version         string        `json:"version"`
	MinAgentVersion string        `json:"minAgentVersion,omitempty"`
	Model           string        `json:"model"`
	Inputs          []tensor.Spec `json:"inputs"`
	Outputs         []tensor.Spec `json:"outputs"`
	// Pre and Post are optional WASM processor modules.
	Pre                string   `json:"pre,omitempty"`
	Post               string   `json:"post,omitempty"`
	ExecutionProviders []string `json:"executionProviders,omitempty"`
	AllowNonFinite     bool     `json:"allowNonFinite,omitempty"`
	// Profile is the optional reference drift profile.
	Profile string `json:"profile,omitempty"`
	// Extra files are stored under their base names.
	Extra []string    `json:"extra,omitempty"`
	Smoke []SmokeSpec `json:"smoke,omitempty"`
	// Lineage, optional, says where the model came from (UseModel sets
	// it from the model's source).
	Lineage *Lineage `json:"lineage,omitempty"`
	// Sampling, optional, is the manifest's sampling policy.
	Sampling *SamplingSpec `json:"sampling,omitempty"`

	dir  string
	file string // the file it was read from; "" for NewSpec
}

// ModelSource is a model that comes from elsewhere than the spec's model,
// inputs and outputs keys: an MLflow model directory, say.
type ModelSource struct {
	// Path is the ONNX file.
	Path string
	// Inputs and Outputs are the model's signature.
	Inputs, Outputs []tensor.Spec
	// Lineage says where it came from.
	Lineage *Lineage
}

// UseModel takes the spec's model, inputs, outputs and lineage from src.
// A spec that names any of them itself is refused: one of the two would
// be silently ignored.
func (s *Spec) UseModel(src ModelSource) error {
	for _, f := range []struct {
		key string
		set bool
	}{{"model", s.Model != ""}, {"inputs", s.Inputs != nil}, {"outputs", s.Outputs != nil}, {"lineage", s.Lineage != nil}} {
		if f.set {
			return fmt.Errorf("%w: the spec sets %q, which the model source (%s) provides: remove it from %s", ErrSpec, f.key, src.Path, SpecName)
		}
	}
	// The source's path is the caller's, not relative to the spec.
	model, err := filepath.Abs(src.Path)
	if err != nil {
		return fmt.Errorf("%w: model source: %w", ErrSpec, err)
	}
	s.Model, s.Inputs, s.Outputs, s.Lineage = model, src.Inputs, src.Outputs, src.Lineage
	return nil
}

// NewSpec is an empty spec for name@version whose relative paths start
// from dir: what a build from a model source alone starts with.
func NewSpec(dir, name, version string) *Spec {
	return &Spec{Name: name, Version: version, dir: dir}
}

// SmokeSpec is one smoke vector of a spec. Inputs come from exactly one
// of Inputs (inline tensors), InputsFile (a JSON array of tensors) or
// RawFile (raw bytes for the pre-processor); expected outputs from exactly
// one of Expected and ExpectedFile. Tensors are in the Open Inference
// Protocol's JSON form: {name, datatype, shape, data}.
type SmokeSpec struct {
	Name         string         `json:"name"`
	Inputs       []InlineTensor `json:"inputs,omitempty"`
	InputsFile   string         `json:"inputsFile,omitempty"`
	RawFile      string         `json:"rawFile,omitempty"`
	Expected     []InlineTensor `json:"expected,omitempty"`
	ExpectedFile string         `json:"expectedFile,omitempty"`
	Tolerance    *Tolerance     `json:"tolerance"`
}

// InlineTensor is a tensor written in bundle.yaml, in the Open Inference
// Protocol's form. Its typed fields keep YAML from reading a tensor named
// y, n, on or off as a boolean.
type InlineTensor struct {
	Name     string          `json:"name"`
	Datatype tensor.Datatype `json:"datatype"`
	Shape    []int64         `json:"shape"`
	Data     json.RawMessage `json:"data"`
}

// LoadSpec reads and checks dir/bundle.yaml (dir may also name the YAML
// file itself). Unknown and duplicate keys are refused with their name.
// Files the spec names are not opened yet; Build does that.
func LoadSpec(dir string) (*Spec, error) {
	s, err := ReadSpec(dir)
	if err != nil {
		return nil, err
	}
	if err := s.Check(); err != nil {
		return nil, err
	}
	return s, nil
}

// ReadSpec reads dir/bundle.yaml like LoadSpec but leaves its checks to
// Check, so that a caller may complete the spec first (UseModel).
func ReadSpec(dir string) (*Spec, error) {
	path := dir
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		path = filepath.Join(dir, SpecName)
	} else {
		dir = filepath.Dir(dir)
	}
	b, err := readSmallFile(path, maxSpecBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSpec, err)
	}
	if err := checkYAMLBooleans(b); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrSpec, path, err)
	}
	var s Spec
	if err := yaml.UnmarshalStrict(b, &s); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrSpec, path, err)
	}
	s.dir, s.file = dir, path
	return &s, nil
}

// Check checks what can be checked without reading other files; the
// manifest Build makes is validated in full.
func (s *Spec) Check() error {
	if err := s.validate(); err != nil {
		where := s.file
		if where == "" {
			where = s.Name + "@" + s.Version
		}
		return fmt.Errorf("%w: %s: %w", ErrSpec, where, err)
	}
	return nil
}

// Dir is the directory the spec's relative paths start from.
func (s *Spec) Dir() string { return s.dir }

// validate checks what can be checked without reading other files; the
// manifest Build makes is validated in full.
func (s *Spec) validate() error {
	if err := checkName(s.Name); err != nil {
		return err
	}
	if err := checkVersion("version", s.Version); err != nil {
		return err
	}
	if s.MinAgentVersion != "" {
		if err := checkVersion("minAgentVersion", s.MinAgentVersion); err != nil {
			return err
		}
	}
	if s.Model == "" {
		return errors.New(`missing field "model"`)
	}
	if s.Lineage != nil {
		if err := s.Lineage.validate(); err != nil {
			return err
		}
	}
	if p := s.Sampling.policy(); p != nil {
		if err := p.validate("sampling"); err != nil {
			return err
		}
	}
	if err := checkSpecs("inputs", s.Inputs); err != nil {
		return err
	}
	if err := checkSpecs("outputs", s.Outputs); err != nil {
		return err
	}
	for i, v := range s.Smoke {
		if v.Name == "" {
			return fmt.Errorf("smoke[%d]: missing field \"name\"", i)
		}
		n := 0
		for _, set := range []bool{v.Inputs != nil, v.InputsFile != "", v.RawFile != ""} {
			if set {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("smoke %q: give exactly one of inputs, inputsFile and rawFile", v.Name)
		}
		if (v.Expected != nil) == (v.ExpectedFile != "") {
			return fmt.Errorf("smoke %q: give exactly one of expected and expectedFile", v.Name)
		}
		if v.Tolerance == nil {
			return fmt.Errorf("smoke %q: missing field \"tolerance\" (use {abs: 0} for exact comparison)", v.Name)
		}
	}
	return nil
}

// path resolves a spec path against the spec's directory.
func (s *Spec) path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(s.dir, p)
}

// smokeVectors reads the smoke vectors' files and decodes their tensors.
func (s *Spec) smokeVectors() ([]SmokeVector, error) {
	out := make([]SmokeVector, 0, len(s.Smoke))
	for _, v := range s.Smoke {
		sv := SmokeVector{Name: v.Name, Tolerance: *v.Tolerance}
		var err error
		switch {
		case v.Inputs != nil:
			sv.Inputs, err = inlineTensors(v.Inputs, "inputs")
		case v.InputsFile != "":
			sv.Inputs, err = s.tensorFile(v.InputsFile)
		default:
			sv.Raw, err = readSmallFile(s.path(v.RawFile), maxSmokeRawBytes)
			if err == nil && len(sv.Raw) == 0 {
				err = fmt.Errorf("rawFile %s is empty", v.RawFile)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("smoke %q: %w", v.Name, err)
		}
		if v.Expected != nil {
			sv.Expected, err = inlineTensors(v.Expected, "expected")
		} else {
			sv.Expected, err = s.tensorFile(v.ExpectedFile)
		}
		if err != nil {
			return nil, fmt.Errorf("smoke %q: %w", v.Name, err)
		}
		out = append(out, sv)
	}
	return out, nil
}

// tensorFile reads a JSON array of tensors.
func (s *Spec) tensorFile(p string) ([]tensor.Tensor, error) {
	b, err := readSmallFile(s.path(p), MaxManifestBytes)
	if err != nil {
		return nil, err
	}
	var raw []json.RawMessage
	if err := decodeStrict(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: want a JSON array of tensors: %v", p, err)
	}
	ts, err := decodeTensors(raw, p)
	if err != nil {
		return nil, err
	}
	return ts, nil
}

// decodeTensors decodes tensors in the Open Inference Protocol's JSON
// form, refusing unknown fields.
func decodeTensors(raw []json.RawMessage, where string) ([]tensor.Tensor, error) {
	out := make([]tensor.Tensor, len(raw))
	for i, r := range raw {
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(r, &keys); err != nil {
			return nil, fmt.Errorf("%s[%d]: a tensor is a JSON object: %v", where, i, err)
		}
		if err := checkKeys(keys); err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", where, i, err)
		}
		if err := json.NewDecoder(bytes.NewReader(r)).Decode(&out[i]); err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", where, i, err)
		}
	}
	return out, nil
}

// inlineTensors decodes tensors written in bundle.yaml.
func inlineTensors(in []InlineTensor, where string) ([]tensor.Tensor, error) {
	raw := make([]json.RawMessage, len(in))
	for i, t := range in {
		b, err := json.Marshal(t)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", where, i, err)
		}
		raw[i] = b
	}
	return decodeTensors(raw, where)
}

// yaml11Booleans are the plain scalars YAML 1.1 (which sigs.k8s.io/yaml
// follows) reads as booleans besides true and false. Decoded into a string
// field they silently become "true" or "false": a tensor named y would be
// renamed "true".
var yaml11Booleans = map[string]bool{
	"y": true, "Y": true, "yes": true, "Yes": true, "YES": true,
	"n": true, "N": true, "no": true, "No": true, "NO": true,
	"on": true, "On": true, "ON": true, "off": true, "Off": true, "OFF": true,
}

// checkYAMLBooleans refuses unquoted YAML 1.1 booleans such as y or on,
// naming the line, so they are quoted instead of silently changed.
func checkYAMLBooleans(b []byte) error {
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(b, &doc); err != nil {
		return err
	}
	var walk func(n *yamlv3.Node) error
	walk = func(n *yamlv3.Node) error {
		if n.Kind == yamlv3.ScalarNode && n.Style == 0 && yaml11Booleans[n.Value] {
			return fmt.Errorf("line %d: unquoted %s reads as a boolean in YAML 1.1; quote it (%q) if it is a name", n.Line, n.Value, n.Value)
		}
		for _, c := range n.Content {
			if err := walk(c); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(&doc)
}
