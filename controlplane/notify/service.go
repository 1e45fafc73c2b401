package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/groupcommit"
)

// Defaults.
const (
	DefaultMaxAge       = 24 * time.Hour
	DefaultRetention    = 7 * 24 * time.Hour
	DefaultRetryMax     = 3
	DefaultRetryWaitMin = 500 * time.Millisecond
	DefaultRetryWaitMax = 5 * time.Second
	DefaultMinBackoff   = 5 * time.Second
	DefaultMaxBackoff   = 5 * time.Minute
	DefaultTimeout      = 30 * time.Second
	DefaultDriftWindows = 3
	DefaultDriftShare   = 0.5
	DefaultSource       = "/edgefleet/fleetd"
	// pruneEvery is how often delivered and failed events past the
	// retention are deleted.
	pruneEvery = 10 * time.Minute
	// batch is how many pending deliveries a loop reads at once.
	batch = 64
)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("notify: closed")

// Config configures a Service.
type Config struct {
	// DB holds the queue, in a top-level bucket "notify" (the file may
	// be shared; the caller opens and closes it).
	DB *bolt.DB
	// Source is the CloudEvents source events' sources start with
	// (default DefaultSource): SOURCE/rollouts, SOURCE/devices.
	Source string
	// Subscriptions receive the events their filters select.
	Subscriptions []Subscription
	// DriftWindows is how many drifted windows in a row make a drift
	// episode (default 3); DriftShare the score at which a window counts
	// as drifted (default 0.5).
	DriftWindows int
	DriftShare   float64
	// MaxAge is how long a delivery is retried before it fails (default
	// 24h), counted from when the event was queued; Retention how long
	// an event is kept once each of its deliveries is done, delivered
	// or failed (default 7d), counted from when the last was done.
	MaxAge, Retention time.Duration
	// RetryMax, RetryWaitMin and RetryWaitMax are go-retryablehttp's:
	// the quick retries of one attempt (defaults 3, 500ms, 5s).
	RetryMax                   int
	RetryWaitMin, RetryWaitMax time.Duration
	// MinBackoff and MaxBackoff bound the wait of a subscription after a
	// failed attempt, doubling from one to the other (defaults 5s, 5m).
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds one HTTP request (default 30s).
	Timeout time.Duration
	// Transport, if set, replaces the HTTP transport (tests).
	Transport http.RoundTripper
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the logs (never a secret); nil discards them.
	Logger *slog.Logger
}

// Service queues events and delivers them.
type Service struct {
	cfg  Config
	db   *bolt.DB
	subs []*Subscription
	log  *slog.Logger
	now  func() time.Time
	gc   *groupcommit.Committer

	wake []chan struct{} // per subscription

	mu     sync.Mutex
	closed bool
}

var validID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// New opens the queue in cfg.DB. Call Run to deliver.
func New(cfg Config) (*Service, error) {
	if cfg.DB == nil {
		return nil, errors.New("notify: config: DB is required")
	}
	d := &cfg
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&d.MaxAge, DefaultMaxAge)
	def(&d.Retention, DefaultRetention)
	def(&d.RetryWaitMin, DefaultRetryWaitMin)
	def(&d.RetryWaitMax, DefaultRetryWaitMax)
	def(&d.MinBackoff, DefaultMinBackoff)
	def(&d.MaxBackoff, DefaultMaxBackoff)
	def(&d.Timeout, DefaultTimeout)
	if d.RetryMax == 0 {
		d.RetryMax = DefaultRetryMax
	}
	if d.Source == "" {
		d.Source = DefaultSource
	}
	if d.DriftWindows <= 0 {
		d.DriftWindows = DefaultDriftWindows
	}
	if d.DriftShare <= 0 {
		d.DriftShare = DefaultDriftShare
	}
	s := &Service{cfg: cfg, db: cfg.DB, log: cfg.Logger, now: cfg.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	seen := map[string]bool{}
	for i := range cfg.Subscriptions {
		sb := cfg.Subscriptions[i]
		if sb.Name == "" || seen[sb.Name] {
			return nil, fmt.Errorf("notify: subscription %d: a unique name is required", i)
		}
		seen[sb.Name] = true
		s.subs = append(s.subs, &sb)
		s.wake = append(s.wake, make(chan struct{}, 1))
	}
	if err := initDB(s.db); err != nil {
		return nil, fmt.Errorf("notify: opening the store: %w", err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return dropRemoved(tx, seen, s.now()) }); err != nil {
		return nil, fmt.Errorf("notify: opening the store: %w", err)
	}
	s.gc = groupcommit.New(s.db.Update, 256)
	return s, nil
}

// Source is the source of events about a kind of thing ("rollouts",
// "devices").
func (s *Service) Source(kind string) string {
	return strings.TrimSuffix(s.cfg.Source, "/") + "/" + kind
}

// Close stops queueing (Add fails with ErrClosed); Run's loops end with
// their context. It does not close the DB.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.gc.Close()
}

