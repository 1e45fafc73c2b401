package deb

import (
	"fmt"
	"strings"

	"golang.org/x/mod/semver"
)

// DebianVersion turns the agent's semantic version (as stamped into
// shared/version.Version, without a leading "v") into a Debian version
// that sorts the same way:
//
//	0.1.0                    -> 0.1.0
//	0.2.0-rc.1               -> 0.2.0~rc.1         (before 0.2.0, as in semver)
//	0.1.0+87ce2c3-dirty      -> 0.1.0+87ce2c3.dirty
//	0.1.0+v0.1.0-3-g87ce2c3  -> 0.1.0+v0.1.0.3.g87ce2c3
//
// The result is a native Debian version (no revision), so it may not
// contain '-': hyphens inside pre-release and build identifiers become
// '.'. Build metadata is kept (it tells builds apart) although semver
// ignores it for ordering; dpkg compares it, so two dev builds of one
// release order by their commit names, not by time.
func DebianVersion(v string) (string, error) {
	if v == "" {
		return "", fmt.Errorf("%w: empty", ErrVersion)
	}
	if strings.HasPrefix(v, "v") {
		return "", fmt.Errorf("%w: %q: give it without the leading \"v\"", ErrVersion, v)
	}
	if !semver.IsValid("v"+v) || semver.Canonical("v"+v) != "v"+strings.SplitN(v, "+", 2)[0] {
		return "", fmt.Errorf("%w: %q is not a semantic version MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]", ErrVersion, v)
	}
	core, build, _ := strings.Cut(v, "+")
	core, pre, _ := strings.Cut(core, "-")
	out := core
	if pre != "" {
		out += "~" + strings.ReplaceAll(pre, "-", ".")
	}
	if build != "" {
		out += "+" + strings.ReplaceAll(build, "-", ".")
	}
	return out, nil
}
