// Package deb builds the edge-agent Debian package with nfpm
// (github.com/goreleaser/nfpm/v2), used as a library.
//
// The package holds:
//
//	/usr/bin/edge-agent                     the agent for the package's architecture
//	/usr/lib/edge-agent/libonnxruntime.so.1 ONNX Runtime for the same architecture,
//	                                        where shared/onnx looks by default
//	/lib/systemd/system/edge-agent.service  the unit (firmware/edge-agent.service)
//	/etc/edge-agent/config.yaml             the default configuration, a conffile
//	/etc/edge-agent/trust/                  publisher public keys (*.pub), empty
//	/usr/lib/sysusers.d/edge-agent.conf     the edge-agent system user and group
//	/usr/share/doc/edge-agent/copyright     licences of what the package ships
//
// Its postinst creates the user (systemd-sysusers, adduser where systemd is
// absent), makes /etc/edge-agent root:edge-agent 0750 with a statoverride,
// enables the unit, and starts it only where systemd is running, so the
// package installs cleanly into a chroot or a device image. The prerm stops
// the agent on removal; on upgrade the postinst restarts it. State lives in
// /var/lib/edge-agent, created by systemd (StateDirectory=) and removed on
// purge.
//
// Library dependencies (libc6, libstdc++6, libgcc-s1) are derived from the
// ELF files shipped, with minimum versions from their symbol versions.
package deb

import (
	"debug/elf"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the "deb" packager
	"github.com/goreleaser/nfpm/v2/files"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrArch: an architecture this package cannot build for, or a file
	// built for another architecture than the package's.
	ErrArch = errors.New("architecture")
	// ErrVersion: the version is not a semantic version.
	ErrVersion = errors.New("invalid version")
	// ErrLibrary: a shipped ELF file needs a shared library without a
	// known Debian package.
	ErrLibrary = errors.New("unmapped shared library")
	// ErrInput: a file to package is missing or unusable.
	ErrInput = errors.New("package input")
)

// Name is the Debian package name.
const Name = "edge-agent"

// Paths inside the package.
const (
	BinaryPath     = "/usr/bin/edge-agent"
	LibraryPath    = "/usr/lib/edge-agent/libonnxruntime.so.1"
	UnitPath       = "/lib/systemd/system/edge-agent.service"
	ConfigPath     = "/etc/edge-agent/config.yaml"
	ConfigDir      = "/etc/edge-agent"
	TrustDir       = "/etc/edge-agent/trust" // publisher keys; the default config reads trust/*.pub
	SysusersPath   = "/usr/lib/sysusers.d/edge-agent.conf"
	CopyrightPath  = "/usr/share/doc/edge-agent/copyright"
	maintainerName = "edgefleet developers <maintainers@edgefleet.invalid>"
)

// arches maps Go's GOARCH to the Debian architecture and the ELF machine
// the shipped files must be built for.
var arches = map[string]struct {
	debian  string
	machine elf.Machine
}{
	"amd64": {"amd64", elf.EM_X86_64},
	"arm64": {"arm64", elf.EM_AARCH64},
}

//go:embed files
var embedded embed.FS

// Package describes one edge-agent Debian package to build.
type Package struct {
	// Arch is the Go architecture (GOARCH): amd64 or arm64.
	Arch string
	// Version is the agent's semantic version, as stamped into
	// shared/version.Version (for example 0.1.0+87ce2c3); see DebianVersion.
	Version string
	// Binary is the edge-agent executable built for Arch.
	Binary string
	// ORTLibrary is libonnxruntime.so.1 for Arch.
	ORTLibrary string
	// Unit is the systemd unit file (firmware/edge-agent.service).
	Unit string
	// Config is the default configuration (firmware/edge-agent.yaml).
	Config string
	// MTime stamps every file and archive member; builds with the same
	// inputs and MTime are byte-identical. Zero means now.
	MTime time.Time
}

// FileName is the conventional file name of the package:
// edge-agent_VERSION_ARCH.deb with the Debian version.
func (p Package) FileName() (string, error) {
	v, err := DebianVersion(p.Version)
	if err != nil {
		return "", err
	}
	a, ok := arches[p.Arch]
	if !ok {
		return "", fmt.Errorf("%w: %q is not supported (want amd64 or arm64)", ErrArch, p.Arch)
	}
	return fmt.Sprintf("%s_%s_%s.deb", Name, v, a.debian), nil
}

