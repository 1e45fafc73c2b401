package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/agent"
	"github.com/edgefleet/edgefleet/agent/config"
	"github.com/edgefleet/edgefleet/agent/uplink"
	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/model"
	"github.com/edgefleet/edgefleet/shared/processor"
)

// BrokerKind selects the MQTT broker between fleetd and the agents.
type BrokerKind int

const (
	// BrokerEmbedded is fleetd's embedded broker (the default).
	BrokerEmbedded BrokerKind = iota
	// BrokerMosquitto is an external mosquitto 2 the harness starts
	// with the configuration fleetd generates (fleetd mosquitto-config);
	// fleetd connects to it as service user _fleetd-1 and provisions
	// enrolled devices in its password file.
	BrokerMosquitto
)

func (k BrokerKind) String() string {
	if k == BrokerMosquitto {
		return "mosquitto"
	}
	return "embedded"
}

// RegistryKind selects where fleetd keeps bundles.
type RegistryKind int

const (
	// RegistryFiles is fleetd's file registry (the default): devices
	// download from fleetd's HTTP server with signed URLs.
	RegistryFiles RegistryKind = iota
	// RegistryMinIO is the S3 registry on a real MinIO server the
	// harness starts: devices download from MinIO with presigned URLs.
	RegistryMinIO
)

func (k RegistryKind) String() string {
	if k == RegistryMinIO {
		return "minio"
	}
	return "files"
}

// Remote is a fleetd the harness does not start.
type Remote struct {
	// URL is fleetd's API ("http://host:8080").
	URL string
	// OperatorToken and EnrolToken are the API's bearer tokens.
	OperatorToken, EnrolToken string
}

// Options configure a Fleet. The zero value (but for Artifacts and
// TrustKeys, which installs need) is a fleetd on the embedded broker and
// the file registry with no devices.
type Options struct {
	// Devices is the number of agents to enrol and start.
	Devices int
	// IDPrefix starts every device id (default "dev-"); ids are
	// IDPrefix + a zero-padded index.
	IDPrefix string
	// Labels gives device i its labels, both in the inventory (through
	// enrolment) and in its agent's configuration; nil is DefaultLabels.
	Labels func(i int) map[string]string

	Broker   BrokerKind
	Registry RegistryKind
	// Remote, if set, uses that fleetd instead of starting one (Broker
	// and Registry are then fleetd's business).
	Remote *Remote

	// Dir holds fleetd's and the agents' data; empty makes a temporary
	// directory that Close removes.
	Dir string
	// Artifacts are the ONNX Runtime library the agents load models with
	// and the tools directory (MinIO).
	Artifacts Artifacts
	// TrustKeys are the publisher public keys (PEM files) the agents
	// trust (trust.publicKeys), and fleetd (registry.trustedKeys).
	TrustKeys []string

	// SampleRate is buffer.predictionSampleRate; 0 means 1 (every
	// prediction becomes a record), negative means 0.
	SampleRate float64
	// MetricsInterval is agent.WithMetricsInterval (0: the agent's
	// default, a minute).
	MetricsInterval time.Duration
	// BatchRecords bounds a telemetry batch (0: the uplink's default).
	BatchRecords int
	// MinBackoff and MaxBackoff bound the agents' reconnect backoff
	// (defaults 100 ms and 2 s, faster than a device's 1 s to 2 min).
	MinBackoff, MaxBackoff time.Duration
	// RetryMin and RetryMax bound the agents' wait before another attempt
	// at an install that failed transiently (0: the uplink's defaults,
	// 10 s and 10 min).
	RetryMin, RetryMax time.Duration
	// ReportDebounce is how long the agents collect changes of their
	// reported state before publishing it (default 100 ms; a device's is
	// 1 s).
	ReportDebounce time.Duration
	// ModelCache, if set, is shared by every agent (agent.WithModelCache):
	// one loaded model per bundle for the whole fleet.
	ModelCache *agent.ModelCache
	// SeparateWASMCache gives every agent its own WASM compilation cache
	// under its data directory, as on a device; by default they share one
	// (the pre-processor is compiled once for the fleet).
	SeparateWASMCache bool
	// AgentOptions are passed to every agent.New.
	AgentOptions []agent.Option
	// AgentLogLevel is the agents' logLevel (default "warn").
	AgentLogLevel string
	// Fleetd adjusts fleetd's configuration before New (not with
	// Remote).
	Fleetd func(*fleetd.Config)
	// Logger receives fleetd's and the agents' logs (with a "device"
	// attribute); nil discards them.
	Logger *slog.Logger
}

