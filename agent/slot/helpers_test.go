package slot

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/shared/testenv/testbundle"
)

// keys is a publisher's key pair (testbundle's) and its trust root.
type keys struct {
	*testbundle.Publisher
	pub   string // the public key file
	trust *bundle.TrustRoot
}

func newKeys(t testing.TB) *keys {
	t.Helper()
	p := testbundle.TestPublisher(t)
	trust, err := bundle.LoadTrustRoot(p.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &keys{Publisher: p, pub: p.PublicKey, trust: trust}
}

// built is a signed bundle on disk.
type built struct {
	path, sig string
	m         *bundle.Manifest
	model     []byte
}

const testBundleName = "demo"

// buildBundle builds and signs NAME-VERSION.bundle with a dummy model
// file (real bundle.Build, no model check) in a fresh directory.
func buildBundle(t testing.TB, k *keys, version string) built {
	t.Helper()
	return buildNamed(t, k, testBundleName, version)
}

func buildNamed(t testing.TB, k *keys, name, version string) built {
	t.Helper()
	spec := t.TempDir()
	// Incompressible, so that the bundle is large enough to be cut.
	model := append([]byte(fmt.Sprintf("dummy model %s@%s\n", name, version)), make([]byte, 64<<10)...)
	if _, err := rand.Read(model[len(model)-64<<10:]); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(spec, "model.onnx"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`name: %s
version: %s
model: model.onnx
inputs: [{name: input, datatype: FP32, shape: [1]}]
outputs: [{name: output, datatype: FP32, shape: [1]}]
`, name, version)
	if err := os.WriteFile(filepath.Join(spec, bundle.SpecName), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return buildSpec(t, k, spec, name+"-"+version+".bundle", bundle.BuildOptions{}, model)
}

func buildSpec(t testing.TB, k *keys, spec, file string, opts bundle.BuildOptions, model []byte) built {
	t.Helper()
	b, err := k.Build(context.Background(), spec, filepath.Join(t.TempDir(), file), opts)
	if err != nil {
		t.Fatal(err)
	}
	return built{path: b.Path, sig: b.Sig, m: b.Manifest, model: model}
}

// testLogger logs to the test's log.
func testLogger(t testing.TB) *slog.Logger { return testenv.Logger(t) }

func testOptions(t testing.TB, k *keys) Options {
	return Options{
		Trust:        k.trust,
		Logger:       testLogger(t),
		MinFreeBytes: -1,
	}
}

func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// activator is an ActivateFunc that checks what it is given, records
// calls and can be told to fail.
// mustInstall installs the bundle at src through act, failing the test on
// an error.
func mustInstall(t testing.TB, s *Store, act *activator, src string) Slot {
	t.Helper()
	sl, err := s.Install(t.Context(), Request{Bundle: src}, act.activate)
	if err != nil {
		t.Fatalf("install %s: %v", src, err)
	}
	return sl
}

type activator struct {
	mu    sync.Mutex
	calls []string
	fail  error
}

func (a *activator) activate(ctx context.Context, dir string, m *bundle.Manifest) error {
	a.mu.Lock()
	a.calls = append(a.calls, m.ID())
	fail := a.fail
	a.mu.Unlock()
	if err := checkActivated(dir, m); err != nil {
		return err
	}
	return fail
}

// checkActivated is what the tests' activate callbacks check: the
// directory holds the manifest and the model file it lists.
func checkActivated(dir string, m *bundle.Manifest) error {
	got, err := ReadManifest(dir)
	if err != nil {
		return err
	}
	if got.ID() != m.ID() {
		return fmt.Errorf("manifest in %s is %s, want %s", dir, got.ID(), m.ID())
	}
	f, ok := m.File(m.Runtime.Model)
	if !ok {
		return fmt.Errorf("manifest does not list its model %s", m.Runtime.Model)
	}
	fi, err := os.Stat(filepath.Join(dir, f.Path))
	if err != nil {
		return err
	}
	if fi.Size() != f.Size {
		return fmt.Errorf("%s is %d bytes, manifest says %d", f.Path, fi.Size(), f.Size)
	}
	return nil
}

// assertActive checks the store's active version, that its directory
// holds every manifest file with the right digest, and that bundles/
// holds exactly the active and last-known-good directories.
func assertActive(t testing.TB, s *Store, wantID, wantLKG string) {
	t.Helper()
	a, ok := s.Active()
	switch {
	case wantID == "" && ok:
		t.Fatalf("active %s, want none", a.ID)
	case wantID != "" && !ok:
		t.Fatalf("no active version, want %s", wantID)
	case ok && a.ID != wantID:
		t.Fatalf("active %s, want %s", a.ID, wantID)
	}
	want := []string{}
	if ok {
		m, err := Verify(context.Background(), a.Dir)
		if err != nil {
			t.Fatalf("active slot does not verify: %v", err)
		}
		if m.ID() != wantID {
			t.Fatalf("active dir holds %s, want %s", m.ID(), wantID)
		}
		want = append(want, filepath.Base(a.Dir))
	}
	l, ok := s.LastKnownGood()
	switch {
	case wantLKG == "" && ok:
		t.Fatalf("last-known-good %s, want none", l.ID)
	case wantLKG != "" && !ok:
		t.Fatalf("no last-known-good, want %s", wantLKG)
	case ok && l.ID != wantLKG:
		t.Fatalf("last-known-good %s, want %s", l.ID, wantLKG)
	}
	if ok {
		if _, err := Verify(context.Background(), l.Dir); err != nil {
			t.Fatalf("last-known-good slot does not verify: %v", err)
		}
		want = append(want, filepath.Base(l.Dir))
	}
	got := listDir(t, filepath.Join(s.Dir(), bundlesDir))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("bundles/ holds %q, want exactly %q", got, want)
	}
	for _, name := range listDir(t, s.Dir()) {
		if strings.HasPrefix(name, tempPref) {
			t.Fatalf("temp state file %s left in the data directory", name)
		}
	}
}

func listDir(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// stateFile reads state.json as committed on disk.
func stateFile(t testing.TB, dir string) State {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, stateName))
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseState(b)
	if err != nil {
		t.Fatalf("state.json: %v", err)
	}
	return st
}

