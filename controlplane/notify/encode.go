package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// Modes of the CloudEvents HTTP binding.
const (
	// ModeBinary: the data is the body (Content-Type application/json),
	// the attributes ce-* headers (the default).
	ModeBinary = "binary"
	// ModeStructured: the body is the whole event,
	// application/cloudevents+json.
	ModeStructured = "structured"
)

// Templates turn an event into another API's request.
const (
	// TemplateAirflow: POST URL/api/v1/dags/{dagId}/dagRuns (Airflow 2's
	// stable REST API) with {"dag_run_id": ID, "conf": {...}}.
	TemplateAirflow = "airflow"
	// TemplateKubeflow: POST URL/apis/v2beta1/runs (Kubeflow Pipelines'
	// v2beta1 CreateRun).
	TemplateKubeflow = "kubeflow"
)

// The Standard Webhooks headers (https://www.standardwebhooks.com/).
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// Subscription is where and how events are delivered.
type Subscription struct {
	// Name names it in the store and in fleetctl events.
	Name string
	// URL is the receiver (CloudEvents), or the API's base URL
	// (templates).
	URL    string
	Filter Filter
	// Key is the HMAC-SHA256 key of the webhook-signature header (nil:
	// requests are not signed).
	Key []byte
	// Mode is ModeBinary (default) or ModeStructured.
	Mode string
	// Template is "" (CloudEvents), TemplateAirflow or TemplateKubeflow.
	Template string
	// Authorization is the Authorization header's value, if any.
	Authorization string
	Airflow       AirflowTemplate
	Kubeflow      KubeflowTemplate
}

// AirflowTemplate configures TemplateAirflow.
type AirflowTemplate struct {
	// DagID is the DAG to trigger.
	DagID string
}

// KubeflowTemplate configures TemplateKubeflow.
type KubeflowTemplate struct {
	// PipelineID and PipelineVersionID are the pipeline version to run.
	PipelineID, PipelineVersionID string
	// ExperimentID, if set, files the run under that experiment.
	ExperimentID string
	// ServiceAccount, if set, runs the run's pods under it.
	ServiceAccount string
	// Parameters are the run parameters sent (default
	// KubeflowParameters, all of them).
	Parameters []string
}

// KubeflowParameters are the run parameters the Kubeflow template can
// send, all strings: the event's id, type, subject, bundle (name@version),
// bundle name, version, time (RFC 3339) and data (its JSON text).
var KubeflowParameters = []string{"event_id", "event_type", "subject", "bundle", "bundle_name", "version", "time", "data"}

// outgoing is an encoded request: what every attempt sends.
type outgoing struct {
	method, url string
	header      http.Header
	body        []byte
}

// encode makes ev into s's request.
func (s *Subscription) encode(ctx context.Context, ev *Event) (*outgoing, error) {
	switch s.Template {
	case TemplateAirflow:
		return s.airflow(ev)
	case TemplateKubeflow:
		return s.kubeflow(ev)
	}
	return s.cloudEvent(ctx, ev)
}

// CloudEvent is ev as a CloudEvents 1.0 event (the SDK's), data content
// type application/json.
func CloudEvent(ev *Event) (cloudevents.Event, error) {
	e := cloudevents.NewEvent(cloudevents.VersionV1)
	e.SetID(ev.ID)
	e.SetType(ev.Type)
	e.SetSource(ev.Source)
	e.SetSubject(ev.Subject)
	e.SetTime(ev.Time)
	if err := e.SetData(cloudevents.ApplicationJSON, []byte(ev.Data)); err != nil {
		return e, fmt.Errorf("notify: event %s: %w", ev.ID, err)
	}
	if err := e.Validate(); err != nil {
		return e, fmt.Errorf("notify: event %s is no valid CloudEvent: %w", ev.ID, err)
	}
	return e, nil
}

func (s *Subscription) cloudEvent(ctx context.Context, ev *Event) (*outgoing, error) {
	e, err := CloudEvent(ev)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("notify: %s: %w", s.Name, err)
	}
	if s.Mode == ModeStructured {
		ctx = binding.WithForceStructured(ctx)
	} else {
		ctx = binding.WithForceBinary(ctx)
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
		return nil, fmt.Errorf("notify: encoding event %s: %w", ev.ID, err)
	}
	var body []byte
	if req.Body != nil {
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
	}
	return &outgoing{method: http.MethodPost, url: s.URL, header: req.Header, body: body}, nil
}

// flat is the event's fields both templates send.
func flat(ev *Event) (bundle, name, version string) {
	if len(ev.Bundles) > 0 {
		bundle = ev.Bundles[0]
		name, version, _ = strings.Cut(bundle, "@")
	}
	return bundle, name, version
}

// AirflowConf is the conf of the Airflow template's DAG run.
type AirflowConf struct {
	EventID   string    `json:"event_id"`
	EventType string    `json:"event_type"`
	Source    string    `json:"source"`
	Subject   string    `json:"subject"`
	Time      time.Time `json:"time"`
	// Bundle is name@version; BundleName and Version its parts.
	Bundle     string `json:"bundle"`
	BundleName string `json:"bundle_name"`
	Version    string `json:"version"`
	// FeatureScores are a drift event's feature scores (empty
	// otherwise).
	FeatureScores map[string]float64 `json:"feature_scores"`
	// Data is the event's whole data.
	Data json.RawMessage `json:"data"`
}