// DefaultLabels labels device i with a ring (every tenth device is
// "canary", the others "stable") and a zone (a, b, c in turn).
func DefaultLabels(i int) map[string]string {
	ring := "stable"
	if i%10 == 0 {
		ring = "canary"
	}
	return map[string]string{"ring": ring, "zone": string(rune('a' + i%3))}
}

// Fleet is a fleetd (in process, or Remote) with N real edge agents in
// this process, each with its own data directory, outbox, unix socket and
// uplink through a Proxy to fleetd's broker.
type Fleet struct {
	// Server is the in-process fleetd (nil with Remote).
	Server *fleetd.Server
	// API is fleetd's HTTP API with the operator token.
	API *client.Client
	// OperatorToken and EnrolToken are fleetd's operator token and
	// (default) enrolment token.
	OperatorToken, EnrolToken string
	// Agents are the devices, in index order.
	Agents []*Agent
	// Proxy is between the agents and the broker (CutBroker).
	Proxy *Proxy
	// Mosquitto and MinIO are the external servers the harness started,
	// if any.
	Mosquitto *Mosquitto
	MinIO     *MinIO

	opts      Options
	dir       string
	removeDir bool
	sockDir   string
	log       *slog.Logger

	cancel    context.CancelFunc
	fleetdErr chan error
	closeOnce sync.Once
	closeErr  error
}

