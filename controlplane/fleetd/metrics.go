package fleetd

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/shared/drift"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// metrics are fleetd's Prometheus metrics, on a registry of their own.
type metrics struct {
	reg *prometheus.Registry

	ingested   *prometheus.CounterVec // kind, result
	refused    *prometheus.CounterVec // reason
	delivered  prometheus.Counter
	duplicates prometheus.Counter
	desired    *prometheus.CounterVec // result
	http       *prometheus.CounterVec // route, code
	pushes     *prometheus.CounterVec // result: stored, or the refusal's reason

	httpSeconds *prometheus.HistogramVec // route
	ingestLag   prometheus.Histogram
	drift       *prometheus.GaugeVec // bundle, feature: the statistic of the last report
	driftShare  *prometheus.GaugeVec // bundle
}

// pushResults are the values of fleetd_registry_pushes_total's result,
// each present at zero from the start.
var pushResults = []string{"stored", "no_trusted_keys", "untrusted_key", "invalid"}

func (m *metrics) pushed()                { m.pushes.WithLabelValues("stored").Inc() }
func (m *metrics) pushRefused(why string) { m.pushes.WithLabelValues(why).Inc() }

// Results of an ingested message.
const (
	resultAccepted = "accepted" // stored
	resultRefused  = "refused"  // bad message: logged, counted, dropped
	resultFailed   = "failed"   // fleetd could not store it: not acknowledged
)

// Results of publishing a desired state.
const (
	resultOK    = "ok"
	resultError = "error" // retried
)

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetd_ingest_messages_total",
			Help: "Device messages fleetd received, by kind and result (accepted, refused: bad message dropped, failed: not stored and not acknowledged).",
		}, []string{"kind", "result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetd_ingest_refused_total",
			Help: "Device messages refused as bad, by reason.",
		}, []string{"reason"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetd_records_delivered_total",
			Help: "Telemetry records and events stored for the first time.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetd_records_duplicate_total",
			Help: "Telemetry records and events delivered again and dropped as duplicates.",
		}),
		desired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetd_desired_published_total",
			Help: "Desired states published to the broker, by result (ok, error: retried).",
		}, []string{"result"}),
		http: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetd_http_requests_total",
			Help: "API requests by route and status code.",
		}, []string{"route", "code"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetd_registry_pushes_total",
			Help: "Bundle pushes by result: stored, or refused (no_trusted_keys, untrusted_key, invalid).",
		}, []string{"result"}),
		httpSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fleetd_http_request_duration_seconds",
			Help:    "API request durations by route (bundle pushes and downloads included).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1 ms to 4.4 min
		}, []string{"route"}),
		ingestLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fleetd_ingest_lag_seconds",
			Help: "How long after its time on the device a telemetry record reached fleetd (time buffered offline included; by the device's clock).",
			// 10 ms to about 4 days.
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 14),
		}),
		drift: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fleetd_drift_statistic",
			Help: "The drift test statistic of each feature in the last drift report fleetd computed for a bundle (API query or rollout gate).",
		}, []string{"bundle", "feature"}),
		driftShare: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fleetd_drift_share",
			Help: "Share of a bundle's features that drifted in the last drift report fleetd computed for it.",
		}, []string{"bundle"}),
	}
	for _, r := range pushResults {
		m.pushes.WithLabelValues(r)
	}
	for _, r := range []string{resultOK, resultError} {
		m.desired.WithLabelValues(r)
	}
	for _, k := range protocol.Kinds() {
		for _, r := range []string{resultAccepted, resultRefused, resultFailed} {
			m.ingested.WithLabelValues(string(k), r)
		}
	}
	m.reg.MustRegister(m.ingested, m.refused, m.delivered, m.duplicates, m.desired, m.http, m.pushes,
		m.httpSeconds, m.ingestLag, m.drift, m.driftShare,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{s: s})
	return m
}

// stateCollector reports gauges read at scrape time: devices by
// connection state, desired states waiting to be published, and the
// embedded broker's refusals.
type stateCollector struct{ s *Server }

