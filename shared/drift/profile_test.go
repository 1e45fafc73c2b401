package drift_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/drift/npy"
)

const schemaYAML = `
options:
  bins: 4
  sampleSize: 10
features:
  - name: x
    kind: numerical
  - name: label
    kind: categorical
    test: jensenshannon
    threshold: 0.2
    source: {tensor: output, index: 1}
`

func TestParseSchema(t *testing.T) {
	s, err := drift.ParseSchema([]byte(schemaYAML))
	if err != nil {
		t.Fatal(err)
	}
	if s.Options.Bins != 4 || len(s.Features) != 2 || s.Features[1].Test != drift.TestJensenShannon ||
		*s.Features[1].Threshold != 0.2 || s.Features[1].Source.Tensor != "output" {
		t.Fatalf("parsed %+v", s)
	}
	// JSON is YAML.
	if _, err := drift.ParseSchema([]byte(`{"features":[{"name":"a","kind":"numerical"}]}`)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, in, err string }{
		{"empty", ``, "no features"},
		{"unknown field", "features: [{name: a, kind: numerical, colour: red}]", "colour"},
		{"unknown option", "options: {binz: 3}\nfeatures: [{name: a, kind: numerical}]", "binz"},
		{"bad kind", "features: [{name: a, kind: ordinal}]", `kind "ordinal"`},
		{"duplicate", "features: [{name: a, kind: numerical}, {name: a, kind: numerical}]", "twice"},
		{"test for kind", "features: [{name: a, kind: numerical, test: chisquare}]", "does not apply"},
		{"unknown test", "features: [{name: a, kind: categorical, test: anova}]", "does not apply"},
		{"threshold without test", "features: [{name: a, kind: numerical, threshold: 0.2}]", "needs a test"},
		{"p threshold", "features: [{name: a, kind: numerical, test: ks, threshold: 5}]", "below 1"},
		{"negative threshold", "features: [{name: a, kind: numerical, test: psi, threshold: -1}]", "positive"},
		{"bins", "options: {bins: 1000}\nfeatures: [{name: a, kind: numerical}]", "bins 1000"},
		{"accuracy", "options: {sketchAccuracy: 0.5}\nfeatures: [{name: a, kind: numerical}]", "sketchAccuracy"},
		{"empty name", "features: [{name: '', kind: numerical}]", "name"},
		{"source", "features: [{name: a, kind: numerical, source: {tensor: '', index: 0}}]", "tensor name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := drift.ParseSchema([]byte(tc.in))
			if !errors.Is(err, drift.ErrSchema) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ParseSchema = %v, want ErrSchema mentioning %q", err, tc.err)
			}
		})
	}
}

