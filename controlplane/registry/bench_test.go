package registry

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkDownload measures a device's bundle download (8 MiB) through
// the FS registry's handler with a signed URL, beside the raw peer
// (http.ServeFile of the same file, no access check) and a presigned GET
// from MinIO through the S3 registry.
func BenchmarkDownload(b *testing.B) {
	ctx := context.Background()
	pub := newPublisher(b)
	bp, sp := pub.build(b, "vad", "1.0.0", modelBytes(1, 8<<20))

	fsReg, _ := newFSServer(b, FSConfig{URLKey: testURLKey, Trust: pub.trust})
	fsEntry, err := fsReg.Put(ctx, bp, sp)
	if err != nil {
		b.Fatal(err)
	}
	fsURL, _, err := fsReg.URL(ctx, fsEntry, "dev-1")
	if err != nil {
		b.Fatal(err)
	}
	raw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, bp)
	}))
	b.Cleanup(raw.Close)

	s3Reg := newS3(b, s3Config(b, startMinIO(b)))
	s3Entry, err := s3Reg.Put(ctx, bp, sp)
	if err != nil {
		b.Fatal(err)
	}
	s3URL, _, err := s3Reg.URL(ctx, s3Entry, "dev-1")
	if err != nil {
		b.Fatal(err)
	}

	for _, c := range []struct{ name, url string }{
		{"fs-handler-signed", fsURL},
		{"raw-servefile", raw.URL},
		{"s3-minio-presigned", s3URL},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(fsEntry.Size)
			for b.Loop() {
				resp, err := http.Get(c.url)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != fsEntry.Size || resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d, %d bytes, %v", resp.StatusCode, n, err)
				}
			}
		})
	}
}
