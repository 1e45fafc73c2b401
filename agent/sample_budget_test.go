package agent

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// budgetSample is the encoded size of a one-letter request id's sample
// of 64 inputs (samplePrediction), the unit of the budget tests.
func budgetSample(t *testing.T, at time.Time) int64 {
	t.Helper()
	s := newSampler(nil, testLogger(t), nil, 0)
	p := samplePrediction(at, "a", 64)
	b, err := json.Marshal(s.record(sampleJob{pol: &samplePolicy{id: "vad@1.0.0"}, at: p.Time, req: p.RequestID, out: p.Output}))
	if err != nil {
		t.Fatal(err)
	}
	return int64(len(b))
}

// budgetStep serves version (of a budget of samples times the sample's
// size) and has it answer n requests at at, of which want are appended.
type budgetStep struct {
	version string
	at      time.Time
	n, want int
}

// budgetRun is an agent run, a new sampler on the same state file;
// crash: it ends without stop (what it appended having been appended).
type budgetRun struct {
	steps []budgetStep
	crash bool
}

// runBudget runs the steps of run on a new sampler that keeps its budget
// in path, and checks what each step appended. The test appends what is
// queued itself, as the encoder goroutine would.
func runBudget(t *testing.T, path string, budget int64, run budgetRun) *sampler {
	t.Helper()
	s := newSampler(openOutbox(t), testLogger(t), nil, 0)
	s.persist(path)
	for i, st := range run.steps {
		s.swap(vadManifest(st.version, &bundle.Sampling{Rate: 1, MaxBytesPerDay: budget}))
		before := s.appended.Load()
		for j := range st.n {
			p := samplePrediction(st.at, string(rune('a'+j%26)), 64)
			p.Version = st.version
			s.observe(p)
		}
		for len(s.jobs) > 0 { // the encoder goroutine's work, here
			s.append(<-s.jobs)
		}
		if got := int(s.appended.Load() - before); got != st.want {
			t.Errorf("step %d (%s at %s): %d samples appended, want %d", i, st.version, st.at.Format(time.DateTime), got, st.want)
		}
	}
	if !run.crash {
		s.stop()
	}
	return s
}

// TestSamplerBudgetPersists: the day's budget of a bundle version
// survives an agent restart (and a crash, re-spending nothing), is kept
// per version, and starts afresh on a new UTC day.
func TestSamplerBudgetPersists(t *testing.T) {
	day := time.Date(2026, 3, 1, 23, 0, 0, 0, time.UTC)
	next := day.Add(2 * time.Hour)
	later := day.AddDate(0, 0, 3)
	n := budgetSample(t, day)
	if m := budgetSample(t, later); m != n {
		t.Fatalf("sample sizes %d and %d", n, m)
	}
	tests := []struct {
		name   string
		budget float64 // in samples
		runs   []budgetRun
		// file is what the state file says after the last run, in
		// samples per "version day".
		file map[string]float64
	}{
		{name: "spent before a restart stays spent", budget: 2.5, runs: []budgetRun{
			{steps: []budgetStep{{"1.0.0", day, 3, 2}}},
			{steps: []budgetStep{{"1.0.0", day, 2, 0}}},
		}, file: map[string]float64{"1.0.0 2026-03-01": 2}},
		{name: "a restart carries on with what is left", budget: 4.5, runs: []budgetRun{
			{steps: []budgetStep{{"1.0.0", day, 2, 2}}},
			{steps: []budgetStep{{"1.0.0", day, 3, 2}}},
			{steps: []budgetStep{{"1.0.0", day, 1, 0}}},
		}, file: map[string]float64{"1.0.0 2026-03-01": 4}},
		{name: "a crash re-spends nothing", budget: 32, runs: []budgetRun{
			// The first sample saved 1 + 32/16: the next run counts 3.
			{steps: []budgetStep{{"1.0.0", day, 2, 2}}, crash: true},
			{steps: []budgetStep{{"1.0.0", day, 40, 29}}},
		}, file: map[string]float64{"1.0.0 2026-03-01": 32}},
		{name: "crash loop", budget: 32, runs: []budgetRun{
			{steps: []budgetStep{{"1.0.0", day, 1, 1}}, crash: true}, // saves 3
			{steps: []budgetStep{{"1.0.0", day, 1, 1}}, crash: true}, // saves 6
			{steps: []budgetStep{{"1.0.0", day, 1, 1}}, crash: true}, // saves 9
			{steps: []budgetStep{{"1.0.0", day, 40, 23}}},
		}, file: map[string]float64{"1.0.0 2026-03-01": 32}},
		{name: "alternating versions keep their budgets", budget: 2.5, runs: []budgetRun{
			{steps: []budgetStep{
				{"1.0.0", day, 1, 1}, {"2.0.0", day, 1, 1}, {"1.0.0", day, 1, 1}, {"2.0.0", day, 1, 1},
				{"1.0.0", day, 1, 0}, {"2.0.0", day, 1, 0},
			}},
			{steps: []budgetStep{{"2.0.0", day, 1, 0}, {"1.0.0", day, 1, 0}}},
		}, file: map[string]float64{"1.0.0 2026-03-01": 2, "2.0.0 2026-03-01": 2}},
		{name: "a new UTC day starts afresh", budget: 2.5, runs: []budgetRun{
			{steps: []budgetStep{{"1.0.0", day, 3, 2}, {"1.0.0", next, 3, 2}}},
			{steps: []budgetStep{{"1.0.0", next, 1, 0}}},
		}, file: map[string]float64{"1.0.0 2026-03-01": 2, "1.0.0 2026-03-02": 2}},
		{name: "a new UTC day after a restart", budget: 2.5, runs: []budgetRun{
			{steps: []budgetStep{{"1.0.0", day, 3, 2}, {"2.0.0", day, 3, 2}}},
			{steps: []budgetStep{{"1.0.0", later, 3, 2}}},
		}, file: map[string]float64{"1.0.0 2026-03-04": 2}}, // the other days forgotten
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), SampleBudgetFile)
			budget := int64(tc.budget * float64(n))
			var s *sampler
			for i, run := range tc.runs {
				t.Logf("run %d", i)
				s = runBudget(t, path, budget, run)
			}
			st := s.stats()
			last := tc.runs[len(tc.runs)-1].steps
			lastDay := last[len(last)-1].at.Format(time.DateOnly)
			if want := int64(tc.file["1.0.0 "+lastDay]) * n; st.Bundle == "vad@1.0.0" && (st.Day != lastDay || st.BytesToday != want) {
				t.Errorf("stats day %s, %d bytes; want %s, %d", st.Day, st.BytesToday, lastDay, want)
			}
			got := readBudgetFile(t, path)
			want := map[string]int64{}
			for k, v := range tc.file {
				want["vad@"+k] = int64(v * float64(n))
			}
			if len(got) != len(want) {
				t.Errorf("file %v, want %v", got, want)
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("file %v, want %v", got, want)
					break
				}
			}
		})
	}
}

