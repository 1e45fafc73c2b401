package fleetd_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
)

// TestAPIRoles: viewer, operator and admin tokens each reach what their
// role allows and get 403, naming the role needed, beyond it; whoami
// says whose token it is.
func TestAPIRoles(t *testing.T) {
	cfg := baseConfig(t)
	given := filepath.Join(t.TempDir(), "ops.token")
	if err := os.WriteFile(given, []byte("efapi_given-operator-token-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Auth.Tokens = []fleetd.TokenConfig{
		{Name: "vera", Role: "viewer"},
		{Name: "otto", Role: "operator", File: given},
		{Name: "ada", Role: "admin"},
	}
	ts := startServer(t, cfg)
	tok := map[string]string{
		"operator": strings.TrimSpace(cptest.ReadFile(t, filepath.Join(cfg.DataDir, fleetd.OperatorTokenFile))),
		"vera":     strings.TrimSpace(cptest.ReadFile(t, filepath.Join(cfg.DataDir, fleetd.TokensDir, "vera.token"))),
		"otto":     "efapi_given-operator-token-0123",
		"ada":      strings.TrimSpace(cptest.ReadFile(t, filepath.Join(cfg.DataDir, fleetd.TokensDir, "ada.token"))),
	}
	if fi, err := os.Stat(filepath.Join(cfg.DataDir, fleetd.TokensDir, "vera.token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("generated token file: %v, %v", fi, err)
	}
	for name, want := range map[string]api.Role{"operator": api.RoleAdmin, "vera": api.RoleViewer, "otto": api.RoleOperator, "ada": api.RoleAdmin} {
		c, err := client.New(ts.srv.URL(), tok[name], nil)
		if err != nil {
			t.Fatal(err)
		}
		w, err := c.Whoami(t.Context())
		if err != nil || w.Name != name || w.Role != want {
			t.Errorf("whoami with %s's token: %+v, %v; want %s", name, w, err, want)
		}
	}

	// Each route with the least role it takes. The bodies are empty or
	// wrong: a token that may call the route gets past authorisation and
	// is answered 400 or 404, one that may not gets 403.
	routes := []struct {
		method, path string
		need         api.Role
	}{
		{"GET", "/api/v1/devices", api.RoleViewer},
		{"GET", "/api/v1/devices/x", api.RoleViewer},
		{"GET", "/api/v1/devices/x/records", api.RoleViewer},
		{"GET", "/api/v1/bundles", api.RoleViewer},
		{"GET", "/api/v1/keys", api.RoleViewer},
		{"GET", "/api/v1/rollouts", api.RoleViewer},
		{"GET", "/api/v1/rollouts/nope", api.RoleViewer},
		{"GET", "/api/v1/drift?bundle=vad@1.0.0", api.RoleViewer},
		{"GET", "/api/v1/events", api.RoleViewer},
		{"GET", "/metrics", api.RoleViewer},
		{"POST", "/api/v1/devices/x/assign", api.RoleOperator},
		{"POST", "/api/v1/rollouts", api.RoleOperator},
		{"POST", "/api/v1/rollouts/nope/abort", api.RoleOperator},
		{"POST", "/api/v1/rollouts/nope/promote", api.RoleOperator},
		{"DELETE", "/api/v1/devices/x", api.RoleAdmin},
		{"POST", "/api/v1/bundles", api.RoleAdmin},
	}
	roles := map[string]api.Role{"vera": api.RoleViewer, "otto": api.RoleOperator, "ada": api.RoleAdmin}
	for _, r := range routes {
		for name, role := range roles {
			code, msg, _ := call(t, ts, r.method, r.path, tok[name], "application/json", nil)
			switch {
			case role < r.need:
				want := `token "` + name + `" has role ` + role.String() + `; ` + r.method + " " + strings.SplitN(r.path, "?", 2)[0] + " needs " + r.need.String()
				if code != http.StatusForbidden || msg != want {
					t.Errorf("%s %s as %s: %d %q, want 403 %q", r.method, r.path, name, code, msg, want)
				}
			case code == http.StatusForbidden || code == http.StatusUnauthorized:
				t.Errorf("%s %s as %s (%s): %d %s", r.method, r.path, name, role, code, msg)
			}
		}
	}
	// A forbidden action changes nothing: the viewer's assign left the
	// (absent) device absent, the operator's delete left an enrolled one.
	ts.enroll(t, "dev-1", nil)
	if code, _, _ := call(t, ts, "DELETE", "/api/v1/devices/dev-1", tok["otto"], "", nil); code != http.StatusForbidden {
		t.Fatalf("operator deleting a device: %d", code)
	}
	if _, err := ts.api.Device(t.Context(), "dev-1"); err != nil {
		t.Errorf("dev-1 after a forbidden delete: %v", err)
	}
	if code, _, _ := call(t, ts, "DELETE", "/api/v1/devices/dev-1", tok["ada"], "", nil); code != http.StatusNoContent && code != http.StatusOK {
		t.Errorf("admin deleting a device: %d", code)
	}

	// The tokens survive a restart: the generated files are read back.
	ts.restart()
	if code, _, _ := call(t, ts, "GET", "/api/v1/whoami", tok["vera"], "", nil); code != http.StatusOK {
		t.Errorf("viewer token after a restart: %d", code)
	}
}

// TestAPITokenConfig: bad token entries are configuration errors naming
// their key.
func TestAPITokenConfig(t *testing.T) {
	dup := filepath.Join(t.TempDir(), "dup.token")
	for _, tc := range []struct {
		name   string
		tokens []fleetd.TokenConfig
		want   string
	}{
		{"bad role", []fleetd.TokenConfig{{Name: "a", Role: "root"}}, `auth.tokens[0].role: role "root": want viewer, operator or admin`},
		{"no name", []fleetd.TokenConfig{{Role: "viewer"}}, `auth.tokens[0].name: "": a name of [a-z0-9._-]`},
		{"operator's name", []fleetd.TokenConfig{{Name: "operator", Role: "viewer"}}, `auth.tokens[0].name: "operator" is taken`},
		{"twice", []fleetd.TokenConfig{{Name: "a", Role: "viewer"}, {Name: "a", Role: "admin"}}, `auth.tokens[1].name: "a" is taken`},
		{"same token", []fleetd.TokenConfig{{Name: "a", Role: "viewer", File: dup}, {Name: "b", Role: "admin", File: dup}}, "auth.tokens[1].file: " + dup + " holds the same token as auth.tokens a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(dup, []byte("efapi_the-same-token-twice-0123\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := baseConfig(t)
			cfg.Auth.Tokens = tc.tokens
			cfg.Announce = nil
			srv, err := fleetd.New(cfg)
			if err == nil {
				srv.Close()
				t.Fatalf("fleetd.New accepted %+v", tc.tokens)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}
