package rollout

import (
	"fmt"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/inventory"
)

// windows are a rollout's compiled maintenance windows.
type windows []compiledWindow

type compiledWindow struct {
	sel        inventory.Selector
	start, end int // minutes since midnight UTC
}

func compileWindows(ws []MaintenanceWindow) (windows, error) {
	out := make(windows, 0, len(ws))
	for i, w := range ws {
		sel, err := inventory.ParseSelector(w.Selector)
		if err != nil {
			return nil, fmt.Errorf("limits.maintenanceWindows[%d].selector: %w", i, err)
		}
		if w.Start == nil || w.End == nil {
			return nil, fmt.Errorf("limits.maintenanceWindows[%d]: start and end are required", i)
		}
		out = append(out, compiledWindow{sel: sel, start: w.Start.Minute, end: w.End.Minute})
	}
	return out, nil
}

// contains reports whether t falls in the window.
func (w compiledWindow) contains(t time.Time) bool {
	t = t.UTC()
	m := t.Hour()*60 + t.Minute()
	if w.start < w.end {
		return m >= w.start && m < w.end
	}
	return m >= w.start || m < w.end // wraps midnight
}

// open reports whether a device with labels may be assigned at t: it is
// in none of the windows' groups, or inside one of its groups' windows.
func (ws windows) open(labels map[string]string, t time.Time) bool {
	matched := false
	for _, w := range ws {
		if !w.sel.Matches(labels) {
			continue
		}
		if w.contains(t) {
			return true
		}
		matched = true
	}
	return !matched
}