func (s *Subscription) airflow(ev *Event) (*outgoing, error) {
	bundle, name, version := flat(ev)
	conf := AirflowConf{EventID: ev.ID, EventType: ev.Type, Source: ev.Source, Subject: ev.Subject, Time: ev.Time.UTC(),
		Bundle: bundle, BundleName: name, Version: version, FeatureScores: map[string]float64{}, Data: ev.Data}
	if ev.Type == TypeDriftPersisted {
		var d DriftData
		if json.Unmarshal(ev.Data, &d) == nil && d.FeatureScores != nil {
			conf.FeatureScores = d.FeatureScores
		}
	}
	body, err := json.Marshal(struct {
		DagRunID string      `json:"dag_run_id"`
		Conf     AirflowConf `json:"conf"`
	}{ev.ID, conf})
	if err != nil {
		return nil, err
	}
	u := strings.TrimSuffix(s.URL, "/") + "/api/v1/dags/" + url.PathEscape(s.Airflow.DagID) + "/dagRuns"
	return &outgoing{method: http.MethodPost, url: u, header: jsonHeader(), body: body}, nil
}

// KubeflowRun is the Kubeflow template's request body: the fields of
// KFP's v2beta1 Run that a create-run request sets.
type KubeflowRun struct {
	DisplayName              string                `json:"display_name"`
	Description              string                `json:"description,omitempty"`
	PipelineVersionReference KubeflowVersionRef    `json:"pipeline_version_reference"`
	RuntimeConfig            KubeflowRuntimeConfig `json:"runtime_config"`
	ExperimentID             string                `json:"experiment_id,omitempty"`
	ServiceAccount           string                `json:"service_account,omitempty"`
}

// KubeflowVersionRef is KFP's v2beta1PipelineVersionReference.
type KubeflowVersionRef struct {
	PipelineID        string `json:"pipeline_id"`
	PipelineVersionID string `json:"pipeline_version_id"`
}

// KubeflowRuntimeConfig is KFP's v2beta1RuntimeConfig: parameters are
// protobuf Values (here strings).
type KubeflowRuntimeConfig struct {
	Parameters map[string]any `json:"parameters"`
}

func (s *Subscription) kubeflow(ev *Event) (*outgoing, error) {
	bundle, name, version := flat(ev)
	all := map[string]any{
		"event_id": ev.ID, "event_type": ev.Type, "subject": ev.Subject, "bundle": bundle,
		"bundle_name": name, "version": version, "time": ev.Time.UTC().Format(time.RFC3339Nano), "data": string(ev.Data),
	}
	params := map[string]any{}
	names := s.Kubeflow.Parameters
	if len(names) == 0 {
		names = KubeflowParameters
	}
	for _, n := range names {
		params[n] = all[n]
	}
	short := strings.TrimPrefix(ev.Type, "dev.edgefleet.")
	run := KubeflowRun{
		DisplayName: fmt.Sprintf("edgefleet %s %s %s", short, ev.Subject, ev.ID),
		Description: fmt.Sprintf("Triggered by edgefleet event %s (%s) of %s at %s", ev.ID, ev.Type, ev.Subject, ev.Time.UTC().Format(time.RFC3339)),
		PipelineVersionReference: KubeflowVersionRef{
			PipelineID: s.Kubeflow.PipelineID, PipelineVersionID: s.Kubeflow.PipelineVersionID,
		},
		RuntimeConfig:  KubeflowRuntimeConfig{Parameters: params},
		ExperimentID:   s.Kubeflow.ExperimentID,
		ServiceAccount: s.Kubeflow.ServiceAccount,
	}
	body, err := json.Marshal(run)
	if err != nil {
		return nil, err
	}
	u := strings.TrimSuffix(s.URL, "/") + "/apis/v2beta1/runs"
	return &outgoing{method: http.MethodPost, url: u, header: jsonHeader(), body: body}, nil
}

func jsonHeader() http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json")
	return h
}

// Sign returns the Standard Webhooks signature of body: "v1," and the
// base64 HMAC-SHA256, under key, of "ID.TIMESTAMP.BODY" (TIMESTAMP in
// Unix seconds, as in the webhook-timestamp header).
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(timestamp, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Verify checks a webhook-signature header (one or more space-separated
// "v1,SIG" values) against key, id, timestamp and body, as a receiver
// does; it does not check the timestamp's age.
func Verify(key []byte, id, timestamp, signature string, body []byte) bool {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return false
	}
	want := []byte(Sign(key, id, ts, body))
	for sig := range strings.FieldsSeq(signature) {
		if hmac.Equal([]byte(sig), want) {
			return true
		}
	}
	return false
}

// DecodeSecret is the HMAC key of a signing secret: a Standard Webhooks
// secret ("whsec_" and base64) is its decoded bytes, any other the
// secret's bytes.
func DecodeSecret(secret string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		k, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return nil, fmt.Errorf("a whsec_ secret must be base64 after the prefix: %w", err)
		}
		return k, nil
	}
	return []byte(secret), nil
}

// request is o as one attempt's request, signed at now.
func (s *Subscription) header(o *outgoing, id string, now time.Time) http.Header {
	h := o.header.Clone()
	h.Set("User-Agent", "edgefleet-fleetd")
	h.Set(HeaderWebhookID, id)
	if s.Authorization != "" {
		h.Set("Authorization", s.Authorization)
	}
	if s.Key != nil {
		ts := now.Unix()
		h.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
		h.Set(HeaderWebhookSignature, Sign(s.Key, id, ts, o.body))
	}
	return h
}
