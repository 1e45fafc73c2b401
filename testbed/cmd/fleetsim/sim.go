package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/testbed/fleet"
)

// simConfig is what the flags set.
type simConfig struct {
	Devices         int
	Duration        time.Duration
	Rate            float64
	SampleRate      float64
	Raw             bool
	MetricsInterval time.Duration
	BatchRecords    int
	Progress        time.Duration
	DrainTimeout    time.Duration
	Dir             string
	Keep            bool
	Broker          string
	Registry        string
	Server          string
	TokenFile       string
	EnrolTokenFile  string
	Prefix          string
	Version         string
	JSON            bool
	Logger          *slog.Logger
	// Artifacts are the checkout's files; zero means FindArtifacts.
	Artifacts fleet.Artifacts
	// MemProfile, if set, receives a heap profile at the end of the load.
	MemProfile string
}

func (c *simConfig) validate() error {
	var errs []error
	if c.Devices < 1 {
		errs = append(errs, fmt.Errorf("-devices: must be at least 1, got %d", c.Devices))
	}
	if c.Duration < 0 {
		errs = append(errs, fmt.Errorf("-duration: must not be negative, got %s", c.Duration))
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		errs = append(errs, fmt.Errorf("-rate: must be a finite number >= 0, got %g", c.Rate))
	}
	if !(c.SampleRate >= 0 && c.SampleRate <= 1) {
		errs = append(errs, fmt.Errorf("-sample: must be between 0 and 1, got %g", c.SampleRate))
	}
	if c.MetricsInterval <= 0 {
		errs = append(errs, fmt.Errorf("-metrics-interval: must be > 0, got %s", c.MetricsInterval))
	}
	if c.BatchRecords < 0 {
		errs = append(errs, fmt.Errorf("-batch: must be >= 0, got %d", c.BatchRecords))
	}
	if c.Broker != "embedded" && c.Broker != "mosquitto" {
		errs = append(errs, fmt.Errorf("-broker: %q is neither embedded nor mosquitto", c.Broker))
	}
	if c.Registry != "files" && c.Registry != "minio" {
		errs = append(errs, fmt.Errorf("-registry: %q is neither files nor minio", c.Registry))
	}
	if c.Server != "" && (c.TokenFile == "" || c.EnrolTokenFile == "") {
		errs = append(errs, errors.New("-server needs -token-file and -enrol-token-file"))
	}
	if c.Server == "" && (c.TokenFile != "" || c.EnrolTokenFile != "") {
		errs = append(errs, errors.New("-token-file and -enrol-token-file go with -server"))
	}
	return errors.Join(errs...)
}

// summary is what fleetsim reports.
type summary struct {
	Devices  int     `json:"devices"`
	Fleetd   string  `json:"fleetd"` // "in-process (embedded broker, files registry)" or the URL
	Rate     float64 `json:"ratePerDevice"`
	Sample   float64 `json:"sampleRate"`
	Duration string  `json:"duration"`

	StartSeconds   float64 `json:"startSeconds"`   // enrol + start every agent
	ConnectSeconds float64 `json:"connectSeconds"` // agents started -> fleetd has all online
	RolloutSeconds float64 `json:"rolloutSeconds"` // assign -> every device reports the bundle active
	OnlineAtEnd    int     `json:"onlineAtEnd"`

	Predictions      uint64  `json:"predictions"`
	PredictionErrors uint64  `json:"predictionErrors"`
	PredictionsPerS  float64 `json:"predictionsPerSecond"`
	LatencyP50Ms     float64 `json:"latencyP50Ms"`
	LatencyP99Ms     float64 `json:"latencyP99Ms"`

	Appended        uint64  `json:"recordsAppended"`  // by the agents, ever
	Delivered       uint64  `json:"recordsDelivered"` // fleetd's distinct records of these devices
	Duplicates      uint64  `json:"duplicates"`       // redeliveries fleetd dropped
	DeliveredPerS   float64 `json:"recordsDeliveredPerSecond"`
	DrainSeconds    float64 `json:"drainSeconds"` // load stopped -> every outbox empty
	ExactlyOnce     bool    `json:"exactlyOnce"`  // delivered == appended for every device
	Mismatched      int     `json:"devicesMismatched"`
	IngestMessages  float64 `json:"fleetdIngestMessages"` // fleetd_ingest_messages_total{result="accepted"} during the load
	IngestMessagesS float64 `json:"fleetdIngestMessagesPerSecond"`

	RSSMiB       float64 `json:"rssMiB"`
	PeakRSSMiB   float64 `json:"peakRssMiB"`
	HeapMiB      float64 `json:"goHeapMiB"`
	Goroutines   int     `json:"goroutines"`
	ModelsLoaded uint64  `json:"modelLoads"`
}

