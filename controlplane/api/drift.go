package api

import (
	"time"

	"github.com/edgefleet/edgefleet/shared/drift"
)

// Drift route (docs/drift.md):
//
//	GET /api/v1/drift?bundle=NAME@VERSION      DriftReport: the bundle's drift windows
//	    [&selector=SEL | &devices=ID,ID,... | &rollout=ID]   pooled over these devices
//	    [&since=T][&until=T]                   (default: every device) and this time range
//
// T is an RFC 3339 time or a Go duration meaning that long before now
// ("1h", "90m"). With rollout, the devices are the rollout's targets and
// bundle defaults to the version it rolls out.

// DriftReport is GET /api/v1/drift: the drift summaries one bundle
// version's devices reported, merged over the devices and windows
// selected and compared with the bundle's reference profile.
type DriftReport struct {
	// Bundle is name@version.
	Bundle string `json:"bundle"`
	// Selector, DeviceIDs or Rollout say how the devices were chosen
	// (all empty: every device).
	Selector  string   `json:"selector,omitempty"`
	DeviceIDs []string `json:"deviceIds,omitempty"`
	Rollout   string   `json:"rollout,omitempty"`
	// Since and Until bound the drift records by their time (when the
	// device closed the window): Since <= time < Until; a zero Until is
	// no bound.
	Since time.Time `json:"since"`
	Until time.Time `json:"until,omitzero"`
	// Devices is how many devices were selected; Reporting how many of
	// them sent at least one window of the bundle in the range.
	Devices   int `json:"devices"`
	Reporting int `json:"reporting"`
	// Windows counts the drift records merged; Invalid the records of
	// the bundle that were dropped (undecodable, or of another profile).
	Windows int `json:"windows"`
	Invalid int `json:"invalid,omitempty"`
	// Report is the merged windows compared with the profile: per
	// feature the test, statistic, threshold, verdict and counts; the
	// share of drifted features and the overall verdict; health. With no
	// window its status is not_enough_data.
	Report *drift.Report `json:"report"`
}
