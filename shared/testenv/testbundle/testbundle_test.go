package testbundle_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// TestBuildSilero: the bundles pass the model check, carry what they were
// asked for and verify against the publisher's key.
func TestBuildSilero(t *testing.T) {
	p := testbundle.TestPublisher(t)
	trust, err := bundle.LoadTrustRoot(p.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	lib := testenv.ORTLibrary(t)
	check := func(ctx context.Context, dir string, m *bundle.Manifest) error {
		return model.Check(ctx, dir, m, model.Options{ORTLibrary: lib})
	}
	for _, c := range []struct {
		name  string
		smoke testbundle.Smoke
		check bool
		want  float64
		vecs  int
	}{
		{"both", testbundle.SmokeBoth, true, 0, 2},
		{"pcm", testbundle.SmokePCM, true, 0, 1},
		{"none", testbundle.SmokeNone, true, 0, 0},
		{"wrong", testbundle.SmokeBoth, false, 0.9, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := testbundle.SileroFiles(t)
			s.Version, s.Smoke, s.SmokeOutput, s.MinAgentVersion = "1.0.0", c.smoke, c.want, "0.2.0"
			if c.check {
				s.Check = check
			}
			b, err := p.BuildSilero(t.Context(), t.TempDir(), s)
			if err != nil {
				t.Fatal(err)
			}
			if b.ID() != "silero-vad@1.0.0" || len(b.Manifest.Smoke) != c.vecs || b.Manifest.MinAgentVersion != "0.2.0" ||
				filepath.Base(b.Path) != "silero-vad-1.0.0.bundle" || b.Sig != b.Path+".sig" {
				t.Fatalf("bundle %+v, manifest %+v", b, b.Manifest)
			}
			if _, err := bundle.VerifyAndUnpack(t.Context(), b.Path, b.Sig, trust, filepath.Join(t.TempDir(), "x"), bundle.Limits{}); err != nil {
				t.Fatalf("VerifyAndUnpack: %v", err)
			}
		})
	}
	if _, err := p.BuildSilero(t.Context(), t.TempDir(), testbundle.Silero{Version: "1.0.0"}); err == nil {
		t.Fatal("BuildSilero without a model built")
	}
}

// TestSileroDir: the unpacked layout and its manifest load and pass the
// check with the manifest's smoke vectors (none).
func TestSileroDir(t *testing.T) {
	dir := testbundle.SileroDir(t)
	if err := model.Check(t.Context(), dir, testbundle.SileroManifest("5.0.0"), model.Options{ORTLibrary: testenv.ORTLibrary(t)}); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

// TestBuildFake: a fake bundle verifies, carries its profile, and builds
// byte-identically from the same inputs.
func TestBuildFake(t *testing.T) {
	p := testbundle.TestPublisher(t)
	trust, err := bundle.LoadTrustRoot(p.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	profile := filepath.Join(testenv.Root(t), "testbed", "bundles", "silero-vad", "profile.json")
	a := p.MustBuildFake(t, "vad", "1.0.0", []byte("not a model"), profile)
	b := p.MustBuildFake(t, "vad", "1.0.0", []byte("not a model"), profile)
	if a.ID() != "vad@1.0.0" || a.Manifest.Profile == "" {
		t.Fatalf("manifest %+v", a.Manifest)
	}
	for _, x := range []testbundle.Bundle{a, b} {
		if _, err := bundle.VerifyAndUnpack(t.Context(), x.Path, x.Sig, trust, filepath.Join(t.TempDir(), "x"), bundle.Limits{}); err != nil {
			t.Fatalf("VerifyAndUnpack: %v", err)
		}
	}
	ab, _ := os.ReadFile(a.Path)
	bb, _ := os.ReadFile(b.Path)
	if !bytes.Equal(ab, bb) {
		t.Fatal("two builds of the same inputs differ")
	}
}

// TestPCM: samples are scaled by 32768, rounded and clamped to int16.
func TestPCM(t *testing.T) {
	got := testbundle.PCM([]float32{0, 0.5, -1, 1.5, -0.25})
	want := []byte{0, 0, 0x00, 0x40, 0x00, 0x80, 0xff, 0x7f, 0x00, 0xe0}
	if !bytes.Equal(got, want) {
		t.Fatalf("PCM = % x, want % x", got, want)
	}
}
