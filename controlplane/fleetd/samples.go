package fleetd

// The sample lake (controlplane/lake): the "sample" records of bundles'
// sampling policies, staged in DATA/samples.db and written as Parquet to
// the registry's storage. See docs/integrations.md.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgefleet/edgefleet/controlplane/lake"
	"github.com/edgefleet/edgefleet/controlplane/registry"
	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// SamplesFile is the sample lake's staging file in the data directory.
const SamplesFile = "samples.db"

// Defaults of SamplesConfig.
const DefaultSamplesPrefix = "samples"

// SamplesConfig is where and how fleetd writes the devices' data samples
// (bundles with a sampling policy) as Parquet files.
type SamplesConfig struct {
	// Dir, if set, is a local directory for the files instead of the
	// registry's storage.
	Dir string `yaml:"dir"`
	// Prefix is the folder of the files in the registry's storage: under
	// registry.dir for the file registry, under registry.s3.prefix in
	// the bucket for S3 (default samples; not used with dir).
	Prefix string `yaml:"prefix"`
	// FlushRows writes a partition (bundle, version, UTC day) once it
	// holds this many samples; a file holds at most this many rows.
	FlushRows int `yaml:"flushRows"`
	// FlushBytes writes a partition once its staged samples take this
	// much.
	FlushBytes ByteSize `yaml:"flushBytes"`
	// FlushAge writes a partition once its oldest sample has waited this
	// long.
	FlushAge Duration `yaml:"flushAge"`
	// RowGroupRows bounds the rows of one Parquet row group.
	RowGroupRows int `yaml:"rowGroupRows"`
	// MaxStagedBytes bounds the samples accepted and not written yet: a
	// telemetry batch whose samples would pass it is not acknowledged,
	// so the device keeps it and delivers it again once files are
	// written (fleetd_samples_full_total counts such batches).
	MaxStagedBytes ByteSize `yaml:"maxStagedBytes"`
}

func (c SamplesConfig) withDefaults() SamplesConfig {
	if c.Prefix == "" {
		c.Prefix = DefaultSamplesPrefix
	}
	if c.FlushRows == 0 {
		c.FlushRows = lake.DefaultFlushRows
	}
	if c.FlushBytes == 0 {
		c.FlushBytes = lake.DefaultFlushBytes
	}
	if c.FlushAge == 0 {
		c.FlushAge = Duration(lake.DefaultFlushAge)
	}
	if c.RowGroupRows == 0 {
		c.RowGroupRows = lake.DefaultRowGroupRows
	}
	if c.MaxStagedBytes == 0 {
		c.MaxStagedBytes = lake.DefaultMaxStagedBytes
	}
	return c
}

// validateSamples checks the samples section (with defaults).
func validateSamples(c SamplesConfig, bad func(key, format string, args ...any)) {
	if err := registry.CheckObjectsFolder(c.Prefix); err != nil {
		bad("samples.prefix", "%s", strings.TrimPrefix(err.Error(), registry.ErrInvalid.Error()+": "))
	}
	if c.FlushRows < 1 || c.FlushRows > 10_000_000 {
		bad("samples.flushRows", "must be 1 to 10000000, got %d", c.FlushRows)
	}
	if c.FlushBytes < 64<<10 {
		bad("samples.flushBytes", "must be at least 64KiB, got %s", c.FlushBytes)
	}
	if d := time.Duration(c.FlushAge); d < time.Second || d > 24*time.Hour {
		bad("samples.flushAge", "must be 1s to 24h, got %s", c.FlushAge)
	}
	if c.RowGroupRows < 1 {
		bad("samples.rowGroupRows", "must be at least 1, got %d", c.RowGroupRows)
	}
	if c.MaxStagedBytes < c.FlushBytes || c.MaxStagedBytes < 4*protocol.MaxPayloadSize {
		bad("samples.maxStagedBytes", "must be at least samples.flushBytes (%s) and %s (4 telemetry batches), got %s",
			c.FlushBytes, ByteSize(4*protocol.MaxPayloadSize), c.MaxStagedBytes)
	}
}

// samplesStore is where the files go: samples.dir, or the registry's
// storage.
func (s *Server) samplesStore() (lake.Store, error) {
	c := s.cfg.Samples
	if c.Dir != "" {
		return &registry.DirObjects{Dir: c.Dir}, nil
	}
	switch r := s.reg.(type) {
	case *registry.FS:
		return r.Objects(c.Prefix)
	case *registry.S3:
		return r.Objects(c.Prefix)
	}
	return nil, errors.New("fleetd: samples: the registry has no object storage; set samples.dir")
}