func (s *summary) print(w io.Writer, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	bw := bufio.NewWriter(w)
	p := func(k, f string, a ...any) { fmt.Fprintf(bw, "  %-26s "+f+"\n", append([]any{k}, a...)...) }
	fmt.Fprintf(bw, "fleetsim summary\n")
	p("devices", "%d (real agents, one process; fleetd: %s)", s.Devices, s.Fleetd)
	p("load", "%g predictions/s per device for %s, sample rate %g", s.Rate, s.Duration, s.Sample)
	p("enrol + start agents", "%.1fs", s.StartSeconds)
	p("all connected", "%.1fs after the agents started", s.ConnectSeconds)
	p("bundle active everywhere", "%.1fs after the assignments", s.RolloutSeconds)
	p("online at the end", "%d of %d", s.OnlineAtEnd, s.Devices)
	p("predictions", "%d (%.0f/s), %d errors, client latency p50 %.2f ms, p99 %.2f ms", s.Predictions, s.PredictionsPerS, s.PredictionErrors, s.LatencyP50Ms, s.LatencyP99Ms)
	p("records", "%d appended by the agents, %d delivered to fleetd, %d redeliveries deduplicated", s.Appended, s.Delivered, s.Duplicates)
	p("delivered during the load", "%.0f records/s", s.DeliveredPerS)
	p("fleetd ingest", "%.0f messages (%.0f/s) during the load", s.IngestMessages, s.IngestMessagesS)
	p("drain after the load", "%.1fs", s.DrainSeconds)
	once := "yes: delivered == appended for every device"
	if !s.ExactlyOnce {
		once = fmt.Sprintf("NO: %d devices differ", s.Mismatched)
	}
	p("exactly once", "%s", once)
	p("memory", "RSS %.0f MiB (peak %.0f MiB), Go heap %.0f MiB, %d goroutines, %d model load(s)", s.RSSMiB, s.PeakRSSMiB, s.HeapMiB, s.Goroutines, s.ModelsLoaded)
	return bw.Flush()
}

