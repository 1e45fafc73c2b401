package bundle_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

func TestParseManifestRefuses(t *testing.T) {
	valid := func() *bundle.Manifest {
		m := testManifest(smallFiles)
		m.Smoke = []bundle.SmokeVector{{
			Name:      "one",
			Inputs:    []tensor.Tensor{{Name: "x", Datatype: tensor.FP32, Shape: []int64{1, 2}, Data: []float32{1, 2}}},
			Expected:  []tensor.Tensor{{Name: "y", Datatype: tensor.FP32, Shape: []int64{1, 1}, Data: []float32{3}}},
			Tolerance: bundle.Tolerance{Abs: 1e-3},
		}}
		return m
	}
	encode := func(m *bundle.Manifest) []byte {
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := bundle.ParseManifest(encode(valid())); err != nil {
		t.Fatalf("valid manifest: %v", err)
	}
	tests := []struct {
		name string
		edit func(m *bundle.Manifest)
		raw  func(b []byte) []byte
		want error
		msg  string
	}{
		{name: "trailing data", raw: func(b []byte) []byte { return append(b, []byte(`{}`)...) }, want: bundle.ErrManifest, msg: "after top-level value"},
		{name: "unknown tensor field", raw: func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"datatype": "FP32",`+"\n"+`          "shape": [`), []byte(`"datatype": "FP32", "scale": 2,`+"\n"+`          "shape": [`), 1)
		}, want: bundle.ErrManifest, msg: `unknown field "scale" in a tensor`},
		{name: "missing schema version", raw: func(b []byte) []byte { return bytes.Replace(b, []byte(`"schemaVersion": 1,`), nil, 1) }, want: bundle.ErrManifest, msg: `missing field "schemaVersion"`},
		{name: "duplicate file", edit: func(m *bundle.Manifest) { m.Files = append(m.Files, m.Files[0]) }, want: bundle.ErrManifest, msg: "listed twice"},
		{name: "no files", edit: func(m *bundle.Manifest) { m.Files = nil }, want: bundle.ErrManifest, msg: `missing field "files"`},
		{name: "negative size", edit: func(m *bundle.Manifest) { m.Files[0].Size = -1 }, want: bundle.ErrManifest, msg: "negative size"},
		{name: "leading v", edit: func(m *bundle.Manifest) { m.Version = "v1.0.0" }, want: bundle.ErrManifest, msg: "no leading v"},
		{name: "bad minAgentVersion", edit: func(m *bundle.Manifest) { m.MinAgentVersion = "1.0" }, want: bundle.ErrManifest, msg: "minAgentVersion"},
		{name: "bad created", edit: func(m *bundle.Manifest) { m.Created = "yesterday" }, want: bundle.ErrManifest, msg: "RFC 3339"},
		{name: "manifest.json as a file", edit: func(m *bundle.Manifest) { m.Files[0].Path = "manifest.json" }, want: bundle.ErrUnsafePath, msg: "reserved"},
		{name: "pre not listed", edit: func(m *bundle.Manifest) { m.Runtime.Pre = &bundle.Processor{Module: "pre.wasm"} }, want: bundle.ErrManifest, msg: `runtime.pre.module "pre.wasm" is not in files`},
		{name: "profile not listed", edit: func(m *bundle.Manifest) { m.Profile = "p.json" }, want: bundle.ErrManifest, msg: `profile "p.json" is not in files`},
		{name: "bad provider", edit: func(m *bundle.Manifest) { m.Runtime.ExecutionProviders = []string{"CUDA"} }, want: bundle.ErrManifest, msg: `"CUDA" must match`},
		{name: "duplicate provider", edit: func(m *bundle.Manifest) { m.Runtime.ExecutionProviders = []string{"cpu", "cpu"} }, want: bundle.ErrManifest, msg: "listed twice"},
		{name: "duplicate input", edit: func(m *bundle.Manifest) { m.Runtime.Inputs = append(m.Runtime.Inputs, m.Runtime.Inputs[0]) }, want: bundle.ErrManifest, msg: `tensor "x" listed twice`},
		{name: "smoke both kinds", edit: func(m *bundle.Manifest) { m.Smoke[0].Raw = []byte{1} }, want: bundle.ErrManifest, msg: "both inputs and raw"},
		{name: "smoke neither", edit: func(m *bundle.Manifest) { m.Smoke[0].Inputs = nil }, want: bundle.ErrManifest, msg: "neither inputs nor raw"},
		{name: "smoke no expected", edit: func(m *bundle.Manifest) { m.Smoke[0].Expected = nil }, want: bundle.ErrManifest, msg: `missing field "expected"`},
		{name: "smoke duplicate name", edit: func(m *bundle.Manifest) { m.Smoke = append(m.Smoke, m.Smoke[0]) }, want: bundle.ErrManifest, msg: `name "one" used twice`},
		{name: "smoke non-finite input", edit: func(m *bundle.Manifest) {
			m.Smoke[0].Inputs[0].Data = []float32{1, float32(math.Inf(-1))}
		}, msg: "non-finite"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := valid()
			if tc.edit != nil {
				tc.edit(m)
			}
			if tc.want == nil {
				// Non-finite values cannot even be written as JSON.
				if _, err := m.Marshal(); err == nil || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("Marshal: %v, want %q", err, tc.msg)
				}
				if err := m.Validate(); err == nil || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("Validate: %v, want %q", err, tc.msg)
				}
				return
			}
			b, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if tc.raw != nil {
				b = tc.raw(b)
			}
			_, err = bundle.ParseManifest(b)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("ParseManifest: %v\nwant %v containing %q", err, tc.want, tc.msg)
			}
			if !errors.Is(err, bundle.ErrManifest) {
				t.Errorf("%v does not wrap ErrManifest", err)
			}
		})
	}
}