// openSamples opens the sample lake (after the registry).
func (s *Server) openSamples() error {
	c := s.cfg.Samples
	store, err := s.samplesStore()
	if err != nil {
		return err
	}
	s.lake, err = lake.Open(filepath.Join(s.cfg.DataDir, SamplesFile), lake.Options{
		Store: store, FlushRows: c.FlushRows, FlushBytes: int64(c.FlushBytes), FlushAge: time.Duration(c.FlushAge),
		RowGroupRows: c.RowGroupRows, MaxStagedBytes: int64(c.MaxStagedBytes), Now: s.now,
		Policy: s.samplingPolicy, Logger: s.log.With("component", "samples"),
	})
	if err != nil {
		return fmt.Errorf("fleetd: %w", err)
	}
	s.samplesAt = store.Location("")
	st := s.lake.Stats()
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetd_samples_accepted_total",
			Help: "Data samples (sample records) accepted and staged for the Parquet files."}, func() float64 { return float64(s.lake.Stats().Accepted) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetd_samples_dropped_total",
			Help: "Data samples dropped at ingest: not valid sample records, of a bundle version without a sampling policy, or beyond the device's daily budget (sampling.maxBytesPerDay)."},
			func() float64 { st := s.lake.Stats(); return float64(st.Invalid + st.Dropped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetd_samples_full_total",
			Help: "Telemetry batches not acknowledged because their samples did not fit the staging area (samples.maxStagedBytes); the devices deliver them again."},
			func() float64 { return float64(s.lake.Stats().Full) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetd_samples_rows_written_total",
			Help: "Data samples written to Parquet files."}, func() float64 { return float64(s.lake.Stats().Rows) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetd_samples_files_written_total",
			Help: "Parquet sample files written."}, func() float64 { return float64(s.lake.Stats().Files) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "fleetd_samples_write_errors_total",
			Help: "Failed writes of Parquet sample files (retried; the samples stay staged)."}, func() float64 { return float64(s.lake.Stats().FlushErrors) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fleetd_samples_staged_bytes",
			Help: "Data samples accepted and not written to a file yet, in bytes."}, func() float64 { return float64(s.lake.Stats().StagedBytes) }),
	} {
		if err := s.metrics.reg.Register(c); err != nil {
			return fmt.Errorf("fleetd: samples metrics: %w", err)
		}
	}
	s.log.Info("fleetd: data samples are written as Parquet", "to", s.samplesAt, "staged_bytes", st.StagedBytes)
	return nil
}

// SamplesLocation is where the Parquet sample files go (a directory or
// an s3:// URL).
func (s *Server) SamplesLocation() string { return s.samplesAt }

// SampleStats are the sample lake's counters.
func (s *Server) SampleStats() lake.Stats {
	if l := s.lake; l != nil {
		return l.Stats()
	}
	return lake.Stats{}
}

// FlushSamples writes every staged data sample to the Parquet files now
// and returns the keys written (relative to SamplesLocation).
func (s *Server) FlushSamples(ctx context.Context) ([]string, error) {
	l := s.lake
	if l == nil {
		return nil, ErrClosed
	}
	res, err := l.Flush(ctx)
	return res.Files, err
}

// runSamples is the lake's flush loop (a background loop of Run).
func (s *Server) runSamples(ctx context.Context) { s.lake.Run(ctx) }

// closeSamples writes what is staged and closes the lake.
func (s *Server) closeSamples() error {
	if s.lake == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return s.lake.Close(ctx)
}

// splitSamples takes the "sample" records out of a telemetry batch: they
// go to the lake, the others to the record store.
func splitSamples(recs []telemetry.Record) (rest []telemetry.Record, samples []lake.Record) {
	n := 0
	for _, r := range recs {
		if r.Kind == protocol.RecordSample {
			n++
		}
	}
	if n == 0 {
		return recs, nil
	}
	rest = make([]telemetry.Record, 0, len(recs)-n)
	samples = make([]lake.Record, 0, n)
	for _, r := range recs {
		if r.Kind == protocol.RecordSample {
			samples = append(samples, lake.Record{ID: r.ID, Payload: r.Payload})
		} else {
			rest = append(rest, r)
		}
	}
	return rest, samples
}

// samplingPolicy is the lake's Options.Policy: the daily budget of the
// sampling policy of bundle version model ("name@version") in the
// registry, 0 if it has none or is not in the registry. Versions are
// immutable, so answers are kept (up to policyCacheSize of them).
func (s *Server) samplingPolicy(model string) (int64, error) {
	s.policyMu.Lock()
	v, ok := s.policies[model]
	s.policyMu.Unlock()
	if ok {
		return v, nil
	}
	name, version, _ := strings.Cut(model, "@")
	ctx, cancel := context.WithTimeout(context.Background(), policyTimeout)
	defer cancel()
	e, err := s.reg.Get(ctx, name, version)
	switch {
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, registry.ErrInvalid):
		v = 0
	case err != nil:
		return 0, err
	case e.Manifest.Sampling != nil:
		v = e.Manifest.Sampling.MaxBytesPerDay
	}
	s.policyMu.Lock()
	if len(s.policies) >= policyCacheSize {
		clear(s.policies)
	}
	s.policies[model] = v
	s.policyMu.Unlock()
	return v, nil
}

const (
	policyCacheSize = 4096
	policyTimeout   = 10 * time.Second
)
