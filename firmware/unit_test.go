package firmware

import (
	"bufio"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// unit reads edge-agent.service into key -> values (section.Key).
func unit(t *testing.T) (string, map[string][]string) {
	t.Helper()
	b, err := os.ReadFile("edge-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("edge-agent.service: %q is not KEY=VALUE", line)
			}
			kv[section+"."+k] = append(kv[section+"."+k], v)
		}
	}
	return string(b), kv
}

func one(t *testing.T, kv map[string][]string, key string) string {
	t.Helper()
	v := kv[key]
	if len(v) != 1 {
		t.Fatalf("edge-agent.service: %s is set %d times, want once", key, len(v))
	}
	return v[0]
}

// TestUnitVerifies runs systemd-analyze verify on the unit, with ExecStart
// pointed at a freshly built edge-agent.
func TestUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: install systemd (apt-get install systemd)")
	}
	text, kv := unit(t)
	dir := t.TempDir()
	bin := testenv.Command(t, "./agent/cmd/edge-agent")
	execStart := one(t, kv, "Service.ExecStart")
	args := strings.Fields(execStart)
	if args[0] != "/usr/bin/edge-agent" {
		t.Fatalf("ExecStart=%s, want /usr/bin/edge-agent", execStart)
	}
	local := strings.Replace(text, "ExecStart="+args[0], "ExecStart="+bin, 1)
	path := filepath.Join(dir, "edge-agent.service")
	if err := os.WriteFile(path, []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := execCommand(analyze, "verify", path)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// And it does catch a broken unit.
	broken := strings.Replace(local, "ExecStart="+bin, "ExecStart="+bin+".missing", 1)
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := execCommand(analyze, "verify", path); err == nil {
		t.Fatalf("systemd-analyze verify accepted a unit whose binary is missing:\n%s", out)
	}
}

func execCommand(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// TestUnitMatchesAgent checks the unit against what the agent does and
// the default configuration's paths.
func TestUnitMatchesAgent(t *testing.T) {
	_, kv := unit(t)
	for key, want := range map[string]string{
		"Service.Type":             "notify", // the agent sends READY=1
		"Service.NotifyAccess":     "main",
		"Service.User":             "edge-agent",
		"Service.StateDirectory":   "edge-agent",
		"Service.RuntimeDirectory": "edge-agent",
		"Service.KillSignal":       "SIGTERM",
		// edge-agent exits 78 (EX_CONFIG) for an invalid configuration.
		"Service.RestartPreventExitStatus": "78",
	} {
		if got := one(t, kv, key); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}
	cfgPath := strings.Fields(one(t, kv, "Service.ExecStart"))
	if len(cfgPath) != 3 || cfgPath[1] != "--config" || cfgPath[2] != "/etc/edge-agent/config.yaml" {
		t.Errorf("ExecStart=%s, want /usr/bin/edge-agent --config /etc/edge-agent/config.yaml", strings.Join(cfgPath, " "))
	}
	wd, err := time.ParseDuration(one(t, kv, "Service.WatchdogSec"))
	if err != nil || wd < 2*time.Second {
		t.Errorf("WatchdogSec=%v (%v): the agent pings at half of it", wd, err)
	}
	stop, err := time.ParseDuration(one(t, kv, "Service.TimeoutStopSec"))
	if err != nil || stop <= agent.DefaultShutdownTimeout {
		t.Errorf("TimeoutStopSec=%v (%v): must exceed the agent's drain timeout %v, or systemd kills a clean shutdown", stop, err, agent.DefaultShutdownTimeout)
	}

	cfg := defaultConfig(t)
	if cfg.DataDir != "/var/lib/"+one(t, kv, "Service.StateDirectory") {
		t.Errorf("dataDir %s is not the unit's StateDirectory", cfg.DataDir)
	}
	if filepath.Dir(cfg.API.Socket) != "/run/"+one(t, kv, "Service.RuntimeDirectory") {
		t.Errorf("api.socket %s is not in the unit's RuntimeDirectory", cfg.API.Socket)
	}
}

func defaultConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load("edge-agent.yaml")
	if err != nil {
		t.Fatalf("edge-agent.yaml: %v", err)
	}
	return cfg
}

// TestDefaultConfig loads the shipped configuration with the agent's
// strict parser.
func TestDefaultConfig(t *testing.T) {
	cfg := defaultConfig(t)
	if cfg.API.Socket != config.DefaultSocket || cfg.DataDir != config.DefaultDataDir {
		t.Errorf("socket %s, dataDir %s: want the defaults", cfg.API.Socket, cfg.DataDir)
	}
	if cfg.Runtime.ORTLibrary != "" {
		t.Errorf("runtime.ortLibrary %q: want it searched (the package's path is on the search list, cross/deb tests that)", cfg.Runtime.ORTLibrary)
	}
	if len(cfg.Trust.PublicKeys) != 1 || cfg.Trust.PublicKeys[0] != "/etc/edge-agent/trust/*.pub" {
		t.Errorf("trust.publicKeys %q", cfg.Trust.PublicKeys)
	}
	if cfg.Uplink.Broker != "" {
		t.Errorf("uplink.broker %q: the image ships standalone", cfg.Uplink.Broker)
	}
	if cfg.API.TCP != "" || cfg.Metrics.Listen != "" {
		t.Errorf("api.tcp %q, metrics.listen %q: the image listens on the unix socket only", cfg.API.TCP, cfg.Metrics.Listen)
	}
	if _, err := agent.New(cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("agent.New: %v", err)
	}
}
