package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/drift"
)

func TestProfileBuild(t *testing.T) {
	dir := t.TempDir()
	schema := filepath.Join(dir, "schema.yaml")
	if err := os.WriteFile(schema, []byte(`features:
  - {name: x, kind: numerical}
  - {name: colour, kind: categorical, test: jensenshannon, threshold: 0.2}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var csv strings.Builder
	csv.WriteString("id,x,colour\n")
	for i := range 100 {
		csv.WriteString(strings.Join([]string{"r", strings.Repeat("1", 1+i%3), []string{"red", "green", "blue", ""}[i%4]}, ",") + "\n")
	}
	input := filepath.Join(dir, "ref.csv")
	if err := os.WriteFile(input, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "profile.json")
	r := fleetctl(t, okCheck, "profile", "build", "--input", input, "--schema", schema, "--out", out)
	wantOK(t, r, "profile build")
	if !strings.Contains(r.stderr, "ignored: id") || !strings.Contains(r.stdout, "wrote "+out) || !strings.Contains(r.stdout, "ks (default)") {
		t.Errorf("output:\n%s%s", r.stdout, r.stderr)
	}
	p, err := drift.LoadProfile(out)
	if err != nil {
		t.Fatal(err)
	}
	if p.Features[0].Count != 100 || p.Features[1].Count != 75 || p.Features[1].Missing != 25 {
		t.Errorf("profile features %+v", p.Features)
	}
	first, _ := os.ReadFile(out)
	wantOK(t, fleetctl(t, okCheck, "profile", "build", "--input", input, "--schema", schema, "--out", out), "rebuild")
	if again, _ := os.ReadFile(out); string(again) != string(first) {
		t.Error("the same data and schema gave different bytes")
	}

	wantExit(t, fleetctl(t, okCheck, "profile", "build", "--schema", schema), ExitUsage, "no input", `"input" not set`)
	wantFail(t, fleetctl(t, okCheck, "profile", "build", "--input", input, "--schema", input), "bad schema", "invalid schema")
	bad := filepath.Join(dir, "bad.csv")
	os.WriteFile(bad, []byte("x,colour\n1,red\nabc,blue\n"), 0o644)
	wantFail(t, fleetctl(t, okCheck, "profile", "build", "--input", bad, "--schema", schema, "--out", out), "bad data", `"abc" is not a number`)
}
