package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseExamples(t *testing.T) {
	for _, name := range []string{"testdata/rollout.yaml", "testdata/experiment.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ParseSpec(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	b, _ := os.ReadFile("testdata/rollout.yaml")
	s, _ := ParseSpec(b)
	if *s.Waves[1].Percent != 5 || s.Waves[1].MinDevices != 3 || s.Waves[0].Bake.D() != 30*time.Minute ||
		*s.Gates.InstallSuccess.MinReports != (Quota{Percent: 80}) || *s.Gates.ErrorRate.MinReports != (Quota{N: 3}) ||
		s.Limits.MaintenanceWindows[0].Start.Minute != 22*60 || s.Rollback.AutoRollback() != true || s.Gates.LatencyP95.Baseline.D() != 24*time.Hour {
		t.Fatalf("parsed %+v", s)
	}
}

// The JSON form reads back the same, through ParseSpec (YAML is a
// superset) and encoding/json.
func TestSpecJSONRoundTrip(t *testing.T) {
	b, _ := os.ReadFile("testdata/rollout.yaml")
	s, err := ParseSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	n := s.Normalize()
	j := checkJSONRoundTrip(t, n)
	var viaJSON Spec
	if err := json.Unmarshal(j, &viaJSON); err != nil || !reflect.DeepEqual(&viaJSON, n) {
		t.Fatalf("json.Unmarshal: %v", err)
	}
}

const okSpec = `
target: "hw=pi4"
bundle: vad@1.1.0
waves:
  - count: 1
    bake: 10m
  - percent: 50
  - percent: 100
`

func TestSpecErrors(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []string // each must be in the error
	}{
		{"unknown field", okSpec + "wavez: []\n", []string{"9:1: wavez: unknown field"}},
		{"unknown nested field", strings.Replace(okSpec, "bake: 10m", "bake: 10m\n    percnt: 5", 1), []string{"waves[0].percnt: unknown field"}},
		{"case typo", okSpec + "waveDeadLine: 1h\n", []string{`waveDeadLine: unknown field; did you mean "waveDeadline"`}},
		{"gate field", okSpec + "gates: {errorRate: {maximum: 0.1}}\n", []string{"gates.errorRate.maximum: unknown field"}},
		{"percent out of range", strings.Replace(okSpec, "percent: 100", "percent: 120", 1), []string{"waves[2].percent: must be in (0,100], got 120"}},
		{"percent zero", strings.Replace(okSpec, "percent: 50", "percent: 0", 1), []string{"waves[1].percent: must be in (0,100], got 0"}},
		{"empty waves", "target: ''\nbundle: vad@1.1.0\nwaves: []\n", []string{"waves: at least one wave is required"}},
		{"no waves", "target: ''\nbundle: vad@1.1.0\n", []string{"waves: at least one wave"}},
		{"non-monotonic", strings.Replace(okSpec, "percent: 100", "percent: 40", 1), []string{"waves[2].percent: must be above the 50% of waves[1]"}},
		{"counts shrink", "target: ''\nbundle: vad@1.1.0\nwaves: [{count: 5}, {count: 5}]\n", []string{"waves[1].count: must be above the 5 of waves[0]"}},
		{"both percent and count", strings.Replace(okSpec, "count: 1", "count: 1\n    percent: 1", 1), []string{"waves[0]: percent and count are exclusive"}},
		{"neither", strings.Replace(okSpec, "  - count: 1\n", "  - minDevices: 1\n", 1), []string{"waves[0]: one of percent or count is required"}},
		{"bad bake", strings.Replace(okSpec, "bake: 10m", "bake: soon", 1), []string{`6:11: waves[0].bake: must be a duration with a unit`}},
		{"negative bake", strings.Replace(okSpec, "bake: 10m", "bake: -1m", 1), []string{`waves[0].bake: must not be negative`}},
		{"count type", strings.Replace(okSpec, "count: 1", "count: one", 1), []string{`waves[0].count: must be a whole number, got "one"`}},
		{"fractional count", strings.Replace(okSpec, "count: 1", "count: 1.5", 1), []string{`waves[0].count: must be a whole number`}},
		{"bundle form", strings.Replace(okSpec, "vad@1.1.0", "vad-1.1.0", 1), []string{"bundle: must be name@version"}},
		{"bundle version", strings.Replace(okSpec, "vad@1.1.0", "vad@v1.1", 1), []string{`bundle: version "v1.1"`}},
		{"no bundle", strings.Replace(okSpec, "bundle: vad@1.1.0\n", "", 1), []string{"bundle: required"}},
		{"bad selector", strings.Replace(okSpec, `"hw=pi4"`, `"hw=pi4,,x"`, 1), []string{"target: term 2"}},
		{"ratio range", okSpec + "gates: {installSuccess: {min: 1.5}}\n", []string{"gates.installSuccess.min: must be a ratio in [0,1], got 1.5"}},
		{"threshold required", okSpec + "gates: {errorRate: {minReports: 3}}\n", []string{"gates.errorRate.max: required"}},
		{"latency ratio", okSpec + "gates: {latencyP95: {maxRatio: 0}}\n", []string{"gates.latencyP95.maxRatio: must be above 0"}},
		{"drift required", okSpec + "gates: {drift: {}}\n", []string{"gates.drift.maxScore: required"}},
		{"minReports", okSpec + "gates: {errorRate: {max: 0.1, minReports: 0}}\n", []string{"gates.errorRate.minReports: must be a count of devices (at least 1)"}},
		{"minReports percent", okSpec + "gates: {errorRate: {max: 0.1, minReports: 150%}}\n", []string{"gates.errorRate.minReports: must be a count of devices or a percentage in (0,100]"}},
		{"shadow gate without shadow", okSpec + "gates: {shadowAgreement: {min: 0.9}}\n", []string{"gates.shadowAgreement: needs a shadow step"}},
		{"NaN", okSpec + "gates: {errorRate: {max: .nan}}\n", []string{"gates.errorRate.max: must be a finite number"}},
		{"infinite percent", strings.Replace(okSpec, "percent: 100", "percent: .inf", 1), []string{"waves[2].percent: must be a finite number, got +Inf"}},
		{"infinite ratio", okSpec + "gates: {latencyP95: {maxRatio: .inf}, drift: {maxScore: -.inf}}\n", []string{"gates.latencyP95.maxRatio: must be a finite number", "gates.drift.maxScore: must be a finite number"}},
		{"window", okSpec + "limits: {maintenanceWindows: [{selector: 'site=a', start: '25:00', end: '04:00'}]}\n", []string{"limits.maintenanceWindows[0].start: must be a UTC time of day"}},
		{"empty window", okSpec + "limits: {maintenanceWindows: [{start: '04:00', end: '04:00'}]}\n", []string{"limits.maintenanceWindows[0].end: must differ from start"}},
		{"window needs end", okSpec + "limits: {maintenanceWindows: [{start: '04:00'}]}\n", []string{"limits.maintenanceWindows[0].end: required"}},
		{"downloads", okSpec + "limits: {maxConcurrentDownloads: -1}\n", []string{"limits.maxConcurrentDownloads: must not be negative"}},
		{"auto type", okSpec + "rollback: {auto: yes}\n", []string{`rollback.auto: must be true or false, got "yes"`}},
		{"kind", okSpec + "kind: canary\n", []string{`kind: must be "rollout" or "experiment", got "canary"`}},
		{"set twice", okSpec + "bundle: vad@1.2.0\n", []string{"bundle: set twice"}},
		{"alias", "target: &t ''\nbundle: vad@1.1.0\nwaves: [{count: 1}]\nname: *t\n", []string{"anchors and aliases are not supported"}},
		{"two documents", okSpec + "---\ntarget: x\n", []string{"more than one YAML document"}},
		{"not a mapping", "- 1\n- 2\n", []string{"the spec must be a mapping"}},
		{"empty", "", []string{"empty spec"}},
		{"wrong shape", "target: ''\nbundle: vad@1.1.0\nwaves: {count: 1}\n", []string{"waves: must be a list, not a mapping"}},
		{"syntax", "target: [\n", []string{"not valid YAML"}},
		{"experiment fields on a rollout", okSpec + "experiment: {duration: 1h}\n", []string{`experiment: only for kind "experiment"`}},
		{"experiment arms", "kind: experiment\ntarget: ''\nexperiment: {duration: 1h, arms: [{bundle: vad@1.0.0, percent: 60}, {bundle: vad@1.0.0, percent: 60}]}\n",
			[]string{"experiment.arms[1].bundle: vad@1.0.0 is already arm 0", "experiment.arms: the arms' percentages add up to 120"}},
		{"experiment needs duration", "kind: experiment\ntarget: ''\nexperiment: {arms: [{bundle: vad@1.0.0, count: 1}, {bundle: vad@1.1.0, count: 1}]}\n",
			[]string{"experiment.duration: required"}},
		{"experiment gates", "kind: experiment\ntarget: ''\nexperiment: {duration: 1h, arms: [{bundle: vad@1.0.0, count: 1}, {bundle: vad@1.1.0, count: 1}]}\ngates: {errorRate: {max: 0.1}}\n",
			[]string{"gates.errorRate: not evaluated in experiments"}},
		{"experiment waves", "kind: experiment\ntarget: ''\nbundle: vad@1.1.0\nwaves: [{count: 1}]\n",
			[]string{"bundle: not used by kind", "waves: not used by kind", "experiment: required"}},
		{"several at once", strings.Replace(strings.Replace(okSpec, "percent: 100", "percent: 120", 1), "count: 1", "count: 0", 1),
			[]string{"waves[0].count: must be at least 1", "waves[2].percent: must be in (0,100], got 120"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := ParseSpec([]byte(c.yaml))
			if err == nil {
				err = s.Validate()
			}
			if err == nil {
				t.Fatalf("accepted:\n%s", c.yaml)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("no *FieldError in %v", err)
			}
		})
	}
}

