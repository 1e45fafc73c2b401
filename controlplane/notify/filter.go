package notify

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/edgefleet/edgefleet/controlplane/inventory"
)

// BundlePattern matches bundle versions: "NAME" (every version of it) or
// "NAME@VERSION", each part a shell pattern (path.Match: *, ?, [...]),
// e.g. "vad", "vad@2.*", "kws-*@1.4.?".
type BundlePattern struct {
	Name, Version string // Version "" matches every version
}

// ParseBundlePattern reads a BundlePattern.
func ParseBundlePattern(s string) (BundlePattern, error) {
	if s == "" {
		return BundlePattern{}, errors.New("empty bundle pattern (want NAME or NAME@VERSION)")
	}
	if len(s) > 256 {
		return BundlePattern{}, fmt.Errorf("bundle pattern of %d bytes: at most 256", len(s))
	}
	name, ver, hasVer := strings.Cut(s, "@")
	if name == "" || (hasVer && ver == "") || strings.Contains(ver, "@") {
		return BundlePattern{}, fmt.Errorf("bundle pattern %q: want NAME or NAME@VERSION", s)
	}
	for _, part := range []string{name, ver} {
		if strings.ContainsAny(part, "/ \t\r\n") {
			return BundlePattern{}, fmt.Errorf("bundle pattern %q: no slashes or spaces", s)
		}
		if _, err := path.Match(part, ""); err != nil {
			return BundlePattern{}, fmt.Errorf("bundle pattern %q: %w", s, err)
		}
	}
	return BundlePattern{Name: name, Version: ver}, nil
}

// String is the pattern as ParseBundlePattern reads it.
func (p BundlePattern) String() string {
	if p.Version == "" {
		return p.Name
	}
	return p.Name + "@" + p.Version
}

// Match reports whether bundle ("name@version") matches p.
func (p BundlePattern) Match(bundle string) bool {
	name, ver, _ := strings.Cut(bundle, "@")
	if ok, _ := path.Match(p.Name, name); !ok {
		return false
	}
	if p.Version == "" {
		return true
	}
	ok, _ := path.Match(p.Version, ver)
	return ok
}

// Filter selects the events a subscription receives. Its zero value
// selects every event.
type Filter struct {
	// Types are event types (empty: every type).
	Types []string
	// Selector must match the event's Labels (fleetd's label selector
	// syntax, as in rollout targets).
	Selector inventory.Selector
	// Bundles: at least one must match one of the event's bundles
	// (empty: any bundle, and events of none).
	Bundles []BundlePattern
}

// Match reports whether f selects ev.
func (f *Filter) Match(ev *Event) bool {
	if len(f.Types) > 0 && !slices.Contains(f.Types, ev.Type) {
		return false
	}
	if !f.Selector.Empty() && !f.Selector.Matches(ev.Labels) {
		return false
	}
	if len(f.Bundles) == 0 {
		return true
	}
	for _, p := range f.Bundles {
		for _, b := range ev.Bundles {
			if p.Match(b) {
				return true
			}
		}
	}
	return false
}

// Wants reports whether f may select events of type t.
func (f *Filter) Wants(t string) bool { return len(f.Types) == 0 || slices.Contains(f.Types, t) }
