package fleetd

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/console"
	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/controlplane/registry"
	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/version"
)

// maxSigBytes caps an uploaded signature.
const maxSigBytes = 64 << 10

// statusError is an error with the HTTP status it answers.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

func errStatus(code int, format string, args ...any) error {
	return &statusError{code, fmt.Sprintf(format, args...)}
}

// handlerFunc is an API handler: it writes a result or returns an error
// that becomes a JSON error response.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// authKind says which token a route takes.
type authKind int

const (
	authNone  authKind = iota
	authEnrol          // the handler checks the enrolment token itself
	// An API token whose role is at least viewer, operator or admin
	// (api.Role).
	authViewer
	authOperator
	authAdmin
)

// role is the least role a route of kind k takes (0: no API token).
func (k authKind) role() api.Role {
	switch k {
	case authViewer:
		return api.RoleViewer
	case authOperator:
		return api.RoleOperator
	case authAdmin:
		return api.RoleAdmin
	}
	return 0
}

func (s *Server) routes() (http.Handler, error) {
	mux := http.NewServeMux()
	handle := func(pattern string, auth authKind, h handlerFunc) {
		_, route, _ := strings.Cut(pattern, " ")
		mux.Handle(pattern, s.wrap(route, auth, h))
	}
	p := api.Prefix
	handle("GET "+p+"/health", authNone, s.handleHealth)
	handle("GET "+p+"/whoami", authViewer, s.handleWhoami)
	handle("GET "+p+"/watch", authViewer, s.handleWatch)
	handle("GET "+p+"/fleet", authViewer, s.handleFleet)
	handle("GET "+p+"/devices", authViewer, s.handleDevices)
	handle("POST "+p+"/devices", authEnrol, s.handleEnrol)
	handle("GET "+p+"/devices/{id}", authViewer, s.handleDevice)
	handle("DELETE "+p+"/devices/{id}", authAdmin, s.handleDeleteDevice)
	handle("POST "+p+"/devices/{id}/assign", authOperator, s.handleAssign)
	handle("GET "+p+"/devices/{id}/records", authViewer, s.handleRecords)
	handle("GET "+p+"/bundles", authViewer, s.handleBundles)
	handle("POST "+p+"/bundles", authAdmin, s.handlePush)
	handle("GET "+p+"/keys", authViewer, s.handleKeys)
	handle("GET "+p+"/bundles/{name}", authViewer, s.handleBundles)
	handle("GET "+p+"/bundles/{name}/{version}", authViewer, s.handleBundle)
	s.rolloutRoutes(handle)
	s.driftRoutes(handle)
	s.eventRoutes(handle)
	metrics := promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
	handle("GET /metrics", authViewer, func(w http.ResponseWriter, r *http.Request) error {
		metrics.ServeHTTP(w, r)
		return nil
	})
	handle(p+"/", authNone, func(w http.ResponseWriter, r *http.Request) error {
		return s.noRoute(mux, r)
	})
	if s.fsReg != nil {
		mux.Handle(registryPath+"/", s.fsReg.Handler())
	}
	con, err := console.New(console.Config{
		API: mux, Secure: s.cfg.HTTP.CertFile != "",
		Logger: s.log.With("component", "console"), Now: s.now,
	})
	if err != nil {
		return nil, fmt.Errorf("fleetd: %w", err)
	}
	mux.Handle(console.Prefix+"/", con)
	mux.Handle("GET /{$}", http.RedirectHandler(console.Prefix+"/", http.StatusFound))
	return mux, nil
}

// noRoute answers a request under the API prefix that no route takes:
// 405 if the path exists with another method, else 404.
func (s *Server) noRoute(mux *http.ServeMux, r *http.Request) error {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		probe := r.Clone(context.Background())
		probe.Method = m
		if _, pat := mux.Handler(probe); pat != "" && pat != api.Prefix+"/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		return &statusError{http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", "))}
	}
	return errStatus(http.StatusNotFound, "no such API route: %s %s", r.Method, r.URL.Path)
}

// wrap adds authentication, error responses and metrics to h.
func (s *Server) wrap(route string, auth authKind, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w}
		err := func() error {
			if need := auth.role(); need != 0 {
				c, err := s.caller(r)
				if err != nil {
					return err
				}
				if c.Role < need {
					return errStatus(http.StatusForbidden, "token %q has role %s; %s %s needs %s", c.Name, c.Role, r.Method, r.URL.Path, need)
				}
				r = r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
			}
			return h(rw, r)
		}()
		if err != nil {
			s.writeError(rw, r, err)
		}
		code := rw.code
		if code == 0 {
			code = http.StatusOK
		}
		s.metrics.http.WithLabelValues(route, strconv.Itoa(code)).Inc()
		s.metrics.httpSeconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bearer returns the request's bearer token.
