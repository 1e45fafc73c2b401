package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// DuckDBResult is what testbed/duckdb/query.mjs prints: the result's
// column names and its rows as DuckDB's JSON conversion writes them
// (BIGINT as strings, lists as arrays, maps as [{key, value}]).
type DuckDBResult struct {
	Columns []string         `json:"columns"`
	Rows    []map[string]any `json:"rows"`
}

// DuckDBDir is where scripts/npm-apps.sh duckdb installs @duckdb/node-api:
// $EDGEFLEET_DUCKDB, or else the repository's .cache/duckdb.
func DuckDBDir(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv("EDGEFLEET_DUCKDB"); d != "" {
		return d
	}
	return filepath.Join(Root(tb), ".cache", "duckdb")
}

// DuckDB runs sql in an in-memory DuckDB (@duckdb/node-api, a reader
// independent of this module) and returns its result. A missing install
// (or node) fails the test, naming the script that installs it.
func DuckDB(tb testing.TB, sql string) DuckDBResult {
	tb.Helper()
	dir := DuckDBDir(tb)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@duckdb", "node-api", "package.json")); err != nil {
		tb.Fatalf("testenv: DuckDB (@duckdb/node-api) is not installed in %s: run scripts/npm-apps.sh duckdb (make setup does): %v", dir, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		tb.Fatalf("testenv: node is required to run DuckDB (scripts/setup.sh installs it): %v", err)
	}
	script, err := os.ReadFile(filepath.Join(Root(tb), "testbed", "duckdb", "query.mjs"))
	if err != nil {
		tb.Fatal(err)
	}
	// The script must sit beside node_modules for its import to resolve.
	f, err := os.CreateTemp(dir, ".query-*.mjs")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(script); err != nil {
		tb.Fatal(err)
	}
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, node, f.Name(), sql)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("testenv: DuckDB query %q: %v\n%s", sql, err, stderr.String())
	}
	var res DuckDBResult
	if err := json.Unmarshal(out, &res); err != nil {
		tb.Fatalf("testenv: DuckDB output %.200q: %v", out, err)
	}
	return res
}
