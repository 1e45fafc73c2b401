package fleetd

import (
	"errors"
	"fmt"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/broker"
	"github.com/edgefleet/edgefleet/controlplane/dedup"
	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/controlplane/lake"
	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// errShuttingDown refuses device messages while fleetd stops; the device
// keeps them and sends them again.
var errShuttingDown = errors.New("fleetd: shutting down")

// Refusal reasons of fleetd's own besides protocol's (ReasonOf).
const (
	reasonUnknownDevice = "unknown_device" // deleted while connected
	reasonRecords       = "records"        // records the store refused
	reasonKind          = "kind"           // a topic devices do not publish to
)

// touchEvery throttles LastSeen updates from telemetry and events.
const touchEvery = time.Minute

// ingestBegin admits one ingest unless fleetd is stopping; call
// s.ingestWG.Done when it returns true.
func (s *Server) ingestBegin() bool {
	s.ingestMu.RLock()
	defer s.ingestMu.RUnlock()
	if s.ingestClosed {
		return false
	}
	s.ingestWG.Add(1)
	return true
}

// ingestEmbedded is the embedded broker's Ingest hook: it runs before the
// device gets its PUBACK, so an error makes the device send the message
// again.
func (s *Server) ingestEmbedded(m broker.DeviceMessage) error {
	if !s.ingestBegin() {
		return errShuttingDown
	}
	defer s.ingestWG.Done()
	return s.ingest(m.DeviceID, m.Kind, m.Payload)
}

// onStatusMessage records last wills, which the broker publishes on the
// device's behalf (the Ingest hook sees only what devices publish). The
// retained statuses delivered when it subscribes are no-ops: every device
// was marked offline before the broker started.
func (s *Server) onStatusMessage(m broker.Message) {
	if !s.ingestBegin() {
		return
	}
	defer s.ingestWG.Done()
	id, kind, err := protocol.ParseTopic(m.Topic)
	if err != nil || kind != protocol.KindStatus {
		return
	}
	st, err := protocol.DecodeStatus(m.Payload)
	if err != nil || st.State != protocol.StateOffline {
		return // online statuses come through Ingest; bad ones were counted there
	}
	if err := s.ingestStatus(id, m.Payload); err != nil {
		s.log.Warn("fleetd: recording last will", "device", id, "err", err)
	}
}

// ingest records one device message. It returns an error only when
// fleetd could not store it (the caller withholds the acknowledgement);
// a bad message is logged, counted and dropped.
func (s *Server) ingest(device string, kind protocol.Kind, payload []byte) error {
	var err error
	switch kind {
	case protocol.KindStatus:
		err = s.ingestStatus(device, payload)
	case protocol.KindReported:
		err = s.ingestReported(device, payload)
	case protocol.KindEvents:
		err = s.ingestEvent(device, payload)
	case protocol.KindTelemetry:
		err = s.ingestTelemetry(device, payload)
	default:
		err = &refusal{reasonKind, fmt.Errorf("devices do not publish %q messages", kind)}
	}
	var r *refusal
	switch {
	case err == nil:
		s.metrics.ingested.WithLabelValues(string(kind), resultAccepted).Inc()
		return nil
	case errors.As(err, &r):
		s.metrics.ingested.WithLabelValues(string(kind), resultRefused).Inc()
		s.metrics.refused.WithLabelValues(r.reason).Inc()
		s.log.Warn("fleetd: device message refused", "device", device, "kind", kind, "reason", r.reason, "err", r.err, "bytes", len(payload))
		return nil
	default:
		s.metrics.ingested.WithLabelValues(string(kind), resultFailed).Inc()
		s.log.Error("fleetd: device message not stored; the device will send it again", "device", device, "kind", kind, "err", err)
		return err
	}
}

// refusal is a bad message: dropped, with a reason for the counter.
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string { return r.reason + ": " + r.err.Error() }

// refuse classifies a decode or store error: a refusal for bad input,
// the error itself when fleetd failed.
func refuse(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, protocol.ErrTooLarge), errors.Is(err, protocol.ErrMalformed),
		errors.Is(err, protocol.ErrVersion), errors.Is(err, protocol.ErrInvalid):
		return &refusal{protocol.ReasonOf(err), err}
	case errors.Is(err, inventory.ErrNotFound):
		return &refusal{reasonUnknownDevice, err}
	case errors.Is(err, inventory.ErrInvalid):
		return &refusal{protocol.ReasonInvalid, err}
	case errors.Is(err, telemetry.ErrInvalid):
		return &refusal{reasonRecords, err}
	}
	return err
}

func checkDevice(device, named string) error {
	if named != device {
		return &refusal{protocol.ReasonWrongDevice, fmt.Errorf("payload names device %q, topic %q", named, device)}
	}
	return nil
}

func (s *Server) ingestStatus(device string, payload []byte) error {
	st, err := protocol.DecodeStatus(payload)
	if err != nil {
		return refuse(err)
	}
	if err := checkDevice(device, st.DeviceID); err != nil {
		return err
	}
	if _, err = s.inv.SetStatus(device, st, s.now()); err != nil {
		return refuse(err)
	}
	s.changes.publish(api.TopicDevices)
	return nil
}

