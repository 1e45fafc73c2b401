package fleetd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/controlplane/registry"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// Intervals of the background loops.
const (
	republishEvery = 5 * time.Second
	pruneEvery     = 10 * time.Minute
	publishTimeout = 10 * time.Second
)

// errSkip aborts a SetDesired whose premise changed.
var errSkip = errors.New("fleetd: desired state changed meanwhile")

// Assign issues device id a desired state to run bundle name@version
// (action install or rollback) and publishes it: the next seq, a fresh
// expiry (desired.lifetime) and download URLs valid as long. published
// says whether it reached the broker; if not, fleetd keeps retrying.
func (s *Server) Assign(ctx context.Context, id, name, version string, action protocol.Action) (d protocol.DesiredState, published bool, err error) {
	if action == "" {
		action = protocol.ActionInstall
	}
	if action != protocol.ActionInstall && action != protocol.ActionRollback {
		return d, false, fmt.Errorf("%w: action %q: must be install or rollback", inventory.ErrInvalid, action)
	}
	if _, err := s.inv.Get(id); err != nil {
		return d, false, err
	}
	e, err := s.reg.Get(ctx, name, version)
	if err != nil {
		return d, false, err
	}
	// now is taken before the URLs are signed, so that they outlive the
	// desired state's expiry.
	now := s.now().UTC().Truncate(time.Second)
	ref, err := registry.Ref(ctx, s.reg, e, id)
	if err != nil {
		return d, false, fmt.Errorf("fleetd: download URL of %s: %w", e.ID(), err)
	}
	d, err = s.inv.SetDesired(id, func(*protocol.DesiredState) (protocol.DesiredState, error) {
		return protocol.DesiredState{IssuedAt: now, ExpiresAt: now.Add(time.Duration(s.cfg.Desired.Lifetime)),
			Action: action, Bundle: ref}, nil
	})
	if err != nil {
		return d, false, err
	}
	s.log.Info("fleetd: desired state issued", "device", id, "seq", d.Seq, "bundle", ref.ID(), "action", action)
	s.changes.publish(api.TopicDevices)
	return d, s.publish(ctx, &d), nil
}

// publish puts d on the broker (retained); on failure the device is
// queued for the republish loop. It reports success.
func (s *Server) publish(ctx context.Context, d *protocol.DesiredState) bool {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	var err error
	if s.ext != nil {
		err = s.ext.publishDesired(ctx, d)
	} else {
		err = s.broker.PublishDesired(d)
	}
	if err != nil {
		s.metrics.desired.WithLabelValues(resultError).Inc()
		s.log.Warn("fleetd: publishing desired state failed; retrying", "device", d.DeviceID, "seq", d.Seq, "err", err)
		s.unpubMu.Lock()
		s.unpublished[d.DeviceID] = true
		s.unpubMu.Unlock()
		return false
	}
	s.metrics.desired.WithLabelValues(resultOK).Inc()
	s.unpubMu.Lock()
	delete(s.unpublished, d.DeviceID)
	s.unpubMu.Unlock()
	return true
}

// clearRetained removes a deleted device's retained messages (desired
// state, reported state, status) from the broker, so that a device
// enrolled later under the same id does not pick up its predecessor's
// desired state. Failures are logged.
func (s *Server) clearRetained(ctx context.Context, id string) {
	s.unpubMu.Lock()
	delete(s.unpublished, id)
	s.unpubMu.Unlock()
	for _, k := range []protocol.Kind{protocol.KindDesired, protocol.KindReported, protocol.KindStatus} {
		topic, err := protocol.Topic(id, k)
		if err != nil {
			return
		}
		if s.ext != nil {
			err = s.ext.clear(ctx, topic)
		} else {
			err = s.broker.Publish(topic, nil, true, 1)
		}
		if err != nil {
			s.log.Warn("fleetd: clearing a deleted device's retained message", "topic", topic, "err", err)
		}
	}
}

func (s *Server) unpublishedCount() int {
	s.unpubMu.Lock()
	defer s.unpubMu.Unlock()
	return len(s.unpublished)
}

// startLoops starts the background loops, which end with ctx.
func (s *Server) startLoops(ctx context.Context) {
	loop := func(every time.Duration, fn func(context.Context)) {
		s.bg.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					fn(ctx)
				}
			}
		})
	}
	// Every desired state goes out again once at start: a publish that a
	// crash interrupted, or an external broker that lost its retained
	// messages, is repaired (devices ignore a seq they already have).
	s.bg.Go(func() { s.republishAll(ctx) })
	s.bg.Go(func() { s.runRollouts(ctx) })
	loop(republishEvery, s.republishPending)
	loop(refreshCheckInterval(time.Duration(s.cfg.Desired.RefreshAfter)), s.refreshDesired)
	loop(pruneEvery, func(context.Context) {
		if _, err := s.recs.Prune(); err != nil {
			s.log.Error("fleetd: pruning records", "err", err)
		}
	})
}

