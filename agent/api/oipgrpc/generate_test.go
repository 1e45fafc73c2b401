package oipgrpc

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

// TestGeneratedCodeIsCurrent regenerates the Go code from
// grpc_predict_v2.proto into a temporary directory, with protoc and the
// pinned plugins (scripts/proto.sh, as make proto does), and fails unless
// the files here are the same.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Fatalf("protoc not found (%v): install it with sudo scripts/setup.sh test (Debian package protobuf-compiler)", err)
	}
	tools := testenv.ToolsDir(t)
	for _, p := range []string{"protoc-gen-go", "protoc-gen-go-grpc"} {
		testenv.Tool(t, p)
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(testenv.Root(t), "scripts", "proto.sh"), out)
	cmd.Env = append(os.Environ(), "EDGEFLEET_TOOLS="+tools)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/proto.sh: %v\n%s", err, b)
	}
	for _, f := range []string{"grpc_predict_v2.pb.go", "grpc_predict_v2_grpc.pb.go"} {
		want, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("%v (make proto writes it)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what grpc_predict_v2.proto generates: run make proto", f)
		}
	}
}
