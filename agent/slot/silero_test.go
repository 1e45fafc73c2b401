package slot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// sileroOutput is Silero VAD v5's output for the two-sine frame with a
// zero state (docs: DESIGN.md §10).
const sileroOutput = testbundle.SileroOutput

// buildSilero builds and signs a Silero VAD bundle (testbundle) whose
// smoke vectors expect want for the two-sine frame. Build runs
// model.Check only when check is set (a bundle with a wrong expectation
// could not be built otherwise: it stands for one built by a broken or
// hostile pipeline).
func buildSilero(t *testing.T, k *keys, version string, want float64, check bool) built {
	t.Helper()
	sil := testbundle.SileroFiles(t)
	sil.Version, sil.SmokeOutput = version, want
	if check {
		sil.Check = func(ctx context.Context, dir string, m *bundle.Manifest) error {
			return model.Check(ctx, dir, m, model.Options{ORTLibrary: testenv.ORTLibrary(t)})
		}
	}
	b, err := k.BuildSilero(t.Context(), t.TempDir(), sil)
	if err != nil {
		t.Fatal(err)
	}
	return built{path: b.Path, sig: b.Sig, m: b.Manifest}
}

// server is what the agent does with the store: the activate callback
// loads the model and runs its smoke vectors, keeping the model as
// pending; it goes into service only when Install commits.
type server struct {
	t                *testing.T
	serving, pending *model.Model
}

func (s *server) activate(ctx context.Context, dir string, m *bundle.Manifest) error {
	mdl, err := model.Load(ctx, dir, m, model.Options{ORTLibrary: testenv.ORTLibrary(s.t)})
	if err != nil {
		return fmt.Errorf("loading %s: %w", m.ID(), err)
	}
	if err := mdl.Smoke(ctx); err != nil {
		mdl.Close()
		return fmt.Errorf("smoke test of %s: %w", m.ID(), err)
	}
	s.pending = mdl
	return nil
}

// settle is what the agent does after Install or Rollback returns.
func (s *server) settle(err error) error {
	if err != nil {
		if s.pending != nil {
			s.pending.Close()
		}
	} else {
		if s.serving != nil {
			s.serving.Close()
		}
		s.serving = s.pending
	}
	s.pending = nil
	return err
}

func (s *server) close() {
	if s.serving != nil {
		s.serving.Close()
	}
}

func TestInstallSileroWithSmokeTest(t *testing.T) {
	k := newKeys(t)
	good := buildSilero(t, k, "5.0.0", sileroOutput, true)
	bad := buildSilero(t, k, "5.1.0", 0.9, false)
	dir := t.TempDir()
	s := openStore(t, dir, testOptions(t, k))
	srv := &server{t: t}
	t.Cleanup(srv.close)

	if _, err := s.Install(t.Context(), Request{Bundle: good.path}, srv.activate); srv.settle(err) != nil {
		t.Fatal(err)
	}
	assertActive(t, s, "silero-vad@5.0.0", "")
	if got := srv.serving.Manifest().ID(); got != "silero-vad@5.0.0" {
		t.Fatalf("serving %s", got)
	}

	_, err := s.Install(t.Context(), Request{Bundle: bad.path}, srv.activate)
	srv.settle(err)
	if !errors.Is(err, ErrActivate) || !strings.Contains(err.Error(), "two-sine-") {
		t.Fatalf("err %v, want ErrActivate naming the failing smoke vector", err)
	}
	assertActive(t, s, "silero-vad@5.0.0", "")
	if got := srv.serving.Manifest().ID(); got != "silero-vad@5.0.0" {
		t.Fatalf("serving %s after a failed smoke test", got)
	}
	le := stateFile(t, dir).LastError
	if le == nil || le.ID != "silero-vad@5.1.0" || !strings.Contains(le.Error, "smoke") || !strings.Contains(le.Error, "two-sine-") {
		t.Fatalf("lastError %+v, want the smoke failure of silero-vad@5.1.0", le)
	}

	// The model still answers after the refused install.
	frame := make([]float32, 512)
	out, err := srv.serving.Infer(t.Context(), model.Input{Tensors: []tensor.Tensor{
		{Name: "input", Datatype: tensor.FP32, Shape: []int64{1, 512}, Data: frame},
		{Name: "state", Datatype: tensor.FP32, Shape: []int64{2, 1, 128}, Data: make([]float32, 256)},
		{Name: "sr", Datatype: tensor.Int64, Shape: []int64{1}, Data: []int64{16000}},
	}})
	if err != nil || len(out.Tensors) == 0 {
		t.Fatalf("Infer after the refused install: %v, %v", out, err)
	}

	// A good next version goes into service; a rollback brings back the
	// first one through the same load and smoke test.
	next := buildSilero(t, k, "5.2.0", sileroOutput, true)
	if _, err := s.Install(t.Context(), Request{Bundle: next.path}, srv.activate); srv.settle(err) != nil {
		t.Fatal(err)
	}
	assertActive(t, s, "silero-vad@5.2.0", "silero-vad@5.0.0")
	if _, err := s.Rollback(t.Context(), srv.activate); srv.settle(err) != nil {
		t.Fatal(err)
	}
	assertActive(t, s, "silero-vad@5.0.0", "silero-vad@5.2.0")
	if got := srv.serving.Manifest().ID(); got != "silero-vad@5.0.0" {
		t.Fatalf("serving %s after the rollback", got)
	}
}
