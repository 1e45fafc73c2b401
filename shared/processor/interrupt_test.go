package processor

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
)

func TestInstrumentCompiles(t *testing.T) {
	for name, wasm := range map[string][]byte{
		"echo": wat(t, "echo"), "loop": wat(t, "loop"), "hog": wat(t, "hog"), "gotest": goModule(t),
	} {
		t.Run(name, func(t *testing.T) {
			out, err := instrument(wasm)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			cache, err := wazero.NewCompilationCacheWithDir(cacheDir)
			if err != nil {
				t.Fatal(err)
			}
			rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCompilationCache(cache))
			defer rt.Close(ctx)
			if _, err := rt.CompileModule(ctx, out); err != nil {
				t.Fatalf("wazero refuses the instrumented module: %v", err)
			}
			if !bytes.Contains(out, []byte(interruptExport)) {
				t.Fatal("no interrupt export")
			}
		})
	}
}

func TestInstrumentRefusesGlobalReach(t *testing.T) {
	bin, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Fatalf("wat2wasm not found (apt-get install wabt): %v", err)
	}
	out := filepath.Join(t.TempDir(), "globalreach.wasm")
	if b, err := exec.Command(bin, "--no-check", "testdata/globalreach.wat", "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	wasm, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := instrument(wasm); !errors.Is(err, errInstrument) || !strings.Contains(err.Error(), "global index 1") {
		t.Fatalf("instrument = %v, want a refusal of global index 1", err)
	}
	// And the processor refuses the module (wazero validates the original).
	if _, err := New(context.Background(), "globalreach", wasm, Config{}, nil); !errors.Is(err, ErrModule) {
		t.Fatalf("New = %v, want ErrModule", err)
	}
}

func TestInstrumentFallback(t *testing.T) {
	wasm := wat(t, "exportclash")
	if _, err := instrument(wasm); !errors.Is(err, errInstrument) {
		t.Fatalf("instrument = %v, want errInstrument", err)
	}
	p := newProc(t, "exportclash", wasm, Config{Timeout: 50 * time.Millisecond})
	if p.interruptible {
		t.Fatal("processor claims the instrumented path")
	}
	for range 2 {
		if _, err := p.Process(context.Background(), sample()); !errors.Is(err, ErrTimeout) {
			t.Fatalf("Process = %v, want ErrTimeout through wazero's own checks", err)
		}
	}
}

func TestInstrumentMalformed(t *testing.T) {
	echo := wat(t, "echo")
	for name, b := range map[string][]byte{
		"empty":     nil,
		"magic":     []byte("\x00asn\x01\x00\x00\x00"),
		"truncated": echo[:len(echo)-3],
		"section":   append(append([]byte{}, echo[:8]...), 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f),
	} {
		if _, err := instrument(b); !errors.Is(err, errInstrument) {
			t.Errorf("%s: instrument = %v, want errInstrument", name, err)
		}
	}
}

func FuzzInstrument(f *testing.F) {
	for _, name := range []string{"echo", "loop", "hog", "reject", "exportclash"} {
		f.Add(wat(f, name))
	}
	f.Fuzz(func(t *testing.T, wasm []byte) {
		out, err := instrument(wasm)
		if err != nil {
			if !errors.Is(err, errInstrument) {
				t.Fatalf("error %v does not wrap errInstrument", err)
			}
			return
		}
		if len(out) < len(wasm)-1 && !bytes.Contains(wasm, []byte(".debug_")) {
			// Only dropped DWARF sections may shrink a module.
			t.Fatalf("instrumented module shrank from %d to %d bytes", len(wasm), len(out))
		}
	})
}
