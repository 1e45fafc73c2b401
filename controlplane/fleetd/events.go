package fleetd

// Outgoing events, "retraining triggers" (controlplane/notify,
// docs/integrations.md): the events configuration, the hooks that queue
// events (the rollout engine's history, device install failures, drift
// windows), and GET /api/v1/events.

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/controlplane/notify"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// EventsConfig is fleetd's outgoing events: CloudEvents 1.0 over HTTP
// (or, through a template, Airflow and Kubeflow Pipelines requests) on
// persisting drift, gate breaches, rollbacks, concluded experiments and
// failed installs, queued in DATA/rollouts.db and delivered to the
// subscriptions (docs/integrations.md#retraining-triggers).
type EventsConfig struct {
	// Source is the CloudEvents source events' sources start with (a URI
	// reference, e.g. https://fleetd.example.com): SOURCE/rollouts and
	// SOURCE/devices.
	Source string `yaml:"source"`
	// DriftWindows is how many drift windows in a row of one device and
	// bundle version must drift to make a dev.edgefleet.drift.persisted
	// event (once per episode).
	DriftWindows int `yaml:"driftWindows"`
	// DriftShare is the drift score (share of drifted features) at which
	// a window counts as drifted.
	DriftShare float64 `yaml:"driftShare"`
	// MaxAge is how long a delivery is retried before it is failed,
	// counted from when the event was queued.
	MaxAge Duration `yaml:"maxAge"`
	// Retention is how long events are kept (and listed) once each of
	// their deliveries is done (delivered or failed), counted from when
	// the last was done; a pending event is never pruned.
	Retention Duration `yaml:"retention"`
	// Subscriptions are the receivers.
	Subscriptions []SubscriptionConfig `yaml:"subscriptions"`
}

// SubscriptionConfig is one receiver of events.
type SubscriptionConfig struct {
	// Name names the subscription in fleetctl events ([a-z0-9._-]).
	Name string `yaml:"name"`
	// URL is where events are POSTed (http or https); with a template,
	// the base URL of its API (the webserver for template airflow, the
	// KFP API server for kubeflow).
	URL string `yaml:"url"`
	// Types are the event types delivered (default: every type).
	Types []string `yaml:"types"`
	// Selector, a label selector as in rollout targets, must match the
	// event's labels (a device's labels; a rollout's target's equality
	// terms).
	Selector string `yaml:"selector"`
	// Bundles are bundle patterns (NAME or NAME@VERSION, shell globs); an
	// event is delivered if one matches a version it concerns.
	Bundles []string `yaml:"bundles"`
	// Secret signs each request (HMAC-SHA256, Standard Webhooks
	// webhook-signature header); "whsec_" and base64 is a Standard
	// Webhooks secret. Prefer SecretFile.
	Secret string `yaml:"secret"`
	// SecretFile holds the secret instead.
	SecretFile string `yaml:"secretFile"`
	// Mode is the CloudEvents HTTP content mode: binary (ce-* headers,
	// the data as body) or structured (application/cloudevents+json).
	Mode string `yaml:"mode"`
	// Template, airflow or kubeflow, sends that API's request instead of
	// a CloudEvent.
	Template string `yaml:"template"`
	// AuthorizationFile holds the Authorization header's value (e.g.
	// "Bearer TOKEN").
	AuthorizationFile string `yaml:"authorizationFile"`
	// Username and PasswordFile send HTTP basic authentication.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"passwordFile"`
	// Airflow configures template airflow.
	Airflow AirflowConfig `yaml:"airflow"`
	// Kubeflow configures template kubeflow.
	Kubeflow KubeflowConfig `yaml:"kubeflow"`
}

// AirflowConfig is the Airflow template: a DAG run per event.
type AirflowConfig struct {
	// DagID is the DAG triggered (POST URL/api/v1/dags/DAGID/dagRuns).
	DagID string `yaml:"dagId"`
}

// KubeflowConfig is the Kubeflow Pipelines template: a run per event
// (POST URL/apis/v2beta1/runs).
type KubeflowConfig struct {
	// PipelineID and PipelineVersionID are the pipeline version run.
	PipelineID        string `yaml:"pipelineId"`
	PipelineVersionID string `yaml:"pipelineVersionId"`
	// ExperimentID files the runs under a KFP experiment.
	ExperimentID string `yaml:"experimentId"`
	// ServiceAccount runs the runs' pods under it.
	ServiceAccount string `yaml:"serviceAccount"`
	// Parameters are the run parameters sent (default all: event_id,
	// event_type, subject, bundle, bundle_name, version, time, data); the
	// pipeline must declare each, as a string.
	Parameters []string `yaml:"parameters"`
}