// fileServer serves files by base name with http.ServeContent (Range
// support), optionally cutting or stalling responses.
type fileServer struct {
	*httptest.Server
	mu       sync.Mutex
	files    map[string][]byte
	ranges   []string
	cutAfter int64         // if > 0, cut the next response for a .bundle after this many bytes
	stall    chan struct{} // if set, stall the next .bundle response after half, closing stall
}

func newFileServer(t testing.TB, bs ...built) *fileServer {
	t.Helper()
	fs := &fileServer{files: map[string][]byte{}}
	for _, b := range bs {
		fs.add(t, b)
	}
	fs.Server = httptest.NewServer(fs)
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fileServer) add(t testing.TB, b built) {
	t.Helper()
	for _, p := range []string{b.path, b.sig} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fs.mu.Lock()
		fs.files[filepath.Base(p)] = data
		fs.mu.Unlock()
	}
}

func (fs *fileServer) url(b built) string { return fs.URL + "/bundles/" + filepath.Base(b.path) }

func (fs *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := filepath.Base(r.URL.Path)
	fs.mu.Lock()
	data, ok := fs.files[name]
	isBundle := strings.HasSuffix(name, ".bundle")
	if isBundle {
		fs.ranges = append(fs.ranges, r.Header.Get("Range"))
	}
	cut, stall := int64(0), chan struct{}(nil)
	if isBundle {
		cut, fs.cutAfter = fs.cutAfter, 0
		stall, fs.stall = fs.stall, nil
	}
	fs.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	var out http.ResponseWriter = w
	switch {
	case cut > 0:
		out = &testenv.CutWriter{ResponseWriter: w, Left: cut}
	case stall != nil:
		out = &testenv.CutWriter{ResponseWriter: w, Left: int64(len(data) / 2), Hold: r.Context(), Held: stall}
	}
	http.ServeContent(out, r, name, time.Unix(1700000000, 0), bytes.NewReader(data))
}
