package fleetd

// Drift reports: how they are made (below), DriftQuery, Drift and
// DriftScore. The HTTP API is in drift_http.go, merging the devices'
// windows in drift_merge.go, the cache of merged hours in drift_cache.go
// and the bundles' profiles in drift_profile.go.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// Drift reports. The agents append one "drift" record per window and
// bundle version (agent/drift.go); the records store keeps them like any
// record. A report merges the windows of the selected devices and time
// range on query and compares the result with the bundle's profile, which
// is read once per bundle version from the registry's bundle file.
//
// Merging is exact and associative, so what a query merges is cached per
// device and hour of record time: the merged summary of each bundle's
// windows, in its binary encoding (about 1.5 KB for Silero), in an LRU
// bounded by driftCacheBytes. Storing a device's drift records drops the
// hours they fall in. A query then costs, per device, one decode and merge
// per whole hour it spans (about 60 µs) plus a read of the records of the
// partial hours at its ends.
const (
	driftHour       = time.Hour
	driftCacheBytes = 64 << 20
	// profileLoadTimeout bounds reading a bundle's profile.
	profileLoadTimeout = 2 * time.Minute
)

// ErrNoProfile: the bundle ships no drift profile, so it has no drift
// report.
var ErrNoProfile = errors.New("fleetd: the bundle has no drift profile")

// DriftQuery selects the drift windows a report merges.
type DriftQuery struct {
	// Bundle is the bundle version whose windows are merged.
	Bundle protocol.BundleID
	// Devices, if not empty, are the devices pooled; otherwise Selector
	// selects them from the inventory (the zero Selector: every device).
	Devices  []string
	Selector inventory.Selector
	// Since and Until bound the records' time (when the device closed
	// the window): Since <= time < Until. A zero Since is the records'
	// retention (records.maxAge before now); a zero Until no bound.
	Since, Until time.Time
}

// Drift merges the drift windows q selects and compares them with the
// bundle's profile. A bundle unknown to the registry is
// registry.ErrNotFound; one without a profile ErrNoProfile.
func (s *Server) Drift(ctx context.Context, q DriftQuery) (*api.DriftReport, error) {
	if q.Bundle.Name == "" || q.Bundle.Version == "" {
		return nil, errStatus(http.StatusBadRequest, "bundle: want name@version")
	}
	if q.Since.IsZero() {
		q.Since = s.now().Add(-time.Duration(s.cfg.Records.MaxAge))
	}
	if !q.Until.IsZero() && !q.Until.After(q.Since) {
		return nil, errStatus(http.StatusBadRequest, "until (%s) must be after since (%s)", q.Until.Format(time.RFC3339), q.Since.Format(time.RFC3339))
	}
	p, err := s.drift.profile(ctx, s, q.Bundle)
	if err != nil {
		return nil, err
	}
	devices := q.Devices
	if len(devices) == 0 {
		devs, err := s.inv.List(q.Selector)
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			devices = append(devices, d.ID)
		}
	} else {
		devices = slices.Compact(slices.Sorted(slices.Values(devices)))
		for _, id := range devices {
			if err := protocol.ValidateDeviceID(id); err != nil {
				return nil, errStatus(http.StatusBadRequest, "devices: %v", err)
			}
		}
	}
	acc, res, err := s.mergeDrift(ctx, q.Bundle.ID(), p, devices, q.Since, q.Until)
	if err != nil {
		return nil, err
	}
	rep, err := drift.Compare(p, acc, drift.CompareOptions{})
	if err != nil {
		return nil, fmt.Errorf("fleetd: drift of %s: %w", q.Bundle.ID(), err)
	}
	s.metrics.driftReport(q.Bundle.ID(), rep)
	out := &api.DriftReport{
		Bundle: q.Bundle.ID(), Since: q.Since.UTC(), Until: q.Until.UTC(),
		Devices: len(devices), Reporting: res.reporting, Windows: res.windows, Invalid: res.invalid, Report: rep,
	}
	if !q.Selector.Empty() {
		out.Selector = q.Selector.String()
	}
	if len(q.Devices) > 0 {
		out.DeviceIDs = devices
	}
	return out, nil
}

// DriftScore is the drift of bundle pooled over devices since a time (to
// now): the share of the profile's features whose merged windows drifted
// (drift.Report's Share, between 0 and 1), and how many of the devices
// reported at least one window. With no window, or no feature with
// enough values to be tested, score is 0 and reports says how many
// devices reported.
func (s *Server) DriftScore(ctx context.Context, bundle protocol.BundleID, devices []string, since time.Time) (score float64, reports int, err error) {
	if len(devices) == 0 {
		return 0, 0, nil
	}
	r, err := s.Drift(ctx, DriftQuery{Bundle: bundle, Devices: devices, Since: since})
	if err != nil {
		return 0, 0, err
	}
	return r.Report.Share, r.Reporting, nil
}
