package drift

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"unicode"

	"sigs.k8s.io/yaml"
)

// Sentinel errors; every error this package returns about bad input wraps
// one of them.
var (
	// ErrSchema: the schema is invalid.
	ErrSchema = errors.New("drift: invalid schema")
	// ErrData: the reference data cannot be read or does not fit the schema.
	ErrData = errors.New("drift: invalid data")
	// ErrProfile: the profile is invalid.
	ErrProfile = errors.New("drift: invalid profile")
	// ErrSummary: an encoded summary is invalid.
	ErrSummary = errors.New("drift: invalid summary")
	// ErrMismatch: a summary does not belong to the profile or to the
	// summary it is merged with.
	ErrMismatch = errors.New("drift: summary mismatch")
	// ErrInput: values passed to Observe do not fit the profile.
	ErrInput = errors.New("drift: invalid observation")
)

// Kind is how a feature's values are compared.
type Kind string

// Feature kinds.
const (
	Numerical   Kind = "numerical"
	Categorical Kind = "categorical"
)

// Test names a statistical test.
type Test string

// The tests. The empty Test picks the default (see DefaultTest).
const (
	// TestKS: two-sample Kolmogorov-Smirnov; drift when p < threshold.
	TestKS Test = "ks"
	// TestWasserstein: Wasserstein distance divided by the reference's
	// standard deviation (at least 0.001); drift when ≥ threshold.
	TestWasserstein Test = "wasserstein"
	// TestPSI: population stability index over the profile's bins; drift
	// when ≥ threshold.
	TestPSI Test = "psi"
	// TestJensenShannon: Jensen-Shannon distance (natural log) over the
	// profile's bins or categories; drift when ≥ threshold.
	TestJensenShannon Test = "jensenshannon"
	// TestChiSquare: Pearson's chi-squared against the reference's
	// category proportions; drift when p < threshold.
	TestChiSquare Test = "chisquare"
)

// DefaultThreshold is the threshold of each test when the schema gives
// none (Evidently's defaults).
func DefaultThreshold(t Test) float64 {
	switch t {
	case TestKS, TestChiSquare:
		return 0.05
	}
	return 0.1
}

// PValueTest reports whether t's threshold applies to a p-value (drift
// below it) rather than to a distance (drift at or above it).
func PValueTest(t Test) bool { return t == TestKS || t == TestChiSquare }

// SmallReference is the reference size up to which the default tests are
// the hypothesis tests (K-S, chi-squared); above it they are the
// distances (Wasserstein, Jensen-Shannon), as in Evidently.
const SmallReference = 1000

// DefaultTest is the test used for a feature of kind k whose reference
// holds n values.
func DefaultTest(k Kind, n int64) Test {
	switch {
	case k == Categorical && n <= SmallReference:
		return TestChiSquare
	case k == Categorical:
		return TestJensenShannon
	case n <= SmallReference:
		return TestKS
	}
	return TestWasserstein
}

func validTest(k Kind, t Test) bool {
	switch t {
	case "", TestPSI, TestJensenShannon:
		return true
	case TestKS, TestWasserstein:
		return k == Numerical
	case TestChiSquare:
		return k == Categorical
	}
	return false
}

// Options are the profile-wide settings. Zero fields take the defaults
// (DefaultOptions).
type Options struct {
	// Bins is the number of quantile bins of numerical features' histograms.
	Bins int `json:"bins,omitempty"`
	// SampleSize bounds the reference sample kept for K-S and Wasserstein.
	SampleSize int `json:"sampleSize,omitempty"`
	// SketchAccuracy is the relative accuracy α of the window quantile
	// sketches, in units of the reference standard deviation.
	SketchAccuracy float64 `json:"sketchAccuracy,omitempty"`
	// SketchBins bounds each sketch's bins per sign.
	SketchBins int `json:"sketchBins,omitempty"`
	// MaxCategories bounds the categories the profile keeps per feature
	// (the most frequent; the rest count as OtherCategory).
	MaxCategories int `json:"maxCategories,omitempty"`
	// MinSamples is the fewest values a window (and the reference) needs
	// for a feature to be tested.
	MinSamples int `json:"minSamples,omitempty"`
	// DriftShare is the share of drifted features at which the whole
	// window counts as drifted.
	DriftShare float64 `json:"driftShare,omitempty"`
}

// DefaultOptions are the defaults of Options' fields.
var DefaultOptions = Options{
	Bins:           10,
	SampleSize:     2000,
	SketchAccuracy: 0.02,
	SketchBins:     256,
	MaxCategories:  64,
	MinSamples:     30,
	DriftShare:     0.5,
}

// withDefaults fills zero fields from DefaultOptions.
func (o Options) withDefaults() Options {
	d := DefaultOptions
	return Options{
		Bins:           cmp.Or(o.Bins, d.Bins),
		SampleSize:     cmp.Or(o.SampleSize, d.SampleSize),
		SketchAccuracy: cmp.Or(o.SketchAccuracy, d.SketchAccuracy),
		SketchBins:     cmp.Or(o.SketchBins, d.SketchBins),
		MaxCategories:  cmp.Or(o.MaxCategories, d.MaxCategories),
		MinSamples:     cmp.Or(o.MinSamples, d.MinSamples),
		DriftShare:     cmp.Or(o.DriftShare, d.DriftShare),
	}
}

