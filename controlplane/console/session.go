package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
)

// cookieName is the session cookie: a random id, never the token.
const cookieName = "edgefleet_console"

// session is one sign-in. The API token stays on the server; the
// browser holds the id (HttpOnly, SameSite=Strict) and gets the CSRF
// token in each page.
type session struct {
	id      string
	token   string
	who     api.Whoami
	csrf    string
	expires time.Time
}

// sessions are the signed-in users, in memory: a restart of fleetd signs
// everyone out.
type sessions struct {
	mu  sync.Mutex
	m   map[[sha256.Size]byte]*session // by the id's hash
	ttl time.Duration
	now func() time.Time
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{m: map[[sha256.Size]byte]*session{}, ttl: ttl, now: now}
}

func randomID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// add starts a session and returns it.
func (s *sessions) add(token string, who api.Whoami) *session {
	sess := &session{id: randomID(), token: token, who: who, csrf: randomID(), expires: s.now().Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, old := range s.m {
		if now.After(old.expires) {
			delete(s.m, k)
		}
	}
	s.m[sha256.Sum256([]byte(sess.id))] = sess
	return sess
}

// get returns r's session, or nil.
func (s *sessions) get(r *http.Request) *session {
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	k := sha256.Sum256([]byte(ck.Value))
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.m[k]
	if sess == nil {
		return nil
	}
	if s.now().After(sess.expires) {
		delete(s.m, k)
		return nil
	}
	return sess
}

// drop ends sess.
func (s *sessions) drop(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sha256.Sum256([]byte(sess.id)))
}

// cookie is the session cookie for sess (nil: one that clears it).
func (c *Console) cookie(sess *session) *http.Cookie {
	ck := &http.Cookie{Name: cookieName, Path: Prefix + "/", HttpOnly: true, Secure: c.cfg.Secure, SameSite: http.SameSiteStrictMode}
	if sess == nil {
		ck.MaxAge = -1
		return ck
	}
	ck.Value = sess.id
	ck.Expires = sess.expires
	return ck
}

// checkOrigin refuses a request another site's page made: one whose
// Origin (or, without it, Referer) is not this host. Browsers send
// Origin with every POST.
func checkOrigin(r *http.Request) error {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" {
		return nil // not a browser's cross-site request
	}
	u, err := url.Parse(o)
	if err != nil || u.Host != r.Host {
		return fmt.Errorf("cross-origin request from %q refused", o)
	}
	return nil
}

// checkCSRF checks that a POST carries the session's CSRF token (form
// field csrf or header X-CSRF-Token) and comes from this origin.
func (c *Console) checkCSRF(r *http.Request, sess *session) error {
	if err := checkOrigin(r); err != nil {
		return err
	}
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.PostFormValue("csrf")
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(sess.csrf)) != 1 {
		return errors.New("missing or wrong CSRF token: reload the page")
	}
	return nil
}

// handleLoginForm shows the sign-in form.
func (c *Console) handleLoginForm(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, nil, "login", "Sign in", "", map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
}

// handleLogin signs in with an API token: fleetd's whoami says whose it
// is and its role.
func (c *Console) handleLogin(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.PostFormValue("next"))
	fail := func(code int, msg string) {
		w.WriteHeader(code)
		c.render(w, r, nil, "login", "Sign in", "", map[string]any{"Next": next, "Error": msg})
	}
	if err := checkOrigin(r); err != nil {
		fail(http.StatusForbidden, err.Error())
		return
	}
	tok := r.PostFormValue("token")
	if tok == "" {
		fail(http.StatusBadRequest, "enter an API token")
		return
	}
	who, err := c.client(tok).Whoami(r.Context())
	if err != nil {
		c.log.Info("console: sign-in refused", "err", err)
		fail(http.StatusUnauthorized, "sign-in refused: "+err.Error())
		return
	}
	sess := c.sessions.add(tok, *who)
	c.log.Info("console: signed in", "user", who.Name, "role", who.Role)
	http.SetCookie(w, c.cookie(sess))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) handleLogout(w http.ResponseWriter, r *request) error {
	c.sessions.drop(r.sess)
	c.log.Info("console: signed out", "user", r.sess.who.Name)
	http.SetCookie(w, c.cookie(nil))
	http.Redirect(w, r.Request, Prefix+"/login", http.StatusSeeOther)
	return nil
}

// safeNext keeps a redirect target on the console.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if next == "" || err != nil || u.Scheme != "" || u.Host != "" || len(u.Path) < len(Prefix) || u.Path[:len(Prefix)] != Prefix {
		return Prefix + "/"
	}
	return u.RequestURI()
}
