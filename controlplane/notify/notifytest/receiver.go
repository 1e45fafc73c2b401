// Package notifytest is a CloudEvents receiver for tests and the demo,
// built with the CloudEvents SDK's own HTTP client (cloudevents.
// NewClientHTTP, StartReceiver) on 127.0.0.1: it checks what fleetd
// sends against the CloudEvents 1.0 spec and the Standard Webhooks
// signature, deduplicates by event id, and can answer with failures to
// play an outage.
package notifytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/edgefleet/edgefleet/controlplane/notify"
)

// Receiver receives fleetd's CloudEvents.
type Receiver struct {
	// URL is where it listens (http://127.0.0.1:PORT/).
	URL string

	key    []byte
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	changed  chan struct{}
	events   []cloudevents.Event
	seen     map[string]int
	requests int
	fail     int
	status   int
	problems []string
}

// Start listens on 127.0.0.1 (a free port) and receives until Close.
// With key set, every request must carry a valid webhook-signature.
func Start(key []byte) (*Receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Receiver{URL: "http://" + ln.Addr().String() + "/", key: key, seen: map[string]int{},
		changed: make(chan struct{}), done: make(chan struct{})}
	c, err := cloudevents.NewClientHTTP(cehttp.WithListener(ln), cehttp.WithMiddleware(r.middleware))
	if err != nil {
		ln.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		_ = c.StartReceiver(ctx, r.receive)
	}()
	return r, nil
}

// Close stops the receiver.
func (r *Receiver) Close() {
	r.cancel()
	<-r.done
}

// Fail makes the next n requests fail with status (e.g. 503).
func (r *Receiver) Fail(n, status int) {
	r.mu.Lock()
	r.fail, r.status = n, status
	r.mu.Unlock()
}

// Events are the events received, each once (the first copy), in
// arrival order.
func (r *Receiver) Events() []cloudevents.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cloudevents.Event(nil), r.events...)
}

// Copies is how many times the event with id arrived.
func (r *Receiver) Copies(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[id]
}

// Requests counts every request, failed ones included.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// Problems are what was wrong with requests (answered 400), if
// anything.
func (r *Receiver) Problems() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.problems...)
}

// Wait waits until an event that match selects has arrived and returns
// it, or until ctx ends.
func (r *Receiver) Wait(ctx context.Context, match func(cloudevents.Event) bool) (cloudevents.Event, error) {
	for {
		r.mu.Lock()
		ch := r.changed
		for _, e := range r.events {
			if match(e) {
				r.mu.Unlock()
				return e, nil
			}
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return cloudevents.Event{}, fmt.Errorf("waiting for an event: %w", ctx.Err())
		case <-ch:
		}
	}
}

func (r *Receiver) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Receiver) problem(format string, args ...any) string {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.problems = append(r.problems, msg)
	r.notify()
	r.mu.Unlock()
	return msg
}

// middleware counts requests, plays failures and checks the signature
// (over the raw body, before the SDK reads it).
func (r *Receiver) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.requests++
		fail := r.fail > 0
		if fail {
			r.fail--
		}
		status := r.status
		r.notify()
		r.mu.Unlock()
		if fail {
			http.Error(w, "outage", status)
			return
		}
		if r.key != nil {
			id := req.Header.Get(notify.HeaderWebhookID)
			ts := req.Header.Get(notify.HeaderWebhookTimestamp)
			sig := req.Header.Get(notify.HeaderWebhookSignature)
			if !notify.Verify(r.key, id, ts, sig, body) {
				http.Error(w, r.problem("bad webhook-signature for webhook-id %q", id), http.StatusUnauthorized)
				return
			}
			sec, _ := strconv.ParseInt(ts, 10, 64)
			if d := time.Since(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
				http.Error(w, r.problem("webhook-timestamp %s is %s off", ts, d), http.StatusUnauthorized)
				return
			}
			if ceID := req.Header.Get("ce-id"); ceID != "" && ceID != id {
				http.Error(w, r.problem("webhook-id %q is not ce-id %q", id, ceID), http.StatusBadRequest)
				return
			}
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, req)
	})
}

// Check holds e to the CloudEvents 1.0 spec and to what fleetd's events
// carry: an error says what is wrong.
func Check(e cloudevents.Event) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if e.SpecVersion() != cloudevents.VersionV1 {
		bad("specversion %q, want 1.0", e.SpecVersion())
	}
	if !notify.KnownType(e.Type()) {
		bad("type %q is not an edgefleet event type", e.Type())
	}
	if u, err := url.Parse(e.Source()); e.Source() == "" || err != nil {
		bad("source %q is not a URI reference", e.Source())
	} else if !strings.HasSuffix(u.Path, "/rollouts") && !strings.HasSuffix(u.Path, "/devices") {
		bad("source %q: want …/rollouts or …/devices", e.Source())
	}
	if e.ID() == "" {
		bad("no id")
	}
	if e.Subject() == "" {
		bad("no subject")
	}
	if e.Time().IsZero() {
		bad("no time")
	}
	if e.DataContentType() != cloudevents.ApplicationJSON {
		bad("datacontenttype %q, want application/json", e.DataContentType())
	}
	var obj map[string]any
	if err := json.Unmarshal(e.Data(), &obj); err != nil {
		bad("data is not a JSON object: %v", err)
	}
	if err := e.Validate(); err != nil {
		bad("SDK validation: %v", err)
	}
	return errors.Join(errs...)
}

func (r *Receiver) receive(_ context.Context, e cloudevents.Event) protocol.Result {
	if err := Check(e); err != nil {
		return cehttp.NewResult(http.StatusBadRequest, "%s", r.problem("event %s: %v", e.ID(), err))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[e.ID()]++
	if r.seen[e.ID()] == 1 {
		r.events = append(r.events, e)
	}
	r.notify()
	return nil
}
