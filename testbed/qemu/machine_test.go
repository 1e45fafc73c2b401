package qemu

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeImage is an image whose files exist (New only checks that and backs
// the overlay with the root filesystem).
func fakeImage(t *testing.T) Image {
	t.Helper()
	dir := t.TempDir()
	im := Image{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img"), RootFS: filepath.Join(dir, "rootfs.img")}
	for _, p := range []string{im.Kernel, im.Initrd} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(im.RootFS, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return im
}

func TestConfigErrors(t *testing.T) {
	im := fakeImage(t)
	good := func() Config {
		return Config{Name: "dev-1", Image: im, Dir: t.TempDir(), Relay: "/usr/bin/relay",
			Forwards: []Forward{{GuestPort: 1883, HostAddr: "127.0.0.1:41883"}}}
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"name empty", func(c *Config) { c.Name = "" }, "name"},
		{"name with a slash", func(c *Config) { c.Name = "a/b" }, "name"},
		{"name too long", func(c *Config) { c.Name = strings.Repeat("a", 65) }, "name"},
		{"no kernel", func(c *Config) { c.Image.Kernel = "" }, "image kernel: not set"},
		{"missing initrd", func(c *Config) { c.Image.Initrd = "/nonexistent/initrd" }, "image initrd"},
		{"no dir", func(c *Config) { c.Dir = "" }, "dir: not set"},
		{"cpus", func(c *Config) { c.CPUs = 9 }, "cpus 9"},
		{"memory", func(c *Config) { c.MemoryMiB = 64 }, "memoryMiB 64"},
		{"mac", func(c *Config) { c.MAC = "52:54:00:12:34" }, "mac"},
		{"guest port", func(c *Config) { c.Forwards[0].GuestPort = 0 }, "guest port out of range"},
		{"guest port twice", func(c *Config) { c.Forwards = append(c.Forwards, Forward{GuestPort: 1883, HostAddr: "127.0.0.1:1"}) }, "listed twice"},
		{"routable host", func(c *Config) { c.Forwards[0].HostAddr = "10.1.2.3:1883" }, "only loopback"},
		{"wildcard host", func(c *Config) { c.Forwards[0].HostAddr = "0.0.0.0:1883" }, "only loopback"},
		{"host name", func(c *Config) { c.Forwards[0].HostAddr = "localhost:1883" }, "only loopback"},
		{"no host port", func(c *Config) { c.Forwards[0].HostAddr = "127.0.0.1" }, "host address"},
		{"bad host port", func(c *Config) { c.Forwards[0].HostAddr = "127.0.0.1:0" }, "bad port"},
		{"no relay", func(c *Config) { c.Relay = "" }, "relay: needed"},
		{"relay with a comma", func(c *Config) { c.Relay = "/a,b/relay" }, "must not hold commas"},
		{"seed absolute", func(c *Config) { c.Seed = map[string][]byte{"/etc/x": nil} }, "seed: path"},
		{"seed escapes", func(c *Config) { c.Seed = map[string][]byte{"../x": nil} }, "seed: path"},
		{"kernel arg", func(c *Config) { c.KernelArgs = []string{"a b"} }, "kernel argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.change(&c)
			_, err := New(c)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrConfig naming %q", err, tc.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	im := fakeImage(t)
	dir := t.TempDir()
	m, err := New(Config{Name: "dev-1", Image: im, Dir: dir, Relay: "/opt/relay",
		Forwards: []Forward{{GuestPort: 1883, HostAddr: "127.0.0.1:41883"}, {GuestPort: 8080, HostAddr: "[::1]:48080"}},
		Seed:     map[string][]byte{"etc/edge-agent/config.yaml": []byte("deviceID: dev-1\n"), "data/x.bin": {0, 1, 2}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.Config()
	if c.CPUs != DefaultCPUs || c.MemoryMiB != DefaultMemoryMiB || c.CPU != DefaultCPU || !strings.HasPrefix(c.MAC, "52:54:00:") {
		t.Fatalf("defaults not filled in: %+v", c)
	}
	// The overlay is backed by the image's root filesystem.
	info, err := exec.Command("qemu-img", "info", filepath.Join(dir, "dev.qcow2")).CombinedOutput()
	if err != nil || !strings.Contains(string(info), "backing file: "+im.RootFS) {
		t.Fatalf("qemu-img info: %v\n%s", err, info)
	}
	// The seed disk: label and files, read back with debugfs.
	seed := filepath.Join(dir, "seed.img")
	if out, err := exec.Command("e2label", seed).Output(); err != nil || strings.TrimSpace(string(out)) != SeedLabel {
		t.Fatalf("seed label %q %v", out, err)
	}
	for path, want := range map[string]string{"/hostname": "dev-1\n", "/etc/edge-agent/config.yaml": "deviceID: dev-1\n", "/data/x.bin": "\x00\x01\x02"} {
		out, err := exec.Command("debugfs", "-R", "cat "+path, seed).Output()
		if err != nil || string(out) != want {
			t.Errorf("seed %s: %q %v, want %q", path, out, err, want)
		}
	}
	// The network: restricted, with a relay per forward.
	args := m.args()
	i := slices.Index(args, "-netdev")
	want := "user,id=net0,restrict=on,ipv6=off,guestfwd=tcp:10.0.2.100:1883-cmd:/opt/relay 127.0.0.1:41883,guestfwd=tcp:10.0.2.100:8080-cmd:/opt/relay [::1]:48080"
	if i < 0 || args[i+1] != want {
		t.Fatalf("-netdev %q\nwant %q", args[i+1], want)
	}
	if err := m.PowerCut(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("PowerCut before Start: %v", err)
	}
	if _, err := m.Exec(t.Context(), "true"); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Exec before Start: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err == nil {
		t.Fatal("Start after Close worked")
	}
}

func TestMissingTool(t *testing.T) {
	_, err := New(Config{Name: "d", Image: fakeImage(t), Dir: t.TempDir(), QEMU: "qemu-system-nonexistent"})
	if !errors.Is(err, ErrTool) || !strings.Contains(err.Error(), "apt-get install qemu-system-arm") {
		t.Fatalf("err %v, want ErrTool naming the package", err)
	}
}
