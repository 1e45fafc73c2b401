package console

import (
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
)

// The experiments pages (docs/console.md): the A/B experiments, and one
// experiment's arms side by side with its comparison's tests, and for
// operators a Promote button per arm that starts a rollout of that arm's
// version (rollout.Engine.PromoteExperiment).

// isExperiment says whether r is an A/B experiment.
func isExperiment(r *rollout.Rollout) bool {
	return len(r.Arms) > 0 || r.Spec != nil && r.Spec.Kind == rollout.KindExperiment
}

// promotable are the states an experiment's arm may be promoted from.
var promotable = []rollout.State{rollout.StateRunning, rollout.StatePaused, rollout.StateCompleted}

// experimentRow is one line of the experiments list.
type experimentRow struct {
	*rollout.Rollout
	// Arms are its arms, control first.
	Arms []armName
}

type armName struct{ Name, Bundle string }

// arms names r's arms, control (A) first.
func arms(r *rollout.Rollout) []armName {
	var out []armName
	for i, b := range r.Arms {
		a := armName{Bundle: b.ID()}
		if r.Spec != nil && r.Spec.Experiment != nil && i < len(r.Spec.Experiment.Arms) {
			a.Name = r.Spec.Experiment.Arms[i].Name
		}
		if a.Name == "" {
			a.Name = string(rune('a' + i))
		}
		out = append(out, a)
	}
	return out
}

func (c *Console) handleExperiments(w http.ResponseWriter, r *request) error {
	ros, err := r.api.Rollouts(r.Context())
	if err != nil {
		return err
	}
	var rows []experimentRow
	for _, ro := range ros {
		if isExperiment(ro) {
			rows = append(rows, experimentRow{Rollout: ro, Arms: arms(ro)})
		}
	}
	c.render(w, r.Request, r.sess, "experiments", "Experiments", liveRollouts, map[string]any{"Experiments": rows})
	return nil
}

// armView is one arm of the experiment page.
type armView struct {
	// Letter is A (the control) or B.
	Letter, Name, Bundle string
	Stats                *rollout.ArmStats
	// LatencySD and OutputSD are the standard deviations of the
	// devices' p95 latencies and of the sampled outputs (0 below two
	// values).
	LatencySD, OutputSD float64
	// ErrorPct is the error rate in percent.
	ErrorPct float64
	Winner   bool
	// Spec is the rollout spec the Promote form offers for the arm.
	Spec string
}

// testView is one of the comparison's tests.
type testView struct {
	rollout.Test
	Key, Title string
}

// sd is a summary's sample standard deviation.
func sd(s rollout.Summary) float64 {
	if s.Count < 2 {
		return 0
	}
	return math.Sqrt(s.M2 / float64(s.Count-1))
}

// promoteSpec is the rollout spec the Promote form starts with: a
// canary of a tenth of the devices, then the rest, held to the install
// and error-rate gates; target and bundle default to the experiment's
// target and the arm's version (docs/rollouts.md, section 8).
func promoteSpec(id string, a armName) string {
	return fmt.Sprintf(`name: %q
waves:
  - {name: canary, percent: 10, minDevices: 1, bake: 10m}
  - {percent: 100, bake: 0s}
waveDeadline: 1h
gates:
  installSuccess: {min: 0.95}
  errorRate: {max: 0.05}
`, fmt.Sprintf("%s (%s) from experiment %s", a.Name, a.Bundle, id))
}