// run is the simulation: see the package documentation.
func run(ctx context.Context, c simConfig, out io.Writer) (*summary, error) {
	art, err := c.Artifacts, error(nil)
	if art.Root == "" {
		if art, err = fleet.FindArtifacts(); err != nil {
			return nil, err
		}
	}
	s := &summary{Devices: c.Devices, Rate: c.Rate, Sample: c.SampleRate, Duration: c.Duration.String()}
	dir := c.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "fleetsim-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	} else {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if !c.Keep {
			defer func() {
				entries, _ := os.ReadDir(dir)
				for _, e := range entries {
					os.RemoveAll(filepath.Join(dir, e.Name()))
				}
			}()
		}
	}
	logf := func(format string, a ...any) { fmt.Fprintf(out, "fleetsim: "+format+"\n", a...) }

	pub, err := fleet.NewPublisher(filepath.Join(dir, "publisher"))
	if err != nil {
		return nil, err
	}
	b, err := fleet.BuildSilero(ctx, filepath.Join(dir, "bundles"), c.Version, fleet.SileroOptions{Publisher: pub, Artifacts: art})
	if err != nil {
		return nil, err
	}
	logf("built and signed %s", b.ID())

	cache := agent.NewModelCache()
	defer cache.Close()
	o := fleet.Options{
		Devices:         c.Devices,
		IDPrefix:        c.Prefix,
		Dir:             filepath.Join(dir, "fleet"),
		Artifacts:       art,
		TrustKeys:       []string{pub.PublicKey},
		SampleRate:      c.SampleRate,
		MetricsInterval: c.MetricsInterval,
		BatchRecords:    c.BatchRecords,
		MinBackoff:      time.Second,
		MaxBackoff:      30 * time.Second,
		ReportDebounce:  time.Second,
		ModelCache:      cache,
		Logger:          c.Logger,
	}
	if c.SampleRate == 0 {
		o.SampleRate = -1 // the harness's 0 means 1
	}
	if c.Broker == "mosquitto" {
		o.Broker = fleet.BrokerMosquitto
	}
	if c.Registry == "minio" {
		o.Registry = fleet.RegistryMinIO
	}
	s.Fleetd = fmt.Sprintf("in process, %s broker, %s registry", o.Broker, o.Registry)
	if c.Server != "" {
		op, err := readToken(c.TokenFile)
		if err != nil {
			return nil, err
		}
		en, err := readToken(c.EnrolTokenFile)
		if err != nil {
			return nil, err
		}
		o.Remote = &fleet.Remote{URL: c.Server, OperatorToken: op, EnrolToken: en}
		s.Fleetd = c.Server
	}

	logf("enrolling and starting %d agents", c.Devices)
	start := time.Now()
	f, err := fleet.New(ctx, o)
	if err != nil {
		return nil, err
	}
	defer func() {
		logf("stopping")
		if err := f.Close(); err != nil {
			c.Logger.Error("closing the fleet", "err", err)
		}
	}()
	s.StartSeconds = time.Since(start).Seconds()
	started := time.Now()
	logf("%d agents running after %.1fs; waiting for fleetd to see them online", c.Devices, s.StartSeconds)
	if err := waitFleet(ctx, f, c, out, "online", fleet.Online); err != nil {
		return s, err
	}
	s.ConnectSeconds = time.Since(started).Seconds()
	logf("all %d devices online %.1fs after the agents started", c.Devices, s.ConnectSeconds)

	if err := f.Push(ctx, b); err != nil {
		return s, err
	}
	assigned := time.Now()
	if _, err := f.AssignAll(ctx, b.ID()); err != nil {
		return s, err
	}
	logf("assigned %s to %d devices in %.1fs; waiting for every device to report it active", b.ID(), c.Devices, time.Since(assigned).Seconds())
	if err := waitFleet(ctx, f, c, out, b.ID()+" active", fleet.Active(b.ID())); err != nil {
		return s, err
	}
	s.RolloutSeconds = time.Since(assigned).Seconds()
	logf("%s active on all %d devices %.1fs after the assignments", b.ID(), c.Devices, s.RolloutSeconds)

	ld, err := newLoad(art, c)
	if err != nil {
		return s, err
	}
	before, err := snapshot(ctx, f)
	if err != nil {
		return s, err
	}
	logf("driving %g predictions/s on each of %d devices for %s", c.Rate, c.Devices, c.Duration)
	loadStart := time.Now()
	ld.run(ctx, f, c.Duration, func() {
		if st, err := snapshot(ctx, f); err == nil {
			el := time.Since(loadStart).Seconds()
			logf("t=%3.0fs online %d/%d, predictions %d (%.0f/s), records delivered %d (%.0f/s), outbox backlog %d, rss %.0f MiB",
				el, st.online, c.Devices, ld.count.Load(), float64(ld.count.Load())/el, st.delivered-before.delivered,
				float64(st.delivered-before.delivered)/el, st.backlog, rssMiB("VmRSS"))
		}
	})
	loadTime := time.Since(loadStart).Seconds()
	if c.MemProfile != "" {
		if err := writeHeapProfile(c.MemProfile); err != nil {
			c.Logger.Error("heap profile", "err", err)
		}
	}
	after, err := snapshot(ctx, f)
	if err != nil {
		return s, err
	}
	s.Predictions, s.PredictionErrors = ld.count.Load(), ld.errors.Load()
	s.PredictionsPerS = float64(s.Predictions) / loadTime
	s.LatencyP50Ms, s.LatencyP99Ms = ld.quantile(0.5), ld.quantile(0.99)
	s.DeliveredPerS = float64(after.delivered-before.delivered) / loadTime
	s.IngestMessages = after.ingest - before.ingest
	s.IngestMessagesS = s.IngestMessages / loadTime

	// Drain: every outbox empty and fleetd holding as many distinct
	// records per device as the agent appended.
	drainStart := time.Now()
	dctx, cancel := context.WithTimeout(ctx, c.DrainTimeout)
	defer cancel()
	var last *state
	for {
		last, err = snapshot(dctx, f)
		if err == nil && last.backlog == 0 && last.mismatched == 0 {
			break
		}
		if dctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	s.DrainSeconds = time.Since(drainStart).Seconds()
	if last != nil {
		s.Appended, s.Delivered, s.Duplicates = last.appended, last.delivered, last.duplicates
		s.Mismatched, s.ExactlyOnce = last.mismatched, last.mismatched == 0 && last.backlog == 0
		s.OnlineAtEnd = last.online
	}
	s.RSSMiB, s.PeakRSSMiB = rssMiB("VmRSS"), rssMiB("VmHWM")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.HeapMiB = float64(ms.HeapInuse) / (1 << 20)
	s.Goroutines = runtime.NumGoroutine()
	_, s.ModelsLoaded = cache.Stats()
	if !s.ExactlyOnce {
		return s, fmt.Errorf("after %s of draining, %d devices' records at fleetd differ from what their agents appended (outbox backlog %d)", c.DrainTimeout, s.Mismatched, last.backlog)
	}
	return s, ctx.Err()
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("%s: empty token file", path)
	}
	return t, nil
}

// waitFleet waits until cond holds for every device, printing progress.
func waitFleet(ctx context.Context, f *fleet.Fleet, c simConfig, out io.Writer, what string, cond func(api.Device) bool) error {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Wait(wctx, cond) }()
	var tick <-chan time.Time
	if c.Progress > 0 {
		t := time.NewTicker(c.Progress)
		defer t.Stop()
		tick = t.C
	}
	start := time.Now()
	for {
		select {
		case err := <-done:
			return err
		case <-tick:
			devs, err := f.Devices(ctx)
			if err != nil {
				continue
			}
			n := 0
			for _, d := range devs {
				if cond(d) {
					n++
				}
			}
			fmt.Fprintf(out, "fleetsim: %3.0fs: %d/%d devices %s, rss %.0f MiB\n", time.Since(start).Seconds(), n, len(devs), what, rssMiB("VmRSS"))
		}
	}
}

