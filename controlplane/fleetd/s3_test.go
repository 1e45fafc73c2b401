package fleetd_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// minio is a real MinIO server on loopback, for this test only.
type minio struct {
	addr, user, pass string
}

// startMinIO runs the pinned MinIO server (scripts/tools.sh) until the
// test ends.
func startMinIO(t testing.TB) *minio {
	t.Helper()
	bin := cptest.MinIOBinary(t)
	port := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	pass := make([]byte, 16)
	rand.Read(pass)
	m := &minio{addr: port(), user: "edgefleet", pass: hex.EncodeToString(pass)}
	out := &testenv.SyncBuffer{Max: 4 << 20}
	cmd := exec.Command(bin, "server", t.TempDir(), "--address", m.addr, "--console-address", port(), "--quiet")
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.user, "MINIO_ROOT_PASSWORD="+m.pass, "MINIO_BROWSER=off", "MINIO_UPDATE=off")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("minio exited: %v\n%s", err, out.String())
		default:
		}
		if resp, err := http.Get("http://" + m.addr + "/minio/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("minio not ready at %s:\n%s", m.addr, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestS3Registry runs fleetd with its registry in MinIO: pushed bundles
// land in the bucket, and a device's desired state carries presigned URLs
// that serve the exact bytes, for as long as the desired state lives.
func TestS3Registry(t *testing.T) {
	ctx := context.Background()
	m := startMinIO(t)
	cfg := baseConfig(t)
	creds := filepath.Join(t.TempDir(), "s3.env")
	os.WriteFile(creds, []byte(fmt.Sprintf("# MinIO\nAWS_ACCESS_KEY_ID=%s\nexport AWS_SECRET_ACCESS_KEY=%q\n", m.user, m.pass)), 0o600)
	cfg.Registry = fleetd.RegistryConfig{Type: "s3", TrustedKeys: cfg.Registry.TrustedKeys, S3: fleetd.S3Config{
		Endpoint: m.addr, Bucket: "fleetd-test", Prefix: "prod/", CredentialsFile: creds, CreateBucket: true,
	}}
	ts := startServer(t, cfg)
	if h, err := ts.api.Health(ctx); err != nil || h.Registry != "s3" {
		t.Fatalf("health = %+v, %v", h, err)
	}
	pw := ts.enroll(t, "dev-1", nil)
	d := mustDialDevice(t, ts.srv.MQTTAddr(), "dev-1", pw)
	d.subscribeDesired()

	pub := testPublisher(t)
	bpath := pub.build(t, "vad", "2.0.0", 200<<10)
	if _, created, err := ts.api.Push(ctx, bpath, bpath+".sig"); err != nil || !created {
		t.Fatalf("Push = %v, %v", created, err)
	}
	if _, err := ts.api.Assign(ctx, "dev-1", "vad@2.0.0", ""); err != nil {
		t.Fatal(err)
	}
	ds := d.nextDesired(0)
	if !strings.HasPrefix(ds.Bundle.URL, "http://"+m.addr+"/fleetd-test/prod/") || !strings.Contains(ds.Bundle.URL, "X-Amz-Expires=604800") {
		t.Errorf("bundle URL %s: want a presigned URL into the bucket valid 7 days", ds.Bundle.URL)
	}
	if got, want := fetch(t, ds.Bundle.URL), cptest.ReadFile(t, bpath); string(got) != want {
		t.Fatalf("presigned download: %d bytes, pushed %d", len(got), len(want))
	}
	if got, want := strings.TrimSpace(string(fetch(t, ds.Bundle.SigURL))), strings.TrimSpace(cptest.ReadFile(t, bpath+".sig")); got != want {
		t.Errorf("signature download = %q, want %q", got, want)
	}

	// The registry outlives fleetd.
	ts.restart()
	if bs, err := ts.api.Bundles(ctx, "vad"); err != nil || len(bs) != 1 || bs[0].Version != "2.0.0" {
		t.Fatalf("bundles after restart = %v, %v", bs, err)
	}

	// Bad credentials are refused at start, naming the setting.
	os.WriteFile(creds, []byte("AWS_ACCESS_KEY_ID=x\n"), 0o600)
	cfg.DataDir = t.TempDir()
	if _, err := fleetd.New(cfg); err == nil || !strings.Contains(err.Error(), "registry.s3.credentialsFile") {
		t.Errorf("New with incomplete credentials = %v", err)
	}
}
