package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/controlplane/notify"
	"github.com/edgefleet/edgefleet/controlplane/notify/notifytest"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

const waitFor = 20 * time.Second

func openDB(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// running is a Service delivering until stop.
type running struct {
	svc    *notify.Service
	db     *bolt.DB
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.svc.Close()
	r.db.Close()
	r.cancel = nil
}

// start opens a Service over the file at path, with quick retries, and
// runs it until the test ends (or stop).
func start(t *testing.T, path string, subs ...notify.Subscription) *running {
	t.Helper()
	db := openDB(t, path)
	svc, err := notify.New(notify.Config{DB: db, Subscriptions: subs, RetryMax: 1,
		RetryWaitMin: time.Millisecond, RetryWaitMax: 2 * time.Millisecond,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, DriftWindows: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{svc: svc, db: db, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		svc.Run(ctx)
	}()
	t.Cleanup(r.stop)
	return r
}

func receiver(t *testing.T, key []byte) *notifytest.Receiver {
	t.Helper()
	r, err := notifytest.Start(key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func event(id, typ string, bundles []string, labels map[string]string) notify.Event {
	data, _ := json.Marshal(map[string]any{"rollout": "ro-1", "bundle": strings.Join(bundles, ",")})
	return notify.Event{ID: id, Type: typ, Source: "/edgefleet/fleetd/rollouts", Subject: "ro-1",
		Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Bundles: bundles, Labels: labels, Data: data}
}

// delivery is event id's delivery to sub, as listed.
func delivery(t *testing.T, svc *notify.Service, id, sub string) (api.Delivery, bool) {
	t.Helper()
	evs, err := svc.List(notify.Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.ID != id {
			continue
		}
		for _, d := range e.Deliveries {
			if d.Subscription == sub {
				return d, true
			}
		}
	}
	return api.Delivery{}, false
}

func waitDelivery(t *testing.T, svc *notify.Service, id, sub, state string) api.Delivery {
	t.Helper()
	var d api.Delivery
	testenv.EventuallyState(t, fmt.Sprintf("%s to %s %s", id, sub, state), func() (bool, string) {
		d, _ = delivery(t, svc, id, sub)
		return d.State == state, fmt.Sprintf("%+v", d)
	})
	return d
}

func TestCloudEventDelivered(t *testing.T) {
	key := []byte("0123456789abcdef-signing")
	for _, mode := range []string{notify.ModeBinary, notify.ModeStructured} {
		t.Run(mode, func(t *testing.T) {
			rcv := receiver(t, key)
			r := start(t, filepath.Join(t.TempDir(), "q.db"), notify.Subscription{Name: "ce", URL: rcv.URL, Key: key, Mode: mode})
			ev := event("ro-1-7", notify.TypeRolledBack, []string{"vad@2.0.0"}, nil)
			if err := r.svc.Add(ev); err != nil {
				t.Fatal(err)
			}
			// Adding the same id again is a no-op.
			if err := r.svc.Add(ev); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			got, err := rcv.Wait(ctx, func(e cloudevents.Event) bool { return e.ID() == ev.ID })
			if err != nil {
				t.Fatalf("%v; problems %v", err, rcv.Problems())
			}
			if got.Type() != notify.TypeRolledBack || got.Source() != ev.Source || got.Subject() != "ro-1" ||
				!got.Time().Equal(ev.Time) || string(got.Data()) != string(ev.Data) {
				t.Errorf("received %s", got)
			}
			d := waitDelivery(t, r.svc, ev.ID, "ce", api.DeliveryDelivered)
			if d.Attempts != 1 || d.LastStatus/100 != 2 || d.Done.IsZero() {
				t.Errorf("delivery %+v", d)
			}
			if p := rcv.Problems(); len(p) > 0 {
				t.Errorf("receiver problems: %v", p)
			}
			if n := rcv.Copies(ev.ID); n != 1 {
				t.Errorf("%d copies", n)
			}
		})
	}
}

func TestWrongKeyRefused(t *testing.T) {
	rcv := receiver(t, []byte("the-receivers-own-key"))
	r := start(t, filepath.Join(t.TempDir(), "q.db"), notify.Subscription{Name: "ce", URL: rcv.URL, Key: []byte("another-key-entirely")})
	ev := event("ro-1-1", notify.TypeGateBreached, []string{"vad@2.0.0"}, nil)
	if err := r.svc.Add(ev); err != nil {
		t.Fatal(err)
	}
	d := waitDelivery(t, r.svc, ev.ID, "ce", api.DeliveryFailed)
	if d.LastStatus != http.StatusUnauthorized || !strings.Contains(d.LastError, "401") {
		t.Errorf("delivery %+v", d)
	}
	if p := rcv.Problems(); len(p) != 1 || !strings.Contains(p[0], "bad webhook-signature") {
		t.Errorf("problems %v", p)
	}
}

// TestOutage: the receiver answers 503 a few times; the event is
// delivered once, after more than one attempt, and events behind it
// follow in order.
func TestOutage(t *testing.T) {
	for _, fails := range []int{1, 7} {
		t.Run(fmt.Sprint(fails), func(t *testing.T) {
			rcv := receiver(t, nil)
			rcv.Fail(fails, http.StatusServiceUnavailable)
			r := start(t, filepath.Join(t.TempDir(), "q.db"), notify.Subscription{Name: "ce", URL: rcv.URL})
			for i := range 3 {
				if err := r.svc.Add(event(fmt.Sprintf("ev-%d", i), notify.TypeInstallFailed, nil, nil)); err != nil {
					t.Fatal(err)
				}
			}
			d := waitDelivery(t, r.svc, "ev-2", "ce", api.DeliveryDelivered)
			first, _ := delivery(t, r.svc, "ev-0", "ce")
			if first.State != api.DeliveryDelivered || first.Attempts != fails+1 || d.Attempts != 1 {
				t.Errorf("deliveries %+v, %+v", first, d)
			}
			var ids []string
			for _, e := range rcv.Events() {
				ids = append(ids, e.ID())
			}
			if strings.Join(ids, ",") != "ev-0,ev-1,ev-2" || rcv.Copies("ev-0") != 1 {
				t.Errorf("received %v", ids)
			}
		})
	}
}

// TestRestartWhilePending: deliveries pending when the service stops are
// made by the next one over the same file, with the same event id.
func TestRestartWhilePending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	rcv := receiver(t, nil)
	rcv.Fail(1<<30, http.StatusServiceUnavailable)
	sub := notify.Subscription{Name: "ce", URL: rcv.URL}
	r := start(t, path, sub)
	ev := event("ro-9-3", notify.TypeGateBreached, []string{"vad@2.0.0"}, nil)
	if err := r.svc.Add(ev); err != nil {
		t.Fatal(err)
	}
	testenv.EventuallyState(t, "a failed attempt", func() (bool, string) {
		d, _ := delivery(t, r.svc, ev.ID, "ce")
		return d.Attempts >= 2 && d.State == api.DeliveryPending, fmt.Sprintf("%+v", d)
	})
	r.stop()
	rcv.Fail(0, 0)
	r = start(t, path, sub)
	d := waitDelivery(t, r.svc, ev.ID, "ce", api.DeliveryDelivered)
	if d.Attempts < 3 {
		t.Errorf("delivery %+v", d)
	}
	evs := rcv.Events()
	if len(evs) != 1 || evs[0].ID() != ev.ID {
		t.Fatalf("received %v", evs)
	}
}

// TestConnectionRefused: a receiver that is not there (a closed port)
// keeps the delivery pending with the error.
func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/hook?token=secret-in-query"
	ln.Close()
	r := start(t, filepath.Join(t.TempDir(), "q.db"), notify.Subscription{Name: "gone", URL: url})
	if err := r.svc.Add(event("ev-1", notify.TypeInstallFailed, nil, nil)); err != nil {
		t.Fatal(err)
	}
	testenv.EventuallyState(t, "a failed attempt", func() (bool, string) {
		d, _ := delivery(t, r.svc, "ev-1", "gone")
		return d.Attempts >= 2 && d.LastError != "", fmt.Sprintf("%+v", d)
	})
	d, _ := delivery(t, r.svc, "ev-1", "gone")
	if d.State != api.DeliveryPending || d.LastStatus != 0 || strings.Contains(d.LastError, "secret-in-query") {
		t.Errorf("delivery %+v", d)
	}
}

func TestFilter(t *testing.T) {
	bp := func(s string) notify.BundlePattern {
		p, err := notify.ParseBundlePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	sel := inventory.MustParseSelector("site=berlin,ring!=test")
	breach := event("a", notify.TypeGateBreached, []string{"vad@2.1.0"}, map[string]string{"site": "berlin"})
	exp := event("b", notify.TypeExperimentConcluded, []string{"vad@1.0.0", "kws@3.0.0"}, map[string]string{"site": "paris"})
	for _, tc := range []struct {
		name  string
		f     notify.Filter
		ev    notify.Event
		match bool
	}{
		{"zero filter", notify.Filter{}, breach, true},
		{"type", notify.Filter{Types: []string{notify.TypeGateBreached}}, breach, true},
		{"other type", notify.Filter{Types: []string{notify.TypeRolledBack}}, breach, false},
		{"selector", notify.Filter{Selector: sel}, breach, true},
		{"selector no", notify.Filter{Selector: sel}, exp, false},
		{"bundle name", notify.Filter{Bundles: []notify.BundlePattern{bp("vad")}}, breach, true},
		{"bundle glob", notify.Filter{Bundles: []notify.BundlePattern{bp("vad@2.*")}}, breach, true},
		{"bundle glob no", notify.Filter{Bundles: []notify.BundlePattern{bp("vad@1.*")}}, breach, false},
		{"second arm", notify.Filter{Bundles: []notify.BundlePattern{bp("kws@3.0.?")}}, exp, true},
		{"no bundle", notify.Filter{Bundles: []notify.BundlePattern{bp("vad")}}, event("c", notify.TypeInstallFailed, nil, nil), false},
		{"all of them", notify.Filter{Types: []string{notify.TypeGateBreached}, Selector: sel, Bundles: []notify.BundlePattern{bp("v*")}}, breach, true},
	} {
		if got := tc.f.Match(&tc.ev); got != tc.match {
			t.Errorf("%s: Match = %v", tc.name, got)
		}
	}
}

// TestFilteredDelivery: each subscription gets what its filter selects.
func TestFilteredDelivery(t *testing.T) {
	a, b := receiver(t, nil), receiver(t, nil)
	vad, _ := notify.ParseBundlePattern("vad")
	r := start(t, filepath.Join(t.TempDir(), "q.db"),
		notify.Subscription{Name: "breaches", URL: a.URL, Filter: notify.Filter{Types: []string{notify.TypeGateBreached}}},
		notify.Subscription{Name: "vad-berlin", URL: b.URL, Filter: notify.Filter{
			Selector: inventory.MustParseSelector("site=berlin"), Bundles: []notify.BundlePattern{vad}}})
	evs := []notify.Event{
		event("e1", notify.TypeGateBreached, []string{"kws@1.0.0"}, map[string]string{"site": "berlin"}),
		event("e2", notify.TypeRolledBack, []string{"vad@2.0.0"}, map[string]string{"site": "berlin"}),
		event("e3", notify.TypeRolledBack, []string{"vad@2.0.0"}, map[string]string{"site": "paris"}),
		event("e4", notify.TypeGateBreached, []string{"vad@2.0.0"}, map[string]string{"site": "berlin"}),
	}
	for _, ev := range evs {
		if err := r.svc.Add(ev); err != nil {
			t.Fatal(err)
		}
	}
	waitDelivery(t, r.svc, "e4", "breaches", api.DeliveryDelivered)
	waitDelivery(t, r.svc, "e4", "vad-berlin", api.DeliveryDelivered)
	ids := func(r *notifytest.Receiver) string {
		var out []string
		for _, e := range r.Events() {
			out = append(out, e.ID())
		}
		return strings.Join(out, ",")
	}
	if got := ids(a); got != "e1,e4" {
		t.Errorf("breaches got %s", got)
	}
	if got := ids(b); got != "e2,e4" {
		t.Errorf("vad-berlin got %s", got)
	}
	// e3 is listed with no delivery; filters by subscription and state.
	l, err := r.svc.List(notify.Query{Limit: 10})
	if err != nil || len(l) != 4 || l[0].ID != "e4" || l[1].ID != "e3" || len(l[1].Deliveries) != 0 || len(l[0].Deliveries) != 2 {
		t.Fatalf("list %+v, %v", l, err)
	}
	if l, _ := r.svc.List(notify.Query{Limit: 10, Subscription: "breaches"}); len(l) != 2 {
		t.Errorf("subscription filter: %d events", len(l))
	}
	if l, _ := r.svc.List(notify.Query{Limit: 10, Type: notify.TypeRolledBack}); len(l) != 2 {
		t.Errorf("type filter: %d events", len(l))
	}
	if l, _ := r.svc.List(notify.Query{Limit: 10, State: api.DeliveryFailed}); len(l) != 0 {
		t.Errorf("state filter: %d events", len(l))
	}
}

// apiServer is a local stand-in of an HTTP API that checks each request
// with check (an error: 400 with it) and answers status.
type apiServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
	errs   []string
	status int
}

func newAPIServer(t *testing.T, check func(r *http.Request, body map[string]any) error) *apiServer {
	t.Helper()
	s := &apiServer{status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		err := json.Unmarshal(b, &body)
		if err == nil {
			err = check(r, body)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			s.errs = append(s.errs, err.Error())
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.bodies = append(s.bodies, body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.status)
		w.Write([]byte(`{}`))
	}))
	t.Cleanup(s.Close)
	return s
}

// fields checks that obj has exactly the allowed keys (those in
// required, which must be there, and optional) with values of their
// JSON types ("string", "object", ...).
func fields(obj map[string]any, required, optional map[string]string) error {
	typeOf := func(v any) string {
		switch v.(type) {
		case string:
			return "string"
		case map[string]any:
			return "object"
		case []any:
			return "array"
		case float64:
			return "number"
		case bool:
			return "boolean"
		}
		return "null"
	}
	for k, want := range required {
		v, ok := obj[k]
		if !ok {
			return fmt.Errorf("required field %q missing", k)
		}
		if typeOf(v) != want {
			return fmt.Errorf("field %q is %s, want %s", k, typeOf(v), want)
		}
	}
	for k, v := range obj {
		want, ok := required[k]
		if !ok {
			want, ok = optional[k]
		}
		if !ok {
			return fmt.Errorf("field %q is not in the API's request", k)
		}
		if typeOf(v) != want {
			return fmt.Errorf("field %q is %s, want %s", k, typeOf(v), want)
		}
	}
	return nil
}

// TestAirflowTemplate checks the request against Airflow 2's stable REST
// API: POST /api/v1/dags/{dag_id}/dagRuns, JSON, a DAGRun whose writable
// fields are dag_run_id (string), logical_date / execution_date (date-time
// strings), conf (object) and note (string); 409 when the dag_run_id
// exists (an earlier attempt got through: delivered).
func TestAirflowTemplate(t *testing.T) {
	var auth []string
	srv := newAPIServer(t, func(r *http.Request, body map[string]any) error {
		if r.Method != http.MethodPost || r.URL.Path != "/airflow/api/v1/dags/retrain_vad/dagRuns" {
			return fmt.Errorf("%s %s", r.Method, r.URL.Path)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			return fmt.Errorf("Content-Type %q", ct)
		}
		auth = append(auth, r.Header.Get("Authorization"))
		if err := fields(body, map[string]string{"dag_run_id": "string", "conf": "object"},
			map[string]string{"logical_date": "string", "execution_date": "string", "note": "string"}); err != nil {
			return err
		}
		if id := body["dag_run_id"].(string); !airflowRunID(id) {
			return fmt.Errorf("dag_run_id %q does not match Airflow's run id pattern", id)
		}
		conf := body["conf"].(map[string]any)
		return fields(conf, map[string]string{"event_id": "string", "event_type": "string", "source": "string", "subject": "string",
			"time": "string", "bundle": "string", "bundle_name": "string", "version": "string", "feature_scores": "object", "data": "object"}, nil)
	})
	r := start(t, filepath.Join(t.TempDir(), "q.db"), notify.Subscription{Name: "airflow", URL: srv.URL + "/airflow/",
		Template: notify.TemplateAirflow, Authorization: "Basic YWRtaW46YWRtaW4=", Airflow: notify.AirflowTemplate{DagID: "retrain_vad"}})
	data, _ := json.Marshal(notify.DriftData{Device: "cam-1", Bundle: "vad@2.0.0", BundleName: "vad", Version: "2.0.0", Windows: 3,
		Scores: []float64{0.6, 0.7, 0.8}, FeatureScores: map[string]float64{"rms": 1, "zcr": 0.33}})
	ev := notify.Event{ID: "drift-0a1b2c", Type: notify.TypeDriftPersisted, Source: "/edgefleet/fleetd/devices", Subject: "cam-1",
		Time: time.Now().UTC(), Bundles: []string{"vad@2.0.0"}, Data: data}
	if err := r.svc.Add(ev); err != nil {
		t.Fatal(err)
	}
	waitDelivery(t, r.svc, ev.ID, "airflow", api.DeliveryDelivered)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.errs) > 0 || len(srv.bodies) != 1 {
		t.Fatalf("errors %v, %d bodies", srv.errs, len(srv.bodies))
	}
	conf := srv.bodies[0]["conf"].(map[string]any)
	if srv.bodies[0]["dag_run_id"] != ev.ID || conf["bundle"] != "vad@2.0.0" || conf["version"] != "2.0.0" ||
		!reflect.DeepEqual(conf["feature_scores"], map[string]any{"rms": 1.0, "zcr": 0.33}) || auth[0] != "Basic YWRtaW46YWRtaW4=" {
		t.Errorf("body %v, auth %q", srv.bodies[0], auth)
	}

	// 409 (the run exists): delivered.
	srv.status = http.StatusConflict
	srv.mu.Unlock()
	ev.ID = "drift-0a1b2d"
	if err := r.svc.Add(ev); err != nil {
		t.Fatal(err)
	}
	d := waitDelivery(t, r.svc, ev.ID, "airflow", api.DeliveryDelivered)
	srv.mu.Lock()
	if d.LastStatus != http.StatusConflict {
		t.Errorf("delivery %+v", d)
	}
}

// airflowRunID is Airflow's default run id pattern (RUN_ID_REGEX).
func airflowRunID(s string) bool {
	if s == "" || len(s) > 250 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_.~:+-", c)) {
			return false
		}
	}
	return true
}

