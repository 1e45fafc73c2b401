package api

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/processor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// silero loads the real Silero bundle under another name and version.
func silero(t testing.TB, name, version string) *model.Model {
	t.Helper()
	man := testbundle.SileroManifest(version)
	man.Name = name
	m, err := model.Load(context.Background(), testbundle.SileroDir(t), man, model.Options{
		ORTLibrary: testenv.ORTLibrary(t),
		WASM:       processor.Config{CacheDir: wasmCache},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestRegistrySwapDrains(t *testing.T) {
	reg := NewRegistry()
	v1, v2 := silero(t, "m", "1.0.0"), silero(t, "m", "2.0.0")
	if old, wait := reg.Set(v1); old != nil || wait != nil {
		t.Fatal("first Set replaced something")
	}
	p, release, err := reg.Model("m")
	if err != nil || p != v1 {
		t.Fatalf("Model: %v %v", p, err)
	}
	old, wait := reg.Set(v2)
	if old != v1 {
		t.Fatalf("Set returned %v, want v1", old)
	}
	// New requests get v2 at once; v1 is still in use by the first.
	if p, rel, _ := reg.Model("m"); p != v2 {
		t.Errorf("after Set, Model gives %s", p.Manifest().Version)
	} else {
		rel()
	}
	// The old model still answers the request that holds it.
	if _, err := p.Infer(context.Background(), model.Input{Tensors: sileroInputs()}); err != nil {
		t.Errorf("draining model: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := wait(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "m@1.0.0 still in use") {
		t.Errorf("wait with v1 in use: %v", err)
	}
	release()
	release() // idempotent
	if err := wait(context.Background()); err != nil {
		t.Errorf("wait after release: %v", err)
	}
	if got := reg.Models(); len(got) != 1 || got[0] != (ModelInfo{"m", "2.0.0", "cpu"}) {
		t.Errorf("Models: %+v", got)
	}
}

func TestRegistryStates(t *testing.T) {
	reg := NewRegistry()
	if reg.Ready() {
		t.Error("empty registry is ready")
	}
	if _, _, err := reg.Model("a"); !errors.Is(err, ErrModelNotFound) || !strings.Contains(err.Error(), "(none is)") {
		t.Errorf("unknown model: %v", err)
	}
	reg.Loading("a")
	if _, _, err := reg.Model("a"); !errors.Is(err, ErrNotReady) {
		t.Errorf("loading model: %v", err)
	}
	reg.Set(silero(t, "b", "1.0.0"))
	if reg.Ready() {
		t.Error("ready while a loads for the first time")
	}
	reg.Set(silero(t, "a", "1.0.0"))
	if !reg.Ready() {
		t.Error("not ready with a and b active")
	}
	if _, _, err := reg.Model("c"); err == nil || !strings.Contains(err.Error(), "(installed: a, b)") {
		t.Errorf("unknown model: %v", err)
	}
	if got := reg.Models(); len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" {
		t.Errorf("Models: %+v", got)
	}
	old, wait := reg.Remove("a")
	if old == nil || wait(context.Background()) != nil {
		t.Error("Remove did not hand back a drained model")
	}
	if old, wait := reg.Remove("a"); old != nil || wait != nil {
		t.Error("second Remove handed back a model")
	}
	if _, _, err := reg.Model("a"); !errors.Is(err, ErrModelNotFound) {
		t.Errorf("removed model: %v", err)
	}
}
