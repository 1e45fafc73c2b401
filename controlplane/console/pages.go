package console

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// Live topics of the pages' live regions.
const (
	liveDevices  = "sse:" + api.TopicDevices
	liveRollouts = "sse:" + api.TopicRollouts
	liveBundles  = "sse:" + api.TopicBundles
	liveAll      = liveDevices + ", " + liveRollouts + ", " + liveBundles
)

// count is one row of a breakdown.
type count struct {
	Key string
	N   int
}

func counted(m map[string]int) []count {
	out := make([]count, 0, len(m))
	for k, n := range m {
		out = append(out, count{k, n})
	}
	slices.SortFunc(out, func(a, b count) int { return cmp.Or(b.N-a.N, strings.Compare(a.Key, b.Key)) })
	return out
}

// active says whether a rollout still moves.
func active(r *rollout.Rollout) bool {
	switch r.State {
	case rollout.StateRunning, rollout.StatePaused, rollout.StateRollingBack:
		return true
	}
	return false
}

func (c *Console) handleFleet(w http.ResponseWriter, r *request) error {
	f, err := r.api.Fleet(r.Context())
	if err != nil {
		return err
	}
	ros, err := r.api.Rollouts(r.Context())
	if err != nil {
		return err
	}
	if n, ok := f.Versions[""]; ok {
		delete(f.Versions, "")
		f.Versions["(none)"] = n
	}
	var running []*rollout.Rollout
	for _, ro := range ros {
		if active(ro) {
			running = append(running, ro)
		}
	}
	c.render(w, r.Request, r.sess, "fleet", "Fleet", liveAll, map[string]any{
		"Devices": f.Devices, "Online": f.Online, "Offline": f.Devices - f.Online,
		"Versions": counted(f.Versions), "Labels": counted(f.Labels), "Rollouts": running,
	})
	return nil
}

// devicesPerPage is the device list's page size.
const devicesPerPage = 50

func (c *Console) handleDevices(w http.ResponseWriter, r *request) error {
	q := r.URL.Query()
	selector, search := strings.TrimSpace(q.Get("selector")), strings.TrimSpace(q.Get("q"))
	pg, _ := strconv.Atoi(q.Get("page"))
	pg = max(pg, 1)
	from := (pg - 1) * devicesPerPage
	l, err := r.api.DevicesPage(r.Context(), client.DevicesQuery{Selector: selector, Search: search, Offset: from, Limit: devicesPerPage})
	if err != nil {
		return err
	}
	pages := max((l.Total+devicesPerPage-1)/devicesPerPage, 1)
	if pg > pages { // past the end (the fleet shrank): the last page
		pg, from = pages, (pages-1)*devicesPerPage
		if l, err = r.api.DevicesPage(r.Context(), client.DevicesQuery{Selector: selector, Search: search, Offset: from, Limit: devicesPerPage}); err != nil {
			return err
		}
	}
	shown := l.Devices
	link := func(p int) string {
		v := url.Values{}
		if selector != "" {
			v.Set("selector", selector)
		}
		if search != "" {
			v.Set("q", search)
		}
		v.Set("page", strconv.Itoa(p))
		return Prefix + "/devices?" + v.Encode()
	}
	data := map[string]any{"Devices": shown, "Total": l.Total, "Page": pg, "Pages": pages,
		"Selector": selector, "Search": search, "From": from + 1, "To": from + len(shown)}
	if pg > 1 {
		data["Prev"] = link(pg - 1)
	}
	if pg < pages {
		data["Next"] = link(pg + 1)
	}
	c.render(w, r.Request, r.sess, "devices", "Devices", liveDevices, data)
	return nil
}

// eventKind is the record kind fleetd stores device events under.
const eventKind = "event"

// series is one chart's data: x labels and named lines.
type series struct {
	Labels []string             `json:"labels"`
	Lines  map[string][]float64 `json:"lines"`
	Unit   string               `json:"unit,omitempty"`
}

