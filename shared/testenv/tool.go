package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// ToolsDir is where scripts/tools.sh installs the pinned Go tools:
// $EDGEFLEET_TOOLS, or else the repository's .cache/tools/bin.
func ToolsDir(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv("EDGEFLEET_TOOLS"); d != "" {
		return d
	}
	return filepath.Join(Root(tb), ".cache", "tools", "bin")
}

// Tool is the pinned tool name (grpcurl, protoc-gen-go, ...) in ToolsDir;
// a missing one fails the test, naming the command that installs it.
func Tool(tb testing.TB, name string) string {
	tb.Helper()
	bin := filepath.Join(ToolsDir(tb), name)
	if _, err := os.Stat(bin); err != nil {
		tb.Fatalf("testenv: %s not found at %s: run scripts/tools.sh (%v)", name, bin, err)
	}
	return bin
}
