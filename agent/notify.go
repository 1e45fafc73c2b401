package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// States sent to systemd besides STATUS=.
const (
	notifyReady    = daemon.SdNotifyReady
	notifyStopping = daemon.SdNotifyStopping
)

// notify sends state (may be "") and a STATUS= line to systemd's notify
// socket; outside systemd it does nothing.
func (a *Agent) notify(state, status string) {
	msg := "STATUS=" + status
	if state != "" {
		msg = state + "\n" + msg
	}
	if _, err := daemon.SdNotify(false, msg); err != nil {
		a.log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

// watchdog pings systemd's watchdog at half of WATCHDOG_USEC, each time
// after the agent's unix socket answered /v2/health/live, until stop is
// closed.
func (a *Agent) watchdog(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		a.log.Warn("systemd watchdog settings unreadable", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	every := interval / 2
	a.log.Debug("systemd watchdog enabled", "interval", interval)
	client := &http.Client{Transport: &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return a.dialUnix(ctx) },
		DisableKeepAlives: true,
	}}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if err := a.probe(client, every); err != nil {
			a.log.Warn("health probe failed; not pinging the systemd watchdog", "err", err)
		} else if _, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog); err != nil {
			a.log.Warn("sd_notify WATCHDOG=1 failed", "err", err)
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// probe asks the agent's own unix socket whether it is live.
func (a *Agent) probe(client *http.Client, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://edge-agent/v2/health/live", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v2/health/live: %s", resp.Status)
	}
	return nil
}
