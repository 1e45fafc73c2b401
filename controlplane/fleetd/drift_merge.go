package fleetd

// Merging drift windows: decoding the drift records' payloads and merging
// their summaries per bundle, per device (whole hours from the cache, the
// partial ones from the records store) and over the devices a query pools.

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// decodeDriftRecord reads a drift record's payload (protocol.DriftRecord;
// fleetd reads its model and summary): the bundle it is of
// ("" if it names none, or another than only when only is set) and its
// summary (an error wrapping drift.ErrSummary if that does not decode).
func decodeDriftRecord(payload []byte, only string) (model string, sum *drift.Summary, err error) {
	var pl protocol.DriftRecord
	if json.Unmarshal(payload, &pl) != nil || pl.Model == "" || (only != "" && pl.Model != only) {
		return "", nil, nil
	}
	if sum, err = drift.DecodeSummary(pl.Summary); err != nil {
		return pl.Model, nil, err
	}
	return pl.Model, sum, nil
}

// mergeResult counts what a merge found.
type mergeResult struct {
	reporting, windows, invalid int
}

// mergeDrift merges the windows of bundle id (profile p) that devices
// reported in [since, until), a few devices at a time.
func (s *Server) mergeDrift(ctx context.Context, id string, p *drift.Profile, devices []string, since, until time.Time) (*drift.Summary, mergeResult, error) {
	acc := drift.NewSummary(p)
	var (
		mu    sync.Mutex
		res   mergeResult
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for _, dev := range devices {
		if err := ctx.Err(); err != nil {
			return nil, mergeResult{}, err
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			sum, r, err := s.deviceDrift(ctx, dev, id, p, since, until)
			mu.Lock()
			defer mu.Unlock()
			if err == nil && sum != nil {
				err = acc.Merge(sum) // deviceDrift checked the profile
			}
			if err != nil {
				if first == nil {
					first = err
				}
				return
			}
			res.windows += r.windows
			res.invalid += r.invalid
			if sum != nil {
				res.reporting++
			}
		})
	}
	wg.Wait()
	if first != nil {
		return nil, mergeResult{}, first
	}
	return acc, res, nil
}

// deviceDrift merges device's windows of bundle id in [since, until): the
// whole hours from the cache, the partial ones from the store. It returns
// nil without windows.
func (s *Server) deviceDrift(ctx context.Context, device, id string, p *drift.Profile, since, until time.Time) (*drift.Summary, mergeResult, error) {
	var acc *drift.Summary
	var res mergeResult
	add := func(sum *drift.Summary, windows int) {
		if sum.Profile() != p.ID() {
			res.invalid += windows
			return
		}
		if acc == nil {
			acc = sum
		} else if acc.Merge(sum) != nil {
			res.invalid += windows
			return
		}
		res.windows += windows
	}
	end := until
	if end.IsZero() {
		// Devices' clocks may run ahead: the last segment is unbounded.
		end = s.now().Add(driftHour).Truncate(driftHour)
	}
	for t := since; t.Before(end); {
		if err := ctx.Err(); err != nil {
			return nil, res, err
		}
		hour := t.Truncate(driftHour)
		next := hour.Add(driftHour)
		if t.Equal(hour) && !next.After(end) && !(until.IsZero() && !next.Before(end)) {
			h, err := s.drift.hour(s, device, hour)
			if err != nil {
				return nil, res, err
			}
			if b := h.bundles[id]; b != nil {
				res.invalid += b.invalid
				if b.windows > 0 {
					sum, err := drift.DecodeSummary(b.enc)
					if err != nil {
						return nil, res, fmt.Errorf("fleetd: cached drift summary of %s: %w", device, err)
					}
					add(sum, b.windows)
				}
			}
			t = next
			continue
		}
		segEnd := next
		if end.Before(next) {
			segEnd = end
		}
		if until.IsZero() && !next.Before(end) {
			segEnd = time.Time{} // no bound
		}
		sums, err := s.readDrift(device, t, segEnd, id)
		if err != nil {
			return nil, res, err
		}
		if b := sums[id]; b != nil {
			res.invalid += b.invalid
			if b.sum != nil {
				add(b.sum, b.windows)
			}
		}
		if segEnd.IsZero() {
			break
		}
		t = segEnd
	}
	return acc, res, nil
}

// bundleWindows is the merge of one bundle's windows of one device over
// some time.
type bundleWindows struct {
	sum              *drift.Summary
	windows, invalid int
}

// readDrift reads device's drift records in [since, until) (a zero until:
// no bound) and merges them per bundle (of bundle only, if not ""). Records
// that do not decode, or do not merge with the bundle's others (another
// profile), are counted invalid.
func (s *Server) readDrift(device string, since, until time.Time, only string) (map[string]*bundleWindows, error) {
	out := map[string]*bundleWindows{}
	pages := telemetry.NewPager(since)
	for {
		recs, err := s.recs.Query(device, telemetry.Query{Kind: protocol.RecordDrift, Since: pages.Since(), Until: until, Limit: telemetry.MaxQueryLimit})
		if err != nil {
			return nil, fmt.Errorf("fleetd: reading the drift records of %s: %w", device, err)
		}
		fresh := 0
		for _, r := range recs {
			if !pages.Fresh(r) {
				continue
			}
			fresh++
			model, sum, err := decodeDriftRecord(r.Payload, only)
			if model == "" {
				continue // not a window of a bundle (or not of bundle only)
			}
			b := out[model]
			if b == nil {
				b = &bundleWindows{}
				out[model] = b
			}
			switch {
			case err != nil:
				b.invalid++
				s.log.Debug("fleetd: drift record dropped", "device", device, "id", r.ID, "err", err)
				continue
			case b.sum == nil:
				b.sum = sum
			default:
				if err := b.sum.Merge(sum); err != nil {
					b.invalid++
					s.log.Debug("fleetd: drift record dropped", "device", device, "id", r.ID, "err", err)
					continue
				}
			}
			b.windows++
		}
		if len(recs) < telemetry.MaxQueryLimit || fresh == 0 {
			return out, nil
		}
		pages.Next(recs)
	}
}