// TestKubeflowTemplate checks the request against Kubeflow Pipelines'
// v2beta1 CreateRun: POST /apis/v2beta1/runs with a v2beta1Run whose
// display_name is required, pipeline_version_reference an object of
// pipeline_id and pipeline_version_id strings, runtime_config an object
// whose parameters map names to values, experiment_id and
// service_account strings.
func TestKubeflowTemplate(t *testing.T) {
	srv := newAPIServer(t, func(r *http.Request, body map[string]any) error {
		if r.Method != http.MethodPost || r.URL.Path != "/apis/v2beta1/runs" {
			return fmt.Errorf("%s %s", r.Method, r.URL.Path)
		}
		if r.Header.Get("Authorization") != "Bearer kfp-token" {
			return fmt.Errorf("Authorization %q", r.Header.Get("Authorization"))
		}
		if err := fields(body, map[string]string{"display_name": "string", "pipeline_version_reference": "object", "runtime_config": "object"},
			map[string]string{"description": "string", "experiment_id": "string", "service_account": "string"}); err != nil {
			return err
		}
		if err := fields(body["pipeline_version_reference"].(map[string]any),
			map[string]string{"pipeline_id": "string", "pipeline_version_id": "string"}, nil); err != nil {
			return fmt.Errorf("pipeline_version_reference: %w", err)
		}
		rc := body["runtime_config"].(map[string]any)
		if err := fields(rc, map[string]string{"parameters": "object"}, map[string]string{"pipeline_root": "string"}); err != nil {
			return fmt.Errorf("runtime_config: %w", err)
		}
		for k, v := range rc["parameters"].(map[string]any) {
			if _, ok := v.(string); !ok {
				return fmt.Errorf("parameter %q is %T, the pipeline declares strings", k, v)
			}
		}
		return nil
	})
	r := start(t, filepath.Join(t.TempDir(), "q.db"), notify.Subscription{Name: "kfp", URL: srv.URL, Template: notify.TemplateKubeflow,
		Authorization: "Bearer kfp-token", Kubeflow: notify.KubeflowTemplate{PipelineID: "p-123", PipelineVersionID: "v-456", ExperimentID: "x-789"}})
	ev := event("ro-1-9", notify.TypeRolledBack, []string{"vad@2.0.0"}, nil)
	if err := r.svc.Add(ev); err != nil {
		t.Fatal(err)
	}
	waitDelivery(t, r.svc, ev.ID, "kfp", api.DeliveryDelivered)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.errs) > 0 || len(srv.bodies) != 1 {
		t.Fatalf("errors %v, %d bodies", srv.errs, len(srv.bodies))
	}
	b := srv.bodies[0]
	p := b["runtime_config"].(map[string]any)["parameters"].(map[string]any)
	ref := b["pipeline_version_reference"].(map[string]any)
	if b["experiment_id"] != "x-789" || ref["pipeline_id"] != "p-123" || ref["pipeline_version_id"] != "v-456" ||
		p["event_id"] != ev.ID || p["bundle"] != "vad@2.0.0" || p["version"] != "2.0.0" || p["data"] != string(ev.Data) || len(p) != len(notify.KubeflowParameters) {
		t.Errorf("body %v", b)
	}
}