func bearer(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", errStatus(http.StatusUnauthorized, "missing bearer token (Authorization: Bearer TOKEN)")
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", errStatus(http.StatusUnauthorized, "the Authorization header must be \"Bearer TOKEN\"")
	}
	return strings.TrimSpace(tok), nil
}

// apiToken is an API token fleetd accepts: its hash and whose it is.
type apiToken struct {
	hash [sha256.Size]byte
	api.Whoami
}

// callerKey keys the request context's api.Whoami.
type callerKey struct{}

// caller returns whose bearer token r carries. Every token's hash is
// compared, so the time taken says nothing about which matched.
func (s *Server) caller(r *http.Request) (api.Whoami, error) {
	tok, err := bearer(r)
	if err != nil {
		return api.Whoami{}, err
	}
	h := sha256.Sum256([]byte(tok))
	var who api.Whoami
	for _, t := range s.tokens {
		if subtle.ConstantTimeCompare(h[:], t.hash[:]) == 1 {
			who = t.Whoami
		}
	}
	if who.Role == 0 {
		return api.Whoami{}, errStatus(http.StatusUnauthorized, "invalid API token")
	}
	return who, nil
}

// handleWhoami answers GET /api/v1/whoami.
func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) error {
	c, _ := r.Context().Value(callerKey{}).(api.Whoami)
	return writeJSON(w, http.StatusOK, c)
}

