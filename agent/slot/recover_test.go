package slot

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// twoVersions returns a data dir with demo@2.0.0 active and demo@1.0.0
// as the last-known-good, closed.
func twoVersions(t *testing.T, k *keys) (dir string, active, lkg Slot) {
	t.Helper()
	dir = t.TempDir()
	s := openStore(t, dir, testOptions(t, k))
	for _, v := range []string{"1.0.0", "2.0.0"} {
		if _, err := s.Install(t.Context(), Request{Bundle: buildBundle(t, k, v).path}, (&activator{}).activate); err != nil {
			t.Fatal(err)
		}
	}
	active, _ = s.Active()
	lkg, _ = s.LastKnownGood()
	s.Close()
	return dir, active, lkg
}

func TestOpenRemovesLeftovers(t *testing.T) {
	k := newKeys(t)
	dir, _, _ := twoVersions(t, k)
	mk := func(rel string, dirToo bool) {
		p := filepath.Join(dir, rel)
		if dirToo {
			if err := os.MkdirAll(filepath.Join(p, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			p = filepath.Join(p, "sub", "f")
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("bundles/demo@3.0.0-0123456789ab", true)
	mk("bundles/.staging-0123456789ab", true)
	mk("bundles/stray-file", false)
	mk(tempPref+"12345", false)
	mk("downloads/0123-demo-3.0.0.bundle", false)
	mk("downloads/0123-demo-3.0.0.bundle.sig", false)
	mk("downloads/4567-demo-3.0.0.bundle.part", false)
	mk("downloads/89ab-demo-4.0.0.bundle.part", false)
	old := time.Now().Add(-DefaultPartMaxAge - time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "downloads/89ab-demo-4.0.0.bundle.part"), old, old); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir, testOptions(t, k))
	assertActive(t, s, "demo@2.0.0", "demo@1.0.0")
	if got, want := listDir(t, filepath.Join(dir, downloadsDir)), []string{"4567-demo-3.0.0.bundle.part"}; !slices.Equal(got, want) {
		t.Fatalf("downloads/ holds %q, want only the young part file %q", got, want)
	}
	if got, want := listDir(t, dir), []string{bundlesDir, downloadsDir, lockName, stateName}; !slices.Equal(got, want) {
		t.Fatalf("data dir holds %q, want %q", got, want)
	}
}

func TestOpenRepairsPointers(t *testing.T) {
	k := newKeys(t)
	t.Run("last-known-good missing", func(t *testing.T) {
		dir, _, lkg := twoVersions(t, k)
		os.RemoveAll(lkg.Dir)
		var logs bytes.Buffer
		opts := testOptions(t, k)
		opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		s := openStore(t, dir, opts)
		assertActive(t, s, "demo@2.0.0", "")
		if !strings.Contains(logs.String(), "dropping the last-known-good") || !strings.Contains(logs.String(), "demo@1.0.0") {
			t.Fatalf("no log line about the dropped last-known-good:\n%s", logs.String())
		}
		st := stateFile(t, dir)
		if st.LastKnownGood != nil || st.LastError != nil || st.History[len(st.History)-1].Op != "recover" {
			t.Fatalf("state %+v", st)
		}
	})
	t.Run("active missing, fall back", func(t *testing.T) {
		dir, active, _ := twoVersions(t, k)
		os.RemoveAll(active.Dir)
		s := openStore(t, dir, testOptions(t, k))
		assertActive(t, s, "demo@1.0.0", "")
		le := s.State().LastError
		if le == nil || le.Op != "recover" || le.ID != "demo@2.0.0" || !strings.Contains(le.Error, "fell back to last-known-good demo@1.0.0") {
			t.Fatalf("lastError %+v", le)
		}
	})
	t.Run("active broken, none to fall back to", func(t *testing.T) {
		dir, active, lkg := twoVersions(t, k)
		os.RemoveAll(lkg.Dir)
		if err := os.WriteFile(filepath.Join(active.Dir, "manifest.json"), []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
		s := openStore(t, dir, testOptions(t, k))
		assertActive(t, s, "", "")
		if le := s.State().LastError; le == nil || !strings.Contains(le.Error, "no last-known-good") {
			t.Fatalf("lastError %+v", le)
		}
		// And the empty store installs again.
		if _, err := s.Install(t.Context(), Request{Bundle: buildBundle(t, k, "3.0.0").path}, (&activator{}).activate); err != nil {
			t.Fatal(err)
		}
		assertActive(t, s, "demo@3.0.0", "")
	})
}

func TestOpenRefusesBadState(t *testing.T) {
	k := newKeys(t)
	tests := []struct {
		name  string
		state func(st string) string
	}{
		{"truncated", func(st string) string { return st[:len(st)/2] }},
		{"not json", func(string) string { return "garbage" }},
		{"unknown field", func(st string) string { return strings.Replace(st, `"generation"`, `"surprise": 1, "generation"`, 1) }},
		{"newer schema", func(st string) string { return strings.Replace(st, `"schemaVersion": 1`, `"schemaVersion": 2`, 1) }},
		{"dir outside bundles", func(st string) string { return strings.Replace(st, `"dir": "bundles/`, `"dir": "bundles/../../`, 1) }},
		{"trailing data", func(st string) string { return st + "{}" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _, _ := twoVersions(t, k)
			junk := filepath.Join(dir, bundlesDir, "junk")
			os.Mkdir(junk, 0o755)
			path := filepath.Join(dir, stateName)
			b, _ := os.ReadFile(path)
			if err := os.WriteFile(path, []byte(tt.state(string(b))), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir, testOptions(t, k))
			if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), stateName) {
				t.Fatalf("err %v, want ErrState naming %s", err, stateName)
			}
			// Nothing was removed on the strength of a bad state file.
			if got := listDir(t, filepath.Join(dir, bundlesDir)); len(got) != 3 {
				t.Fatalf("bundles/ holds %q after a refused Open", got)
			}
			// And the lock was released.
			os.WriteFile(path, b, 0o644)
			s := openStore(t, dir, testOptions(t, k))
			assertActive(t, s, "demo@2.0.0", "demo@1.0.0")
		})
	}
}

func TestHistoryBounded(t *testing.T) {
	k := newKeys(t)
	opts := testOptions(t, k)
	opts.History = 3
	s := openStore(t, t.TempDir(), opts)
	act := &activator{}
	for _, v := range []string{"1.0.0", "1.0.1", "1.0.2", "1.0.3"} {
		if _, err := s.Install(t.Context(), Request{Bundle: buildBundle(t, k, v).path}, act.activate); err != nil {
			t.Fatal(err)
		}
	}
	h := s.State().History
	if len(h) != 3 || h[0].ID != "demo@1.0.1" || h[2].ID != "demo@1.0.3" {
		t.Fatalf("history %+v, want the last 3 installs", h)
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":1,"generation":2,"updatedAt":"2025-01-01T00:00:00Z","active":{"id":"a@1.0.0","name":"a","version":"1.0.0","dir":"bundles/a@1.0.0-x","installedAt":"2025-01-01T00:00:00Z"},"lastKnownGood":null,"lastError":{"time":"2025-01-01T00:00:00Z","op":"install","error":"e"},"history":[{"time":"2025-01-01T00:00:00Z","op":"install","id":"a@1.0.0"}]}`))
	f.Add([]byte(`{"schemaVersion":1}`))
	f.Add([]byte(`{"schemaVersion":1,"active":{"id":"a@1","name":"a","version":"1","dir":"bundles/.."}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseState(b)
		if err != nil {
			return
		}
		for _, sl := range []*Slot{st.Active, st.LastKnownGood} {
			if sl == nil {
				continue
			}
			if !validRelDir(sl.Dir) {
				t.Fatalf("accepted dir %q", sl.Dir)
			}
			clean := filepath.Clean(filepath.Join("/data", sl.Dir))
			if filepath.Dir(clean) != "/data/bundles" {
				t.Fatalf("dir %q escapes bundles/: %s", sl.Dir, clean)
			}
		}
	})
}
