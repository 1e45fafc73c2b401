package fleetd

// The drift API: GET /api/v1/drift with its selector, devices, rollout,
// bundle, since and until parameters.

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// driftRoutes registers the drift API.
func (s *Server) driftRoutes(handle func(pattern string, auth authKind, h handlerFunc)) {
	handle("GET "+api.Prefix+"/drift", authViewer, s.handleDrift)
}

func (s *Server) handleDrift(w http.ResponseWriter, r *http.Request) error {
	v := r.URL.Query()
	var q DriftQuery
	var rolloutID string
	set := 0
	if sel := v.Get("selector"); sel != "" {
		var err error
		if q.Selector, err = inventory.ParseSelector(sel); err != nil {
			return err
		}
		set++
	}
	if ids := v.Get("devices"); ids != "" {
		for id := range strings.SplitSeq(ids, ",") {
			if id = strings.TrimSpace(id); id != "" {
				q.Devices = append(q.Devices, id)
			}
		}
		set++
	}
	if rolloutID = v.Get("rollout"); rolloutID != "" {
		set++
	}
	if set > 1 {
		return errStatus(http.StatusBadRequest, "give at most one of selector, devices and rollout")
	}
	if b := v.Get("bundle"); b != "" {
		name, ver, ok := strings.Cut(b, "@")
		if !ok || name == "" || ver == "" {
			return errStatus(http.StatusBadRequest, "bundle=%q: want name@version", b)
		}
		q.Bundle = protocol.BundleID{Name: name, Version: ver}
	}
	if rolloutID != "" {
		ro, err := s.ro.eng.Get(rolloutID)
		if err != nil {
			return rolloutErr(err)
		}
		devs, err := s.ro.eng.Devices(rolloutID)
		if err != nil {
			return rolloutErr(err)
		}
		for _, d := range devs {
			q.Devices = append(q.Devices, d.ID)
		}
		if q.Bundle.Name == "" {
			if ro.Bundle.Name == "" {
				return errStatus(http.StatusBadRequest, "rollout %s is an experiment: give bundle=NAME@VERSION (one of its arms)", rolloutID)
			}
			q.Bundle = ro.Bundle
		}
		if len(q.Devices) == 0 {
			return errStatus(http.StatusNotFound, "rollout %s has no devices", rolloutID)
		}
	}
	if q.Bundle.Name == "" {
		return errStatus(http.StatusBadRequest, "bundle=NAME@VERSION is required")
	}
	now := s.now()
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if val := v.Get(p.name); val != "" {
			t, err := parseSince(val, now)
			if err != nil {
				return errStatus(http.StatusBadRequest, "%s=%q: %v", p.name, val, err)
			}
			*p.t = t
		}
	}
	rep, err := s.Drift(r.Context(), q)
	if err != nil {
		if errors.Is(err, ErrNoProfile) {
			return errStatus(http.StatusNotFound, "%v", err)
		}
		return err
	}
	rep.Rollout = rolloutID
	return writeJSON(w, http.StatusOK, rep)
}

// parseSince reads an RFC 3339 time, or a duration meaning that long
// before now.
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(api.TimeFormat, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, errors.New("want an RFC 3339 time (2026-03-01T12:00:00Z) or a duration before now (1h, 30m)")
	}
	return now.Add(-d), nil
}
