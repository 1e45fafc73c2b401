package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
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
			if got := strings.Fields(flags); !reflect.DeepEqual(got, WASMCFlags()) {
				t.Fatalf("Makefile WASM_CFLAGS = %q\ntestenv.WASMCFlags() = %q", got, WASMCFlags())
			}
			return
		}
	}
	t.Fatal("no WASM_CFLAGS := line in the Makefile")
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as testing's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestBuildWASMWithoutClang: a C processor without a working clang fails
// with the Debian packages to install.
func TestBuildWASMWithoutClang(t *testing.T) {
	for _, cc := range []string{"clang-not-installed", "false"} {
		t.Run(cc, func(t *testing.T) {
			t.Setenv("WASM_CC", cc)
			rec := &fatalRecorder{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				BuildWASM(rec, "testbed/bundles/silero-vad/pre")
			}()
			<-done
			if !strings.Contains(rec.msg, "clang lld wasi-libc libclang-rt-dev-wasm32") {
				t.Fatalf("BuildWASM with WASM_CC=%s: %q, want the Debian packages named", cc, rec.msg)
			}
			t.Log(rec.msg)
		})
	}
}