// refreshCheckInterval is how often the refresh loop looks: a 24th of
// refreshAfter, between 1s and 1h.
func refreshCheckInterval(refreshAfter time.Duration) time.Duration {
	return min(max(refreshAfter/24, time.Second), time.Hour)
}

func (s *Server) republishAll(ctx context.Context) {
	if s.ext != nil {
		if err := s.ext.awaitConnection(ctx); err != nil {
			return
		}
	}
	devs, err := s.inv.List(inventory.Selector{})
	if err != nil {
		s.log.Error("fleetd: listing devices to republish", "err", err)
		return
	}
	n := 0
	for _, d := range devs {
		if ctx.Err() != nil {
			return
		}
		if d.Desired != nil {
			s.publish(ctx, d.Desired)
			n++
		}
	}
	s.log.Debug("fleetd: desired states republished", "devices", n)
}

func (s *Server) republishPending(ctx context.Context) {
	s.unpubMu.Lock()
	ids := slices.Sorted(maps.Keys(s.unpublished))
	s.unpubMu.Unlock()
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		d, err := s.inv.Get(id)
		if err != nil || d.Desired == nil {
			s.unpubMu.Lock()
			delete(s.unpublished, id)
			s.unpubMu.Unlock()
			continue
		}
		if !s.publish(ctx, d.Desired) {
			return // the broker is still unreachable; try later
		}
	}
}

// needsRefresh says whether a device's desired state is re-issued now: it
// has not applied it and it is refreshAfter old, or it expires within
// refreshAfter.
func needsRefresh(d *inventory.Device, now time.Time, refreshAfter time.Duration) bool {
	ds := d.Desired
	if ds == nil {
		return false
	}
	if !now.Before(ds.ExpiresAt.Add(-refreshAfter)) {
		return true
	}
	applied := d.Reported != nil && d.Reported.AppliedSeq >= ds.Seq
	return !applied && !now.Before(ds.IssuedAt.Add(refreshAfter))
}

// refreshDesired re-issues the desired states needsRefresh picks, with a
// new seq, fresh download URLs and a fresh expiry.
func (s *Server) refreshDesired(ctx context.Context) {
	devs, err := s.inv.List(inventory.Selector{})
	if err != nil {
		s.log.Error("fleetd: listing devices to refresh", "err", err)
		return
	}
	ra := time.Duration(s.cfg.Desired.RefreshAfter)
	for _, dev := range devs {
		if ctx.Err() != nil {
			return
		}
		if !needsRefresh(dev, s.now(), ra) {
			continue
		}
		if err := s.reissue(ctx, dev.ID, dev.Desired); err != nil && !errors.Is(err, errSkip) {
			s.log.Warn("fleetd: refreshing desired state", "device", dev.ID, "seq", dev.Desired.Seq, "err", err)
		}
	}
}

// reissue issues prev again with a new seq, fresh times and fresh URLs,
// unless the device's desired state changed meanwhile.
func (s *Server) reissue(ctx context.Context, id string, prev *protocol.DesiredState) error {
	now := s.now().UTC().Truncate(time.Second)
	ref, err := s.freshRef(ctx, id, prev.Bundle)
	if err != nil {
		return err
	}
	var shadow *protocol.Shadow
	if prev.Shadow != nil {
		sref, err := s.freshRef(ctx, id, prev.Shadow.Bundle)
		if err != nil {
			return err
		}
		shadow = &protocol.Shadow{Bundle: sref}
	}
	d, err := s.inv.SetDesired(id, func(cur *protocol.DesiredState) (protocol.DesiredState, error) {
		if cur == nil || cur.Seq != prev.Seq {
			return protocol.DesiredState{}, errSkip
		}
		next := *cur
		next.IssuedAt, next.ExpiresAt = now, now.Add(time.Duration(s.cfg.Desired.Lifetime))
		next.Bundle, next.Shadow = ref, shadow
		return next, nil
	})
	if err != nil {
		return err
	}
	s.log.Info("fleetd: desired state re-issued", "device", id, "seq", d.Seq, "previous_seq", prev.Seq, "bundle", ref.ID())
	s.publish(ctx, &d)
	return nil
}

func (s *Server) freshRef(ctx context.Context, id string, b protocol.BundleRef) (protocol.BundleRef, error) {
	e, err := s.reg.Get(ctx, b.Name, b.Version)
	if err != nil {
		return protocol.BundleRef{}, fmt.Errorf("bundle %s: %w", b.ID(), err)
	}
	return registry.Ref(ctx, s.reg, e, id)
}
