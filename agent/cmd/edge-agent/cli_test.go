package main

import (
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/shared/onnx"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// TestSetProcs: the daemon lowers GOMAXPROCS by ONNX Runtime's intra-op
// workers, never raises it, and leaves it alone when the environment set
// it.
func TestSetProcs(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(orig) })
	cpus := runtime.NumCPU()
	for _, tc := range []struct {
		name  string
		env   string
		start int
		intra int
		want  int
	}{
		{"two intra-op threads leave a core", "", cpus, 2, max(1, cpus-1)},
		{"one intra-op thread keeps every core", "", cpus, 1, cpus},
		{"never raised", "", 1, 1, 1},
		{"more workers than cores", "", cpus, cpus + 3, 1},
		{"the environment wins", "3", cpus, 2, cpus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMAXPROCS", tc.env)
			runtime.GOMAXPROCS(tc.start)
			cfg := config.Default()
			cfg.Runtime.IntraOpThreads = tc.intra
			var log testenv.SyncBuffer
			setProcs(cfg, slog.New(slog.NewTextHandler(&log, nil)))
			if got := runtime.GOMAXPROCS(0); got != tc.want {
				t.Errorf("GOMAXPROCS %d, want %d", got, tc.want)
			}
			if lowered := tc.want < tc.start; lowered != strings.Contains(log.String(), "GOMAXPROCS lowered") {
				t.Errorf("log %q; lowered %v", log.String(), lowered)
			}
		})
	}
	if got, want := onnx.GoMaxProcs(0), max(1, cpus-(min(2, cpus)-1)); got != want {
		t.Errorf("GoMaxProcs(0) = %d, want %d", got, want)
	}
}
