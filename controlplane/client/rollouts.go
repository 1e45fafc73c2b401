package client

import (
	"bytes"
	"context"
	"net/http"
	"net/url"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
)

// Rollouts lists the rollouts and experiments, newest first.
func (c *Client) Rollouts(ctx context.Context) ([]*rollout.Rollout, error) {
	var l api.RolloutList
	return l.Rollouts, c.getJSON(ctx, "/rollouts", nil, &l)
}

// CreateRollout sends spec (YAML or JSON text) to fleetd, which checks it
// and starts the rollout. With dryRun nothing starts and the plan comes
// back instead.
func (c *Client) CreateRollout(ctx context.Context, spec []byte, dryRun bool) (*rollout.Rollout, *rollout.Plan, error) {
	if dryRun {
		var p rollout.Plan
		q := url.Values{"dryRun": {"true"}}
		return nil, &p, c.do(ctx, http.MethodPost, "/rollouts", q, c.token, "application/yaml", bytes.NewReader(spec), &p)
	}
	var r rollout.Rollout
	return &r, nil, c.do(ctx, http.MethodPost, "/rollouts", nil, c.token, "application/yaml", bytes.NewReader(spec), &r)
}

// Rollout returns a rollout's status; with devices, every target device
// with what it reports now.
func (c *Client) Rollout(ctx context.Context, id string, devices bool) (*api.RolloutStatus, error) {
	var q url.Values
	if devices {
		q = url.Values{"devices": {"true"}}
	}
	var st api.RolloutStatus
	return &st, c.getJSON(ctx, "/rollouts/"+url.PathEscape(id), q, &st)
}

// RolloutHistory returns a rollout's history, oldest first.
func (c *Client) RolloutHistory(ctx context.Context, id string) (*api.RolloutHistory, error) {
	var h api.RolloutHistory
	return &h, c.getJSON(ctx, "/rollouts/"+url.PathEscape(id)+"/history", nil, &h)
}

// RolloutAction pauses, resumes, aborts, promotes or rolls back rollout
// id and returns its new status (for promote with an arm, the new
// rollout's).
func (c *Client) RolloutAction(ctx context.Context, id, action string, req api.RolloutAction) (*rollout.Rollout, error) {
	var r rollout.Rollout
	return &r, c.postJSON(ctx, "/rollouts/"+url.PathEscape(id)+"/"+url.PathEscape(action), c.token, req, &r)
}
