package fleetd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/notify"
	"github.com/edgefleet/edgefleet/controlplane/registry"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// RolloutsFile holds the rollout engine's state in the data directory.
const RolloutsFile = "rollouts.db"

// rollouts is the rollout engine, the outgoing events queue (events.go)
// and their bbolt file.
type rollouts struct {
	eng    *rollout.Engine
	events *notify.Service
	db     *bolt.DB
}

// openRollouts opens the rollout engine over DATA/rollouts.db, with the
// inventory, the registry, desired states (rolloutFleet) and the stored
// records (rollout.RecordObserver) as its fleet. Active rollouts resume
// where they were.
func (s *Server) openRollouts() error {
	path := filepath.Join(s.cfg.DataDir, RolloutsFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("fleetd: opening %s: %w", path, err)
	}
	events, err := s.openEvents(db)
	if err != nil {
		db.Close()
		return err
	}
	s.ro.events = events
	eng, err := rollout.New(rollout.Config{
		DB: db, Inventory: s.inv, Bundles: s.reg, Fleet: rolloutFleet{s},
		Observer: rollout.RecordObserver{Records: s.recs},
		Now:      s.now, Logger: s.log.With("component", "rollout"),
		Emitter: rolloutEmitter{s},
	})
	if err != nil {
		events.Close()
		s.ro.events = nil
		db.Close()
		return fmt.Errorf("fleetd: %w", err)
	}
	s.ro = rollouts{eng: eng, events: events, db: db}
	return nil
}

// runRollouts advances the rollouts, and delivers the outgoing events,
// until ctx ends.
func (s *Server) runRollouts(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.ro.events.Run(ctx) })
	if err := s.ro.eng.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Error("fleetd: rollout engine stopped", "err", err)
	}
}

func (s *Server) closeRollouts() error {
	if s.ro.eng != nil {
		s.ro.eng.Close()
	}
	if s.ro.events != nil {
		s.ro.events.Close()
	}
	if s.ro.db == nil {
		return nil
	}
	err := s.ro.db.Close()
	s.ro.db = nil
	return err
}

// Rollouts returns the rollout engine (for in-process tools and tests).
func (s *Server) Rollouts() *rollout.Engine { return s.ro.eng }

// rolloutFleet issues the engine's desired states: like Assign, with the
// rollout id and the shadow candidate.
type rolloutFleet struct{ s *Server }

func (f rolloutFleet) Assign(ctx context.Context, id string, a rollout.Assignment) (protocol.DesiredState, error) {
	s := f.s
	ref, err := s.bundleRef(ctx, id, a.Bundle)
	if err != nil {
		return protocol.DesiredState{}, err
	}
	var shadow *protocol.Shadow
	if a.Shadow != nil {
		sref, err := s.bundleRef(ctx, id, *a.Shadow)
		if err != nil {
			return protocol.DesiredState{}, err
		}
		shadow = &protocol.Shadow{Bundle: sref}
	}
	now := s.now().UTC().Truncate(time.Second)
	d, err := s.inv.SetDesired(id, func(*protocol.DesiredState) (protocol.DesiredState, error) {
		return protocol.DesiredState{IssuedAt: now, ExpiresAt: now.Add(time.Duration(s.cfg.Desired.Lifetime)),
			Action: a.Action, Bundle: ref, Shadow: shadow, RolloutID: a.RolloutID}, nil
	})
	if err != nil {
		return d, err
	}
	s.log.Info("fleetd: desired state issued", "device", id, "seq", d.Seq, "bundle", ref.ID(), "action", a.Action, "rollout", a.RolloutID)
	s.publish(ctx, &d) // on failure the republish loop retries
	return d, nil
}

// bundleRef is b with download URLs for device id.
func (s *Server) bundleRef(ctx context.Context, id string, b protocol.BundleID) (protocol.BundleRef, error) {
	e, err := s.reg.Get(ctx, b.Name, b.Version)
	if err != nil {
		return protocol.BundleRef{}, fmt.Errorf("bundle %s: %w", b.ID(), err)
	}
	ref, err := registry.Ref(ctx, s.reg, e, id)
	if err != nil {
		return protocol.BundleRef{}, fmt.Errorf("fleetd: download URL of %s: %w", e.ID(), err)
	}
	return ref, nil
}

// rolloutRoutes adds the rollout API (see package api).
func (s *Server) rolloutRoutes(handle func(pattern string, auth authKind, h handlerFunc)) {
	p := api.Prefix
	handle("GET "+p+"/rollouts", authViewer, s.handleRollouts)
	handle("POST "+p+"/rollouts", authOperator, s.handleCreateRollout)
	handle("GET "+p+"/rollouts/{id}", authViewer, s.handleRollout)
	handle("GET "+p+"/rollouts/{id}/history", authViewer, s.handleRolloutHistory)
	handle("POST "+p+"/rollouts/{id}/{action}", authOperator, s.handleRolloutAction)
}

