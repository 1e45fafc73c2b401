package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// latencyBuckets suit millisecond-scale inference on small CPUs: 100 µs to
// 2.5 s.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

type metrics struct {
	reg                *prometheus.Registry
	requests           *prometheus.CounterVec
	errors             *prometheus.CounterVec
	duration           *prometheus.HistogramVec
	inferDuration      *prometheus.HistogramVec
	inFlight           prometheus.Gauge
	predictionsDropped prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, backend Backend, buffer func() BufferStats) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
		if err := registerAll(reg,
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		); err != nil {
			return nil, err
		}
	}
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_agent_api_inference_requests_total",
			Help: "Inference requests answered, by model (bundle name; empty when the model was not found) and HTTP status code (499: the client went away).",
		}, []string{"model", "code"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_agent_api_inference_errors_total",
			Help: "Failed inference requests, by model and reason: bad_request, not_found, too_large, not_ready, timeout, canceled, internal.",
		}, []string{"model", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edge_agent_api_inference_request_duration_seconds",
			Help:    "Time the server spent on an inference request: reading, decoding, inference, encoding, writing.",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		inferDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edge_agent_api_model_inference_duration_seconds",
			Help:    "Time in the model pipeline alone (pre-processor, ONNX Runtime, post-processor).",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_agent_api_inference_requests_in_flight",
			Help: "Inference requests being served.",
		}),
		predictionsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_agent_api_predictions_dropped_total",
			Help: "Predictions not handed to the agent's observer (sampling, drift) because its queue was full.",
		}),
	}
	cs := []prometheus.Collector{m.requests, m.errors, m.duration, m.inferDuration, m.inFlight, m.predictionsDropped, activeCollector{backend}}
	if buffer != nil {
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "edge_agent_buffer_records",
				Help: "Records in the outbox waiting for the uplink.",
			}, func() float64 { return float64(buffer().Records) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "edge_agent_buffer_bytes",
				Help: "Bytes of the records in the outbox.",
			}, func() float64 { return float64(buffer().Bytes) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "edge_agent_buffer_dropped_total",
				Help: "Records the outbox dropped, oldest first, because it was full.",
			}, func() float64 { return float64(buffer().Dropped) }),
		)
	}
	if err := registerAll(reg, cs...); err != nil {
		return nil, err
	}
	return m, nil
}

func registerAll(reg *prometheus.Registry, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("api: registering metrics: %w", err)
		}
	}
	return nil
}

func codeLabel(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 404:
		return "404"
	case 413:
		return "413"
	case 499:
		return "499"
	case 500:
		return "500"
	case 503:
		return "503"
	}
	return strconv.Itoa(code)
}

func reason(code int, err error) string {
	switch code {
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusServiceUnavailable:
		if errors.Is(err, ErrNotReady) {
			return "not_ready"
		}
		return "timeout"
	case statusClientClosed:
		return "canceled"
	}
	return "internal"
}

// observe records one inference request.
func (m *metrics) observe(model string, code int, err error, d, infer time.Duration) {
	m.requests.WithLabelValues(model, codeLabel(code)).Inc()
	if err != nil {
		m.errors.WithLabelValues(model, reason(code, err)).Inc()
	}
	if model != "" {
		m.duration.WithLabelValues(model).Observe(d.Seconds())
		if infer > 0 {
			m.inferDuration.WithLabelValues(model).Observe(infer.Seconds())
		}
	}
}

// activeCollector reports the active model versions at scrape time.
type activeCollector struct{ backend Backend }

var activeDesc = prometheus.NewDesc(
	"edge_agent_model_active",
	"The active version of each model and its execution provider (always 1).",
	[]string{"name", "version", "provider"}, nil)

func (c activeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- activeDesc }

func (c activeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.backend.Models() {
		ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, 1, m.Name, m.Version, m.Provider)
	}
}

// MetricsHandler serves the server's registry in the Prometheus text
// format, for the agent's separate metrics listener (metrics.listen).
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:      slogPrinter{s},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// Registry is the registry the server's metrics are on; other parts of the
// agent may register theirs on it.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

type slogPrinter struct{ s *Server }

func (p slogPrinter) Println(v ...any) { p.s.log.Warn("metrics: " + fmt.Sprint(v...)) }