// New starts the fleet: MinIO and mosquitto if asked for, fleetd on
// loopback with random ports (its broker's public URL is the proxy), the
// enrolment of every device through the API, and every agent, each
// waited for until its socket answers. The caller must Close it. On an
// error everything started is stopped.
func New(ctx context.Context, o Options) (_ *Fleet, err error) {
	if o.Devices < 0 {
		return nil, fmt.Errorf("fleet: Options.Devices is %d", o.Devices)
	}
	if o.Devices > 0 && o.Artifacts.ORTLibrary == "" {
		return nil, errors.New("fleet: Options.Artifacts.ORTLibrary is required to run agents (FindArtifacts, TestArtifacts)")
	}
	if o.IDPrefix == "" {
		o.IDPrefix = "dev-"
	}
	if o.Labels == nil {
		o.Labels = DefaultLabels
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 2 * time.Second
	}
	if o.ReportDebounce == 0 {
		o.ReportDebounce = 100 * time.Millisecond
	}
	if o.AgentLogLevel == "" {
		o.AgentLogLevel = "warn"
	}
	f := &Fleet{opts: o, dir: o.Dir, log: o.Logger}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if f.dir == "" {
		if f.dir, err = os.MkdirTemp("", "fleet-"); err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
		f.removeDir = true
	}
	// Unix socket paths must stay under 108 bytes.
	if f.sockDir, err = os.MkdirTemp("", "fl"); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if f.Proxy, err = NewProxy("127.0.0.1:0"); err != nil {
		return nil, err
	}
	if o.Remote != nil {
		err = f.useRemote(ctx, o.Remote)
	} else {
		err = f.startFleetd(ctx)
	}
	if err != nil {
		return nil, err
	}
	if err := f.startAgents(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// startFleetd starts the external servers asked for and fleetd.
func (f *Fleet) startFleetd(ctx context.Context) error {
	o := f.opts
	if o.Broker == BrokerMosquitto {
		dir := filepath.Join(f.dir, "mosquitto")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
		m, err := StartMosquitto("", dir, []string{"_fleetd-1"})
		if err != nil {
			return err
		}
		f.Mosquitto = m
		f.Proxy.SetTarget(m.Addr)
	}
	if o.Registry == RegistryMinIO {
		dir := filepath.Join(f.dir, "minio")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
		m, err := StartMinIO(filepath.Join(o.Artifacts.Tools, "minio"), dir)
		if err != nil {
			return err
		}
		f.MinIO = m
	}
	cfg, err := f.fleetdConfig()
	if err != nil {
		return err
	}
	srv, err := f.runFleetd(ctx, cfg, "fleetd")
	if err != nil {
		return err
	}
	op, err := os.ReadFile(filepath.Join(cfg.DataDir, fleetd.OperatorTokenFile))
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	en, err := os.ReadFile(filepath.Join(cfg.DataDir, fleetd.EnrolTokenFile))
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	f.OperatorToken, f.EnrolToken = strings.TrimSpace(string(op)), strings.TrimSpace(string(en))
	if f.API, err = client.New(srv.URL(), f.OperatorToken, nil); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	return nil
}

// useRemote points the harness at a running fleetd: the proxy forwards to
// the broker its enrolments hand out.
func (f *Fleet) useRemote(ctx context.Context, r *Remote) error {
	if r.URL == "" || r.OperatorToken == "" || (f.opts.Devices > 0 && r.EnrolToken == "") {
		return errors.New("fleet: Remote needs URL, OperatorToken and (to enrol devices) EnrolToken")
	}
	c, err := client.New(r.URL, r.OperatorToken, nil)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	if _, err := c.Health(ctx); err != nil {
		return fmt.Errorf("fleet: fleetd at %s: %w", r.URL, err)
	}
	f.API, f.OperatorToken, f.EnrolToken = c, r.OperatorToken, r.EnrolToken
	return nil
}

// deviceID is the id of device i.
func (f *Fleet) deviceID(i int) string {
	width := len(fmt.Sprint(max(f.opts.Devices-1, 0)))
	return fmt.Sprintf("%s%0*d", f.opts.IDPrefix, max(width, 3), i)
}

// parallel runs fn for 0..n-1 on at most workers goroutines and returns
// the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range min(workers, max(n, 1)) {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// startAgents enrols every device and starts its agent.
func (f *Fleet) startAgents(ctx context.Context) error {
	n := f.opts.Devices
	f.Agents = make([]*Agent, n)
	wasm := f.wasmCache()
	var brokerMu sync.Mutex
	var broker string
	err := parallel(n, 8, func(i int) error {
		id := f.deviceID(i)
		labels := f.opts.Labels(i)
		e, err := f.API.Enroll(ctx, f.EnrolToken, id, labels)
		if err != nil {
			return fmt.Errorf("fleet: enrolling %s: %w", id, err)
		}
		if len(e.Brokers) == 0 {
			return fmt.Errorf("fleet: enrolling %s: no broker URL", id)
		}
		brokerMu.Lock()
		if broker == "" {
			broker = e.Brokers[0]
		}
		brokerMu.Unlock()
		f.Agents[i] = &Agent{ID: id, Labels: labels, password: e.Password, fleet: f}
		return nil
	})
	if err != nil {
		return err
	}
	if f.opts.Remote != nil && n > 0 {
		u, err := url.Parse(broker)
		if err != nil || (u.Scheme != "tcp" && u.Scheme != "mqtt") {
			return fmt.Errorf("fleet: the remote fleetd's broker %q is not a tcp:// or mqtt:// URL the proxy can forward", broker)
		}
		f.Proxy.SetTarget(u.Host)
	}
	for _, a := range f.Agents {
		if err := a.setup(f, wasm); err != nil {
			return err
		}
	}
	// Start them all, then wait: loading the agents overlaps.
	for _, a := range f.Agents {
		if err := a.Start(); err != nil {
			return err
		}
	}
	return parallel(n, 16, func(i int) error { return f.Agents[i].waitServing(ctx) })
}

// Agent returns the agent of device id, or nil.
func (f *Fleet) Agent(id string) *Agent {
	for _, a := range f.Agents {
		if a.ID == id {
			return a
		}
	}
	return nil
}

// URL is fleetd's API base URL.
func (f *Fleet) URL() string {
	if f.Server != nil {
		return f.Server.URL()
	}
	return f.opts.Remote.URL
}

// Dir is the directory holding fleetd's and the agents' data.
func (f *Fleet) Dir() string { return f.dir }

// Devices lists every device of the fleet as fleetd's devices API shows
// it (inventory, reported and desired state, delivered-record counters),
// in the order of f.Agents; a device fleetd does not list is an error.
func (f *Fleet) Devices(ctx context.Context) ([]api.Device, error) {
	all, err := f.API.Devices(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("fleet: devices: %w", err)
	}
	byID := make(map[string]api.Device, len(all))
	for _, d := range all {
		byID[d.ID] = d
	}
	out := make([]api.Device, len(f.Agents))
	for i, a := range f.Agents {
		d, ok := byID[a.ID]
		if !ok {
			return nil, fmt.Errorf("fleet: fleetd does not list device %s", a.ID)
		}
		out[i] = d
	}
	return out, nil
}

// Wait polls fleetd's devices API until cond holds for every device of
// the fleet, or ctx ends; the error then names the devices for which it
// did not hold.
func (f *Fleet) Wait(ctx context.Context, cond func(api.Device) bool) error {
	var last string
	for {
		devs, err := f.Devices(ctx)
		if err == nil {
			var not []string
			for _, d := range devs {
				if !cond(d) {
					not = append(not, d.ID)
				}
			}
			if len(not) == 0 {
				return nil
			}
			last = fmt.Sprintf("%d of %d devices not there yet: %s", len(not), len(devs), summarize(not, devs))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fleet: %w; %s", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// summarize describes up to three devices by id.
func summarize(ids []string, devs []api.Device) string {
	var b strings.Builder
	for i, id := range ids {
		if i == 3 {
			fmt.Fprintf(&b, " ... and %d more", len(ids)-3)
			break
		}
		for _, d := range devs {
			if d.ID != id {
				continue
			}
			fmt.Fprintf(&b, "[%s online=%v", d.ID, d.Status.Online)
			if r := d.Reported; r != nil {
				fmt.Fprintf(&b, " active=%v appliedSeq=%d", r.Active, r.AppliedSeq)
				if r.Install != nil {
					fmt.Fprintf(&b, " install=%s", r.Install.Phase)
					if r.Install.Error != "" {
						fmt.Fprintf(&b, " (%s)", r.Install.Error)
					}
				}
				fmt.Fprintf(&b, " buffer=%d", r.Buffer.Records)
			}
			if d.Desired != nil {
				fmt.Fprintf(&b, " desired=%s seq %d", d.Desired.Bundle.ID(), d.Desired.Seq)
			}
			fmt.Fprintf(&b, " delivered=%d dup=%d] ", d.Records.Delivered, d.Records.Duplicates)
		}
	}
	return b.String()
}

// Push uploads a signed bundle to fleetd's registry. When the agents
// share a WASM compilation cache (the default), it first compiles the
// bundle's processors into it, as the first device's install would:
// otherwise every agent of the fleet would compile them at once when the
// bundle is assigned to all (seconds of CPU each), since none finds the
// others' result in the cache yet. Each agent still loads and
// smoke-tests its own model.
func (f *Fleet) Push(ctx context.Context, b Bundle) error {
	if !f.opts.SeparateWASMCache && f.opts.ModelCache == nil && len(f.Agents) > 1 {
		if err := f.warmWASM(ctx, b); err != nil {
			return err
		}
	}
	if _, _, err := f.API.Push(ctx, b.Path, b.Sig); err != nil {
		return fmt.Errorf("fleet: pushing %s: %w", b.Path, err)
	}
	return nil
}

// warmWASM verifies and unpacks b into a temporary directory and loads
// its model with the agents' WASM settings (the configuration's defaults)
// and their shared compilation cache.
func (f *Fleet) warmWASM(ctx context.Context, b Bundle) error {
	trust, err := bundle.LoadTrustRoot(f.opts.TrustKeys...)
	if err != nil {
		return fmt.Errorf("fleet: the agents' trust keys: %w", err)
	}
	tmp, err := os.MkdirTemp(f.dir, "warm-")
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	defer os.RemoveAll(tmp)
	m, err := bundle.VerifyAndUnpack(ctx, b.Path, b.Sig, trust, filepath.Join(tmp, "bundle"), bundle.Limits{})
	if err != nil {
		return fmt.Errorf("fleet: %s: %w", b.Path, err)
	}
	mdl, err := model.Load(ctx, filepath.Join(tmp, "bundle"), m, model.Options{
		ORTLibrary:     f.opts.Artifacts.ORTLibrary,
		IntraOpThreads: 1,
		WASM: processor.Config{
			CacheDir:    f.wasmCache(),
			MemoryLimit: config.DefaultWASMMemoryLimitMiB << 20,
			Timeout:     AgentWASMTimeout,
		},
	})
	if err != nil {
		return fmt.Errorf("fleet: compiling the processors of %s: %w", m.ID(), err)
	}
	return mdl.Close()
}

// wasmCache is the agents' shared WASM compilation cache.
func (f *Fleet) wasmCache() string { return filepath.Join(f.dir, "wasm-cache") }

// AssignAll assigns bundle ("name@version") to every device through the
// API and returns the desired seq each was issued, by device id.
func (f *Fleet) AssignAll(ctx context.Context, bundleID string) (map[string]uint64, error) {
	seqs := make([]uint64, len(f.Agents))
	err := parallel(len(f.Agents), 16, func(i int) error {
		a, err := f.API.Assign(ctx, f.Agents[i].ID, bundleID, "")
		if err != nil {
			return fmt.Errorf("fleet: assigning %s to %s: %w", bundleID, f.Agents[i].ID, err)
		}
		seqs[i] = a.Desired.Seq
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(seqs))
	for i, s := range seqs {
		out[f.Agents[i].ID] = s
	}
	return out, nil
}

// CutBroker severs every agent's connection to the broker and refuses
// new ones until RestoreBroker: fleetd and the broker keep running, the
// broker publishes each device's last will, the agents keep serving and
// buffer what they report. It returns the number of connections cut.
func (f *Fleet) CutBroker() int { return f.Proxy.Cut() }

// RestoreBroker lets the agents reconnect.
func (f *Fleet) RestoreBroker() { f.Proxy.Restore() }

// StopAgents stops every agent that is running (in parallel).
func (f *Fleet) StopAgents() error {
	var mu sync.Mutex
	var errs []error
	parallel(len(f.Agents), 32, func(i int) error {
		if a := f.Agents[i]; a != nil {
			if err := a.Stop(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}
		return nil
	})
	return errors.Join(errs...)
}

// Close stops the agents, fleetd, the proxy and the external servers, and
// removes the fleet's directory if New made it. It is idempotent.
func (f *Fleet) Close() error {
	f.closeOnce.Do(func() {
		var errs []error
		errs = append(errs, f.StopAgents())
		if f.Server != nil {
			errs = append(errs, f.stopFleetd())
		}
		if f.Proxy != nil {
			errs = append(errs, f.Proxy.Close())
		}
		if f.Mosquitto != nil {
			errs = append(errs, f.Mosquitto.Close())
		}
		if f.MinIO != nil {
			errs = append(errs, f.MinIO.Close())
		}
		if f.sockDir != "" {
			os.RemoveAll(f.sockDir)
		}
		if f.removeDir {
			os.RemoveAll(f.dir)
		}
		f.closeErr = errors.Join(errs...)
	})
	return f.closeErr
}

// uplinkTune is the agents' uplink tuning.
func (f *Fleet) uplinkTune(c *uplink.Config) {
	c.MinBackoff, c.MaxBackoff = f.opts.MinBackoff, f.opts.MaxBackoff
	c.ReportDebounce = f.opts.ReportDebounce
	c.RetryMin, c.RetryMax = f.opts.RetryMin, f.opts.RetryMax
	if f.opts.BatchRecords > 0 {
		c.BatchRecords = f.opts.BatchRecords
	}
}