func (c *Console) handleDevice(w http.ResponseWriter, r *request) error {
	id := r.PathValue("id")
	d, err := r.api.Device(r.Context(), id)
	if err != nil {
		return err
	}
	recs, err := r.api.Records(r.Context(), id, client.RecordsQuery{Kind: protocol.RecordMetrics, Limit: 60, NewestFirst: true})
	if err != nil {
		return err
	}
	lat := series{Lines: map[string][]float64{"p50 ms": nil, "p95 ms": nil}, Unit: "ms"}
	errs := series{Lines: map[string][]float64{"error rate": nil}}
	for i := len(recs.Records) - 1; i >= 0; i-- {
		var m protocol.MetricsRecord
		if json.Unmarshal(recs.Records[i].Payload, &m) != nil || m.Requests == 0 {
			continue
		}
		at := m.End.UTC().Format("15:04:05")
		lat.Labels = append(lat.Labels, at)
		lat.Lines["p50 ms"] = append(lat.Lines["p50 ms"], m.P50Ms)
		lat.Lines["p95 ms"] = append(lat.Lines["p95 ms"], m.P95Ms)
		errs.Labels = append(errs.Labels, at)
		errs.Lines["error rate"] = append(errs.Lines["error rate"], float64(m.Errors)/float64(m.Requests))
	}
	// Its events, newest first: installs, rollbacks, refusals, with
	// their attempts (the slot history).
	evRecs, err := r.api.Records(r.Context(), id, client.RecordsQuery{Kind: eventKind, Limit: 20, NewestFirst: true})
	if err != nil {
		return err
	}
	var events []protocol.Event
	for _, rec := range evRecs.Records {
		var ev protocol.Event
		if json.Unmarshal(rec.Payload, &ev) == nil && ev.Type != protocol.EventInstallProgress {
			events = append(events, ev)
		}
	}
	c.render(w, r.Request, r.sess, "device", "Device "+id, liveDevices, map[string]any{
		"Device": d, "Latency": lat, "Errors": errs, "Windows": len(lat.Labels), "Events": events})
	return nil
}

func (c *Console) handleBundles(w http.ResponseWriter, r *request) error {
	bs, err := r.api.Bundles(r.Context(), "")
	if err != nil {
		return err
	}
	f, err := r.api.Fleet(r.Context())
	if err != nil {
		return err
	}
	c.render(w, r.Request, r.sess, "bundles", "Bundles", liveBundles+", "+liveDevices, map[string]any{"Bundles": bs, "Running": f.Versions})
	return nil
}

func (c *Console) handleRollouts(w http.ResponseWriter, r *request) error {
	ros, err := r.api.Rollouts(r.Context())
	if err != nil {
		return err
	}
	c.render(w, r.Request, r.sess, "rollouts", "Rollouts", liveRollouts, map[string]any{"Rollouts": ros})
	return nil
}

// stepView is one wave of the timeline.
type stepView struct {
	rollout.Step
	Index int
	// State is done, current or pending.
	State string
}

// gateView is a gate's live value against its threshold; Ratio is
// value/threshold, what the chart draws (1: at the threshold).
type gateView struct {
	rollout.GateResult
	Ratio float64 `json:"ratio"`
}

// action is a steering action and the states it applies to.
type action struct {
	Name, Label string
	States      []rollout.State
}

var actions = []action{
	{"pause", "Pause", []rollout.State{rollout.StateRunning}},
	{"resume", "Resume", []rollout.State{rollout.StatePaused}},
	{"promote", "Promote", []rollout.State{rollout.StateRunning, rollout.StatePaused}},
	{"rollback", "Roll back", []rollout.State{rollout.StateRunning, rollout.StatePaused, rollout.StateSucceeded}},
	{"abort", "Abort", []rollout.State{rollout.StateRunning, rollout.StatePaused}},
}