// validate checks resolved options (no zero fields).
func (o Options) validate() error {
	switch {
	case o.Bins < 1 || o.Bins > 256:
		return fmt.Errorf("bins %d out of range [1, 256]", o.Bins)
	case o.SampleSize < 10 || o.SampleSize > 100000:
		return fmt.Errorf("sampleSize %d out of range [10, 100000]", o.SampleSize)
	case !(o.SketchAccuracy >= 0.001 && o.SketchAccuracy <= 0.2):
		return fmt.Errorf("sketchAccuracy %g out of range [0.001, 0.2]", o.SketchAccuracy)
	case o.SketchBins < 16 || o.SketchBins > 4096:
		return fmt.Errorf("sketchBins %d out of range [16, 4096]", o.SketchBins)
	case o.MaxCategories < 1 || o.MaxCategories > 10000:
		return fmt.Errorf("maxCategories %d out of range [1, 10000]", o.MaxCategories)
	case o.MinSamples < 1:
		return fmt.Errorf("minSamples %d must be at least 1", o.MinSamples)
	case !(o.DriftShare > 0 && o.DriftShare <= 1):
		return fmt.Errorf("driftShare %g out of range (0, 1]", o.DriftShare)
	}
	return nil
}

// Source says where the agent finds a feature's value among a
// prediction's tensors (the pre-processor's extra outputs and the model's
// outputs): column Index of the tensor named Tensor, whose last dimension
// holds the columns and whose other dimensions are rows (one per
// prediction of a batch).
type Source struct {
	Tensor string `json:"tensor"`
	Index  int    `json:"index"`
}

// FeatureSchema describes one feature.
type FeatureSchema struct {
	// Name is the feature's column name in the reference data.
	Name string `json:"name"`
	// Kind is numerical or categorical.
	Kind Kind `json:"kind"`
	// Test overrides the default test; Threshold overrides its default
	// threshold.
	Test      Test     `json:"test,omitempty"`
	Threshold *float64 `json:"threshold,omitempty"`
	// Source maps the feature to a prediction's tensors, for the agent.
	Source *Source `json:"source,omitempty"`
}

// Schema says which features a profile describes and how they are tested.
type Schema struct {
	Options  Options         `json:"options,omitzero"`
	Features []FeatureSchema `json:"features"`
}

// OtherCategory is the bucket of categories a profile does not list.
const OtherCategory = "__other__"

// maxFeatures bounds the features of a schema, profile or summary.
const maxFeatures = 4096

// ParseSchema parses a schema in YAML or JSON (JSON is YAML). Unknown
// fields and duplicate keys are errors.
func ParseSchema(b []byte) (*Schema, error) {
	var s Schema
	if err := yaml.UnmarshalStrict(b, &s); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSchema, err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// LoadSchema reads and parses a schema file.
func LoadSchema(path string) (*Schema, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("drift: reading schema: %w", err)
	}
	s, err := ParseSchema(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Validate checks the schema.
func (s *Schema) Validate() error {
	if err := s.Options.withDefaults().validate(); err != nil {
		return fmt.Errorf("%w: options: %v", ErrSchema, err)
	}
	if len(s.Features) == 0 {
		return fmt.Errorf("%w: no features", ErrSchema)
	}
	if len(s.Features) > maxFeatures {
		return fmt.Errorf("%w: %d features (at most %d)", ErrSchema, len(s.Features), maxFeatures)
	}
	seen := map[string]bool{}
	for i, f := range s.Features {
		if err := f.validate(); err != nil {
			return fmt.Errorf("%w: feature %d: %v", ErrSchema, i, err)
		}
		if seen[f.Name] {
			return fmt.Errorf("%w: feature %q listed twice", ErrSchema, f.Name)
		}
		seen[f.Name] = true
	}
	return nil
}

func (f *FeatureSchema) validate() error {
	if err := validName(f.Name); err != nil {
		return err
	}
	if f.Kind != Numerical && f.Kind != Categorical {
		return fmt.Errorf("%q: kind %q (want numerical or categorical)", f.Name, f.Kind)
	}
	if !validTest(f.Kind, f.Test) {
		return fmt.Errorf("%q: test %q does not apply to a %s feature (numerical: ks, wasserstein, psi, jensenshannon; categorical: chisquare, jensenshannon, psi)", f.Name, f.Test, f.Kind)
	}
	if f.Threshold != nil {
		t := *f.Threshold
		if math.IsNaN(t) || math.IsInf(t, 0) || t <= 0 {
			return fmt.Errorf("%q: threshold %g must be a positive number", f.Name, t)
		}
		if PValueTest(f.Test) && t >= 1 {
			return fmt.Errorf("%q: threshold %g of a p-value test must be below 1", f.Name, t)
		}
		if f.Test == "" {
			return fmt.Errorf("%q: a threshold needs a test (the default test depends on the reference size)", f.Name)
		}
	}
	if f.Source != nil {
		if f.Source.Tensor == "" || len(f.Source.Tensor) > 256 {
			return fmt.Errorf("%q: source needs a tensor name", f.Name)
		}
		if f.Source.Index < 0 || f.Source.Index > 1<<20 {
			return fmt.Errorf("%q: source index %d out of range", f.Name, f.Source.Index)
		}
	}
	return nil
}

func validName(name string) error {
	if name == "" || len(name) > 128 {
		return fmt.Errorf("name %q must have 1 to 128 bytes", name)
	}
	if strings.TrimSpace(name) != name {
		return fmt.Errorf("name %q has leading or trailing space", name)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("name %q has a non-printable character", name)
		}
	}
	return nil
}
