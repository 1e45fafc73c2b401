// Package version holds the release version of the binaries, set at link
// time with -ldflags "-X github.com/edgefleet/edgefleet/shared/version.Version=...".
package version

import (
	"fmt"

	"golang.org/x/mod/semver"
)

// Version is the semantic version of this build, without a leading "v".
var Version = "0.1.0-dev"

// AtLeast reports whether Version satisfies a minimum version such as a
// bundle's minAgentVersion. An empty minimum is always satisfied.
func AtLeast(min string) (bool, error) {
	if min == "" {
		return true, nil
	}
	if !semver.IsValid("v" + min) {
		return false, fmt.Errorf("version: %q is not a semantic version", min)
	}
	return semver.Compare("v"+Version, "v"+min) >= 0, nil
}