// Checks that need the fleet and the registry (Plan / Create).
func TestPlanErrors(t *testing.T) {
	e := newEnv(t, 10)
	e.fleet.add("dev-fresh", map[string]string{"fresh": "yes"}, nil)
	e.fleet.add("dev-v2", map[string]string{"onv2": "yes"}, &v2)
	for _, c := range []struct {
		name, yaml, want string
	}{
		{"selector matches nothing", `{target: "site=zz", bundle: vad@1.1.0, waves: [{count: 1}]}`, `target: selector "site=zz" matches no device`},
		{"bundle not in registry", `{target: "", bundle: vad@9.9.9, waves: [{count: 1}]}`, "bundle: vad@9.9.9 is not in the registry"},
		{"arm not in registry", `{kind: experiment, target: "", experiment: {duration: 1h, arms: [{bundle: vad@1.0.0, count: 1}, {bundle: vad@9.0.0, count: 1}]}}`, "experiment.arms[1].bundle: vad@9.0.0 is not in the registry"},
		{"drift without profile", `{target: "", bundle: vad@1.2.0, waves: [{count: 1}], gates: {drift: {maxScore: 0.2}}}`, "gates.drift: cannot be evaluated: bundle vad@1.2.0 has no drift profile"},
		{"latency without previous version", `{target: "fresh=yes", bundle: vad@1.1.0, waves: [{count: 1}], gates: {latencyP95: {maxRatio: 1.2}}}`, "gates.latencyP95: cannot be evaluated: none of the 1 target devices reports running an earlier version"},
		{"latency on devices already there", `{target: "onv2=yes", bundle: vad@1.1.0, waves: [{count: 1}], gates: {latencyP95: {maxRatio: 1.2}}}`, "gates.latencyP95: cannot be evaluated"},
		{"resolved waves shrink", `{target: "", bundle: vad@1.1.0, waves: [{count: 5}, {percent: 10}]}`, "waves[1]: resolves to 2 of the 12 target devices, fewer than the 5 of waves[0]"},
		{"shadow larger than the rollout", `{target: "", bundle: vad@1.1.0, shadow: {percent: 50}, waves: [{count: 1}, {percent: 20}]}`, "shadow: covers 6 devices, more than the 3 of the last wave"},
		{"arms larger than the target", `{kind: experiment, target: "", experiment: {duration: 1h, arms: [{bundle: vad@1.0.0, count: 10}, {bundle: vad@1.1.0, count: 5}]}}`, "experiment.arms: the arms need 10 + 5 devices, the target has 12"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := ParseSpec([]byte(c.yaml))
			if err != nil {
				t.Fatalf("ParseSpec: %v", err)
			}
			_, err = e.eng.Create(context.Background(), s)
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Create: %v\nwant %q", err, c.want)
			}
		})
	}
	// Nothing was created or sent.
	if rs, _ := e.eng.List(); len(rs) != 0 || len(e.fleet.assigns) != 0 {
		t.Fatalf("%d rollouts, %d assignments after refused creates", len(rs), len(e.fleet.assigns))
	}
}