// Subscriptions returns the subscriptions' names, in order.
func (s *Service) Subscriptions() []string {
	out := make([]string, len(s.subs))
	for i, sb := range s.subs {
		out[i] = sb.Name
	}
	return out
}

// Wants reports whether any subscription may select events of type t
// (fleetd skips the work of making events no one receives, drift
// episodes).
func (s *Service) Wants(t string) bool {
	for _, sb := range s.subs {
		if sb.Filter.Wants(t) {
			return true
		}
	}
	return false
}

func checkEvent(ev *Event) error {
	switch {
	case !validID.MatchString(ev.ID):
		return fmt.Errorf("notify: event id %q: want [A-Za-z0-9._-], 1 to 128 bytes", ev.ID)
	case !KnownType(ev.Type):
		return fmt.Errorf("notify: event %s: unknown type %q", ev.ID, ev.Type)
	case ev.Source == "" || ev.Time.IsZero() || len(ev.Data) == 0:
		return fmt.Errorf("notify: event %s: source, time and data are required", ev.ID)
	}
	return nil
}

// AddTx queues ev inside tx (a write transaction on the DB), for every
// subscription whose filter selects it; an id already queued is a no-op.
// The delivery loops are woken when tx commits.
func (s *Service) AddTx(tx *bolt.Tx, ev Event) error {
	if err := checkEvent(&ev); err != nil {
		return err
	}
	added, err := add(tx, &ev, s.subs, s.now())
	if err != nil {
		return fmt.Errorf("notify: queueing %s: %w", ev.ID, err)
	}
	if added {
		tx.OnCommit(s.kick)
		s.log.Info("notify: event queued", "id", ev.ID, "type", ev.Type, "subject", ev.Subject)
	}
	return nil
}

// Add queues ev in a transaction of its own, committed when it returns.
func (s *Service) Add(ev Event) error {
	return s.update(func(tx *bolt.Tx) error { return s.AddTx(tx, ev) })
}

func (s *Service) update(fn func(*bolt.Tx) error) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	err := s.gc.Do(fn)
	if errors.Is(err, groupcommit.ErrClosed) {
		return ErrClosed
	}
	return err
}

func (s *Service) kick() {
	for _, w := range s.wake {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// List returns the latest events q selects, newest first.
func (s *Service) List(q Query) ([]api.Event, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	var out []api.Event
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		out, err = list(tx, q, s.Subscriptions())
		return err
	})
	return out, err
}

