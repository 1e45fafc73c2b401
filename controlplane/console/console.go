// Package console is fleetd's web console (docs/console.md): pages
// rendered on the server with html/template from fleetd's own HTTP API,
// called in process with the signed-in user's token (so the API's roles
// decide what a user may do), made live by htmx and server-sent events,
// with charts by Chart.js. Its assets are embedded; fleetd serves it
// under /console/.
package console

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/client"
)

// Prefix is where fleetd mounts the console.
const Prefix = "/console"

//go:embed static
var staticFS embed.FS

//go:embed templates/*.html
var templateFS embed.FS

// DefaultSessionTTL is how long a sign-in lasts.
const DefaultSessionTTL = 12 * time.Hour

// Config is what the console needs from fleetd.
type Config struct {
	// API serves fleetd's HTTP API (/api/v1/...); the console calls it
	// in process, with the token the user signed in with, and serves its
	// event stream from GET /api/v1/watch.
	API http.Handler
	// Secure marks the session cookie Secure (fleetd serves HTTPS).
	Secure bool
	// SessionTTL is how long a sign-in lasts (default
	// DefaultSessionTTL).
	SessionTTL time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
}

// Console is the console's HTTP handler.
type Console struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	pages    map[string]*template.Template
	sessions *sessions
}

// New returns the console.
func New(cfg Config) (*Console, error) {
	if cfg.API == nil {
		return nil, errors.New("console: Config.API is required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Console{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), sessions: newSessions(cfg.SessionTTL, cfg.Now)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

// ServeHTTP serves the console's pages, its assets and its event
// stream under Prefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() {
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix(Prefix+"/static/", http.FileServerFS(static))
	c.mux.Handle("GET "+Prefix+"/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The vendored libraries are pinned versions: cached for a day;
		// the console's own files are revalidated on every load.
		if strings.HasPrefix(r.URL.Path, Prefix+"/static/vendor/") {
			w.Header().Set("Cache-Control", "public, max-age=86400")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	}))
	c.mux.HandleFunc("GET "+Prefix+"/login", c.handleLoginForm)
	c.mux.HandleFunc("POST "+Prefix+"/login", c.handleLogin)
	c.mux.HandleFunc("POST "+Prefix+"/logout", c.signedIn(c.handleLogout))
	c.mux.HandleFunc("GET "+Prefix+"/events", c.signedIn(c.handleEvents))
	c.mux.HandleFunc("GET "+Prefix+"/{$}", c.signedIn(c.handleFleet))
	c.mux.HandleFunc("GET "+Prefix+"/devices", c.signedIn(c.handleDevices))
	c.mux.HandleFunc("GET "+Prefix+"/devices/{id}", c.signedIn(c.handleDevice))
	c.mux.HandleFunc("GET "+Prefix+"/bundles", c.signedIn(c.handleBundles))
	c.mux.HandleFunc("GET "+Prefix+"/rollouts", c.signedIn(c.handleRollouts))
	c.mux.HandleFunc("GET "+Prefix+"/rollouts/{id}", c.signedIn(c.handleRollout))
	c.mux.HandleFunc("POST "+Prefix+"/rollouts/{id}/{action}", c.signedIn(c.handleRolloutAction))
	c.mux.HandleFunc("GET "+Prefix+"/experiments", c.signedIn(c.handleExperiments))
	c.mux.HandleFunc("GET "+Prefix+"/experiments/{id}", c.signedIn(c.handleExperiment))
	c.mux.HandleFunc("POST "+Prefix+"/experiments/{id}/promote", c.signedIn(c.handleExperimentPromote))
	c.mux.HandleFunc("GET "+Prefix+"/drift", c.signedIn(c.handleDrift))
	c.mux.HandleFunc(Prefix+"/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such console page: "+r.URL.Path, http.StatusNotFound)
	})
}

// request is one signed-in request: its session and an API client
// holding the session's token.
type request struct {
	*http.Request
	sess *session
	api  *client.Client
}

// signedIn runs h for a request with a valid session; a page request
// without one is sent to the sign-in form, a POST is refused (403) unless
// it carries the session's CSRF token and comes from this origin.
func (c *Console) signedIn(h func(http.ResponseWriter, *request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess := c.sessions.get(r)
		if sess == nil {
			if r.Method == http.MethodGet && r.Header.Get("HX-Request") == "" && !strings.HasSuffix(r.URL.Path, "/events") {
				http.Redirect(w, r, Prefix+"/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			w.Header().Set("HX-Redirect", Prefix+"/login")
			http.Error(w, "not signed in", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			if err := c.checkCSRF(r, sess); err != nil {
				c.log.Warn("console: request refused", "user", sess.who.Name, "path", r.URL.Path, "err", err)
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
		}
		if err := h(w, &request{Request: r, sess: sess, api: c.client(sess.token)}); err != nil {
			c.fail(w, r, sess, err)
		}
	}
}

// fail answers a page whose API call failed with the API's status and
// message.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	code := http.StatusInternalServerError
	var ae *client.Error
	if errors.As(err, &ae) {
		code = ae.Status
	}
	if code == http.StatusUnauthorized {
		// The token no longer works (rotated): sign in again.
		c.sessions.drop(sess)
	}
	c.log.Debug("console: page failed", "path", r.URL.Path, "status", code, "err", err)
	w.WriteHeader(code)
	c.render(w, r, sess, "error", "Error", "", map[string]any{"Status": code, "Message": err.Error()})
}

// client returns an API client calling fleetd in process with token.
func (c *Console) client(token string) *client.Client {
	return client.InProcess(c.cfg.API, token)
}

// errorf is a page error with a status.
func errorf(code int, format string, args ...any) error {
	return &client.Error{Status: code, Message: fmt.Sprintf(format, args...)}
}
