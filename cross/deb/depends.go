package deb

import (
	"debug/elf"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// glibcLibraries are the sonames shipped by Debian's libc6.
var glibcLibraries = []string{
	"libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0",
	"libresolv.so.2", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
}

// libstdcxxGCC maps the minor of a GLIBCXX_3.4.N symbol version to the
// first GCC release (the major of Debian's libstdc++6 version) that
// provides it; see https://gcc.gnu.org/onlinedocs/libstdc++/manual/abi.html.
// Versions up to 3.4.21 are older than any libstdc++6 still in Debian.
var libstdcxxGCC = map[int]int{
	21: 5, 22: 6, 23: 7, 24: 7, 25: 8, 26: 9, 27: 9, 28: 9,
	29: 11, 30: 12, 31: 13, 32: 13, 33: 14,
}

// Depends derives the package's library dependencies from the ELF files
// it ships (the agent and the ONNX Runtime library), as dpkg-shlibdeps
// would: every needed shared library maps to its Debian package, with the
// newest symbol version needed as the minimum version. A library with no
// known package is an error (ErrLibrary), so a new native dependency
// cannot slip into the package unannounced.
func Depends(paths ...string) ([]string, error) {
	var (
		glibc     [2]int // newest GLIBC_x.y needed
		libstdcxx int    // 0: not needed; 1: needed, no version; else the GCC major
		libgcc    bool
	)
	for _, p := range paths {
		f, err := elf.Open(p)
		if err != nil {
			return nil, fmt.Errorf("deb: reading %s: %w", p, err)
		}
		needed, err := f.ImportedLibraries()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("deb: %s: dynamic section: %w", p, err)
		}
		var versions []elf.DynamicVersionNeed
		if f.SectionByType(elf.SHT_GNU_VERSYM) != nil {
			versions, err = f.DynamicVersionNeeds()
		}
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("deb: %s: symbol versions: %w", p, err)
		}
		for _, lib := range needed {
			switch {
			case slices.Contains(glibcLibraries, lib):
			case lib == "libstdc++.so.6":
				libstdcxx = max(libstdcxx, 1)
			case lib == "libgcc_s.so.1":
				libgcc = true
			default:
				return nil, fmt.Errorf("%w: %s needs %s, which has no Debian package mapping in cross/deb", ErrLibrary, p, lib)
			}
		}
		for _, need := range versions {
			for _, dep := range need.Needs {
				name := dep.Dep
				switch {
				case strings.HasPrefix(name, "GLIBC_") && !strings.HasPrefix(name, "GLIBC_PRIVATE"):
					v, ok := parseGlibc(strings.TrimPrefix(name, "GLIBC_"))
					if !ok {
						return nil, fmt.Errorf("%w: %s: unparsable symbol version %s", ErrLibrary, p, name)
					}
					if v[0] > glibc[0] || v[0] == glibc[0] && v[1] > glibc[1] {
						glibc = v
					}
				case strings.HasPrefix(name, "GLIBCXX_3.4"):
					minor := 0
					if rest := strings.TrimPrefix(name, "GLIBCXX_3.4"); rest != "" {
						n, err := strconv.Atoi(strings.TrimPrefix(rest, "."))
						if err != nil || !strings.HasPrefix(rest, ".") {
							return nil, fmt.Errorf("%w: %s: unparsable symbol version %s", ErrLibrary, p, name)
						}
						minor = n
					}
					if minor <= 20 {
						continue
					}
					gcc, ok := libstdcxxGCC[minor]
					if !ok {
						return nil, fmt.Errorf("%w: %s needs %s, newer than cross/deb knows: add it to libstdcxxGCC", ErrLibrary, p, name)
					}
					libstdcxx = max(libstdcxx, gcc)
				}
			}
		}
	}
	var deps []string
	if glibc != [2]int{} {
		deps = append(deps, fmt.Sprintf("libc6 (>= %d.%d)", glibc[0], glibc[1]))
	} else {
		deps = append(deps, "libc6")
	}
	switch {
	case libstdcxx > 1:
		deps = append(deps, fmt.Sprintf("libstdc++6 (>= %d)", libstdcxx))
	case libstdcxx == 1:
		deps = append(deps, "libstdc++6")
	}
	if libgcc {
		deps = append(deps, "libgcc-s1")
	}
	return deps, nil
}

// parseGlibc parses "2.34" (or "2.3.4", whose patch level Debian's libc6
// versions do not carry) into major and minor.
func parseGlibc(s string) ([2]int, bool) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return [2]int{}, false
	}
	var v [2]int
	for i := range 2 {
		n, err := strconv.Atoi(parts[i])
		if err != nil || n < 0 {
			return [2]int{}, false
		}
		v[i] = n
	}
	return v, true
}
