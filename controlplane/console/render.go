package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
)

// page is what every template gets.
type page struct {
	Title string
	// Path is the page's path and query: what its live region
	// refetches.
	Path string
	// User is the signed-in user (nil on the sign-in page).
	User *api.Whoami
	CSRF string
	// Live are the watch topics the page's live region follows.
	Live string
	// Nav is the section the page belongs to.
	Nav  string
	Data any
}

// CanOperate says whether the user may steer rollouts (the API decides
// anyway; this hides the buttons it would refuse).
func (p page) CanOperate() bool { return p.User != nil && p.User.Role >= api.RoleOperator }

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		d := time.Since(t).Round(time.Second)
		if d < 0 {
			return "in " + (-d).String()
		}
		return d.String() + " ago"
	},
	"stamp": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"num": func(v float64) string { return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.4f", v), "0"), ".") },
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"stateClass": func(s rollout.State) string {
		switch s {
		case rollout.StateRunning, rollout.StateRollingBack:
			return "running"
		case rollout.StatePaused:
			return "paused"
		case rollout.StateSucceeded, rollout.StateCompleted, rollout.StatePromoted:
			return "good"
		case rollout.StateRolledBack, rollout.StateAborted:
			return "bad"
		}
		return ""
	},
}

// parsePages parses each page template with the layout.
func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		pages[base] = t
	}
	return pages, nil
}

// render writes page name (live: the watch topics its live region
// follows, as "sse:devices, sse:rollouts"): the whole document, or for an htmx request
// only its live region ("main").
func (c *Console) render(w http.ResponseWriter, r *http.Request, sess *session, name, title, live string, data any) {
	p := page{Title: title, Path: r.URL.RequestURI(), Data: data, Nav: name, Live: live}
	if sess != nil {
		p.User, p.CSRF = &sess.who, sess.csrf
	}
	t := c.pages[name]
	block := "layout.html"
	if r.Header.Get("HX-Request") != "" && r.Header.Get("HX-Boosted") == "" {
		block = "main"
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, block, p); err != nil {
		c.log.Error("console: rendering", "page", name, "err", err)
		http.Error(w, "rendering "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}
