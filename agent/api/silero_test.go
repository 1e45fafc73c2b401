package api

import (
	"context"
	"math"
	"os"
	"testing"

	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/processor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// wasmCache is a WASM compilation cache shared by the tests of one run.
var wasmCache string

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWithTempDir(m, "api-wasm-cache-", &wasmCache))
}

// sileroPredictor loads the real Silero VAD v5 bundle, as bundle version,
// with the real ONNX Runtime.
func sileroPredictor(tb testing.TB, version string) *model.Model {
	tb.Helper()
	m, err := model.Load(context.Background(), testbundle.SileroDir(tb), testbundle.SileroManifest(version), model.Options{
		ORTLibrary: testenv.ORTLibrary(tb),
		WASM:       processor.Config{CacheDir: wasmCache},
	})
	if err != nil {
		tb.Fatalf("loading the Silero bundle: %v", err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-5 }