func TestNormalizeDefaults(t *testing.T) {
	s, err := ParseSpec([]byte(okSpec + "gates: {errorRate: {max: 0.1}, latencyP95: {maxRatio: 2}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	n := s.Normalize()
	g := n.Gates
	if n.Kind != KindRollout || n.WaveDeadline.D() != DefaultWaveDeadline || *g.InstallSuccess.Min != DefaultInstallMin ||
		*g.InstallSuccess.MinReports != (Quota{Percent: DefaultInstallReports}) || *g.ErrorRate.MinReports != (Quota{Percent: DefaultTelemetryReports}) ||
		g.LatencyP95.Baseline.D() != DefaultLatencyBaseline || !*n.Rollback.Auto || n.Waves[1].Name != "wave 2" {
		t.Fatalf("normalized %+v", n)
	}
	if s.Gates.InstallSuccess != nil || s.Waves[1].Name != "" {
		t.Fatal("Normalize changed its receiver")
	}
}

func TestQuota(t *testing.T) {
	for _, c := range []struct {
		q    Quota
		n    int
		want int
	}{
		{Quota{N: 3}, 10, 3}, {Quota{N: 3}, 2, 2}, {Quota{Percent: 80}, 1, 1}, {Quota{Percent: 80}, 5, 4},
		{Quota{Percent: 50}, 3, 2}, {Quota{Percent: 1}, 10, 1}, {Quota{Percent: 100}, 7, 7}, {Quota{N: 1}, 0, 0},
	} {
		if got := c.q.Of(c.n); got != c.want {
			t.Errorf("%v of %d = %d, want %d", c.q, c.n, got, c.want)
		}
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, name := range []string{"testdata/rollout.yaml", "testdata/experiment.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(okSpec))
	f.Add([]byte(`{target: "", bundle: vad@1.1.0, waves: [{count: 1}, {percent: 100}], gates: {errorRate: {max: 0.1, minReports: "50%"}}}`))
	f.Add([]byte("limits: {maintenanceWindows: [{start: '22:00', end: '04:00'}]}"))
	f.Add([]byte("a: &x [*x]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// CheckSpec agrees with ParseSpec then Validate on whether the
		// spec is valid.
		_, cerr := CheckSpec(data)
		if cerr != nil && !errors.Is(cerr, ErrInvalid) {
			t.Fatalf("CheckSpec error does not wrap ErrInvalid: %v", cerr)
		}
		defer func() {
			if s, err := ParseSpec(data); (err == nil && s.Validate() == nil) != (cerr == nil) {
				t.Fatalf("CheckSpec = %v, but ParseSpec and Validate disagree", cerr)
			}
		}()
		s, err := ParseSpec(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		// A valid spec normalizes, and its JSON form reads back the same.
		n := s.Normalize()
		if err := n.Validate(); err != nil {
			t.Fatalf("normalized spec invalid: %v", err)
		}
		checkJSONRoundTrip(t, n)
	})
}

// checkJSONRoundTrip checks that the JSON form of the normalized spec n
// reads back the same, and returns it.
func checkJSONRoundTrip(t *testing.T, n *Spec) []byte {
	t.Helper()
	j, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseSpec(j)
	if err != nil {
		t.Fatalf("ParseSpec of its JSON %s: %v", j, err)
	}
	if !reflect.DeepEqual(back, n) {
		t.Fatalf("JSON round trip differs:\n%s\n%+v\n%+v", j, back, n)
	}
	return j
}

// TestCheckSpecOnePass: type and value problems come back together, each
// with its line.
func TestCheckSpecOnePass(t *testing.T) {
	spec := "target: ring=canary\nbundle: demo@0.3.0\nwaves:\n  - percent: -10\n  - count: x\nwavez: 1\ngates:\n  errorRate: {max: 2}\n"
	_, err := CheckSpec([]byte(spec))
	got := fmt.Sprint(err)
	for _, want := range []string{
		"4:14: waves[0].percent: must be in (0,100], got -10",
		"5:12: waves[1].count: ",
		"6:1: wavez: unknown field",
		"8:20: gates.errorRate.max: must be a ratio in [0,1], got 2",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("CheckSpec lacks %q:\n%s", want, got)
		}
	}
	// The unparsable count is reported once, not again by Validate.
	if n := strings.Count(got, "waves[1]"); n != 1 {
		t.Errorf("waves[1] reported %d times:\n%s", n, got)
	}
	if s, err := CheckSpec([]byte(okSpec)); err != nil || s == nil {
		t.Errorf("CheckSpec(okSpec) = %v, %v", s, err)
	}
	// With the file's name, every located problem names it.
	_, err = CheckSpecFile("rollout.yaml", []byte(spec))
	if got := fmt.Sprint(err); !strings.Contains(got, "rollout.yaml:4:14: waves[0].percent: must be in (0,100]") || strings.Count(got, "rollout.yaml:") != 4 {
		t.Errorf("CheckSpecFile:\n%s", got)
	}
	if _, err := CheckSpecFile("rollout.yaml", nil); fmt.Sprint(err) != "rollout.yaml: empty spec" {
		t.Errorf("CheckSpecFile of nothing: %v", err)
	}
}