// rolloutErr gives the engine's errors their HTTP status.
func rolloutErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rollout.ErrInvalid):
		return &statusError{http.StatusBadRequest, err.Error()}
	case errors.Is(err, rollout.ErrNotFound):
		return &statusError{http.StatusNotFound, err.Error()}
	case errors.Is(err, rollout.ErrConflict), errors.Is(err, rollout.ErrState):
		return &statusError{http.StatusConflict, err.Error()}
	}
	return err
}

func (s *Server) handleRollouts(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.ro.eng.List()
	if err != nil {
		return rolloutErr(err)
	}
	if rs == nil {
		rs = []*rollout.Rollout{}
	}
	return writeJSON(w, http.StatusOK, api.RolloutList{Rollouts: rs})
}

// handleCreateRollout takes the spec as YAML or JSON.
func (s *Server) handleCreateRollout(w http.ResponseWriter, r *http.Request) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		switch mt, _, _ := mime.ParseMediaType(ct); mt {
		case "application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/plain":
		default:
			return errStatus(http.StatusUnsupportedMediaType, "Content-Type %q: want application/yaml or application/json", ct)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.cfg.HTTP.MaxBodyBytes)))
	if err != nil {
		return err
	}
	spec, err := rollout.CheckSpec(body)
	if err != nil {
		return rolloutErr(err)
	}
	if dry, _ := strconv.ParseBool(r.URL.Query().Get("dryRun")); dry {
		p, err := s.ro.eng.Plan(r.Context(), spec)
		if err != nil {
			return rolloutErr(err)
		}
		return writeJSON(w, http.StatusOK, p)
	}
	ro, err := s.ro.eng.Create(r.Context(), spec)
	if err != nil {
		return rolloutErr(err)
	}
	return writeJSON(w, http.StatusCreated, ro)
}

func (s *Server) handleRollout(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	ro, err := s.ro.eng.Get(id)
	if err != nil {
		return rolloutErr(err)
	}
	st := api.RolloutStatus{Rollout: *ro}
	if ro.Spec.Kind == rollout.KindExperiment && (ro.State == rollout.StateRunning || ro.State == rollout.StatePaused) {
		if cmp, err := s.ro.eng.Compare(r.Context(), id); err == nil {
			st.Comparison = cmp
		}
	}
	if devs, _ := strconv.ParseBool(r.URL.Query().Get("devices")); devs {
		if st.DeviceList, err = s.ro.eng.Devices(id); err != nil {
			return rolloutErr(err)
		}
	}
	return writeJSON(w, http.StatusOK, st)
}

func (s *Server) handleRolloutHistory(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	evs, err := s.ro.eng.History(id)
	if err != nil {
		return rolloutErr(err)
	}
	if evs == nil {
		evs = []rollout.Event{}
	}
	return writeJSON(w, http.StatusOK, api.RolloutHistory{ID: id, Events: evs})
}

func (s *Server) handleRolloutAction(w http.ResponseWriter, r *http.Request) error {
	var req api.RolloutAction
	if r.ContentLength != 0 {
		if err := s.decodeJSON(w, r, &req); err != nil {
			return err
		}
	}
	id, ctx := r.PathValue("id"), r.Context()
	var ro *rollout.Rollout
	var err error
	switch action := r.PathValue("action"); action {
	case "pause":
		ro, err = s.ro.eng.Pause(ctx, id, req.Note)
	case "resume":
		ro, err = s.ro.eng.Resume(ctx, id, req.Note)
	case "abort":
		ro, err = s.ro.eng.Abort(ctx, id, req.Note)
	case "rollback":
		ro, err = s.ro.eng.Rollback(ctx, id, req.Note)
	case "promote":
		if req.Arm == "" {
			if req.Spec != "" {
				return errStatus(http.StatusBadRequest, "spec: only with arm (promoting an experiment's arm)")
			}
			ro, err = s.ro.eng.Promote(ctx, id, req.Note)
			break
		}
		spec := &rollout.Spec{}
		if req.Spec != "" {
			if spec, err = rollout.ParseSpec([]byte(req.Spec)); err != nil {
				return rolloutErr(err)
			}
		}
		ro, err = s.ro.eng.PromoteExperiment(ctx, id, req.Arm, spec)
	default:
		return errStatus(http.StatusNotFound, "no rollout action %q (pause, resume, abort, promote, rollback)", action)
	}
	if err != nil {
		return rolloutErr(err)
	}
	return writeJSON(w, http.StatusOK, ro)
}
