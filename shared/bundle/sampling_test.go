package bundle_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
)

func TestSamplingSpec(t *testing.T) {
	const head = "name: a\nversion: 1.0.0\nmodel: m.onnx\ninputs: [{name: x, datatype: FP32, shape: [1]}]\noutputs: [{name: \"y\", datatype: FP32, shape: [1]}]\n"
	model := map[string][]byte{"m.onnx": []byte("model")}
	tests := []struct {
		name string
		yaml string
		want *bundle.Sampling // nil: no policy
		msg  string           // an error containing it
	}{
		{name: "absent is off", yaml: head},
		{name: "rate and unit", yaml: head + "sampling: {rate: 0.05, maxBytesPerDay: 1MiB}\n", want: &bundle.Sampling{Rate: 0.05, MaxBytesPerDay: 1 << 20}},
		{name: "bytes as a number", yaml: head + "sampling: {rate: 1, maxBytesPerDay: 4096}\n", want: &bundle.Sampling{Rate: 1, MaxBytesPerDay: 4096}},
		{name: "default budget", yaml: head + "sampling: {rate: 0.5}\n", want: &bundle.Sampling{Rate: 0.5, MaxBytesPerDay: bundle.DefaultSampleBytesPerDay}},
		{name: "rate zero", yaml: head + "sampling: {rate: 0}\n", msg: "sampling.rate 0: must be more than 0 and at most 1"},
		{name: "rate above one", yaml: head + "sampling: {rate: 1.5}\n", msg: "sampling.rate 1.5"},
		{name: "negative rate", yaml: head + "sampling: {rate: -0.1}\n", msg: "sampling.rate -0.1"},
		{name: "budget too small", yaml: head + "sampling: {rate: 0.1, maxBytesPerDay: 100}\n", msg: "sampling.maxBytesPerDay 100: must be 1KiB to 1GiB"},
		{name: "budget too large", yaml: head + "sampling: {rate: 0.1, maxBytesPerDay: 2GiB}\n", msg: "sampling.maxBytesPerDay"},
		{name: "budget not a size", yaml: head + "sampling: {rate: 0.1, maxBytesPerDay: lots}\n", msg: `"lots"`},
		{name: "unknown key", yaml: head + "sampling: {rate: 0.1, every: 3}\n", msg: `unknown field "every"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeSpec(t, tc.yaml, model)
			m, err := bundle.Build(context.Background(), dir, filepath.Join(t.TempDir(), "a.bundle"), bundle.BuildOptions{})
			if tc.msg != "" {
				if !errors.Is(err, bundle.ErrSpec) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("Build: %v\nwant ErrSpec containing %q", err, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.want == nil && m.Sampling != nil:
				t.Fatalf("sampling %+v, want none", *m.Sampling)
			case tc.want != nil && (m.Sampling == nil || *m.Sampling != *tc.want):
				t.Fatalf("sampling %+v, want %+v", m.Sampling, *tc.want)
			}
			// The policy survives the manifest's round trip.
			b, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			back, err := bundle.ParseManifest(b)
			if err != nil {
				t.Fatal(err)
			}
			if (back.Sampling == nil) != (tc.want == nil) || (tc.want != nil && *back.Sampling != *tc.want) {
				t.Errorf("parsed sampling %+v, want %+v", back.Sampling, tc.want)
			}
		})
	}
}

func TestSamplingManifestRefuses(t *testing.T) {
	tests := []struct {
		name string
		s    bundle.Sampling
		msg  string
	}{
		{"rate zero", bundle.Sampling{Rate: 0, MaxBytesPerDay: 1 << 20}, "sampling.rate 0"},
		{"budget zero", bundle.Sampling{Rate: 0.1}, "sampling.maxBytesPerDay 0"},
		{"budget over", bundle.Sampling{Rate: 0.1, MaxBytesPerDay: 2 << 30}, "sampling.maxBytesPerDay"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := testManifest(smallFiles)
			m.Sampling = &tc.s
			err := m.Validate()
			if !errors.Is(err, bundle.ErrManifest) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Validate: %v, want ErrManifest containing %q", err, tc.msg)
			}
		})
	}
}