// EventTiming replaces the retry timing of event deliveries (zero fields:
// the defaults), for tests that cannot wait seconds.
type EventTiming struct {
	// RetryMax, RetryWaitMin and RetryWaitMax are go-retryablehttp's
	// quick retries of an attempt (RetryMax -1: none).
	RetryMax                   int
	RetryWaitMin, RetryWaitMax time.Duration
	// MinBackoff and MaxBackoff bound a subscription's wait after a
	// failed attempt.
	MinBackoff, MaxBackoff time.Duration
}

// withDefaults fills in the events defaults.
func (e EventsConfig) withDefaults() EventsConfig {
	if e.Source == "" {
		e.Source = notify.DefaultSource
	}
	if e.DriftWindows == 0 {
		e.DriftWindows = notify.DefaultDriftWindows
	}
	if e.DriftShare == 0 {
		e.DriftShare = notify.DefaultDriftShare
	}
	if e.MaxAge == 0 {
		e.MaxAge = Duration(notify.DefaultMaxAge)
	}
	if e.Retention == 0 {
		e.Retention = Duration(notify.DefaultRetention)
	}
	return e
}

// resolvePaths makes the events' file paths absolute, by abs.
func (e *EventsConfig) resolvePaths(abs func(*string)) {
	for i := range e.Subscriptions {
		s := &e.Subscriptions[i]
		abs(&s.SecretFile)
		abs(&s.AuthorizationFile)
		abs(&s.PasswordFile)
	}
}

// validateEvents checks the events section (defaults applied).
func validateEvents(e EventsConfig, bad func(key, format string, args ...any)) {
	if u, err := url.Parse(e.Source); err != nil || e.Source == "" || strings.ContainsAny(e.Source, " \t\r\n") {
		bad("events.source", "%q is not a URI reference (e.g. https://fleetd.example.com or /edgefleet/fleetd)", e.Source)
	} else if u.RawQuery != "" || u.Fragment != "" {
		bad("events.source", "%q: no query or fragment", e.Source)
	}
	if e.DriftWindows < 1 || e.DriftWindows > 1000 {
		bad("events.driftWindows", "must be 1 to 1000, got %d", e.DriftWindows)
	}
	if e.DriftShare <= 0 || e.DriftShare > 1 {
		bad("events.driftShare", "must be above 0 and at most 1, got %g", e.DriftShare)
	}
	if time.Duration(e.MaxAge) < time.Minute {
		bad("events.maxAge", "must be at least 1m, got %s", e.MaxAge)
	}
	// The retention counts from when an event's deliveries are all done
	// (delivered or failed), so it need not cover events.maxAge: a
	// pending event is never pruned.
	if time.Duration(e.Retention) < time.Minute {
		bad("events.retention", "must be at least 1m, got %s", e.Retention)
	}
	seen := map[string]int{}
	for i, s := range e.Subscriptions {
		k := fmt.Sprintf("events.subscriptions[%d]", i)
		if !validToken(s.Name) {
			bad(k+".name", "%q: a name of [a-z0-9._-] (at most 64 bytes) is required", s.Name)
		} else if j, dup := seen[s.Name]; dup {
			bad(k+".name", "%q is also the name of events.subscriptions[%d]", s.Name, j)
		} else {
			seen[s.Name] = i
		}
		if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(k+".url", "%q is not an http(s)://host[:port][/path] URL", redactURL(s.URL))
		} else if u.User != nil {
			bad(k+".url", "no credentials in the URL: use username and passwordFile, or authorizationFile")
		}
		for j, t := range s.Types {
			if !notify.KnownType(t) {
				bad(fmt.Sprintf("%s.types[%d]", k, j), "%q: not an event type (%s)", t, strings.Join(notify.Types, ", "))
			}
		}
		if s.Selector != "" {
			if _, err := inventory.ParseSelector(s.Selector); err != nil {
				bad(k+".selector", "%v", err)
			}
		}
		for j, b := range s.Bundles {
			if _, err := notify.ParseBundlePattern(b); err != nil {
				bad(fmt.Sprintf("%s.bundles[%d]", k, j), "%v", err)
			}
		}
		if s.Secret != "" && s.SecretFile != "" {
			bad(k+".secret", "give secret or secretFile, not both")
		}
		if s.Secret != "" {
			if len(s.Secret) < minTokenLen {
				bad(k+".secret", "a signing secret needs at least %d bytes", minTokenLen)
			} else if _, err := notify.DecodeSecret(s.Secret); err != nil {
				bad(k+".secret", "%v", err)
			}
		}
		switch s.Mode {
		case "", notify.ModeBinary, notify.ModeStructured:
		default:
			bad(k+".mode", "%q: must be binary or structured", s.Mode)
		}
		if (s.Username == "") != (s.PasswordFile == "") {
			bad(k+".username", "username and passwordFile go together")
		}
		if s.Username != "" && s.AuthorizationFile != "" {
			bad(k+".authorizationFile", "give authorizationFile or username and passwordFile, not both")
		}
		switch s.Template {
		case "":
			if s.Airflow != (AirflowConfig{}) || !emptyKubeflow(s.Kubeflow) {
				bad(k+".template", "airflow or kubeflow settings need template airflow or kubeflow")
			}
		case notify.TemplateAirflow:
			if s.Mode != "" {
				bad(k+".mode", "a CloudEvents mode; not with template airflow")
			}
			if s.Airflow.DagID == "" {
				bad(k+".airflow.dagId", "required with template airflow")
			} else if strings.ContainsAny(s.Airflow.DagID, "/ ") {
				bad(k+".airflow.dagId", "%q: no slashes or spaces", s.Airflow.DagID)
			}
			if !emptyKubeflow(s.Kubeflow) {
				bad(k+".kubeflow", "set, but template is airflow")
			}
		case notify.TemplateKubeflow:
			if s.Mode != "" {
				bad(k+".mode", "a CloudEvents mode; not with template kubeflow")
			}
			if s.Kubeflow.PipelineID == "" || s.Kubeflow.PipelineVersionID == "" {
				bad(k+".kubeflow.pipelineId", "kubeflow.pipelineId and kubeflow.pipelineVersionId are required with template kubeflow")
			}
			for j, p := range s.Kubeflow.Parameters {
				if !slices.Contains(notify.KubeflowParameters, p) {
					bad(fmt.Sprintf("%s.kubeflow.parameters[%d]", k, j), "%q: not a parameter (%s)", p, strings.Join(notify.KubeflowParameters, ", "))
				}
			}
			if s.Airflow != (AirflowConfig{}) {
				bad(k+".airflow", "set, but template is kubeflow")
			}
		default:
			bad(k+".template", "%q: must be airflow or kubeflow (or unset, for CloudEvents)", s.Template)
		}
	}
}

