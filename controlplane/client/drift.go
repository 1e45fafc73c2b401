package client

import (
	"context"
	"net/url"
	"strings"

	"github.com/edgefleet/edgefleet/controlplane/api"
)

// DriftQuery selects the drift windows a report merges; see api.DriftReport.
// At most one of Selector, Devices and Rollout may be set (none: every
// device).
type DriftQuery struct {
	// Bundle is name@version; it may be empty with Rollout (the version
	// the rollout rolls out).
	Bundle   string
	Selector string
	Devices  []string
	Rollout  string
	// Since and Until are RFC 3339 times or durations before now ("1h");
	// empty means the default (records' retention, no bound).
	Since, Until string
}

// Drift returns the drift of a bundle pooled over devices and time.
func (c *Client) Drift(ctx context.Context, dq DriftQuery) (*api.DriftReport, error) {
	q := map[string]string{
		"bundle": dq.Bundle, "selector": dq.Selector, "devices": strings.Join(dq.Devices, ","),
		"rollout": dq.Rollout, "since": dq.Since, "until": dq.Until,
	}
	v := url.Values{}
	for k, s := range q {
		if s != "" {
			v.Set(k, s)
		}
	}
	var r api.DriftReport
	return &r, c.getJSON(ctx, "/drift", v, &r)
}