// Run delivers until ctx ends: one loop per subscription, and the
// pruning of old events.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i, sb := range s.subs {
		wg.Go(func() { s.deliverLoop(ctx, sb, s.wake[i]) })
	}
	wg.Go(func() {
		t := time.NewTicker(pruneEvery)
		defer t.Stop()
		for {
			s.prune()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	wg.Wait()
}

// prune deletes the events done (every delivery of theirs delivered or
// failed) more than the retention ago, in transactions of at most 1000
// (and at most 100 of them a round: the rest waits for the next); it
// returns how many it deleted.
func (s *Service) prune() int {
	cutoff := s.now().Add(-s.cfg.Retention)
	total := 0
	for range 100 {
		var n int
		var more bool
		err := s.db.Update(func(tx *bolt.Tx) (err error) {
			n, more, err = prune(tx, cutoff, 1000)
			return err
		})
		if err != nil {
			if !errors.Is(err, berrors.ErrDatabaseNotOpen) {
				s.log.Error("notify: pruning events", "err", err)
			}
			return total
		}
		total += n
		if !more {
			break
		}
	}
	if total > 0 {
		s.log.Info("notify: pruned events", "events", total, "retention", s.cfg.Retention)
	}
	return total
}

// deliverLoop delivers sb's pending events in order until ctx ends,
// waiting after a failure.
func (s *Service) deliverLoop(ctx context.Context, sb *Subscription, wake chan struct{}) {
	c := s.client()
	// Its pooled keep-alive connections end with the loop.
	defer c.HTTPClient.CloseIdleConnections()
	failures := 0
	for {
		ok, err := s.deliverPending(ctx, sb, c)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Error("notify: delivering", "subscription", sb.Name, "err", err)
		}
		if ok && err == nil {
			failures = 0
			select {
			case <-ctx.Done():
				return
			case <-wake:
			}
			continue
		}
		failures++
		d := s.cfg.MinBackoff << min(failures-1, 20)
		if d > s.cfg.MaxBackoff || d <= 0 {
			d = s.cfg.MaxBackoff
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// deliverPending attempts sb's pending deliveries in order; it returns
// false after a failed attempt (the receiver is not taking events: wait
// before the next), true once none is left.
func (s *Service) deliverPending(ctx context.Context, sb *Subscription, c *retryablehttp.Client) (bool, error) {
	for {
		var seqs []uint64
		if err := s.db.View(func(tx *bolt.Tx) error {
			seqs = pending(tx, sb.Name, batch)
			return nil
		}); err != nil {
			return false, err
		}
		if len(seqs) == 0 {
			return true, nil
		}
		for _, seq := range seqs {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			ok, err := s.deliverOne(ctx, sb, c, seq)
			if err != nil || !ok {
				return false, err
			}
		}
	}
}

// deliverOne makes one attempt at event seq for sb and records it; it
// returns false when the attempt failed and may succeed later.
func (s *Service) deliverOne(ctx context.Context, sb *Subscription, c *retryablehttp.Client, seq uint64) (bool, error) {
	var rec *record
	var d api.Delivery
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		if rec, err = getRecord(tx, seq); err != nil {
			return err
		}
		d, err = getDelivery(tx, sb.Name, seq)
		return err
	})
	if err != nil {
		return false, err
	}
	now := s.now()
	if now.Sub(rec.Queued) > s.cfg.MaxAge {
		d.State, d.Done = api.DeliveryFailed, now
		d.LastError = fmt.Sprintf("gave up after %s (events.maxAge): %s", s.cfg.MaxAge, d.LastError)
		s.log.Warn("notify: delivery failed", "subscription", sb.Name, "id", rec.ID, "attempts", d.Attempts, "err", d.LastError)
		return true, s.record(seq, d)
	}
	status, attempts, err := s.send(ctx, sb, c, &rec.Event)
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	d.Attempts += attempts
	d.LastAttempt, d.LastStatus = s.now(), status
	retry := false
	switch {
	case err == nil && (status/100 == 2 || (sb.Template == TemplateAirflow && status == http.StatusConflict)):
		// 409 from Airflow: a DAG run of this dag_run_id exists, i.e.
		// an earlier attempt got through.
		d.State, d.Done, d.LastError = api.DeliveryDelivered, d.LastAttempt, ""
		s.log.Info("notify: delivered", "subscription", sb.Name, "id", rec.ID, "type", rec.Type, "status", status, "attempts", d.Attempts)
	case err == nil && status/100 == 4 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests:
		d.State, d.Done, d.LastError = api.DeliveryFailed, d.LastAttempt, fmt.Sprintf("refused: HTTP %d", status)
		s.log.Warn("notify: delivery refused", "subscription", sb.Name, "id", rec.ID, "status", status)
	default:
		retry = true
		if err != nil {
			d.LastError = err.Error()
		} else {
			d.LastError = fmt.Sprintf("HTTP %d", status)
		}
		s.log.Warn("notify: delivery attempt failed; retrying later", "subscription", sb.Name, "id", rec.ID, "attempts", d.Attempts, "err", d.LastError)
	}
	if err := s.record(seq, d); err != nil {
		return false, err
	}
	return !retry, nil
}

func (s *Service) record(seq uint64, d api.Delivery) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putDelivery(tx, seq, d) })
}

// client is a go-retryablehttp client with the configured retries.
func (s *Service) client() *retryablehttp.Client {
	c := retryablehttp.NewClient()
	c.Logger = nil
	c.RetryMax = s.cfg.RetryMax
	if c.RetryMax < 0 {
		c.RetryMax = 0
	}
	c.RetryWaitMin, c.RetryWaitMax = s.cfg.RetryWaitMin, s.cfg.RetryWaitMax
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler
	c.HTTPClient.Timeout = s.cfg.Timeout
	if s.cfg.Transport != nil {
		c.HTTPClient.Transport = s.cfg.Transport
	}
	// Never follow a redirect: a receiver that moved is a failure to
	// look at, and the signature would go where it was not meant to.
	c.HTTPClient.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// send is one attempt (with go-retryablehttp's quick retries): the last
// status (0 without an answer), the requests sent, and the error when
// no answer came.
func (s *Service) send(ctx context.Context, sb *Subscription, c *retryablehttp.Client, ev *Event) (int, int, error) {
	o, err := sb.encode(ctx, ev)
	if err != nil {
		return 0, 0, err
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, o.method, o.url, o.body)
	if err != nil {
		return 0, 0, fmt.Errorf("notify: %s: %w", sb.Name, err)
	}
	req.Header = sb.header(o, ev.ID, s.now())
	attempts := 0
	// c is this subscription's loop's own: its hooks are set per send.
	c.RequestLogHook = func(_ retryablehttp.Logger, _ *http.Request, _ int) { attempts++ }
	// Each retry is signed again, with its own timestamp.
	c.PrepareRetry = func(r *http.Request) error {
		r.Header = sb.header(o, ev.ID, s.now())
		return nil
	}
	resp, err := c.Do(req)
	if resp != nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return resp.StatusCode, attempts, nil
		}
		return 0, attempts, fmt.Errorf("%s", redact(err.Error()))
	}
	return resp.StatusCode, attempts, nil
}

// redact keeps error text short (URLs may carry a query a receiver
// treats as a credential: the query is cut).
func redact(s string) string {
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return queryRE.ReplaceAllString(s, "?…")
}

var queryRE = regexp.MustCompile(`\?[^\s"]*`)