func emptyKubeflow(k KubeflowConfig) bool {
	return k.PipelineID == "" && k.PipelineVersionID == "" && k.ExperimentID == "" && k.ServiceAccount == "" && len(k.Parameters) == 0
}

// redactURL drops a URL's user information and query from messages.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		u.User, u.RawQuery = nil, ""
		return u.String()
	}
	if i := strings.IndexAny(s, "?@"); i >= 0 {
		return s[:i] + "…"
	}
	return s
}

// subscriptions turns the configuration into notify's, reading the
// secret files.
func (e EventsConfig) subscriptions() ([]notify.Subscription, error) {
	var out []notify.Subscription
	for i, c := range e.Subscriptions {
		k := fmt.Sprintf("events.subscriptions[%d]", i)
		s := notify.Subscription{Name: c.Name, URL: c.URL, Mode: c.Mode, Template: c.Template,
			Airflow: notify.AirflowTemplate{DagID: c.Airflow.DagID},
			Kubeflow: notify.KubeflowTemplate{PipelineID: c.Kubeflow.PipelineID, PipelineVersionID: c.Kubeflow.PipelineVersionID,
				ExperimentID: c.Kubeflow.ExperimentID, ServiceAccount: c.Kubeflow.ServiceAccount, Parameters: c.Kubeflow.Parameters}}
		s.Filter.Types = c.Types
		s.Filter.Selector, _ = inventory.ParseSelector(c.Selector) // validated
		for _, b := range c.Bundles {
			p, _ := notify.ParseBundlePattern(b) // validated
			s.Filter.Bundles = append(s.Filter.Bundles, p)
		}
		sec := c.Secret
		if c.SecretFile != "" {
			var err error
			if sec, err = secret(k+".secretFile", c.SecretFile, false, "", "", nil); err != nil {
				return nil, err
			}
		}
		if sec != "" {
			key, err := notify.DecodeSecret(sec)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrConfig, k+".secretFile", err)
			}
			s.Key = key
		}
		switch {
		case c.AuthorizationFile != "":
			b, err := os.ReadFile(c.AuthorizationFile)
			if err != nil {
				return nil, fmt.Errorf("%w: %s.authorizationFile: %w", ErrConfig, k, err)
			}
			if s.Authorization = strings.TrimSpace(string(b)); s.Authorization == "" || strings.ContainsAny(s.Authorization, "\r\n") {
				return nil, fmt.Errorf("%w: %s.authorizationFile: %s must hold one line, the header's value", ErrConfig, k, c.AuthorizationFile)
			}
		case c.Username != "":
			b, err := os.ReadFile(c.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("%w: %s.passwordFile: %w", ErrConfig, k, err)
			}
			pw := strings.TrimRight(string(b), "\r\n")
			s.Authorization = "Basic " + base64.StdEncoding.EncodeToString([]byte(c.Username+":"+pw))
		}
		out = append(out, s)
	}
	return out, nil
}

