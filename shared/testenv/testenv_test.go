package testenv

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestWASMCFlagsMatchMakefile keeps the flags the tests build C processors
// with equal to those `make wasm` ships the Silero pre-processor with.
func TestWASMCFlagsMatchMakefile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(Root(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if flags, ok := strings.CutPrefix(line, "WASM_CFLAGS := "); ok {
			if got := strings.Fields(flags); !reflect.DeepEqual(got, WASMCFlags) {
				t.Fatalf("Makefile WASM_CFLAGS = %q\ntestenv.WASMCFlags  = %q", got, WASMCFlags)
			}
			return
		}
	}
	t.Fatal("no WASM_CFLAGS := line in the Makefile")
}
