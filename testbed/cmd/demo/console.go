package main

// The web console: the demo says where it is, and checks that it shows
// the demo's rollouts as fleetd's API reports them.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// consoleURL is the web console's address.
func (d *demo) consoleURL() string { return "http://" + d.httpAddr + "/console/" }

// checkConsole signs in to the console with the operator token, as a
// browser would, and checks that its rollouts page lists each id and
// that each rollout's page shows want[id] as its state.
func (d *demo) checkConsole(ctx context.Context, want map[string]string) error {
	tok, err := os.ReadFile(filepath.Join(d.work, "fleetd-data", "operator.token"))
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		return err
	}
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	base := strings.TrimSuffix(d.consoleURL(), "/")
	page := func(resp *http.Response, err error) (string, error) {
		if err != nil {
			return "", fmt.Errorf("console: %w", err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", fmt.Errorf("console: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("console: %s: %s", resp.Request.URL.Path, resp.Status)
		}
		return string(b), nil
	}
	body, err := page(hc.PostForm(base+"/login", url.Values{"token": {strings.TrimSpace(string(tok))}, "next": {"/console/rollouts"}}))
	if err != nil {
		return err
	}
	for id, state := range want {
		if !strings.Contains(body, `data-rollout="`+id+`"`) {
			return fmt.Errorf("console: the rollouts page does not list %s", id)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/rollouts/"+id, nil)
		if err != nil {
			return err
		}
		b, err := page(hc.Do(req))
		if err != nil {
			return err
		}
		if !strings.Contains(b, `id="rollout-state" class="state`) || !strings.Contains(b, ">"+state+"</span>") {
			return fmt.Errorf("console: the page of %s does not show it %s", id, state)
		}
	}
	return nil
}