// openEvents opens the event queue in db (rollouts.db: the rollout
// engine's events are queued in its own transactions).
func (s *Server) openEvents(db *bolt.DB) (*notify.Service, error) {
	e := s.cfg.Events
	var t EventTiming
	if s.cfg.EventTiming != nil {
		t = *s.cfg.EventTiming
	}
	subs, err := e.subscriptions()
	if err != nil {
		return nil, err
	}
	svc, err := notify.New(notify.Config{
		DB: db, Source: e.Source, Subscriptions: subs, DriftWindows: e.DriftWindows, DriftShare: e.DriftShare,
		MaxAge: time.Duration(e.MaxAge), Retention: time.Duration(e.Retention),
		RetryMax: t.RetryMax, RetryWaitMin: t.RetryWaitMin, RetryWaitMax: t.RetryWaitMax,
		MinBackoff: t.MinBackoff, MaxBackoff: t.MaxBackoff,
		Now: s.now, Logger: s.log.With("component", "events"),
	})
	if err != nil {
		return nil, fmt.Errorf("fleetd: events: %w", err)
	}
	if len(subs) > 0 {
		s.log.Info("fleetd: events delivered to subscriptions", "subscriptions", strings.Join(svc.Subscriptions(), ","))
	}
	return svc, nil
}

// Events returns the outgoing event queue (for in-process tools and
// tests).
func (s *Server) Events() *notify.Service { return s.ro.events }

// rolloutEmitter queues the rollout engine's notable history events.
type rolloutEmitter struct{ s *Server }

func (em rolloutEmitter) RolloutEvent(tx *bolt.Tx, r *rollout.Rollout, ev rollout.Event) error {
	svc := em.s.ro.events
	if svc == nil {
		return nil
	}
	var typ string
	var data any
	bundles := []string{}
	if r.Bundle.Name != "" {
		bundles = append(bundles, r.Bundle.ID())
	}
	for _, a := range r.Arms {
		bundles = append(bundles, a.ID())
	}
	var lineage any
	if r.Lineage != nil {
		lineage = r.Lineage
	}
	switch {
	case ev.Type == rollout.EventBreach && ev.Breach != nil:
		b := ev.Breach
		action := "rollback"
		if !r.Spec.Rollback.AutoRollback() {
			action = "pause"
		}
		typ = notify.TypeGateBreached
		data = notify.GateData{Rollout: r.ID, Bundle: r.Bundle.ID(), BundleName: r.Bundle.Name, Version: r.Bundle.Version,
			Gate: b.Gate, Value: b.Value, Threshold: b.Threshold, Reports: b.Reports, MinReports: b.MinReports,
			Step: b.Step, StepName: b.StepName, Evidence: b.Evidence, Action: action, Message: ev.Message, Lineage: lineage}
	case ev.Type == rollout.EventRolledBack:
		typ = notify.TypeRolledBack
		d := notify.RollbackData{Rollout: r.ID, Reason: r.Reason, DevicesSent: r.Progress.RollbackSent, DevicesSkipped: r.Progress.RollbackSkipped, Lineage: lineage}
		if r.Bundle.Name != "" {
			d.Bundle, d.BundleName, d.Version = r.Bundle.ID(), r.Bundle.Name, r.Bundle.Version
		}
		if r.Breach != nil && !strings.HasPrefix(r.Reason, rollout.ReasonManualRollback) {
			d.Automatic, d.Gate = true, r.Breach.Gate
		}
		data = d
	case ev.Type == rollout.EventCompleted && r.Spec.Kind == rollout.KindExperiment:
		typ = notify.TypeExperimentConcluded
		d := notify.ExperimentData{Rollout: r.ID, Arms: bundles, Verdict: ev.Message}
		if r.Comparison != nil {
			d.Winner, d.Verdict, d.Comparison = r.Comparison.Winner, r.Comparison.Verdict, r.Comparison
		}
		data = d
	default:
		return nil
	}
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return svc.AddTx(tx, notify.Event{
		ID: r.ID + "-" + strconv.FormatUint(ev.Seq, 10), Type: typ, Source: svc.Source("rollouts"), Subject: r.ID,
		Time: ev.Time, Bundles: bundles, Labels: selectorLabels(r.Spec.Target), Data: b,
	})
}

