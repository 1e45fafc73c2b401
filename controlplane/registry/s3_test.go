package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// minioServer is a real MinIO server on loopback, started once for the
// package's tests (by the first test that needs it) and stopped by
// TestMain.
type minioServer struct {
	addr       string // host:port of the S3 API
	user, pass string
	dataDir    string
	cmd        *exec.Cmd
	out        *testenv.SyncBuffer
	exited     chan struct{}
}

var (
	minioOnce sync.Once
	minioSrv  *minioServer
	minioErr  error
	bucketSeq atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if minioSrv != nil {
		minioSrv.stop()
	}
	os.Exit(code)
}

// startMinIO returns the package's MinIO server, starting it if needed.
func startMinIO(t testing.TB) *minioServer {
	t.Helper()
	bin := cptest.MinIOBinary(t)
	minioOnce.Do(func() { minioSrv, minioErr = launchMinIO(bin) })
	if minioErr != nil {
		t.Fatalf("starting MinIO: %v", minioErr)
	}
	return minioSrv
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func launchMinIO(bin string) (*minioServer, error) {
	var lastErr error
	// The ports are picked free, then handed to MinIO: another process
	// may grab one in between, so try a few times.
	for range 3 {
		s, err := tryLaunchMinIO(bin)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func tryLaunchMinIO(bin string) (*minioServer, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	console, err := freePort()
	if err != nil {
		return nil, err
	}
	data, err := os.MkdirTemp("", "edgefleet-minio-")
	if err != nil {
		return nil, err
	}
	pass := make([]byte, 16)
	rand.Read(pass)
	s := &minioServer{addr: addr, user: "edgefleet", pass: hex.EncodeToString(pass), dataDir: data,
		out: &testenv.SyncBuffer{Max: 1 << 20}, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, "server", data, "--address", addr, "--console-address", console, "--quiet")
	s.cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+s.user, "MINIO_ROOT_PASSWORD="+s.pass,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(data)
		return nil, err
	}
	go func() { s.cmd.Wait(); close(s.exited) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.exited:
			os.RemoveAll(data)
			return nil, fmt.Errorf("minio exited: %s\n%s", s.cmd.ProcessState, s.out.String())
		default:
		}
		if ready(s.addr) {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("minio not ready at %s after 60s:\n%s", s.addr, s.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ready(addr string) bool {
	c := http.Client{Timeout: time.Second}
	for _, p := range []string{"/minio/health/live", "/minio/health/ready"} {
		resp, err := c.Get("http://" + addr + p)
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
	}
	return true
}

func (s *minioServer) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dataDir)
}

// s3Config is a config for a fresh bucket on the test server.
func s3Config(t testing.TB, srv *minioServer) S3Config {
	return S3Config{
		Endpoint: srv.addr, AccessKey: srv.user, SecretKey: srv.pass,
		Bucket:       fmt.Sprintf("registry-test-%d", bucketSeq.Add(1)),
		CreateBucket: true,
	}
}

func newS3(t testing.TB, cfg S3Config) *S3 {
	t.Helper()
	reg, err := NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewS3: %v", err)
	}
	return reg
}

func TestS3Conformance(t *testing.T) {
	srv := startMinIO(t)
	runConformance(t, func(t *testing.T, trust *bundle.TrustRoot, urlExpiry time.Duration) env {
		cfg := s3Config(t, srv)
		cfg.Trust = trust
		cfg.URLExpiry = urlExpiry
		// The server's clock decides expiry: wait it out (presigned URLs
		// carry their signing time in whole seconds, hence the margin).
		return env{reg: newS3(t, cfg), expire: func(*testing.T) { time.Sleep(urlExpiry + 1200*time.Millisecond) }}
	})
}

func TestNewS3Config(t *testing.T) {
	srv := startMinIO(t)
	ctx := context.Background()
	cfg := s3Config(t, srv)
	cfg.CreateBucket = false
	if _, err := NewS3(ctx, cfg); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("NewS3 with a missing bucket = %v", err)
	}
	cfg.CreateBucket = true
	newS3(t, cfg)
	newS3(t, cfg) // exists now
	cfg.CreateBucket = false
	newS3(t, cfg)

	for _, tc := range []struct {
		edit func(*S3Config)
		want string
	}{
		{func(c *S3Config) { c.Bucket = "" }, "Bucket are required"},
		{func(c *S3Config) { c.Prefix = "/x/" }, "Prefix"},
		{func(c *S3Config) { c.Prefix = "x" }, "Prefix"},
		{func(c *S3Config) { c.URLExpiry = 8 * 24 * time.Hour }, "1s to 7 days"},
	} {
		c := s3Config(t, srv)
		tc.edit(&c)
		if _, err := NewS3(ctx, c); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewS3 = %v, want ErrInvalid containing %q", err, tc.want)
		}
	}
	bad := s3Config(t, srv)
	bad.SecretKey = "wrong-secret-key"
	if _, err := NewS3(ctx, bad); err == nil {
		t.Error("NewS3 with wrong credentials succeeded")
	}
}

// TestS3Layout pins the object layout, and that presigned URLs use the
// public endpoint when one is set.
func TestS3Layout(t *testing.T) {
	srv := startMinIO(t)
	ctx := context.Background()
	pub := newPublisher(t)
	cfg := s3Config(t, srv)
	cfg.Prefix = "prod/"
	_, port, _ := net.SplitHostPort(srv.addr)
	cfg.PublicEndpoint = "localhost:" + port
	reg := newS3(t, cfg)
	bp, sp := pub.build(t, "vad", "1.0.0", modelBytes(1, 1024))
	en, err := reg.Put(ctx, bp, sp)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for obj := range reg.client.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		keys = append(keys, obj.Key)
	}
	want := []string{
		"prod/bundles/vad/1.0.0/" + en.push + "/bundle",
		"prod/bundles/vad/1.0.0/" + en.push + "/bundle.sig",
		"prod/bundles/vad/1.0.0/entry.json",
	}
	// S3 lists in key order, where the push id (random hex) may sort
	// before or after "entry.json".
	slices.Sort(keys)
	slices.Sort(want)
	if strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Errorf("objects = %v, want %v", keys, want)
	}
	bu, _, err := reg.URL(ctx, en, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(bu)
	if u.Host != cfg.PublicEndpoint || u.Query().Get("X-Amz-Expires") != "900" {
		t.Errorf("presigned URL %s: want host %s and a 15-minute expiry", bu, cfg.PublicEndpoint)
	}
	if got, _ := download(t, bu, nil, http.StatusOK); !bytes.Equal(got, mustRead(t, bp)) {
		t.Error("download through the public endpoint differs")
	}
	// An Entry decoded from elsewhere (no push id) still gets URLs.
	var plain Entry
	if err := json.Unmarshal([]byte(cptest.JSON(t, en)), &plain); err != nil {
		t.Fatal(err)
	}
	bu2, _, err := reg.URL(ctx, plain, "")
	if err != nil {
		t.Fatal(err)
	}
	download(t, bu2, nil, http.StatusOK)

	// A failed push leaves no objects behind.
	other, osp := pub.build(t, "vad", "1.0.0", modelBytes(2, 1024))
	if _, err := reg.Put(ctx, other, osp); !errors.Is(err, ErrConflict) {
		t.Fatal(err)
	}
	if err := reg.Delete(ctx, "vad", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	for obj := range reg.client.ListObjects(ctx, cfg.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		t.Errorf("object left after Delete: %s %v", obj.Key, obj.Err)
	}
}
