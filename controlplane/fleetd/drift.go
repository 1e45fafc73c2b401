package fleetd

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/bundle"
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

// driftRoutes registers the drift API.
func (s *Server) driftRoutes(handle func(pattern string, auth authKind, h handlerFunc)) {
	handle("GET "+api.Prefix+"/drift", authOperator, s.handleDrift)
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

// driftPayload is what fleetd reads of a drift record's payload (the
// agent's driftRecord).
type driftPayload struct {
	Model   string          `json:"model"`
	Summary json.RawMessage `json:"summary"`
}

// decodeDriftRecord reads a drift record's payload: the bundle it is of
// ("" if it names none, or another than only when only is set) and its
// summary (an error wrapping drift.ErrSummary if that does not decode).
func decodeDriftRecord(payload []byte, only string) (model string, sum *drift.Summary, err error) {
	var pl driftPayload
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
	seen := map[recordKey]bool{} // records at the page boundary's time
	for {
		recs, err := s.recs.Query(device, telemetry.Query{Kind: protocol.RecordDrift, Since: since, Until: until, Limit: telemetry.MaxQueryLimit})
		if err != nil {
			return nil, fmt.Errorf("fleetd: reading the drift records of %s: %w", device, err)
		}
		fresh := 0
		for _, r := range recs {
			k := recordKey{r.Epoch, r.ID}
			if seen[k] {
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
		// The next page starts at the last record's time; the records at
		// exactly that time are read again and skipped.
		last := recs[len(recs)-1].Time
		if !last.Equal(since) {
			clear(seen)
		}
		since = last
		for _, r := range recs {
			if r.Time.Equal(last) {
				seen[recordKey{r.Epoch, r.ID}] = true
			}
		}
	}
}

type recordKey struct {
	epoch string
	id    uint64
}

// driftIndex holds the profiles read and the cache of merged hours. Its
// zero value is ready to use.
type driftIndex struct {
	mu       sync.Mutex
	profiles map[string]*profileLoad // by bundle id and digest
	hours    map[hourKey]*list.Element
	lru      list.List // of *hourEntry, most recent first
	bytes    int
}

type profileLoad struct {
	done chan struct{}
	p    *drift.Profile
	err  error
}

type hourKey struct {
	device string
	hour   int64 // Unix seconds
}

// hourEntry is one device's windows of one hour, per bundle; filling is
// set while a query reads them.
type hourEntry struct {
	key     hourKey
	bundles map[string]*cachedWindows
	size    int
	filling bool
}

type cachedWindows struct {
	enc              []byte // drift.Summary.MarshalBinary of the merged windows
	windows, invalid int
}

// stored is the ingest hook: device's records were stored, so the hours
// of its drift records are read again when next queried.
func (x *driftIndex) stored(device string, recs []telemetry.Record) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, r := range recs {
		if r.Kind != protocol.RecordDrift {
			continue
		}
		k := hourKey{device, r.Time.Truncate(driftHour).Unix()}
		if e := x.hours[k]; e != nil {
			x.remove(e)
		}
	}
}

func (x *driftIndex) remove(e *list.Element) {
	h := e.Value.(*hourEntry)
	x.lru.Remove(e)
	delete(x.hours, h.key)
	x.bytes -= h.size
}

// hour returns device's windows of the hour starting at start, from the
// cache or read from the store (and cached, unless records of that hour
// were stored meanwhile).
func (x *driftIndex) hour(s *Server, device string, start time.Time) (*hourEntry, error) {
	k := hourKey{device, start.Unix()}
	x.mu.Lock()
	if x.hours == nil {
		x.hours = map[hourKey]*list.Element{}
	}
	if e := x.hours[k]; e != nil && !e.Value.(*hourEntry).filling {
		x.lru.MoveToFront(e)
		h := e.Value.(*hourEntry)
		x.mu.Unlock()
		return h, nil
	}
	// A placeholder: stored drops it if records of this hour arrive
	// while the store is read, and the result is then not kept.
	ph := &hourEntry{key: k, filling: true}
	if e := x.hours[k]; e != nil {
		x.remove(e)
	}
	x.hours[k] = x.lru.PushFront(ph)
	x.mu.Unlock()

	sums, err := s.readDrift(device, start, start.Add(driftHour), "")
	if err != nil {
		x.mu.Lock()
		if e := x.hours[k]; e != nil && e.Value == ph {
			x.remove(e)
		}
		x.mu.Unlock()
		return nil, err
	}
	h := &hourEntry{key: k, bundles: make(map[string]*cachedWindows, len(sums)), size: 64 + len(device)}
	for id, b := range sums {
		c := &cachedWindows{windows: b.windows, invalid: b.invalid}
		if b.sum != nil {
			if c.enc, err = b.sum.MarshalBinary(); err != nil {
				return nil, fmt.Errorf("fleetd: encoding the drift summary of %s: %w", device, err)
			}
		}
		h.bundles[id] = c
		h.size += 64 + len(id) + len(c.enc)
	}

	x.mu.Lock()
	defer x.mu.Unlock()
	if e := x.hours[k]; e != nil && e.Value == ph {
		e.Value = h
		x.bytes += h.size
		for x.bytes > driftCacheBytes && x.lru.Len() > 1 {
			x.remove(x.lru.Back())
		}
	}
	return h, nil
}

// profile returns bundle's drift profile, read once per bundle version
// (and digest) from the registry.
func (x *driftIndex) profile(ctx context.Context, s *Server, id protocol.BundleID) (*drift.Profile, error) {
	e, err := s.reg.Get(ctx, id.Name, id.Version)
	if err != nil {
		return nil, err
	}
	if e.Manifest.Profile == "" {
		return nil, fmt.Errorf("%w: %s", ErrNoProfile, id.ID())
	}
	key := id.ID() + "@" + e.SHA256
	x.mu.Lock()
	if x.profiles == nil {
		x.profiles = map[string]*profileLoad{}
	}
	pl := x.profiles[key]
	if pl == nil {
		pl = &profileLoad{done: make(chan struct{})}
		x.profiles[key] = pl
		x.mu.Unlock()
		// Not the caller's context: others may wait for this load.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), profileLoadTimeout)
		pl.p, pl.err = s.loadProfile(lctx, e.Name, e.Version)
		cancel()
		close(pl.done)
		if pl.err != nil {
			x.mu.Lock()
			delete(x.profiles, key) // tried again by the next query
			x.mu.Unlock()
		}
	} else {
		x.mu.Unlock()
		select {
		case <-pl.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return pl.p, pl.err
}

// loadProfile reads the drift profile of name@version from the registry:
// it fetches the bundle file (through the file registry's handler in
// process, or from S3), checks its digest against the registry's entry,
// unpacks it (which checks every file against the manifest) into a
// temporary directory and parses the profile.
func (s *Server) loadProfile(ctx context.Context, name, version string) (*drift.Profile, error) {
	e, err := s.reg.Get(ctx, name, version)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(filepath.Join(s.cfg.DataDir, UploadDir), "profile-")
	if err != nil {
		return nil, fmt.Errorf("fleetd: reading the drift profile of %s: %w", e.ID(), err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, e.FileName())
	if err := s.fetchBundle(ctx, e.ID(), path, e.Size, e.SHA256); err != nil {
		return nil, fmt.Errorf("fleetd: reading the drift profile of %s: %w", e.ID(), err)
	}
	unpacked := filepath.Join(dir, "bundle")
	m, err := bundle.Unpack(ctx, path, unpacked, bundle.Limits{MaxBundleBytes: int64(s.cfg.HTTP.MaxBundleBytes)})
	if err != nil {
		return nil, fmt.Errorf("fleetd: reading the drift profile of %s: %w", e.ID(), err)
	}
	if m.Profile == "" {
		return nil, fmt.Errorf("%w: %s", ErrNoProfile, e.ID())
	}
	p, err := drift.LoadProfile(filepath.Join(unpacked, filepath.FromSlash(m.Profile)))
	if err != nil {
		return nil, fmt.Errorf("fleetd: the drift profile of %s: %w", e.ID(), err)
	}
	s.log.Info("fleetd: drift profile read", "bundle", e.ID(), "profile", p.ID(), "features", len(p.Features))
	return p, nil
}

// fetchBundle writes the registry's bundle id to path and checks its size
// and SHA-256.
func (s *Server) fetchBundle(ctx context.Context, id, path string, size int64, sha string) error {
	name, version, _ := strings.Cut(id, "@")
	e, err := s.reg.Get(ctx, name, version)
	if err != nil {
		return err
	}
	u, _, err := s.reg.URL(ctx, e, "")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	w := io.MultiWriter(f, h)
	if s.fsReg != nil {
		// The file registry serves its own URLs: no network, no TLS.
		pu, err := url.Parse(u)
		if err != nil {
			return fmt.Errorf("registry URL: %w", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, pu.RequestURI(), nil)
		if err != nil {
			return err
		}
		rw := &fileResponse{header: http.Header{}, w: w}
		s.fsReg.Handler().ServeHTTP(rw, req)
		if rw.code != 0 && rw.code != http.StatusOK {
			return fmt.Errorf("registry answered %d for %s", rw.code, id)
		}
		if rw.err != nil {
			return rw.err
		}
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := (&http.Client{}).Do(req)
		if err != nil {
			return fmt.Errorf("downloading %s: %w", id, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("downloading %s: %s", id, resp.Status)
		}
		if _, err := io.Copy(w, io.LimitReader(resp.Body, size+1)); err != nil {
			return fmt.Errorf("downloading %s: %w", id, err)
		}
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != size {
		return fmt.Errorf("bundle %s: %d bytes, the registry's entry says %d", id, st.Size(), size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fmt.Errorf("bundle %s: sha256 %s, the registry's entry says %s", id, got, sha)
	}
	return f.Close()
}

// fileResponse is the http.ResponseWriter fetchBundle hands the file
// registry's handler.
type fileResponse struct {
	header http.Header
	code   int
	w      io.Writer
	err    error
}

func (r *fileResponse) Header() http.Header { return r.header }

func (r *fileResponse) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *fileResponse) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	if r.code != http.StatusOK {
		return len(b), nil // an error body
	}
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.w.Write(b)
	r.err = err
	return n, err
}