func TestBuildFromFiles(t *testing.T) {
	s, err := drift.ParseSchema([]byte(schemaYAML))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// x = 0..19 with one missing value; label from numeric codes.
	var csv strings.Builder
	csv.WriteString("id,x,label\n")
	xs := make([]float64, 0, 21)
	codes := make([]float64, 0, 21)
	for i := range 20 {
		csv.WriteString(strings.Join([]string{"r", ftoa(float64(i)), []string{"1", "2", "2", "3"}[i%4]}, ",") + "\n")
		xs = append(xs, float64(i))
		codes = append(codes, []float64{1, 2, 2, 3}[i%4])
	}
	csv.WriteString("r,NA,\n")
	xs = append(xs, math.NaN())
	codes = append(codes, math.NaN())
	csvPath := filepath.Join(dir, "ref.csv")
	if err := os.WriteFile(csvPath, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	arr := &npy.Array{Rows: len(xs), Cols: 2}
	for i := range xs {
		arr.Data = append(arr.Data, xs[i], codes[i])
	}
	var nb bytes.Buffer
	if err := npy.Write(&nb, arr); err != nil {
		t.Fatal(err)
	}
	npyPath := filepath.Join(dir, "ref.npy")
	if err := os.WriteFile(npyPath, nb.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	var ids []string
	for _, path := range []string{csvPath, npyPath} {
		d, err := drift.ReadFile(path, s)
		if err != nil {
			t.Fatal(err)
		}
		if path == csvPath && !slices.Equal(d.Ignored, []string{"id"}) {
			t.Errorf("ignored columns %v, want [id]", d.Ignored)
		}
		p, err := drift.Build(s, d)
		if err != nil {
			t.Fatal(err)
		}
		x := p.Features[0]
		if x.Count != 20 || x.Missing != 1 || x.Numerical.Mean != 9.5 || x.Numerical.Min != 0 || x.Numerical.Max != 19 {
			t.Errorf("x: %+v %+v", x, *x.Numerical)
		}
		// Quartile edges (numpy linear interpolation) and counts.
		if !slices.Equal(x.Numerical.Edges, []float64{0, 4.75, 9.5, 14.25, 19}) || !slices.Equal(x.Numerical.Counts, []int64{0, 5, 5, 5, 5, 0}) {
			t.Errorf("edges %v counts %v", x.Numerical.Edges, x.Numerical.Counts)
		}
		// 20 values, sample size 10: order statistics at ranks (i+½)·2.
		if !slices.Equal(x.Numerical.Sample, []float64{1, 3, 5, 7, 9, 11, 13, 15, 17, 19}) || x.Numerical.SampleKS <= 0 || x.Numerical.SampleWasserstein <= 0 {
			t.Errorf("sample %v (K-S %g, W %g)", x.Numerical.Sample, x.Numerical.SampleKS, x.Numerical.SampleWasserstein)
		}
		l := p.Features[1]
		if l.Count != 20 || l.Missing != 1 || !slices.Equal(l.Categorical.Categories, []string{"2", "1", "3"}) || !slices.Equal(l.Categorical.Counts, []int64{10, 5, 5, 0}) {
			t.Errorf("label: %+v %+v", l, *l.Categorical)
		}
		ids = append(ids, p.ID())

		// Write, read back: same profile, same ID.
		out := filepath.Join(dir, "profile.json")
		if err := p.WriteFile(out); err != nil {
			t.Fatal(err)
		}
		q, err := drift.LoadProfile(out)
		if err != nil {
			t.Fatal(err)
		}
		if q.ID() != p.ID() || len(p.ID()) != 32 {
			t.Errorf("ID after a round trip %s, before %s", q.ID(), p.ID())
		}
	}
	if ids[0] != ids[1] {
		t.Errorf("CSV and NPY of the same data give profiles %s and %s", ids[0], ids[1])
	}
}

func ftoa(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func TestReadErrors(t *testing.T) {
	s := twoFeatures()
	for _, tc := range []struct{ name, csv, err string }{
		{"empty", "", "empty"},
		{"no rows", "x,c\n", "no rows"},
		{"missing column", "x,d\n1,a\n", `no column "c"`},
		{"duplicate column", "x,c,x\n1,a,2\n", "twice"},
		{"not a number", "x,c\n1,a\nabc,b\n", `line 3, column "x": "abc" is not a number`},
		{"ragged", "x,c\n1,a\n2\n", "wrong number of fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := drift.ReadCSV(strings.NewReader(tc.csv), s)
			if !errors.Is(err, drift.ErrData) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ReadCSV = %v, want ErrData mentioning %q", err, tc.err)
			}
		})
	}
	var b bytes.Buffer
	npy.Write(&b, &npy.Array{Rows: 1, Cols: 3, Data: []float64{1, 2, 3}})
	if _, err := drift.ReadNPY(&b, s); !errors.Is(err, drift.ErrData) || !strings.Contains(err.Error(), "3 columns") {
		t.Errorf("ReadNPY with 3 columns for 2 features = %v", err)
	}
	if _, err := drift.ReadFile("x.parquet", s); err == nil {
		t.Error("ReadFile accepted a .parquet")
	}
	// A feature with no value at all cannot be profiled.
	d := data(t, map[string]any{"x": []float64{math.NaN()}, "c": []string{"a"}})
	if _, err := drift.Build(s, d); !errors.Is(err, drift.ErrData) || !strings.Contains(err.Error(), "no values") {
		t.Errorf("Build with an all-missing feature = %v", err)
	}
}

func TestParseProfileErrors(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	p := mustBuild(t, twoFeatures(), map[string]any{"x": normals(r, 50, 0, 1), "c": labels(r, 50, refCats, refWeights)})
	good, err := p.MarshalIndent()
	if err != nil {
		t.Fatal(err)
	}
	if q, err := drift.ParseProfile(good); err != nil || q.ID() != p.ID() {
		t.Fatalf("ParseProfile(MarshalIndent) = %v, %v", q, err)
	}
	for _, tc := range []struct{ name, old, new, err string }{
		{"version", `"version": 1`, `"version": 2`, "version 2"},
		{"unknown field", `"version": 1`, `"version": 1, "extra": 0`, "extra"},
		{"options", `"bins": 10`, `"bins": 0`, "options must be complete"},
		{"count", `"count": 50`, `"count": 49`, "counts"},
		{"kind", `"kind": "categorical"`, `"kind": "numerical"`, "numerical section"},
		{"other category", `"categories": ["a"`, `"categories": ["__other__"`, "reserved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Replace(good, []byte(tc.old), []byte(tc.new), 1)
			if bytes.Equal(b, good) {
				t.Fatalf("%q not in the profile:\n%.600s", tc.old, good)
			}
			_, err := drift.ParseProfile(b)
			if !errors.Is(err, drift.ErrProfile) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ParseProfile = %v, want ErrProfile mentioning %q", err, tc.err)
			}
		})
	}
}

func FuzzParseProfile(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	p := mustBuild(f, twoFeatures(), map[string]any{"x": normals(r, 50, 0, 1), "c": labels(r, 50, refCats, refWeights)})
	b, _ := p.MarshalIndent()
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := drift.ParseProfile(b)
		if err != nil {
			if !errors.Is(err, drift.ErrProfile) {
				t.Fatalf("error %v does not wrap ErrProfile", err)
			}
			return
		}
		// A valid profile works: summaries observe, encode and compare.
		s := drift.NewSummary(p)
		x := make([]float64, len(p.Features))
		for i := range 40 {
			for j := range x {
				x[j] = float64(i % 7)
			}
			if err := s.Observe(x); err != nil {
				t.Fatal(err)
			}
		}
		enc, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		dec, err := drift.DecodeSummary(enc)
		if err != nil {
			t.Fatalf("decoding a fresh summary: %v", err)
		}
		rep, err := drift.Compare(p, dec, drift.CompareOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := json.Marshal(rep); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseSchema(f *testing.F) {
	f.Add([]byte(schemaYAML))
	f.Add([]byte(`{"features":[{"name":"a","kind":"numerical"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := drift.ParseSchema(b)
		if err != nil {
			if !errors.Is(err, drift.ErrSchema) {
				t.Fatalf("error %v does not wrap ErrSchema", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("parsed schema does not validate: %v", err)
		}
	})
}
