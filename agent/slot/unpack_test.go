package slot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/agent/fetch"
	"github.com/edgefleet/edgefleet/shared/bundle"
)

// TestUnpack: a bundle unpacked beside the slots (a shadow candidate) is
// verified like an install, lands complete in its destination, and
// leaves the slots, state.json and LastError alone.
func TestUnpack(t *testing.T) {
	k := newKeys(t)
	v1, v2 := buildBundle(t, k, "1.0.0"), buildBundle(t, k, "2.0.0")
	dir := t.TempDir()
	s := openStore(t, dir, testOptions(t, k))
	if _, err := s.Install(t.Context(), Request{Bundle: v2.path}, (&activator{}).activate); err != nil {
		t.Fatal(err)
	}
	before := stateFile(t, dir)
	srv := newFileServer(t, v1)

	// From a URL, pinned and digest-checked; a lower version than the
	// active one is fine (no downgrade check).
	dest := filepath.Join(dir, "shadow", "demo@1.0.0")
	m, err := s.Unpack(t.Context(), Request{Bundle: srv.url(v1), ID: "demo@1.0.0", Size: fileSize(t, v1.path), SHA256: sha(t, v1.path)}, dest)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID() != "demo@1.0.0" {
		t.Fatalf("manifest %s", m.ID())
	}
	if err := checkActivated(dest, m); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(t.Context(), dest); err != nil {
		t.Fatalf("unpacked directory does not verify: %v", err)
	}
	if got := listDir(t, filepath.Dir(dest)); strings.Join(got, " ") != "demo@1.0.0" {
		t.Fatalf("shadow directory holds %q, want only the destination", got)
	}
	if got := listDir(t, filepath.Join(dir, downloadsDir)); len(got) != 0 {
		t.Fatalf("downloads left behind: %q", got)
	}
	assertActive(t, s, "demo@2.0.0", "")
	if after := stateFile(t, dir); after.Generation != before.Generation || *after.Active != *before.Active {
		t.Fatalf("state changed: %+v, was %+v", after, before)
	}

	stranger := buildBundle(t, newKeys(t), "3.0.0")
	tests := []struct {
		name string
		req  Request
		dest string
		want error
	}{
		{"destination exists", Request{Bundle: v1.path}, dest, os.ErrExist},
		{"untrusted", Request{Bundle: stranger.path}, filepath.Join(dir, "shadow", "x"), bundle.ErrSignature},
		{"wrong digest", Request{Bundle: v1.path, SHA256: strings.Repeat("0", 64)}, filepath.Join(dir, "shadow", "x"), fetch.ErrDigest},
		{"mismatch", Request{Bundle: v1.path, ID: "demo@9.9.9"}, filepath.Join(dir, "shadow", "x"), ErrMismatch},
		{"empty source", Request{}, filepath.Join(dir, "shadow", "x"), fetch.ErrSource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Unpack(t.Context(), tt.req, tt.dest)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "shadow", "x")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a refused bundle left its destination: %v", err)
			}
			if got := listDir(t, filepath.Join(dir, "shadow")); strings.Join(got, " ") != "demo@1.0.0" {
				t.Fatalf("shadow directory holds %q after a refusal", got)
			}
			if st := s.State(); st.LastError != nil {
				t.Fatalf("a refused unpack was recorded as the store's last error: %+v", st.LastError)
			}
		})
	}

	if _, err := s.Unpack(t.Context(), Request{Bundle: v1.path}, filepath.Join(dir, bundlesDir, "x")); err == nil || !strings.Contains(err.Error(), "inside the store's bundles directory") {
		t.Fatalf("destination under bundles/: %v", err)
	}
	assertActive(t, s, "demo@2.0.0", "")
}

// TestUnpackBusyAndClosed: Unpack shares the install lock.
func TestUnpackBusyAndClosed(t *testing.T) {
	k := newKeys(t)
	v1, v2 := buildBundle(t, k, "1.0.0"), buildBundle(t, k, "2.0.0")
	dir := t.TempDir()
	s := openStore(t, dir, testOptions(t, k))
	entered, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := s.Install(context.Background(), Request{Bundle: v1.path}, func(ctx context.Context, dir string, m *bundle.Manifest) error {
			close(entered)
			<-release
			return nil
		})
		done <- err
	}()
	<-entered
	if _, err := s.Unpack(t.Context(), Request{Bundle: v2.path}, filepath.Join(dir, "shadow", "v2")); !errors.Is(err, ErrBusy) {
		t.Fatalf("Unpack during an Install: %v, want ErrBusy", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Unpack(t.Context(), Request{Bundle: v2.path}, filepath.Join(dir, "shadow", "v2")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Unpack after Close: %v, want ErrClosed", err)
	}
}

func fileSize(t testing.TB, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