// state is the fleet's counters at one moment.
type state struct {
	online                          int
	appended, delivered, duplicates uint64
	backlog                         int
	mismatched                      int // devices whose delivered != appended
	ingest                          float64
}

// snapshot reads every agent's outbox counters and fleetd's view of
// every device.
func snapshot(ctx context.Context, f *fleet.Fleet) (*state, error) {
	st := &state{}
	appended := make([]uint64, len(f.Agents))
	for i, a := range f.Agents {
		as, err := a.Status()
		if err != nil {
			return nil, err
		}
		appended[i] = as.Buffer.Appended
		st.appended += as.Buffer.Appended
		st.backlog += as.Buffer.Records
	}
	devs, err := f.Devices(ctx)
	if err != nil {
		return nil, err
	}
	for i, d := range devs {
		if d.Status.Online {
			st.online++
		}
		st.delivered += d.Records.Delivered
		st.duplicates += d.Records.Duplicates
		if d.Records.Delivered != appended[i] {
			st.mismatched++
		}
	}
	st.ingest, _ = ingestMessages(ctx, f)
	return st, nil
}

// ingestMessages sums fleetd_ingest_messages_total{result="accepted"}
// from fleetd's /metrics.
func ingestMessages(ctx context.Context, f *fleet.Fleet) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(f.URL(), "/")+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+f.OperatorToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	var total float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "fleetd_ingest_messages_total{") || !strings.Contains(line, `result="accepted"`) {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				total += v
			}
		}
	}
	return total, sc.Err()
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// rssMiB reads a Vm* line of /proc/self/status in MiB.
func rssMiB(key string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// load drives predictions on every device.
type load struct {
	body           []byte
	raw            bool
	rate           float64
	count, errors  atomic.Uint64
	mu             sync.Mutex
	latencies      []float64 // ms, a uniform sample
	seen           int
	rng            *rand.Rand
	progressPeriod time.Duration
}

const (
	// maxLatencySamples bounds the latencies kept (a uniform sample).
	maxLatencySamples = 100_000
	// requestTimeout bounds one prediction request.
	requestTimeout = 30 * time.Second
)

func newLoad(art fleet.Artifacts, c simConfig) (*load, error) {
	l := &load{raw: c.Raw, rate: c.Rate, rng: rand.New(rand.NewPCG(1, 2)), progressPeriod: c.Progress}
	var err error
	if c.Raw {
		l.body, err = art.PCMFrame()
	} else {
		l.body, err = art.TensorRequest("")
	}
	return l, err
}

// run makes predictions at l.rate on every agent for d, calling progress
// every progress period.
func (l *load) run(ctx context.Context, f *fleet.Fleet, d time.Duration, progress func()) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	if l.rate > 0 {
		period := time.Duration(float64(time.Second) / l.rate)
		for i, a := range f.Agents {
			wg.Go(func() {
				// Spread the devices' ticks over one period.
				offset := time.Duration(int64(period) * int64(i) / int64(len(f.Agents)))
				select {
				case <-time.After(offset):
				case <-ctx.Done():
					return
				}
				t := time.NewTicker(period)
				defer t.Stop()
				for {
					l.one(a)
					select {
					case <-t.C:
					case <-ctx.Done():
						return
					}
				}
			})
		}
	}
	if l.progressPeriod > 0 {
		t := time.NewTicker(l.progressPeriod)
		defer t.Stop()
	loop:
		for {
			select {
			case <-t.C:
				progress()
			case <-ctx.Done():
				break loop
			}
		}
	}
	<-ctx.Done()
	wg.Wait()
}

// one makes one prediction on a. It is not cancelled when the load
// ends: the request in flight finishes, as a local application's would.
func (l *load) one(a *fleet.Agent) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	start := time.Now()
	p, err := a.Predict(ctx, "silero-vad", l.body, l.raw)
	ms := float64(time.Since(start).Microseconds()) / 1000
	if err != nil || p.ModelName != "silero-vad" {
		l.errors.Add(1)
		return
	}
	l.count.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen++
	if len(l.latencies) < maxLatencySamples {
		l.latencies = append(l.latencies, ms)
	} else if j := l.rng.IntN(l.seen); j < maxLatencySamples {
		l.latencies[j] = ms
	}
}

func (l *load) quantile(q float64) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.latencies) == 0 {
		return 0
	}
	s := slices.Clone(l.latencies)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