// readBudgetFile is the state file's bytes per "bundle day".
func readBudgetFile(t *testing.T, path string) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseSampleBudget(b)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range st.Spent {
		out[e.Bundle+" "+e.Day] = e.Bytes
	}
	return out
}

// TestSamplerBudgetCorrupt: a state file that cannot be used is logged,
// naming it, and the budget counts from zero (and then replaces it).
func TestSamplerBudgetCorrupt(t *testing.T) {
	day := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	n := budgetSample(t, day)
	for _, tc := range []struct{ name, file string }{
		{"not json", "{\"schemaVersion\": 1, \"spent\": [{\"bundle\""},
		{"empty", ""},
		{"another schema", `{"schemaVersion": 2, "spent": []}`},
		{"bad day", `{"schemaVersion": 1, "spent": [{"bundle": "vad@1.0.0", "day": "yesterday", "bytes": 1}]}`},
		{"negative", `{"schemaVersion": 1, "spent": [{"bundle": "vad@1.0.0", "day": "2026-03-01", "bytes": -1}]}`},
		{"a directory", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), SampleBudgetFile)
			var err error
			if tc.name == "a directory" {
				err = os.Mkdir(path, 0o700)
			} else {
				err = os.WriteFile(path, []byte(tc.file), 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
			var logs testenv.SyncBuffer
			s := newSampler(openOutbox(t), slog.New(slog.NewTextHandler(&logs, nil)), nil, 0)
			s.persist(path)
			if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, path) {
				t.Errorf("log %q, want a warning naming %s", l, path)
			}
			s.swap(vadManifest("1.0.0", &bundle.Sampling{Rate: 1, MaxBytesPerDay: 3 * n}))
			s.start()
			for _, id := range []string{"a", "b", "c", "d"} {
				s.observe(samplePrediction(day, id, 64))
			}
			s.stop()
			if st := s.stats(); st.Appended != 3 || st.DroppedBudget != 1 {
				t.Errorf("stats %+v", st)
			}
			if tc.name == "a directory" {
				return // not replaced; the failed write is logged
			}
			if got := readBudgetFile(t, path); len(got) != 1 || got["vad@1.0.0 2026-03-01"] != 3*n {
				t.Errorf("file %v", got)
			}
		})
	}
}
