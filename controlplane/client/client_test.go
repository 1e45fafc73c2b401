package client

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/registry"
)

func TestParseServer(t *testing.T) {
	for _, s := range []string{"http://127.0.0.1:8080", "https://fleetd.example.com/", "http://[::1]:8080/prefix"} {
		if _, err := ParseServer(s); err != nil {
			t.Errorf("ParseServer(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "127.0.0.1:8080", "ftp://h", "http://", "http://h?x=1", "http://h#f", "http://u:p@h", "http://h:8080 x"} {
		if _, err := ParseServer(s); err == nil {
			t.Errorf("ParseServer(%q) accepted it", s)
		}
	}
}

// counter counts the bytes written to it, as a progress bar does.
type counter int64

func (c *counter) Write(b []byte) (int, error) { *c += counter(len(b)); return len(b), nil }

// TestDownload: both files land atomically when the bytes are the
// registry's; otherwise nothing is written, and a file already there is
// left as it was. The operator token never goes to the download URLs.
func TestDownload(t *testing.T) {
	content := []byte("a bundle's bytes, more or less")
	sum := sha256.Sum256(content)
	served := map[string][]byte{"/dl/b.bundle": content, "/dl/b.bundle.sig": []byte("c2lnbmF0dXJl\n")}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("%s sent with a token", r.URL)
		}
		b, ok := served[r.URL.Path]
		if !ok {
			http.Error(w, "gone", http.StatusNotFound)
			return
		}
		w.Write(b)
	}))
	defer srv.Close()
	c, err := New(srv.URL, "op-token", nil)
	if err != nil {
		t.Fatal(err)
	}
	entry := registry.Entry{Name: "b", Version: "1.0.0", Size: int64(len(content)), SHA256: hex.EncodeToString(sum[:])}
	good := &api.Bundle{Entry: entry, URL: srv.URL + "/dl/b.bundle", SigURL: "/dl/b.bundle.sig"} // a relative URL is the server's

	dir := t.TempDir()
	path := filepath.Join(dir, "out.bundle")
	var n counter
	if err := c.Download(t.Context(), good, path, path+".sig", &n); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
		t.Errorf("bundle file = %q", got)
	}
	if got, _ := os.ReadFile(path + ".sig"); string(got) != "c2lnbmF0dXJl\n" {
		t.Errorf("signature file = %q", got)
	}
	if n != counter(len(content)) {
		t.Errorf("progress saw %d bytes, want %d", n, len(content))
	}

	for _, tc := range []struct {
		name string
		b    api.Bundle
		msg  string
	}{
		{"another sha256", api.Bundle{Entry: registry.Entry{Name: "b", Version: "1.0.0", Size: entry.Size, SHA256: strings.Repeat("0", 64)}, URL: good.URL, SigURL: good.SigURL}, "the registry has"},
		{"shorter", api.Bundle{Entry: registry.Entry{Name: "b", Version: "1.0.0", Size: entry.Size + 1, SHA256: entry.SHA256}, URL: good.URL, SigURL: good.SigURL}, "the registry has"},
		{"longer", api.Bundle{Entry: registry.Entry{Name: "b", Version: "1.0.0", Size: entry.Size - 1, SHA256: entry.SHA256}, URL: good.URL, SigURL: good.SigURL}, "more than the"},
		{"no signature", api.Bundle{Entry: entry, URL: good.URL, SigURL: srv.URL + "/dl/none.sig"}, "HTTP 404"},
		{"no URL", api.Bundle{Entry: entry}, "no download URL"},
	} {
		if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Remove(path + ".sig")
		err := c.Download(t.Context(), &tc.b, path, path+".sig", nil)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: Download = %v, want an error saying %q", tc.name, err, tc.msg)
		}
		if got, _ := os.ReadFile(path); string(got) != "old" {
			t.Errorf("%s: the file there was replaced by %q", tc.name, got)
		}
		if _, err := os.Stat(path + ".sig"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: a signature was written (%v)", tc.name, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("%s: left %v behind", tc.name, ents)
		}
	}
}