func TestSignature(t *testing.T) {
	// The Standard Webhooks specification's example.
	key, err := notify.DecodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"test": 2432232314}`)
	const id, ts = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330
	want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	if got := notify.Sign(key, id, ts, body); got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
	if !notify.Verify(key, id, "1614265330", "v1,bogus "+want, body) {
		t.Error("Verify refuses the right signature")
	}
	if notify.Verify(key, id, "1614265331", want, body) || notify.Verify(key, id, "1614265330", want, []byte(`{}`)) {
		t.Error("Verify accepts a wrong timestamp or body")
	}
	if _, err := notify.DecodeSecret("whsec_not base64!"); err == nil {
		t.Error("a bad whsec_ secret decodes")
	}
}

func score(v float64) *float64 { return &v }

// TestDriftEpisodes: N drifted windows in a row make one event; more
// drifted windows make none; a window below the share ends the episode,
// and the next N drifted windows make another.
func TestDriftEpisodes(t *testing.T) {
	rcv := receiver(t, nil)
	r := start(t, filepath.Join(t.TempDir(), "q.db"), notify.Subscription{Name: "drift", URL: rcv.URL,
		Filter: notify.Filter{Types: []string{notify.TypeDriftPersisted}}})
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	n := 0
	window := func(s *float64, drifted ...string) notify.DriftWindow {
		n++
		return notify.DriftWindow{Device: "cam-1", Bundle: "vad@2.0.0", Labels: map[string]string{"site": "berlin"},
			Start: t0.Add(time.Duration(n-1) * time.Minute), End: t0.Add(time.Duration(n) * time.Minute), Score: s, Drifted: drifted}
	}
	observe := func(ws ...notify.DriftWindow) {
		t.Helper()
		if err := r.svc.ObserveDrift(ws); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		l, err := r.svc.List(notify.Query{Limit: 100, Type: notify.TypeDriftPersisted})
		if err != nil {
			t.Fatal(err)
		}
		return len(l)
	}
	w1, w2 := window(score(0.6), "rms"), window(score(0.9), "rms", "zcr")
	observe(w1, w2)
	observe(w1, w2) // delivered twice: counted once
	if count() != 0 {
		t.Fatal("an event after 2 windows")
	}
	observe(window(nil))               // not enough data: neither
	observe(window(score(0.5), "rms")) // the third drifted window
	if count() != 1 {
		t.Fatalf("%d events after 3 drifted windows", count())
	}
	observe(window(score(0.7), "rms"), window(score(1), "rms"))
	if count() != 1 {
		t.Fatal("a second event in the same episode")
	}
	observe(window(score(0.1)))
	observe(window(score(0.6), "zcr"), window(score(0.6), "zcr"), window(score(0.6), "zcr"))
	if count() != 2 {
		t.Fatalf("%d events after the second episode", count())
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	first, err := rcv.Wait(ctx, func(cloudevents.Event) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	var d notify.DriftData
	if err := json.Unmarshal(first.Data(), &d); err != nil {
		t.Fatal(err)
	}
	want := notify.DriftData{Device: "cam-1", Bundle: "vad@2.0.0", BundleName: "vad", Version: "2.0.0", Windows: 3,
		Since: t0, Until: t0.Add(4 * time.Minute), Scores: []float64{0.6, 0.9, 0.5}, DriftShare: 0.5,
		FeatureScores: map[string]float64{"rms": 1, "zcr": 1.0 / 3}, Labels: map[string]string{"site": "berlin"}}
	if !reflect.DeepEqual(d, want) || first.Subject() != "cam-1" || first.Source() != "/edgefleet/fleetd/devices" {
		t.Errorf("drift event %s\n data %+v\n want %+v", first, d, want)
	}
	// Another device's windows are its own.
	other := window(score(0.9))
	other.Device = "cam-2"
	observe(other)
	if count() != 2 {
		t.Error("cam-2's first window made an event")
	}
}

func FuzzParseBundlePattern(f *testing.F) {
	for _, s := range []string{"vad", "vad@2.*", "kws-*@1.4.?", "@", "a@", "@b", "a@b@c", "[", "v[a-", "a/b", "x@[0-9]*"} {
		f.Add(s, "vad@2.0.1")
	}
	f.Fuzz(func(t *testing.T, s, bundle string) {
		p, err := notify.ParseBundlePattern(s)
		if err != nil {
			return
		}
		if p.Name == "" || strings.ContainsAny(p.String(), "/ ") {
			t.Fatalf("%q parsed to %+v", s, p)
		}
		q, err := notify.ParseBundlePattern(p.String())
		if err != nil || q != p {
			t.Fatalf("%q: String %q reparses to %+v, %v", s, p.String(), q, err)
		}
		_ = p.Match(bundle) // must not panic
		if !strings.ContainsAny(s, `*?[\`) && !p.Match(s) && strings.Contains(s, "@") {
			t.Fatalf("literal pattern %q does not match itself", s)
		}
	})
}

// TestRemovedSubscription: a subscription gone from the configuration
// has its pending deliveries failed at the next start.
func TestRemovedSubscription(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	rcv := receiver(t, nil)
	rcv.Fail(1<<30, http.StatusServiceUnavailable)
	r := start(t, path, notify.Subscription{Name: "old", URL: rcv.URL})
	if err := r.svc.Add(event("ev-1", notify.TypeRolledBack, nil, nil)); err != nil {
		t.Fatal(err)
	}
	r.stop()
	r = start(t, path)
	d, ok := delivery(t, r.svc, "ev-1", "old")
	if !ok || d.State != api.DeliveryFailed || !strings.Contains(d.LastError, "removed from the configuration") {
		t.Errorf("delivery %+v (%v)", d, ok)
	}
}
