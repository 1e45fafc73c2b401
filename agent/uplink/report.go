package uplink

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// ReportChanged tells the uplink that Agent.Reported may return something
// new (active bundle, provider, labels...). It never blocks; changes are
// collected for Config.ReportDebounce and published once, if the state
// differs from the last one published.
func (u *Uplink) ReportChanged() { u.kickReport() }

func (u *Uplink) kickReport() {
	select {
	case u.reportKick <- struct{}{}:
	default:
	}
}

// report is the reported-state publisher goroutine.
func (u *Uplink) report(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.reportKick:
		}
		sleep(ctx, u.cfg.ReportDebounce) // collect the changes that follow
		if ctx.Err() != nil {
			return
		}
		select {
		case <-u.reportKick:
		default:
		}
		c := u.current()
		if c == nil {
			continue // the next connection publishes it
		}
		if err := u.publishReported(ctx, c, false); err != nil && ctx.Err() == nil {
			u.log.Warn("uplink: publishing the reported state", "err", err)
			if !c.isLost() {
				u.kickReport() // try again after the debounce
			}
		}
	}
}

// publishReported publishes the reported state, retained, unless it equals
// the last one published (apart from its time) and force is false.
func (u *Uplink) publishReported(ctx context.Context, c *conn, force bool) error {
	u.reportMu.Lock()
	defer u.reportMu.Unlock()
	r, err := u.buildReported()
	if err != nil {
		return err
	}
	key, err := reportKey(r)
	if err != nil {
		return err
	}
	if !force && bytes.Equal(key, u.lastReport) {
		return nil
	}
	payload, err := protocol.Encode(&r)
	if err != nil {
		return fmt.Errorf("uplink: reported state: %w", err)
	}
	if err := u.publish(ctx, c, u.topics.reported, true, payload); err != nil {
		return err
	}
	u.lastReport = key
	u.stats.reportedPublished.Add(1)
	return nil
}

// reportKey is r without its time, for change detection.
func reportKey(r protocol.ReportedState) ([]byte, error) {
	r.Time = time.Time{}
	b, err := json.Marshal(&r)
	if err != nil {
		return nil, fmt.Errorf("uplink: reported state: %w", err)
	}
	return b, nil
}

// buildReported assembles the reported state: the agent's part plus the
// fields the uplink owns, validated.
func (u *Uplink) buildReported() (protocol.ReportedState, error) {
	r := u.agent.Reported()
	r.V = protocol.Version
	r.DeviceID = u.cfg.DeviceID
	r.Time = time.Now().UTC()
	r.AppliedSeq = u.state.get().AcceptedSeq
	u.mu.Lock()
	if u.install != nil {
		in := *u.install
		if in.Progress != nil {
			p := *in.Progress
			in.Progress = &p
		}
		r.Install = &in
	}
	u.mu.Unlock()
	s := u.ob.Stats()
	r.Buffer = protocol.BufferStats{Records: int64(s.Records), Bytes: s.Bytes, Dropped: s.Dropped}
	if err := r.Validate(); err != nil {
		return protocol.ReportedState{}, err
	}
	return r, nil
}
