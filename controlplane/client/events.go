package client

import (
	"context"
	"net/url"
	"strconv"

	"github.com/edgefleet/edgefleet/controlplane/api"
)

// EventQuery selects the events Events lists; zero fields select all.
type EventQuery struct {
	// Limit is the most events (newest first); 0 means fleetd's default
	// (50).
	Limit int
	// Type, Subscription and State keep only events of that type, queued
	// for that subscription, with a delivery in that state (pending,
	// delivered, failed).
	Type, Subscription, State string
}

// Events lists the latest events fleetd emitted, newest first, with
// their delivery state per subscription.
func (c *Client) Events(ctx context.Context, eq EventQuery) (*api.EventList, error) {
	v := url.Values{}
	if eq.Limit > 0 {
		v.Set("limit", strconv.Itoa(eq.Limit))
	}
	for k, s := range map[string]string{"type": eq.Type, "subscription": eq.Subscription, "state": eq.State} {
		if s != "" {
			v.Set(k, s)
		}
	}
	var l api.EventList
	return &l, c.getJSON(ctx, "/events", v, &l)
}