func (c *Console) handleExperiment(w http.ResponseWriter, r *request) error {
	id := r.PathValue("id")
	st, err := r.api.Rollout(r.Context(), id, false)
	if err != nil {
		return err
	}
	if !isExperiment(&st.Rollout) {
		http.Redirect(w, r.Request, Prefix+"/rollouts/"+url.PathEscape(id), http.StatusSeeOther)
		return nil
	}
	cmp := st.Comparison
	names := arms(&st.Rollout)
	views := make([]armView, len(names))
	for i, a := range names {
		v := armView{Letter: string(rune('A' + i)), Name: a.Name, Bundle: a.Bundle, Spec: promoteSpec(id, a)}
		if cmp != nil && i < len(cmp.Arms) {
			s := cmp.Arms[i]
			v.Stats = &s
			v.LatencySD, v.OutputSD, v.ErrorPct = sd(s.LatencyP95Ms), sd(s.Output), 100*s.ErrorRate
			v.Winner = cmp.Winner != "" && cmp.Winner == a.Name
		}
		views[i] = v
	}
	data := map[string]any{"R": st, "Arms": views, "Comparison": cmp, "Confidence": fmt.Sprintf("%.0f%%", 100*rollout.Confidence),
		"CanPromote": slices.Contains(promotable, st.State) && len(views) == 2}
	if cmp != nil {
		data["Tests"] = []testView{
			{cmp.ErrorRate, "errorRate", "Error rate"},
			{cmp.Latency, "latency", "p95 latency"},
			{cmp.Output, "output", "Outputs"},
		}
		// A vs B, one chart per metric (their scales differ).
		var labels []string
		er := series{Lines: map[string][]float64{}, Unit: "%"}
		lat := series{Lines: map[string][]float64{}, Unit: "ms"}
		out := series{Lines: map[string][]float64{}}
		for _, v := range views {
			if v.Stats == nil {
				continue
			}
			labels = append(labels, v.Letter+": "+v.Name)
			er.Lines["error rate %"] = append(er.Lines["error rate %"], v.ErrorPct)
			lat.Lines["mean p95 ms"] = append(lat.Lines["mean p95 ms"], v.Stats.LatencyP95Ms.Mean)
			out.Lines["mean output"] = append(out.Lines["mean output"], v.Stats.Output.Mean)
		}
		er.Labels, lat.Labels, out.Labels = labels, labels, labels
		charts := []map[string]any{
			{"Key": "error-rate", "Label": "Error rate of each arm, in percent", "Caption": "error rate (%) per arm", "Series": er},
			{"Key": "latency", "Label": "Mean of the devices' p95 latency of each arm, in milliseconds", "Caption": "mean of the devices' p95 latency (ms) per arm", "Series": lat},
		}
		if cmp.Arms[0].Output.Count > 0 || cmp.Arms[1].Output.Count > 0 {
			charts = append(charts, map[string]any{"Key": "output", "Label": "Mean sampled output of each arm", "Caption": "mean sampled output per arm", "Series": out})
		}
		data["Charts"] = charts
	}
	c.render(w, r.Request, r.sess, "experiment", "Experiment "+id, liveRollouts, data)
	return nil
}

// handleExperimentPromote promotes an arm (form field arm) of the
// experiment into a new rollout of the spec in form field spec, and goes
// to the new rollout's page.
func (c *Console) handleExperimentPromote(w http.ResponseWriter, r *request) error {
	id := r.PathValue("id")
	arm := strings.TrimSpace(r.PostFormValue("arm"))
	if arm == "" {
		return errorf(http.StatusBadRequest, "promote: no arm given")
	}
	spec := r.PostFormValue("spec")
	note := fmt.Sprintf("arm %s promoted from the console by %s", arm, r.sess.who.Name)
	ro, err := r.api.RolloutAction(r.Context(), id, "promote", api.RolloutAction{Arm: arm, Spec: spec, Note: note})
	if err != nil {
		if r.Header.Get("HX-Request") != "" {
			// Shown beside the buttons; the page stays as it is, with
			// the spec as typed.
			c.log.Info("console: promote refused", "user", r.sess.who.Name, "experiment", id, "arm", arm, "err", err)
			w.Header().Set("HX-Retarget", "#promote-result")
			w.Header().Set("HX-Reswap", "innerHTML")
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, `<p class="error" role="alert">Promoting arm %s refused: %s</p>`,
				template.HTMLEscapeString(arm), template.HTMLEscapeString(err.Error()))
			return nil
		}
		return err
	}
	c.log.Info("console: experiment promoted", "user", r.sess.who.Name, "experiment", id, "arm", arm, "rollout", ro.ID)
	return seeRollout(w, r, ro.ID)
}