// writeError answers err as {"error": "..."} with its status.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := http.StatusInternalServerError, err.Error()
	var se *statusError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &se):
		code = se.code
	case errors.As(err, &mbe):
		code, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit)
	case errors.Is(err, inventory.ErrNotFound), errors.Is(err, registry.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, inventory.ErrExists), errors.Is(err, registry.ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, inventory.ErrEnrolToken):
		code = http.StatusUnauthorized
	case errors.Is(err, inventory.ErrInvalid), errors.Is(err, inventory.ErrSelector),
		errors.Is(err, registry.ErrInvalid), errors.Is(err, registry.ErrNoSignature),
		errors.Is(err, bundle.ErrSignature), errors.Is(err, telemetry.ErrInvalid),
		errors.Is(err, protocol.ErrDeviceID):
		code = http.StatusBadRequest
	}
	if code >= 500 {
		s.log.Error("fleetd: API request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error (see fleetd's log): " + msg
	}
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="fleetd"`)
	}
	writeJSON(w, code, api.Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	return json.NewEncoder(w).Encode(v)
}

// decodeJSON reads a JSON body of at most http.maxBodyBytes into v,
// strictly (unknown fields refused).
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
			return errStatus(http.StatusUnsupportedMediaType, "Content-Type %q: want application/json", ct)
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, int64(s.cfg.HTTP.MaxBodyBytes)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errStatus(http.StatusBadRequest, "request body: %v", err)
	}
	if dec.More() {
		return errStatus(http.StatusBadRequest, "request body: more than one JSON value")
	}
	return nil
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, api.Health{Status: "ok", Version: version.Version, Broker: s.brokerMode(), Registry: s.cfg.Registry.Type})
}

func (s *Server) deviceView(d *inventory.Device) (api.Device, error) {
	st, err := s.recs.Stats(d.ID)
	if err != nil {
		return api.Device{}, err
	}
	return api.Device{Device: *d, Records: st}, nil
}

// maxDevicePage caps GET /api/v1/devices?limit=.
const maxDevicePage = 10000

func (s *Server) handleDevices(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	sel, err := inventory.ParseSelector(q.Get("selector"))
	if err != nil {
		return err
	}
	offset, limit := 0, -1
	if v := q.Get("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			return errStatus(http.StatusBadRequest, "offset=%q: want a whole number from 0", v)
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxDevicePage {
			return errStatus(http.StatusBadRequest, "limit=%q: want 1 to %d", v, maxDevicePage)
		}
	}
	devs, err := s.inv.List(sel)
	if err != nil {
		return err
	}
	if sub := q.Get("q"); sub != "" {
		devs = slices.DeleteFunc(devs, func(d *inventory.Device) bool { return !strings.Contains(d.ID, sub) })
	}
	out := api.DeviceList{Devices: []api.Device{}, Total: len(devs)}
	devs = devs[min(offset, len(devs)):]
	if limit >= 0 {
		devs = devs[:min(limit, len(devs))]
	}
	for _, d := range devs {
		v, err := s.deviceView(d)
		if err != nil {
			return err
		}
		out.Devices = append(out.Devices, v)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleFleet(w http.ResponseWriter, r *http.Request) error {
	devs, err := s.inv.List(inventory.Selector{})
	if err != nil {
		return err
	}
	out := api.FleetSummary{Devices: len(devs), Versions: map[string]int{}, Labels: map[string]int{}}
	for _, d := range devs {
		if d.Status.Online {
			out.Online++
		}
		v := ""
		if a := d.Active(); a != nil {
			v = a.ID()
		}
		out.Versions[v]++
		for k, val := range d.EffectiveLabels() {
			out.Labels[k+"="+val]++
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := s.inv.Get(r.PathValue("id"))
	if err != nil {
		return err
	}
	v, err := s.deviceView(d)
	if err != nil {
		return err
	}
	if a := d.Active(); a != nil {
		// The registry may no longer hold the version (deleted) or be
		// unreachable: the device is shown without its lineage then.
		if e, err := s.reg.Get(r.Context(), a.Name, a.Version); err == nil {
			v.Lineage = e.Manifest.Lineage
		} else if !errors.Is(err, registry.ErrNotFound) {
			s.log.Warn("fleetd: device view: registry lookup of the active bundle", "device", d.ID, "bundle", a.ID(), "err", err)
		}
	}
	return writeJSON(w, http.StatusOK, v)
}

func (s *Server) handleDeleteDevice(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := s.inv.Delete(id); err != nil {
		return err
	}
	if err := s.recs.DeleteDevice(id); err != nil {
		return err
	}
	if s.mosq != nil {
		if err := s.mosq.remove(id); err != nil {
			return fmt.Errorf("device %q deleted, but removing it from mosquitto failed: %w", id, err)
		}
	}
	s.clearRetained(r.Context(), id)
	s.log.Info("fleetd: device deleted", "device", id)
	s.changes.publish(api.TopicDevices)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleEnrol(w http.ResponseWriter, r *http.Request) error {
	tok, err := bearer(r)
	if err != nil {
		return err
	}
	var req api.EnrolRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := protocol.ValidateDeviceID(req.ID); err != nil {
		return errStatus(http.StatusBadRequest, "id: %v", err)
	}
	creds, err := s.inv.Enroll(r.Context(), req.ID, req.Labels, tok)
	if err != nil {
		return err
	}
	if s.mosq != nil {
		if err := s.mosq.add(creds.Username, creds.Password); err != nil {
			// Undo, so that enrolling again works once mosquitto does.
			if derr := s.inv.Delete(req.ID); derr != nil {
				s.log.Error("fleetd: undoing an enrolment", "device", req.ID, "err", derr)
			}
			return fmt.Errorf("enrolling %q: provisioning it on mosquitto: %w", req.ID, err)
		}
	}
	s.log.Info("fleetd: device enrolled", "device", req.ID)
	s.changes.publish(api.TopicDevices)
	return writeJSON(w, http.StatusCreated, api.Enrolment{Credentials: creds, Brokers: s.BrokerURLs()})
}

func (s *Server) handleAssign(w http.ResponseWriter, r *http.Request) error {
	var req api.AssignRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	name, ver, ok := strings.Cut(req.Bundle, "@")
	if !ok || name == "" || ver == "" {
		return errStatus(http.StatusBadRequest, "bundle %q: want name@version", req.Bundle)
	}
	d, published, err := s.Assign(r.Context(), r.PathValue("id"), name, ver, req.Action)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.Assignment{Desired: d, Published: published})
}

func (s *Server) handleRecords(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.inv.Get(id); err != nil {
		return err
	}
	q := r.URL.Query()
	var tq telemetry.Query
	tq.Kind = q.Get("kind")
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"since", &tq.Since}, {"until", &tq.Until}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(api.TimeFormat, v)
			if err != nil {
				return errStatus(http.StatusBadRequest, "%s=%q: want an RFC 3339 time, e.g. 2026-03-01T12:00:00Z", p.name, v)
			}
			*p.t = t
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return errStatus(http.StatusBadRequest, "limit=%q: want a number from 1 to %d", v, telemetry.MaxQueryLimit)
		}
		tq.Limit = n
	}
	switch v := q.Get("order"); v {
	case "", "asc":
	case "desc":
		tq.NewestFirst = true
	default:
		return errStatus(http.StatusBadRequest, "order=%q: want asc (oldest first, the default) or desc (newest first)", v)
	}
	recs, err := s.recs.Query(id, tq)
	if err != nil {
		return err
	}
	st, err := s.recs.Stats(id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.Records{Device: id, Stats: st, Records: recs})
}

func (s *Server) handleBundles(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	list, err := s.reg.List(r.Context(), name)
	if err != nil {
		return err
	}
	if list == nil {
		list = []registry.Entry{}
	}
	if name != "" && len(list) == 0 {
		return errStatus(http.StatusNotFound, "no bundle named %q", name)
	}
	return writeJSON(w, http.StatusOK, api.BundleList{Bundles: list})
}

func (s *Server) handleBundle(w http.ResponseWriter, r *http.Request) error {
	e, err := s.reg.Get(r.Context(), r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		return err
	}
	u, su, err := s.reg.URL(r.Context(), e, "")
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.Bundle{Entry: e, URL: u, SigURL: su})
}

// handlePush stores an uploaded bundle: a multipart/form-data body with
// the parts "bundle" (the .bundle file) and "sig" (its signature).
func (s *Server) handleKeys(w http.ResponseWriter, r *http.Request) error {
	k := api.Keys{Keys: []bundle.KeyInfo{}, InsecureAcceptAnyKey: s.trust == nil && s.cfg.Registry.InsecureAcceptAnyKey}
	if s.trust != nil {
		k.Keys = s.trust.Keys()
	}
	return writeJSON(w, http.StatusOK, k)
}

// trustHint says how to make fleetd trust a publisher's key.
const trustHint = "add the publisher's public key (the signing.pub of fleetctl keys generate) to registry.trustedKeys, " +
	"e.g. --set registry.trustedKeys=old.pub,signing.pub, and restart fleetd; " +
	"fleetctl keys fingerprint FILE.pub prints a key's id, fleetctl keys list the ids fleetd trusts"

func (s *Server) handlePush(w http.ResponseWriter, r *http.Request) error {
	if s.trust == nil && !s.cfg.Registry.InsecureAcceptAnyKey {
		s.metrics.pushRefused("no_trusted_keys")
		return errStatus(http.StatusForbidden, "push refused: fleetd trusts no publisher key (registry.trustedKeys is empty); %s", trustHint)
	}
	r.Body = http.MaxBytesReader(w, r.Body, int64(s.cfg.HTTP.MaxBundleBytes)+maxSigBytes+64<<10)
	mr, err := r.MultipartReader()
	if err != nil {
		return errStatus(http.StatusBadRequest, "want a multipart/form-data body with parts \"bundle\" and \"sig\": %v", err)
	}
	dir, err := os.MkdirTemp(filepath.Join(s.cfg.DataDir, UploadDir), "push-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bundlePath, sigPath := filepath.Join(dir, "upload.bundle"), filepath.Join(dir, "upload.bundle.sig")
	got := map[string]bool{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return bodyErr(err)
		}
		name := part.FormName()
		var path string
		var limit int64
		switch name {
		case "bundle":
			path, limit = bundlePath, int64(s.cfg.HTTP.MaxBundleBytes)
		case "sig":
			path, limit = sigPath, maxSigBytes
		default:
			return errStatus(http.StatusBadRequest, "unexpected part %q (want \"bundle\" and \"sig\")", name)
		}
		if got[name] {
			return errStatus(http.StatusBadRequest, "part %q given twice", name)
		}
		got[name] = true
		if err := savePart(part, path, limit); err != nil {
			return err
		}
	}
	for _, name := range []string{"bundle", "sig"} {
		if !got[name] {
			return errStatus(http.StatusBadRequest, "part %q missing (want \"bundle\" and \"sig\")", name)
		}
	}
	m, err := bundle.ReadManifest(r.Context(), bundlePath, bundle.Limits{MaxBundleBytes: int64(s.cfg.HTTP.MaxBundleBytes)})
	if err != nil {
		return errStatus(http.StatusBadRequest, "bundle: %v", err)
	}
	code := http.StatusCreated
	if _, err := s.reg.Get(r.Context(), m.Name, m.Version); err == nil {
		code = http.StatusOK // Put is a no-op for the same bundle, a conflict otherwise
	}
	e, err := s.reg.Put(r.Context(), bundlePath, sigPath)
	if errors.Is(err, bundle.ErrUntrusted) {
		s.metrics.pushRefused("untrusted_key")
		return errStatus(http.StatusForbidden, "push of %s@%s refused: %v; to trust its key, %s", m.Name, m.Version, err, trustHint)
	}
	if err != nil {
		s.metrics.pushRefused("invalid")
		return err
	}
	if s.trust == nil {
		s.log.Warn("fleetd: INSECURE: bundle stored without checking who signed it (registry.insecureAcceptAnyKey)", "bundle", e.ID())
	}
	s.metrics.pushed()
	if code == http.StatusCreated {
		s.log.Info("fleetd: bundle pushed", "bundle", e.ID(), "sha256", e.SHA256, "size", e.Size, "verified", e.Verified)
		s.changes.publish(api.TopicBundles)
	}
	return writeJSON(w, code, api.Bundle{Entry: e})
}

func savePart(part io.Reader, path string, limit int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(part, limit+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return bodyErr(err)
	}
	if n > limit {
		return errStatus(http.StatusRequestEntityTooLarge, "%s larger than %d bytes", filepath.Ext(path), limit)
	}
	return nil
}

// bodyErr maps an error reading the request body.
func bodyErr(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return errStatus(http.StatusBadRequest, "reading the upload: %v", err)
}
