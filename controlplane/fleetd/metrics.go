package fleetd

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgefleet/edgefleet/controlplane/inventory"
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
	}
	for _, r := range pushResults {
		m.pushes.WithLabelValues(r)
	}
	m.reg.MustRegister(m.ingested, m.refused, m.delivered, m.duplicates, m.desired, m.http, m.pushes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{s: s})
	return m
}

// stateCollector reports gauges read at scrape time: devices by
// connection state, desired states waiting to be published, and the
// embedded broker's refusals.
type stateCollector struct{ s *Server }

var (
	descDevices = prometheus.NewDesc("fleetd_devices", "Enrolled devices by connection state.", []string{"state"}, nil)
	descPending = prometheus.NewDesc("fleetd_desired_unpublished", "Desired states issued but not yet on the broker (retried).", nil, nil)
	descRefusal = prometheus.NewDesc("fleetd_broker_refusals_total", "Embedded broker refusals (connects, publishes, subscribes, ingest) by reason.", []string{"reason"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDevices
	ch <- descPending
	ch <- descRefusal
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
	if s.broker != nil {
		for reason, n := range s.broker.Refusals() {
			ch <- prometheus.MustNewConstMetric(descRefusal, prometheus.CounterValue, float64(n), reason)
		}
	}
}
