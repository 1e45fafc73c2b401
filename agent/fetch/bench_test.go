package fetch

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkDownload compares Fetch (retries, part file, fsync, rename,
// sha256) with a bare http.Get copied into a file, with and without an
// fsync, for 8 MiB over loopback.
func BenchmarkDownload(b *testing.B) {
	s := &server{content: make([]byte, 8<<20)}
	ts := newBenchServer(b, s)
	want := Expect{Size: int64(len(s.content)), SHA256: sum(s.content)}
	b.Run("fetch", func(b *testing.B) {
		f := New(Options{})
		dir := b.TempDir()
		b.SetBytes(int64(len(s.content)))
		for b.Loop() {
			dest := filepath.Join(dir, "a.bundle")
			if _, err := f.Fetch(b.Context(), ts, dest, want); err != nil {
				b.Fatal(err)
			}
			os.Remove(dest)
		}
	})
	for _, sync := range []bool{false, true} {
		name := "raw-http-get"
		if sync {
			name += "+fsync"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			b.SetBytes(int64(len(s.content)))
			for b.Loop() {
				resp, err := http.Get(ts)
				if err != nil {
					b.Fatal(err)
				}
				out, err := os.Create(filepath.Join(dir, "a.bundle"))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(out, resp.Body); err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if sync {
					if err := out.Sync(); err != nil {
						b.Fatal(err)
					}
				}
				out.Close()
			}
		})
	}
}

func newBenchServer(b *testing.B, s *server) string {
	ts := httptest.NewServer(s)
	b.Cleanup(ts.Close)
	return ts.URL
}