// selectorLabels are the equality terms of a target selector: the labels
// a rollout's events are matched against.
func selectorLabels(target string) map[string]string {
	sel, err := inventory.ParseSelector(target)
	if err != nil {
		return nil
	}
	var out map[string]string
	for _, r := range sel.Requirements() {
		if r.Op == inventory.OpEqual {
			if out == nil {
				out = map[string]string{}
			}
			out[r.Key] = r.Value
		}
	}
	return out
}

// eventsOfDeviceEvent queues dev.edgefleet.device.install_failed for a
// device's install.failed event; the id comes from the device record's
// identity, so a message delivered twice queues one event.
func (s *Server) eventsOfDeviceEvent(device string, e *protocol.Event) error {
	svc := s.ro.events
	if svc == nil || e.Type != protocol.EventInstallFailed {
		return nil
	}
	d := notify.InstallData{Device: device, Rollout: e.RolloutID, Seq: e.Seq, Reason: e.Reason, Message: e.Message}
	var bundles []string
	if e.Bundle != nil {
		d.Bundle, d.BundleName, d.Version = e.Bundle.ID(), e.Bundle.Name, e.Bundle.Version
		bundles = []string{e.Bundle.ID()}
	}
	if v, err := s.inv.Get(device); err == nil {
		d.Labels = v.EffectiveLabels()
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	id := "install-" + recordHash(device, e.Epoch, e.ID)
	return svc.Add(notify.Event{ID: id, Type: notify.TypeInstallFailed, Source: svc.Source("devices"), Subject: device,
		Time: e.Time, Bundles: bundles, Labels: d.Labels, Data: b})
}

// eventsOfRecords counts a device's drift windows towards drift episodes.
func (s *Server) eventsOfRecords(device string, recs []telemetry.Record) error {
	svc := s.ro.events
	if svc == nil || !svc.Wants(notify.TypeDriftPersisted) {
		return nil
	}
	var ws []notify.DriftWindow
	var labels map[string]string
	for _, r := range recs {
		if r.Kind != protocol.RecordDrift {
			continue
		}
		var pl protocol.DriftRecord
		if json.Unmarshal(r.Payload, &pl) != nil || pl.Model == "" {
			continue
		}
		if labels == nil {
			labels = map[string]string{}
			if v, err := s.inv.Get(device); err == nil {
				labels = v.EffectiveLabels()
			}
		}
		ws = append(ws, notify.DriftWindow{Device: device, Bundle: pl.Model, Labels: labels, Start: pl.Start, End: pl.End,
			Score: pl.Score, Drifted: pl.Drifted})
	}
	return svc.ObserveDrift(ws)
}

// recordHash is a short stable hash of a device record's identity.
func recordHash(device, epoch string, id uint64) string {
	h := sha256.Sum256([]byte(device + "\x00" + epoch + "\x00" + strconv.FormatUint(id, 10)))
	return hex.EncodeToString(h[:12])
}

// eventRoutes registers GET /api/v1/events.
func (s *Server) eventRoutes(handle func(pattern string, auth authKind, h handlerFunc)) {
	handle("GET "+api.Prefix+"/events", authViewer, s.handleEvents)
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) error {
	v := r.URL.Query()
	q := notify.Query{Limit: 50, Type: v.Get("type"), Subscription: v.Get("subscription"), State: v.Get("state")}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return errStatus(http.StatusBadRequest, "limit=%q: want 1 to 1000", l)
		}
		q.Limit = n
	}
	if q.Type != "" && !notify.KnownType(q.Type) {
		return errStatus(http.StatusBadRequest, "type=%q: not an event type (%s)", q.Type, strings.Join(notify.Types, ", "))
	}
	switch q.State {
	case "", api.DeliveryPending, api.DeliveryDelivered, api.DeliveryFailed:
	default:
		return errStatus(http.StatusBadRequest, "state=%q: want pending, delivered or failed", q.State)
	}
	evs, err := s.ro.events.List(q)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.EventList{Events: evs, Subscriptions: s.ro.events.Subscriptions()})
}