// Build writes the package into outDir (created if missing) and returns
// its path. The file appears atomically: a failed build leaves no
// partial package behind. A nil log discards the build's log line.
func Build(log *slog.Logger, p Package, outDir string) (string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name, err := p.FileName()
	if err != nil {
		return "", err
	}
	arch := arches[p.Arch]
	debVersion, _ := DebianVersion(p.Version)
	for _, f := range []struct{ what, path string }{
		{"agent binary", p.Binary}, {"ONNX Runtime library", p.ORTLibrary},
	} {
		if err := checkELF(f.path, f.what, arch.machine); err != nil {
			return "", err
		}
	}
	for _, f := range []struct{ what, path string }{
		{"systemd unit", p.Unit}, {"default configuration", p.Config},
	} {
		if err := checkRegular(f.path, f.what); err != nil {
			return "", err
		}
	}
	depends, err := Depends(p.Binary, p.ORTLibrary)
	if err != nil {
		return "", err
	}
	depends = append(depends, "systemd | adduser")

	// nfpm reads maintainer scripts and contents from files.
	tmp, err := os.MkdirTemp("", "edge-agent-deb-")
	if err != nil {
		return "", fmt.Errorf("deb: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.CopyFS(tmp, mustSub(embedded, "files")); err != nil {
		return "", fmt.Errorf("deb: unpacking maintainer scripts: %w", err)
	}
	script := func(name string) string { return filepath.Join(tmp, name) }

	mtime := p.MTime
	if mtime.IsZero() {
		mtime = time.Now()
	}
	mtime = mtime.UTC().Truncate(time.Second)
	file := func(src, dst string, mode os.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, Type: files.TypeFile,
			FileInfo: &files.ContentFileInfo{Mode: mode, MTime: mtime}}
	}
	info := &nfpm.Info{
		Name:          Name,
		Arch:          arch.debian,
		Platform:      "linux",
		Version:       debVersion,
		VersionSchema: "none", // DebianVersion already made it a Debian version
		Section:       "net",
		Priority:      "optional",
		Maintainer:    maintainerName,
		Homepage:      "https://github.com/edgefleet/edgefleet",
		Description: "edgefleet edge agent: signed ML model bundles on edge devices\n" +
			"Installs signed model bundles atomically (active and last-known-good\n" +
			"slots), runs them with ONNX Runtime and sandboxed WASM pre- and\n" +
			"post-processors, serves local applications over the Open Inference\n" +
			"Protocol, and reports to the fleetd control plane over MQTT, buffering\n" +
			"everything while offline.",
		DisableGlobbing: true,
		MTime:           mtime,
		Overridables: nfpm.Overridables{
			Umask:   0o022,
			Depends: depends,
			Contents: files.Contents{
				file(p.Binary, BinaryPath, 0o755),
				file(p.ORTLibrary, LibraryPath, 0o644),
				file(p.Unit, UnitPath, 0o644),
				file(script("sysusers.conf"), SysusersPath, 0o644),
				file(script("copyright"), CopyrightPath, 0o644),
				{Destination: ConfigDir, Type: files.TypeDir,
					FileInfo: &files.ContentFileInfo{Mode: 0o750, MTime: mtime}},
				{Destination: TrustDir, Type: files.TypeDir,
					FileInfo: &files.ContentFileInfo{Mode: 0o755, MTime: mtime}},
				{Source: p.Config, Destination: ConfigPath, Type: files.TypeConfig,
					FileInfo: &files.ContentFileInfo{Mode: 0o644, MTime: mtime}},
			},
			Scripts: nfpm.Scripts{
				PostInstall: script("postinst"),
				PreRemove:   script("prerm"),
				PostRemove:  script("postrm"),
			},
			Deb: nfpm.Deb{Compression: "gzip"},
		},
	}
	info = nfpm.WithDefaults(info)
	packager, err := nfpm.Get("deb")
	if err != nil {
		return "", fmt.Errorf("deb: %w", err)
	}

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("deb: %w", err)
	}
	out := filepath.Join(outDir, name)
	if err := writeAtomic(out, func(f *os.File) error { return packager.Package(info, f) }); err != nil {
		return "", fmt.Errorf("deb: writing %s: %w", out, err)
	}
	log.Info("built Debian package", "path", out, "version", debVersion, "arch", arch.debian, "depends", depends)
	return out, nil
}

// checkELF makes sure path is an ELF file for the package's machine, so
// that an amd64 agent never ends up in the arm64 package.
func checkELF(path, what string, machine elf.Machine) error {
	if path == "" {
		return fmt.Errorf("%w: no %s given", ErrInput, what)
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrInput, what, path, err)
	}
	defer f.Close()
	if f.Machine != machine {
		return fmt.Errorf("%w: %s %s is built for %s, the package is for %s", ErrArch, what, path, f.Machine, machine)
	}
	return nil
}

func checkRegular(path, what string) error {
	if path == "" {
		return fmt.Errorf("%w: no %s given", ErrInput, what)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInput, what, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s %s is not a regular file", ErrInput, what, path)
	}
	return nil
}

// writeAtomic writes path (mode 0644) with write, atomically
// (shared/atomicfile).
func writeAtomic(path string, write func(*os.File) error) error {
	f, err := atomicfile.Create(path, 0o644)
	if err != nil {
		return err
	}
	if err := write(f.File); err != nil {
		f.Abort()
		return err
	}
	return f.Commit()
}

func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err) // dir is a constant embedded directory
	}
	return sub
}
