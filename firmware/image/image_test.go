package image

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestScripts checks that the shell scripts parse and are executable.
func TestScripts(t *testing.T) {
	for _, s := range []struct{ shell, path string }{
		{"bash", "build.sh"},
		{"sh", "testbed/usr/lib/edgefleet/seed"},
		{"sh", "testbed/usr/lib/edgefleet/shell"},
	} {
		if out, err := exec.Command(s.shell, "-n", s.path).CombinedOutput(); err != nil {
			t.Errorf("%s -n %s: %v\n%s", s.shell, s.path, err, out)
		}
		st, err := os.Stat(s.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o111 != 0o111 {
			t.Errorf("%s: mode %v, want executable", s.path, st.Mode())
		}
	}
}

// TestUnits runs systemd-analyze verify on the image's own units, in a
// root made of the overlay directories (so that ExecStart paths are
// checked where the image has them).
func TestUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: apt-get install systemd")
	}
	root := t.TempDir()
	for _, dir := range []string{"rootfs", "testbed"} {
		if out, err := exec.Command("cp", "-a", dir+"/.", root).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v\n%s", err, out)
		}
	}
	units, _ := filepath.Glob(filepath.Join(root, "etc/systemd/system/*.service"))
	if len(units) < 2 {
		t.Fatalf("found %d units", len(units))
	}
	out, err := exec.Command(analyze, append([]string{"verify", "--root=" + root}, units...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestInitramfsModules checks the order DESIGN §10 found necessary: the
// virtio core before the transports, the transports before the block
// driver.
func TestInitramfsModules(t *testing.T) {
	f, err := os.Open("initramfs/modules")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mods []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			mods = append(mods, l)
		}
	}
	order := []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_pci", "virtio_blk"}
	last := -1
	for _, m := range order {
		i := slices.Index(mods, m)
		if i < 0 || i < last {
			t.Fatalf("initramfs/modules %q: want %q in this order", mods, order)
		}
		last = i
	}
	for _, m := range []string{"virtio_net", "virtio_console", "ext4"} {
		if !slices.Contains(mods, m) {
			t.Errorf("initramfs/modules lacks %s", m)
		}
	}
}

// fakeScript writes a script that stands in for build.sh.
func fakeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "build.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"vmlinuz", "initrd.img", "rootfs.img"} {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "image.json"), []byte(`{"key": "k2", "rootfsKey": "k1", "kernelVersion": "6.1.0-50-cloud-arm64",
		"seconds": {"debootstrap": 0, "kernel": 0, "extract": 1.1, "agent": 2.8, "mkfs": 1.1}}`), 0o644)
	script := fakeScript(t, `echo "args: $*" >&2; echo "some output"; echo "image: `+dir+`"`)
	var progress strings.Builder
	im, err := Build(t.Context(), Options{Script: script, Deb: "/x.deb", CacheDir: "/c", Size: "1G", Output: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if im.Key != "k2" || im.RootFSKey != "k1" || im.Seconds["agent"] != 2.8 || im.Kernel != filepath.Join(dir, "vmlinuz") || im.Dir != dir {
		t.Fatalf("%+v", im)
	}
	if progress.String() != "args: --deb /x.deb --cache /c --size 1G\n" {
		t.Fatalf("progress %q", progress.String())
	}

	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no deb", Options{Script: script}, "Script and Deb"},
		{"script fails", Options{Script: fakeScript(t, "echo 'build.sh: error: must run as root' >&2; exit 1"), Deb: "x"}, "must run as root"},
		{"no image line", Options{Script: fakeScript(t, "echo done"), Deb: "x"}, `no "image: DIR" line`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(t.Context(), tc.o)
			if !errors.Is(err, ErrBuild) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrBuild with %q", err, tc.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil {
		t.Fatal("Load of an empty directory worked")
	}
	os.WriteFile(filepath.Join(dir, "image.json"), []byte("{"), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "image.json") {
		t.Fatalf("bad image.json: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "image.json"), []byte("{}"), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "vmlinuz") {
		t.Fatalf("no kernel: %v", err)
	}
}