func (c *Console) handleRollout(w http.ResponseWriter, r *request) error {
	id := r.PathValue("id")
	st, err := r.api.Rollout(r.Context(), id, false)
	if err != nil {
		return err
	}
	h, err := r.api.RolloutHistory(r.Context(), id)
	if err != nil {
		return err
	}
	steps := make([]stepView, len(st.Steps))
	for i, s := range st.Steps {
		state := "pending"
		switch {
		case i < st.Step || (i == st.Step && !active(&st.Rollout) && st.State != rollout.StateRolledBack && st.State != rollout.StateAborted):
			state = "done"
		case i == st.Step:
			state = "current"
		}
		steps[i] = stepView{Step: s, Index: i, State: state}
	}
	gates := make([]gateView, len(st.Gates))
	for i, g := range st.Gates {
		gates[i] = gateView{GateResult: g}
		if g.Threshold != 0 {
			gates[i].Ratio = g.Value / g.Threshold
		}
	}
	// The gates' values over time, from the history's measured gates.
	hist := series{Lines: map[string][]float64{}}
	for _, ev := range h.Events {
		if len(ev.Gates) == 0 {
			continue
		}
		hist.Labels = append(hist.Labels, ev.Time.UTC().Format("15:04:05"))
		for _, g := range ev.Gates {
			v := 0.0
			if g.Threshold != 0 {
				v = g.Value / g.Threshold
			}
			hist.Lines[g.Gate] = append(hist.Lines[g.Gate], v)
		}
	}
	var can []map[string]string
	for _, a := range actions {
		if slices.Contains(a.States, st.State) {
			can = append(can, map[string]string{"Name": a.Name, "Label": a.Label})
		}
	}
	events := slices.Clone(h.Events)
	slices.Reverse(events)
	c.render(w, r.Request, r.sess, "rollout", "Rollout "+id, liveRollouts, map[string]any{
		"R": st, "Steps": steps, "Gates": gates, "History": hist, "Events": events, "Actions": can,
		"Kind": kindOf(&st.Rollout)})
	return nil
}

func kindOf(r *rollout.Rollout) string {
	if len(r.Arms) > 0 {
		return "experiment"
	}
	return "rollout"
}

func (c *Console) handleRolloutAction(w http.ResponseWriter, r *request) error {
	id, name := r.PathValue("id"), r.PathValue("action")
	if !slices.ContainsFunc(actions, func(a action) bool { return a.Name == name }) {
		return errorf(http.StatusNotFound, "no such action %q", name)
	}
	note := fmt.Sprintf("%s from the console by %s", name, r.sess.who.Name)
	if _, err := r.api.RolloutAction(r.Context(), id, name, api.RolloutAction{Note: note}); err != nil {
		return err
	}
	c.log.Info("console: rollout action", "user", r.sess.who.Name, "rollout", id, "action", name)
	return seeRollout(w, r, id)
}

// seeRollout answers a POST that acted on rollout id by sending the
// browser to its page (through htmx's HX-Redirect for an htmx request).
func seeRollout(w http.ResponseWriter, r *request, id string) error {
	to := Prefix + "/rollouts/" + url.PathEscape(id)
	if r.Header.Get("HX-Request") != "" {
		w.Header().Set("HX-Redirect", to)
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	http.Redirect(w, r.Request, to, http.StatusSeeOther)
	return nil
}

// handleEvents streams GET /api/v1/watch, called with the session's
// token, to the browser: server-sent events named for the topic that
// changed, which the pages' live regions refetch on.
func (c *Console) handleEvents(w http.ResponseWriter, r *request) error {
	in := r.Clone(r.Context())
	in.URL = &url.URL{Path: api.Prefix + "/watch"}
	in.RequestURI = in.URL.RequestURI()
	in.Header = http.Header{"Authorization": {"Bearer " + r.sess.token}}
	c.cfg.API.ServeHTTP(w, in)
	return nil
}
