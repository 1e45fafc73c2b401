package bundle

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/edgefleet/edgefleet/shared/tensor"
)

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	// semverRE is the regular expression semver.org suggests, without a
	// leading "v".
	semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
		`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?` +
		`(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
	fileRE     = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)
	providerRE = regexp.MustCompile(`^[a-z0-9_]+$`)
)

// Lengths beyond which names are refused.
const (
	maxNameLen    = 64
	maxVersionLen = 64
	maxPathLen    = 100 // fits a ustar header name without extensions
)

// ID is the bundle's identity, "name@version".
func (m *Manifest) ID() string { return m.Name + "@" + m.Version }

// FileName is the conventional file name of the bundle, NAME-VERSION.bundle.
func (m *Manifest) FileName() string { return m.Name + "-" + m.Version + ".bundle" }

// File returns the manifest's entry for path, if it lists one.
func (m *Manifest) File(path string) (File, bool) {
	for _, f := range m.Files {
		if f.Path == path {
			return f, true
		}
	}
	return File{}, false
}

// Marshal encodes m as the manifest.json a bundle holds: indented JSON
// with a trailing newline. The same manifest always gives the same bytes.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// ParseManifest decodes and validates manifest.json strictly: unknown
// fields (also inside tensors), trailing data, an unknown schema version,
// missing fields and unsafe paths are all refused with an error wrapping
// ErrManifest.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: %w: manifest is %d bytes, the limit is %d", ErrManifest, ErrLimit, len(b), MaxManifestBytes)
	}
	// Read the schema version first, so that a manifest from a newer
	// schema is refused for what it is rather than for its new fields.
	var head struct {
		SchemaVersion *int `json:"schemaVersion"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("%w: not valid JSON: %v", ErrManifest, err)
	}
	if head.SchemaVersion == nil {
		return nil, fmt.Errorf("%w: missing field \"schemaVersion\"", ErrManifest)
	}
	if *head.SchemaVersion != SchemaVersion {
		return nil, fmt.Errorf("%w: unsupported schemaVersion %d (this build reads %d)", ErrManifest, *head.SchemaVersion, SchemaVersion)
	}
	var m Manifest
	if err := decodeStrict(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if err := checkManifestTensorKeys(b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// fields and trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// tensorKeys are the fields of a tensor in the Open Inference Protocol's
// JSON form. tensor.Tensor's decoder ignores others; manifests and specs
// refuse them.
var tensorKeys = map[string]bool{"name": true, "datatype": true, "shape": true, "data": true}

func checkTensorKeys(raw []map[string]json.RawMessage, where string) error {
	for i, t := range raw {
		if err := checkKeys(t); err != nil {
			return fmt.Errorf("%s[%d]: %w", where, i, err)
		}
	}
	return nil
}

func checkKeys(t map[string]json.RawMessage) error {
	for _, k := range slices.Sorted(maps.Keys(t)) {
		if !tensorKeys[k] {
			return fmt.Errorf("unknown field %q in a tensor", k)
		}
	}
	return nil
}

// checkManifestTensorKeys refuses unknown fields inside smoke tensors.
func checkManifestTensorKeys(b []byte) error {
	var shadow struct {
		Smoke []struct {
			Inputs   []map[string]json.RawMessage `json:"inputs"`
			Expected []map[string]json.RawMessage `json:"expected"`
		} `json:"smoke"`
	}
	if err := json.Unmarshal(b, &shadow); err != nil {
		return err
	}
	for i, v := range shadow.Smoke {
		if err := checkTensorKeys(v.Inputs, fmt.Sprintf("smoke[%d].inputs", i)); err != nil {
			return err
		}
		if err := checkTensorKeys(v.Expected, fmt.Sprintf("smoke[%d].expected", i)); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks that m is complete and consistent: a known schema
// version, a valid name and semantic version, safe unique file paths with
// sha256 digests, every file the runtime names listed, tensor specs that
// make sense and smoke vectors that fit them. Errors wrap ErrManifest.
func (m *Manifest) Validate() error {
	if err := m.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrManifest, err)
	}
	return nil
}

func (m *Manifest) validate() error {
	switch {
	case m.SchemaVersion == 0:
		return errors.New(`missing field "schemaVersion"`)
	case m.SchemaVersion != SchemaVersion:
		return fmt.Errorf("unsupported schemaVersion %d (this build reads %d)", m.SchemaVersion, SchemaVersion)
	}
	if err := checkName(m.Name); err != nil {
		return err
	}
	if err := checkVersion("version", m.Version); err != nil {
		return err
	}
	if m.MinAgentVersion != "" {
		if err := checkVersion("minAgentVersion", m.MinAgentVersion); err != nil {
			return err
		}
	}
	if m.Created != "" {
		if _, err := time.Parse(time.RFC3339, m.Created); err != nil {
			return fmt.Errorf("created %q is not an RFC 3339 time", m.Created)
		}
	}
	if m.Lineage != nil {
		if err := m.Lineage.validate(); err != nil {
			return err
		}
	}
	if m.Sampling != nil {
		if err := m.Sampling.validate("sampling"); err != nil {
			return err
		}
	}
	if len(m.Files) == 0 {
		return errors.New(`missing field "files"`)
	}
	seen := make(map[string]bool, len(m.Files))
	for i, f := range m.Files {
		if err := CheckPath(f.Path); err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
		if seen[f.Path] {
			return fmt.Errorf("files[%d]: %q listed twice", i, f.Path)
		}
		seen[f.Path] = true
		if len(f.SHA256) != 64 || strings.ToLower(f.SHA256) != f.SHA256 {
			return fmt.Errorf("files[%d] %q: sha256 must be 64 lowercase hex digits, got %q", i, f.Path, f.SHA256)
		}
		if _, err := hex.DecodeString(f.SHA256); err != nil {
			return fmt.Errorf("files[%d] %q: sha256 %q is not hex", i, f.Path, f.SHA256)
		}
		if f.Size < 0 {
			return fmt.Errorf("files[%d] %q: negative size %d", i, f.Path, f.Size)
		}
	}
	listed := func(field, path string) error {
		if path == "" {
			return fmt.Errorf("missing field %q", field)
		}
		if !seen[path] {
			return fmt.Errorf("%s %q is not in files", field, path)
		}
		return nil
	}
	if err := m.Runtime.validate(listed); err != nil {
		return err
	}
	if m.Profile != "" {
		if err := listed("profile", m.Profile); err != nil {
			return err
		}
	}
	names := make(map[string]bool, len(m.Smoke))
	for i, v := range m.Smoke {
		if v.Name == "" {
			return fmt.Errorf("smoke[%d]: missing field \"name\"", i)
		}
		if names[v.Name] {
			return fmt.Errorf("smoke[%d]: name %q used twice", i, v.Name)
		}
		names[v.Name] = true
		if err := v.validate(&m.Runtime); err != nil {
			return fmt.Errorf("smoke %q: %w", v.Name, err)
		}
	}
	return nil
}

func checkName(name string) error {
	switch {
	case name == "":
		return errors.New(`missing field "name"`)
	case len(name) > maxNameLen:
		return fmt.Errorf("name %q is longer than %d characters", name, maxNameLen)
	case !nameRE.MatchString(name):
		return fmt.Errorf("name %q must match %s", name, nameRE)
	}
	return nil
}

func checkVersion(field, v string) error {
	switch {
	case v == "":
		return fmt.Errorf("missing field %q", field)
	case len(v) > maxVersionLen:
		return fmt.Errorf("%s %q is longer than %d characters", field, v, maxVersionLen)
	case !semverRE.MatchString(v):
		return fmt.Errorf("%s %q is not a semantic version MAJOR.MINOR.PATCH (no leading v)", field, v)
	}
	return nil
}

// CheckPath reports whether p may name a file in a bundle: one path
// component of letters, digits, '.', '_' and '-', not starting with '.' or
// '-', at most 100 bytes, and not manifest.json. Errors wrap ErrUnsafePath
// and say what was wrong: absolute, "..", nested, or a bad character.
func CheckPath(p string) error {
	bad := func(why string) error { return fmt.Errorf("%w: path %q: %s", ErrUnsafePath, p, why) }
	switch {
	case p == "":
		return bad("empty")
	case strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`) || (len(p) > 1 && p[1] == ':'):
		return bad("absolute path")
	case p == ".." || strings.HasPrefix(p, "../") || strings.HasSuffix(p, "/..") || strings.Contains(p, "/../") ||
		strings.Contains(p, `..\`):
		return bad(`".." escapes the bundle`)
	case strings.ContainsAny(p, `/\`):
		return bad("nested paths are not allowed (bundles are flat)")
	case p == ".":
		return bad(`"." is not a file`)
	case len(p) > maxPathLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxPathLen))
	case !fileRE.MatchString(p):
		return bad(fmt.Sprintf("must match %s", fileRE))
	case p == ManifestName:
		return bad("reserved for the manifest")
	}
	return nil
}

func (r *Runtime) validate(listed func(field, path string) error) error {
	if err := listed("runtime.model", r.Model); err != nil {
		return err
	}
	if err := checkSpecs("runtime.inputs", r.Inputs); err != nil {
		return err
	}
	if err := checkSpecs("runtime.outputs", r.Outputs); err != nil {
		return err
	}
	for _, p := range []struct {
		field string
		proc  *Processor
	}{{"runtime.pre.module", r.Pre}, {"runtime.post.module", r.Post}} {
		if p.proc == nil {
			continue
		}
		if err := listed(p.field, p.proc.Module); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for i, ep := range r.ExecutionProviders {
		if !providerRE.MatchString(ep) {
			return fmt.Errorf("runtime.executionProviders[%d] %q must match %s", i, ep, providerRE)
		}
		if seen[ep] {
			return fmt.Errorf("runtime.executionProviders: %q listed twice", ep)
		}
		seen[ep] = true
	}
	return nil
}

func checkSpecs(field string, specs []tensor.Spec) error {
	if len(specs) == 0 {
		return fmt.Errorf("missing field %q", field)
	}
	seen := make(map[string]bool, len(specs))
	for i, s := range specs {
		switch {
		case s.Name == "":
			return fmt.Errorf("%s[%d]: missing field \"name\"", field, i)
		case seen[s.Name]:
			return fmt.Errorf("%s: tensor %q listed twice", field, s.Name)
		case !s.Datatype.Valid():
			return fmt.Errorf("%s %q: unknown datatype %q (want one of %v)", field, s.Name, s.Datatype, tensor.Datatypes)
		case s.Shape == nil:
			return fmt.Errorf("%s %q: missing field \"shape\" (use [] for a scalar)", field, s.Name)
		}
		seen[s.Name] = true
		for j, d := range s.Shape {
			if d == 0 || d < -1 {
				return fmt.Errorf("%s %q: dimension %d is %d; want a positive size or -1 (dynamic)", field, s.Name, j, d)
			}
		}
	}
	return nil
}

func findSpec(specs []tensor.Spec, name string) (tensor.Spec, bool) {
	for _, s := range specs {
		if s.Name == name {
			return s, true
		}
	}
	return tensor.Spec{}, false
}

// validate checks a smoke vector against the runtime. The rule (see
// docs/bundle-format.md): a vector with inputs feeds those tensors to the
// model directly, bypassing any pre-processor; a vector with raw feeds the
// bytes to the pre-processor. Either way the post-processor, if any, runs,
// and expected lists some or all of the final outputs.
func (v *SmokeVector) validate(r *Runtime) error {
	switch {
	case v.Raw != nil && len(v.Raw) == 0:
		return errors.New("raw input is empty")
	case len(v.Inputs) > 0 && len(v.Raw) > 0:
		return errors.New("has both inputs and raw; a vector is one or the other")
	case len(v.Inputs) == 0 && len(v.Raw) == 0:
		return errors.New("has neither inputs nor raw")
	case len(v.Raw) > 0 && r.Pre == nil:
		return errors.New("raw input needs a pre-processor (runtime.pre)")
	}
	if len(v.Inputs) > 0 {
		seen := make(map[string]bool, len(v.Inputs))
		for _, t := range v.Inputs {
			s, ok := findSpec(r.Inputs, t.Name)
			if !ok {
				return fmt.Errorf("input %q is not a model input", t.Name)
			}
			if seen[t.Name] {
				return fmt.Errorf("input %q given twice", t.Name)
			}
			seen[t.Name] = true
			if err := s.Matches(t, r.AllowNonFinite); err != nil {
				return fmt.Errorf("input: %w", err)
			}
		}
		for _, s := range r.Inputs {
			if !seen[s.Name] {
				return fmt.Errorf("model input %q is missing", s.Name)
			}
		}
	}
	if len(v.Expected) == 0 {
		return errors.New(`missing field "expected" (at least one output)`)
	}
	seen := make(map[string]bool, len(v.Expected))
	for _, t := range v.Expected {
		if t.Name == "" {
			return errors.New("expected output without a name")
		}
		if seen[t.Name] {
			return fmt.Errorf("expected output %q given twice", t.Name)
		}
		seen[t.Name] = true
		if err := t.Check(); err != nil {
			return fmt.Errorf("expected: %w", err)
		}
		if r.Post != nil {
			continue // the post-processor's outputs are not declared
		}
		s, ok := findSpec(r.Outputs, t.Name)
		if !ok {
			return fmt.Errorf("expected output %q is not a model output", t.Name)
		}
		if err := s.Matches(t, true); err != nil {
			return fmt.Errorf("expected: %w", err)
		}
	}
	tol := v.Tolerance
	if tol.Abs < 0 || tol.Rel < 0 || math.IsNaN(tol.Abs) || math.IsNaN(tol.Rel) || math.IsInf(tol.Abs, 0) || math.IsInf(tol.Rel, 0) {
		return fmt.Errorf("tolerance {abs: %g, rel: %g} must be finite and not negative", tol.Abs, tol.Rel)
	}
	return nil
}

// maxLineageLen bounds each lineage field.
const maxLineageLen = 512

// sourceRE is what a lineage source may be.
var sourceRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

func (l *Lineage) validate() error {
	if !sourceRE.MatchString(l.Source) {
		return fmt.Errorf("lineage.source %q must match %s", l.Source, sourceRE)
	}
	for _, f := range []struct{ name, v string }{
		{"runId", l.RunID}, {"modelUuid", l.ModelUUID}, {"uri", l.URI}, {"sourceVersion", l.SourceVersion},
	} {
		if len(f.v) > maxLineageLen {
			return fmt.Errorf("lineage.%s is %d bytes, the limit is %d", f.name, len(f.v), maxLineageLen)
		}
		if i := strings.IndexFunc(f.v, func(r rune) bool { return !unicode.IsPrint(r) }); i >= 0 {
			return fmt.Errorf("lineage.%s %q holds an unprintable character at byte %d", f.name, f.v, i)
		}
	}
	if l.Created != "" {
		if _, err := time.Parse(time.RFC3339, l.Created); err != nil {
			return fmt.Errorf("lineage.created %q is not an RFC 3339 time", l.Created)
		}
	}
	return nil
}