var (
	descRollouts   = prometheus.NewDesc("fleetd_rollouts", "Rollouts and experiments by state.", []string{"state"}, nil)
	descRolloutOn  = prometheus.NewDesc("fleetd_rollout_active", "1 for each active rollout (running, paused, rolling back, completed experiment), with its state and bundle.", []string{"rollout", "state", "bundle"}, nil)
	descRolloutStp = prometheus.NewDesc("fleetd_rollout_step", "The current step (wave) of each active rollout, from 1; steps+1 when all are done.", []string{"rollout"}, nil)
	descRolloutN   = prometheus.NewDesc("fleetd_rollout_steps", "The number of steps of each active rollout.", []string{"rollout"}, nil)
	descGateValue  = prometheus.NewDesc("fleetd_rollout_gate_value", "What the latest evaluation of an active rollout's gate measured.", []string{"rollout", "gate", "status"}, nil)
	descGateLimit  = prometheus.NewDesc("fleetd_rollout_gate_threshold", "The threshold the gate's value is held to (a minimum for installSuccess and shadowAgreement, a maximum otherwise).", []string{"rollout", "gate"}, nil)
	descClients    = prometheus.NewDesc("fleetd_broker_clients", "MQTT connections open on the embedded broker.", nil, nil)
	descDevices    = prometheus.NewDesc("fleetd_devices", "Enrolled devices by connection state.", []string{"state"}, nil)
	descPending    = prometheus.NewDesc("fleetd_desired_unpublished", "Desired states issued but not yet on the broker (retried).", nil, nil)
	descRefusal    = prometheus.NewDesc("fleetd_broker_refusals_total", "Embedded broker refusals (connects, publishes, subscribes, ingest) by reason.", []string{"reason"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRollouts, descRolloutOn, descRolloutStp, descRolloutN, descGateValue, descGateLimit, descClients, descDevices, descPending, descRefusal} {
		ch <- d
	}
}

// rolloutStates are every state, each counted (0 included) in
// fleetd_rollouts.
var rolloutStates = []rollout.State{rollout.StateRunning, rollout.StatePaused, rollout.StateRollingBack, rollout.StateCompleted,
	rollout.StateSucceeded, rollout.StateRolledBack, rollout.StateAborted, rollout.StatePromoted}

func (c *stateCollector) collectRollouts(ch chan<- prometheus.Metric) {
	if c.s.ro.eng == nil {
		return
	}
	rs, err := c.s.ro.eng.List()
	if err != nil {
		return
	}
	count := map[rollout.State]int{}
	for _, r := range rs {
		count[r.State]++
		if !r.State.Active() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descRolloutOn, prometheus.GaugeValue, 1, r.ID, string(r.State), r.Bundle.ID())
		ch <- prometheus.MustNewConstMetric(descRolloutStp, prometheus.GaugeValue, float64(r.Step+1), r.ID)
		ch <- prometheus.MustNewConstMetric(descRolloutN, prometheus.GaugeValue, float64(len(r.Steps)), r.ID)
		for _, g := range r.Gates {
			ch <- prometheus.MustNewConstMetric(descGateValue, prometheus.GaugeValue, g.Value, r.ID, g.Gate, string(g.Status))
			ch <- prometheus.MustNewConstMetric(descGateLimit, prometheus.GaugeValue, g.Threshold, r.ID, g.Gate)
		}
	}
	for _, st := range rolloutStates {
		ch <- prometheus.MustNewConstMetric(descRollouts, prometheus.GaugeValue, float64(count[st]), string(st))
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	if devs, err := s.inv.List(inventory.Selector{}); err == nil {
		online := 0
		for _, d := range devs {
			if d.Status.Online {
				online++
			}
		}
		ch <- prometheus.MustNewConstMetric(descDevices, prometheus.GaugeValue, float64(online), "online")
		ch <- prometheus.MustNewConstMetric(descDevices, prometheus.GaugeValue, float64(len(devs)-online), "offline")
	}
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(s.unpublishedCount()))
	c.collectRollouts(ch)
	if s.broker != nil {
		ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, float64(s.broker.Clients()))
		for reason, n := range s.broker.Refusals() {
			ch <- prometheus.MustNewConstMetric(descRefusal, prometheus.CounterValue, float64(n), reason)
		}
	}
}

// driftReport records the statistics of a drift report for bundle.
func (m *metrics) driftReport(bundle string, rep *drift.Report) {
	if rep == nil {
		return
	}
	m.driftShare.WithLabelValues(bundle).Set(rep.Share)
	for _, f := range rep.Features {
		if f.Status != drift.StatusNotEnoughData {
			m.drift.WithLabelValues(bundle, f.Name).Set(f.Statistic)
		}
	}
}
