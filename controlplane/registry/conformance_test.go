package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/bundle"
)

// env is one registry under test, with how to reach its download URLs.
type env struct {
	reg Registry
	// expire makes every URL issued so far expire.
	expire func(t *testing.T)
}

// envFactory makes a fresh, empty registry that trusts trust and issues
// URLs valid for urlExpiry (0: the default).
type envFactory func(t *testing.T, trust *bundle.TrustRoot, urlExpiry time.Duration) env

// runConformance runs the behaviours every Registry must have.
func runConformance(t *testing.T, newEnv envFactory) {
	pub := newPublisher(t)
	ctx := context.Background()
	model := modelBytes(1, 96<<10)

	t.Run("put and get", func(t *testing.T) {
		e := newEnv(t, pub.trust, 0)
		bp, sp := pub.build(t, "vad", "1.0.0", model)
		before := time.Now().Add(-time.Second)
		got, err := e.reg.Put(ctx, bp, sp)
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		file := mustRead(t, bp)
		want := Entry{Name: "vad", Version: "1.0.0", Size: int64(len(file)), SHA256: sha256hex(file),
			Sig: strings.TrimSpace(string(mustRead(t, sp))), Verified: true}
		if got.Name != want.Name || got.Version != want.Version || got.Size != want.Size || got.SHA256 != want.SHA256 ||
			got.Sig != want.Sig || !got.Verified || got.Pushed.Before(before) {
			t.Errorf("Put = %+v\nwant %+v", got, want)
		}
		if m := got.Manifest; m.Model != "model.onnx" || len(m.Files) != 1 || m.Files[0].Size != int64(len(model)) ||
			m.UnpackedSize != int64(len(model)) || len(m.Inputs) != 1 || m.SchemaVersion != bundle.SchemaVersion {
			t.Errorf("manifest summary = %+v", m)
		}
		again, err := e.reg.Get(ctx, "vad", "1.0.0")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if cptest.JSON(t, again) != cptest.JSON(t, got) {
			t.Errorf("Get = %s\nPut = %s", cptest.JSON(t, again), cptest.JSON(t, got))
		}
		if ref := got.BundleRef("u", "s"); ref.ID() != "vad@1.0.0" || ref.SHA256 != got.SHA256 || ref.Size != got.Size {
			t.Errorf("BundleRef = %+v", ref)
		}
	})

	t.Run("idempotent put", func(t *testing.T) {
		e := newEnv(t, pub.trust, 0)
		bp, sp := pub.build(t, "vad", "1.0.0", model)
		first, err := e.reg.Put(ctx, bp, sp)
		if err != nil {
			t.Fatal(err)
		}
		// The same files again, then the same bundle rebuilt and signed
		// anew (ECDSA signatures differ every time): the stored entry,
		// first signature included, is returned unchanged.
		bp2, sp2 := pub.build(t, "vad", "1.0.0", model)
		if bytes.Equal(mustRead(t, sp), mustRead(t, sp2)) {
			t.Fatal("test setup: the two signatures are identical")
		}
		for _, files := range [][2]string{{bp, sp}, {bp2, sp2}} {
			again, err := e.reg.Put(ctx, files[0], files[1])
			if err != nil {
				t.Fatalf("second Put of the same bundle: %v", err)
			}
			if cptest.JSON(t, again) != cptest.JSON(t, first) {
				t.Errorf("second Put = %s\nfirst = %s", cptest.JSON(t, again), cptest.JSON(t, first))
			}
		}
		if l, _ := e.reg.List(ctx, "vad"); len(l) != 1 {
			t.Errorf("List after idempotent puts = %d entries", len(l))
		}
	})

	t.Run("conflicting put", func(t *testing.T) {
		e := newEnv(t, pub.trust, 0)
		bp, sp := pub.build(t, "vad", "1.0.0", model)
		first, err := e.reg.Put(ctx, bp, sp)
		if err != nil {
			t.Fatal(err)
		}
		other, osp := pub.build(t, "vad", "1.0.0", modelBytes(2, 1000))
		_, err = e.reg.Put(ctx, other, osp)
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), first.SHA256) {
			t.Fatalf("Put of different content = %v, want ErrConflict naming the stored sha256", err)
		}
		if got, _ := e.reg.Get(ctx, "vad", "1.0.0"); got.SHA256 != first.SHA256 {
			t.Errorf("conflicting Put changed the entry: %+v", got)
		}
		if _, err := e.reg.Put(ctx, other, osp); !errors.Is(err, ErrConflict) {
			t.Errorf("second conflicting Put = %v", err)
		}
	})

	t.Run("signature refusals", func(t *testing.T) {
		e := newEnv(t, pub.trust, 0)
		bp, _ := pub.build(t, "vad", "1.0.0", model)
		dir := t.TempDir()
		write := func(name, content string) string {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
		stranger := newPublisher(t)
		strangerSig := stranger.sign(t, func() string {
			p := filepath.Join(t.TempDir(), "copy.bundle")
			if err := os.WriteFile(p, mustRead(t, bp), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}())
		tests := []struct {
			name    string
			sigPath string
			want    []error
			text    string
		}{
			{"no path", "", []error{ErrNoSignature}, "no signature file"},
			{"missing file", filepath.Join(dir, "nope.sig"), []error{ErrNoSignature}, "does not exist"},
			{"empty file", write("empty.sig", ""), []error{ErrNoSignature}, "is empty"},
			{"blank file", write("blank.sig", " \n\t\n"), []error{ErrNoSignature}, "is empty"},
			{"not base64", write("junk.sig", "not*base64!"), []error{ErrInvalid, bundle.ErrSignature}, "not base64"},
			{"wrong bytes", write("wrong.sig", "AAAAAAAAAAAAAAAA\n"), []error{bundle.ErrSignature}, ""},
			{"untrusted key", strangerSig, []error{bundle.ErrSignature}, "verifying"},
		}
		for _, tc := range tests {
			_, err := e.reg.Put(ctx, bp, tc.sigPath)
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("%s: Put error = %v, want %v", tc.name, err, w)
				}
			}
			if err != nil && !strings.Contains(err.Error(), tc.text) {
				t.Errorf("%s: error %q does not say %q", tc.name, err, tc.text)
			}
		}
		if l, err := e.reg.List(ctx, ""); err != nil || len(l) != 0 {
			t.Errorf("refused pushes left entries: %v, %v", l, err)
		}
	})

	t.Run("not a bundle", func(t *testing.T) {
		e := newEnv(t, pub.trust, 0)
		p := filepath.Join(t.TempDir(), "junk.bundle")
		if err := os.WriteFile(p, modelBytes(3, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := e.reg.Put(ctx, p, pub.sign(t, p))
		if !errors.Is(err, ErrInvalid) || !errors.Is(err, bundle.ErrFormat) {
			t.Errorf("Put(junk) = %v, want ErrInvalid and bundle.ErrFormat", err)
		}
		if _, err := e.reg.Put(ctx, filepath.Join(t.TempDir(), "missing.bundle"), p+".sig"); err == nil ||
			!errors.Is(err, os.ErrNotExist) {
			t.Errorf("Put(missing bundle) = %v, want a not-exist error", err)
		}
	})

	t.Run("list sorted by semver", func(t *testing.T) {
		e := newEnv(t, pub.trust, 0)
		small := modelBytes(4, 512)
		for _, id := range []string{"vad@1.10.0", "vad@1.2.0", "kws@0.1.0", "vad@1.2.0-rc.1", "vad@1.0.0", "vad@1.2.0-beta.2"} {
			name, version, _ := strings.Cut(id, "@")
			bp, sp := pub.build(t, name, version, small)
			if _, err := e.reg.Put(ctx, bp, sp); err != nil {
				t.Fatalf("Put %s: %v", id, err)
			}
		}
		for _, tc := range []struct{ name, want string }{
			{"vad", "vad@1.0.0 vad@1.2.0-beta.2 vad@1.2.0-rc.1 vad@1.2.0 vad@1.10.0"},
			{"", "kws@0.1.0 vad@1.0.0 vad@1.2.0-beta.2 vad@1.2.0-rc.1 vad@1.2.0 vad@1.10.0"},
			{"kws", "kws@0.1.0"},
			{"unknown", ""},
		} {
			l, err := e.reg.List(ctx, tc.name)
			if err != nil {
				t.Fatalf("List(%q): %v", tc.name, err)
			}
			var ids []string
			for _, en := range l {
				ids = append(ids, en.ID())
			}
			if got := strings.Join(ids, " "); got != tc.want {
				t.Errorf("List(%q) = %q, want %q", tc.name, got, tc.want)
			}
		}
		if _, err := e.reg.List(ctx, "Bad/Name"); !errors.Is(err, ErrInvalid) {
			t.Errorf("List(bad name) = %v, want ErrInvalid", err)
		}
	})

	t.Run("get errors", func(t *testing.T) {
		e := newEnv(t, pub.trust, 0)
		for _, tc := range []struct {
			name, version string
			want          error
		}{
			{"vad", "1.0.0", ErrNotFound},
			{"../etc", "1.0.0", ErrInvalid},
			{"vad", "v1.0.0", ErrInvalid},
			{"vad", "1.0", ErrInvalid},
			{"vad", "../../x", ErrInvalid},
			{"", "1.0.0", ErrInvalid},
		} {
			if _, err := e.reg.Get(ctx, tc.name, tc.version); !errors.Is(err, tc.want) {
				t.Errorf("Get(%q, %q) = %v, want %v", tc.name, tc.version, err, tc.want)
			}
			if err := e.reg.Delete(ctx, tc.name, tc.version); !errors.Is(err, tc.want) {
				t.Errorf("Delete(%q, %q) = %v, want %v", tc.name, tc.version, err, tc.want)
			}
		}
		if _, _, err := e.reg.URL(ctx, Entry{Name: "vad", Version: "1.0.0"}, "bad device"); !errors.Is(err, ErrInvalid) {
			t.Errorf("URL(bad device) = %v, want ErrInvalid", err)
		}
	})

	t.Run("download with range", func(t *testing.T) {
		e := newEnv(t, pub.trust, 0)
		bp, sp := pub.build(t, "vad", "1.0.0", model)
		en, err := e.reg.Put(ctx, bp, sp)
		if err != nil {
			t.Fatal(err)
		}
		bu, su, err := e.reg.URL(ctx, en, "dev-1")
		if err != nil {
			t.Fatalf("URL: %v", err)
		}
		file := mustRead(t, bp)
		full, resp := download(t, bu, nil, http.StatusOK)
		if !bytes.Equal(full, file) || resp.ContentLength != int64(len(file)) {
			t.Fatalf("download: %d bytes (Content-Length %d), want the %d bytes pushed", len(full), resp.ContentLength, len(file))
		}
		etag := resp.Header.Get("ETag")
		if etag == "" || strings.HasPrefix(etag, "W/") {
			t.Errorf("ETag = %q, want a strong validator", etag)
		}
		sig, _ := download(t, su, nil, http.StatusOK)
		if strings.TrimSpace(string(sig)) != strings.TrimSpace(string(mustRead(t, sp))) {
			t.Errorf("signature download = %q", sig)
		}
		// Resume the way the agent does: open-ended range with If-Range.
		for _, tc := range []struct {
			rng      string
			from, to int
		}{
			{"bytes=0-9", 0, 10},
			{fmt.Sprintf("bytes=%d-", len(file)/3), len(file) / 3, len(file)},
			{fmt.Sprintf("bytes=-%d", 100), len(file) - 100, len(file)},
		} {
			part, resp := download(t, bu, http.Header{"Range": {tc.rng}, "If-Range": {etag}}, http.StatusPartialContent)
			if !bytes.Equal(part, file[tc.from:tc.to]) {
				t.Errorf("%s: %d bytes, want bytes %d..%d of the bundle", tc.rng, len(part), tc.from, tc.to)
			}
			if want := fmt.Sprintf("bytes %d-%d/%d", tc.from, tc.to-1, len(file)); resp.Header.Get("Content-Range") != want {
				t.Errorf("%s: Content-Range %q, want %q", tc.rng, resp.Header.Get("Content-Range"), want)
			}
		}
		// A resume pinned to a stale validator with If-Match is refused
		// rather than spliced. (S3 ignores If-Range, so a client cannot
		// rely on If-Range alone there; the FS handler honours both.)
		download(t, bu, http.Header{"Range": {"bytes=10-"}, "If-Match": {`"0123"`}}, http.StatusPreconditionFailed)
		part, _ := download(t, bu, http.Header{"Range": {"bytes=10-"}, "If-Match": {etag}}, http.StatusPartialContent)
		if !bytes.Equal(part, file[10:]) {
			t.Error("Range with a matching If-Match returned other bytes")
		}
		download(t, bu, http.Header{"Range": {fmt.Sprintf("bytes=%d-", len(file)+10)}}, http.StatusRequestedRangeNotSatisfiable)
	})

	t.Run("url expiry", func(t *testing.T) {
		// Long enough that the first download is inside it on a busy
		// machine (S3 signs in whole seconds); the S3 env then sleeps it
		// out, since MinIO checks the expiry against the real clock.
		e := newEnv(t, pub.trust, 10*time.Second)
		bp, sp := pub.build(t, "vad", "1.0.0", modelBytes(5, 512))
		en, err := e.reg.Put(ctx, bp, sp)
		if err != nil {
			t.Fatal(err)
		}
		bu, su, err := e.reg.URL(ctx, en, "dev-1")
		if err != nil {
			t.Fatal(err)
		}
		download(t, bu, nil, http.StatusOK)
		e.expire(t)
		download(t, bu, nil, http.StatusForbidden)
		download(t, su, nil, http.StatusForbidden)
		fresh, _, err := e.reg.URL(ctx, en, "dev-1")
		if err != nil {
			t.Fatal(err)
		}
		download(t, fresh, nil, http.StatusOK)
	})

	t.Run("delete", func(t *testing.T) {
		e := newEnv(t, pub.trust, 0)
		bp, sp := pub.build(t, "vad", "1.0.0", modelBytes(6, 512))
		en, err := e.reg.Put(ctx, bp, sp)
		if err != nil {
			t.Fatal(err)
		}
		keep, ksp := pub.build(t, "vad", "1.1.0", modelBytes(6, 512))
		if _, err := e.reg.Put(ctx, keep, ksp); err != nil {
			t.Fatal(err)
		}
		bu, _, err := e.reg.URL(ctx, en, "dev-1")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.reg.Delete(ctx, "vad", "1.0.0"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := e.reg.Get(ctx, "vad", "1.0.0"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get after Delete = %v, want ErrNotFound", err)
		}
		if err := e.reg.Delete(ctx, "vad", "1.0.0"); !errors.Is(err, ErrNotFound) {
			t.Errorf("second Delete = %v, want ErrNotFound", err)
		}
		if l, _ := e.reg.List(ctx, "vad"); len(l) != 1 || l[0].Version != "1.1.0" {
			t.Errorf("List after Delete = %+v", l)
		}
		download(t, bu, nil, http.StatusNotFound)
		// The version may be pushed again after a delete, even with other
		// content.
		bp2, sp2 := pub.build(t, "vad", "1.0.0", modelBytes(7, 512))
		en2, err := e.reg.Put(ctx, bp2, sp2)
		if err != nil {
			t.Fatalf("Put after Delete: %v", err)
		}
		bu2, _, err := e.reg.URL(ctx, en2, "")
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := download(t, bu2, nil, http.StatusOK); !bytes.Equal(got, mustRead(t, bp2)) {
			t.Error("download after re-push differs")
		}
	})

	t.Run("concurrent puts", func(t *testing.T) {
		e := newEnv(t, pub.trust, 0)
		a, asig := pub.build(t, "vad", "2.0.0", modelBytes(8, 4096))
		b, bsig := pub.build(t, "vad", "2.0.0", modelBytes(9, 4096))
		shaA, shaB := sha256hex(mustRead(t, a)), sha256hex(mustRead(t, b))
		const n = 8
		results := make([]Entry, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i%2 == 0 {
					results[i], errs[i] = e.reg.Put(ctx, a, asig)
				} else {
					results[i], errs[i] = e.reg.Put(ctx, b, bsig)
				}
			}()
		}
		wg.Wait()
		stored, err := e.reg.Get(ctx, "vad", "2.0.0")
		if err != nil {
			t.Fatal(err)
		}
		if stored.SHA256 != shaA && stored.SHA256 != shaB {
			t.Fatalf("stored sha256 %s is neither pushed bundle", stored.SHA256)
		}
		for i := range n {
			mine := shaA
			if i%2 == 1 {
				mine = shaB
			}
			switch {
			case mine == stored.SHA256 && (errs[i] != nil || cptest.JSON(t, results[i]) != cptest.JSON(t, stored)):
				t.Errorf("push %d of the winning bundle: %+v, %v; want the stored entry", i, results[i], errs[i])
			case mine != stored.SHA256 && !errors.Is(errs[i], ErrConflict):
				t.Errorf("push %d of the losing bundle: %v, want ErrConflict", i, errs[i])
			}
		}
		bu, _, err := e.reg.URL(ctx, stored, "dev-1")
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := download(t, bu, nil, http.StatusOK); sha256hex(got) != stored.SHA256 {
			t.Errorf("download has sha256 %s, the entry says %s", sha256hex(got), stored.SHA256)
		}
	})
}

// download GETs u with extra headers, requires status, and returns the
// body (only read for 2xx).
func download(t *testing.T, u string, h http.Header, status int) ([]byte, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading: %v", u, err)
	}
	if resp.StatusCode != status {
		t.Fatalf("GET %s (%v): status %d, want %d: %.300s", u, h, resp.StatusCode, status, body)
	}
	return body, resp
}
