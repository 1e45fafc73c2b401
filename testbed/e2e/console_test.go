package e2e_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/shared/testenv"
	"github.com/edgefleet/edgefleet/testbed/browser"
	"github.com/edgefleet/edgefleet/testbed/bundles/variants"
	"github.com/edgefleet/edgefleet/testbed/fleet"
)

// TestConsole drives fleetd's web console in Debian's chromium
// (testbed/browser, testdata/console.mjs) against real agents: a rollout
// started with fleetctl appears on the rollouts page without a reload,
// its waves advance on screen to succeeded; a slow version's latency
// gate shows red and its automatic rollback appears, again without a
// reload; the abort button (after its confirmation) aborts a third
// rollout, which the API and fleetctl confirm; a viewer sees no action
// buttons and a forged action answers 403. Every page is screenshotted
// at 1280 and 390 px into .cache/artifacts/TestConsole.
func TestConsole(t *testing.T) {
	c := startConsole(t, 6)
	e, write := c.e, c.write
	v2, v3 := e.bundle("2.0.0", ""), e.bundle("3.0.0", variants.SlowPre)
	e.push(v2)
	e.push(v3)
	gates := func(maxRatio int) string {
		return fmt.Sprintf(`gates:
  installSuccess: {min: 0.95, minReports: "100%%"}
  errorRate: {max: 0.01, minReports: "50%%"}
  latencyP95: {maxRatio: %d, minReports: "50%%", baseline: 3s}
`, maxRatio)
	}
	specs := map[string]string{
		// As in TestRolloutWavesAndRollback: the identical v2 within 20x
		// of v1, the slow v3 held to 8x.
		"SPEC_GOOD": write("good.yaml", "name: good version\nbundle: "+v2.ID()+`
waves:
  - {name: canary, count: 1, bake: 2s}
  - {percent: 50, bake: 2s}
  - {percent: 100, bake: 1s}
waveDeadline: 5m
`+gates(20)),
		"SPEC_SLOW": write("slow.yaml", "name: slow version\nbundle: "+v3.ID()+`
waves:
  - {name: canary, count: 1, bake: 3s}
  - {percent: 50, bake: 3s}
  - {percent: 100, bake: 3s}
waveDeadline: 5m
`+gates(8)),
		// Held in its canary wave (a bake far longer than the test) for
		// the abort button.
		"SPEC_HOLD": write("hold.yaml", "name: held for abort\nbundle: "+v3.ID()+`
waves:
  - {name: canary, count: 1, bake: 1h}
  - {percent: 100, bake: 1s}
waveDeadline: 2h
gates:
  installSuccess: {min: 0.95, minReports: "100%"}
`),
	}
	browser.Run(t, "testdata/console.mjs", c.env(specs))

	// What the browser did, seen from the API and fleetctl.
	var ids struct{ Good, Slow, Hold string }
	b, err := os.ReadFile(filepath.Join(browser.Artifacts(t), "rollouts.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ids); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]rollout.State{ids.Good: rollout.StateSucceeded, ids.Slow: rollout.StateRolledBack, ids.Hold: rollout.StateAborted} {
		st, err := e.f.API.Rollout(t.Context(), id, false)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != want {
			t.Errorf("rollout %s: %s, want %s", id, st.State, want)
		}
	}
	if st, _ := e.f.API.Rollout(t.Context(), ids.Slow, false); st.Breach == nil || st.Breach.Gate != rollout.GateLatencyP95 {
		t.Errorf("slow rollout's breach: %+v", st.Breach)
	}
	if out := e.fleetctl("rollout", "status", ids.Hold); !strings.Contains(out, "aborted") {
		t.Errorf("fleetctl rollout status %s:\n%s", ids.Hold, out)
	}
	h, err := e.f.API.RolloutHistory(t.Context(), ids.Hold)
	if err != nil {
		t.Fatal(err)
	}
	byConsole := false
	for _, ev := range h.Events {
		byConsole = byConsole || (ev.Type == rollout.EventAborted && strings.Contains(ev.Message, "from the console by operator"))
	}
	if !byConsole {
		t.Errorf("the hold rollout's history has no abort from the console: %+v", h.Events)
	}
	// The API itself refuses the viewer's action.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e.f.URL()+"/api/v1/rollouts/"+ids.Good+"/rollback", nil)
	req.Header.Set("Authorization", "Bearer "+consoleViewer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("viewer's rollback through the API: %s, want 403", resp.Status)
	}
	for _, page := range []string{"fleet", "devices", "device", "bundles", "rollouts", "rollout-succeeded", "rollout-rolled-back", "rollout-aborted", "viewer-rollout"} {
		for _, w := range []string{"1280", "390"} {
			p := filepath.Join(browser.Artifacts(t), page+"-"+w+".png")
			if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
				t.Errorf("screenshot %s: %v", p, err)
			}
		}
	}
}

// consoleViewer is the viewer token (auth.tokens "vera") of the console
// tests' fleetd.
const consoleViewer = "efapi_console-test-viewer-0123456789"

// consoleFleet is a rollout fleet for a console test: its fleetd has
// the viewer token too, the agents serve traffic, and a fleetctl binary
// is built for the browser script to run.
type consoleFleet struct {
	t        *testing.T
	e        *roEnv
	dir      string
	fleetctl string
}

func startConsole(t *testing.T, n int) *consoleFleet {
	t.Helper()
	c := &consoleFleet{t: t, dir: t.TempDir()}
	viewerFile := c.write("vera.token", consoleViewer+"\n")
	c.e = startRollouts(t, n, fleet.Options{Fleetd: func(cfg *fleetd.Config) {
		cfg.Auth.Tokens = []fleetd.TokenConfig{{Name: "vera", Role: "viewer", File: viewerFile}}
	}})
	frame := pcmFrame(func(i int) float64 { return 0.5 * math.Sin(2*math.Pi*220*float64(i)/16000) })
	startTraffic(t, c.e.f, frame)
	c.e.waitMetrics("silero-vad@1.0.0", time.Now())
	c.fleetctl = filepath.Join(c.dir, "fleetctl")
	if err := testenv.Build(t, "./controlplane/cmd/fleetctl", c.fleetctl); err != nil {
		t.Fatal(err)
	}
	return c
}

// write writes a file of the test's and returns its path.
func (c *consoleFleet) write(name, s string) string {
	c.t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// env is what a console script needs (URL, OPERATOR_TOKEN, VIEWER_TOKEN,
// FLEETCTL, TOKEN_FILE), and more.
func (c *consoleFleet) env(more map[string]string) map[string]string {
	env := map[string]string{
		"URL":            c.e.f.URL(),
		"OPERATOR_TOKEN": c.e.f.OperatorToken,
		"VIEWER_TOKEN":   consoleViewer,
		"FLEETCTL":       c.fleetctl,
		"TOKEN_FILE":     c.write("operator.token", c.e.f.OperatorToken+"\n"),
	}
	for k, v := range more {
		env[k] = v
	}
	return env
}
