package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// RelayPackage is the import path of the relay command.
const RelayPackage = "github.com/edgefleet/edgefleet/testbed/qemu/relay"

// BuildRelay builds the relay command (see Config.Relay) into dir with the
// go command, from the module that holds this package (the working
// directory must be inside it, as it is for tests), and returns its path.
func BuildRelay(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "efrelay")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, RelayPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("qemu: building the relay: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return out, nil
}