func (s *Server) ingestReported(device string, payload []byte) error {
	rs, err := protocol.DecodeReported(payload)
	if err != nil {
		return refuse(err)
	}
	if err := checkDevice(device, rs.DeviceID); err != nil {
		return err
	}
	if err := s.inv.UpdateReported(device, rs, s.now()); err != nil {
		return refuse(err)
	}
	s.ro.eng.Notify() // a rollout may move on what the device reports
	s.changes.publish(api.TopicDevices)
	return nil
}

func (s *Server) ingestEvent(device string, payload []byte) error {
	e, err := protocol.DecodeEvent(payload)
	if err != nil {
		return refuse(err)
	}
	if err := checkDevice(device, e.DeviceID); err != nil {
		return err
	}
	rec := telemetry.Record{Device: device, Epoch: e.Epoch, ID: e.ID, Kind: RecordKindEvent, Time: e.Time,
		Payload: append([]byte(nil), payload...)}
	if err := s.storeRecords(device, e.Epoch, []telemetry.Record{rec}, nil); err != nil {
		return err
	}
	return s.eventsOfDeviceEvent(device, e) // events.go
}

// RecordKindEvent is the record kind events are stored under.
const RecordKindEvent = "event"

func (s *Server) ingestTelemetry(device string, payload []byte) error {
	b, err := s.codec.DecodeTelemetry(payload)
	if err != nil {
		return refuse(err)
	}
	if err := checkDevice(device, b.DeviceID); err != nil {
		return err
	}
	recs := make([]telemetry.Record, len(b.Records))
	for i, r := range b.Records {
		recs[i] = telemetry.Record{Device: device, Epoch: b.Epoch, ID: r.ID, Kind: r.Kind, Time: r.Time, Payload: r.Payload}
	}
	recs, samples := splitSamples(recs) // samples.go: they go to the Parquet files
	return s.storeRecords(device, b.Epoch, recs, samples)
}

// storeRecords stores a delivery's records, and its samples in the
// sample lake, exactly once: both stores stage their share, then one
// dedup.Settle asks the inventory about every id of the delivery and
// commits both (controlplane/dedup).
func (s *Server) storeRecords(device, epoch string, recs []telemetry.Record, samples []lake.Record) error {
	var res telemetry.Result
	var sres lake.Result
	stages := make([]*dedup.Stage, 0, 2)
	release := func() {
		for _, st := range stages {
			if st.Release != nil {
				st.Release()
			}
		}
	}
	st, err := s.recs.Stage(device, epoch, recs, &res)
	if err != nil {
		return refuse(err)
	}
	stages = append(stages, st)
	if len(samples) > 0 {
		st, err := s.lake.Stage(device, epoch, samples, &sres)
		if err != nil {
			release()
			return refuse(err) // lake.ErrFull: delivered again later
		}
		stages = append(stages, st)
	}
	if err := dedup.Settle(func(ids []uint64) ([]bool, error) { return s.inv.SeenRecords(device, epoch, ids) }, stages...); err != nil {
		return refuse(fmt.Errorf("fleetd: storing the records of %q: %w", device, err))
	}
	if len(samples) > 0 {
		s.log.Debug("fleetd: samples staged", "device", device, "accepted", sres.Accepted, "duplicates", sres.Duplicates, "invalid", sres.Invalid, "dropped", sres.Dropped)
		s.metrics.delivered.Add(float64(sres.Accepted))
		s.metrics.duplicates.Add(float64(sres.Duplicates))
	}
	s.drift.stored(device, recs) // drift hours cached before are stale
	// Drift episodes of the outgoing events (events.go).
	if err := s.eventsOfRecords(device, recs); err != nil {
		return err
	}
	s.metrics.delivered.Add(float64(res.Delivered))
	now := s.now()
	for _, r := range recs {
		s.metrics.ingestLag.Observe(max(now.Sub(r.Time).Seconds(), 0))
	}
	s.metrics.duplicates.Add(float64(res.Duplicates))
	s.touch(device)
	return nil
}

// touch moves the device's LastSeen forward, at most every touchEvery,
// off the ingest path: LastSeen is informational, so a touch that does
// not fit the queue is skipped.
func (s *Server) touch(device string) {
	now := s.now()
	s.touchMu.Lock()
	last, ok := s.touched[device]
	if ok && now.Sub(last) < touchEvery {
		s.touchMu.Unlock()
		return
	}
	s.touched[device] = now
	s.touchMu.Unlock()
	select {
	case s.touchCh <- touchReq{device, now}:
	default:
	}
}

type touchReq struct {
	device string
	at     time.Time
}

// touchLoop records LastSeen updates until touchCh is closed.
func (s *Server) touchLoop() {
	defer close(s.touchDone)
	for r := range s.touchCh {
		if err := s.inv.Touch(r.device, r.at); err != nil {
			s.log.Debug("fleetd: touch", "device", r.device, "err", err)
		}
	}
}
