package agent

import (
	"log/slog"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/config"
)

// TestShadowSettings: the shadow options default to the configuration's
// shadow settings (whose defaults are the package's), and an option
// overrides them.
func TestShadowSettings(t *testing.T) {
	if DefaultShadowRate != config.DefaultShadowSampleRate || DefaultShadowWindow != config.DefaultShadowWindow || DefaultShadowQueue != config.DefaultShadowQueue {
		t.Errorf("shadow defaults: the agent's %v %v %d, the configuration's %v %v %d",
			DefaultShadowRate, DefaultShadowWindow, DefaultShadowQueue, config.DefaultShadowSampleRate, config.DefaultShadowWindow, config.DefaultShadowQueue)
	}
	log := slog.New(slog.DiscardHandler)
	cfg := config.Default()
	a, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if o := a.opts.shadow; o.rate != DefaultShadowRate || o.window != DefaultShadowWindow || o.queue != DefaultShadowQueue {
		t.Errorf("with the default configuration: %+v", o)
	}
	cfg.Shadow = config.Shadow{SampleRate: 0.5, Window: config.Duration(10 * time.Second), Queue: 8}
	if a, err = New(cfg, log); err != nil {
		t.Fatal(err)
	}
	if o := a.opts.shadow; o.rate != 0.5 || o.window != 10*time.Second || o.queue != 8 {
		t.Errorf("with shadow settings: %+v", o)
	}
	if a, err = New(cfg, log, WithShadowRate(1), WithShadowQueue(2)); err != nil {
		t.Fatal(err)
	}
	if o := a.opts.shadow; o.rate != 1 || o.window != 10*time.Second || o.queue != 2 {
		t.Errorf("with options over the settings: %+v", o)
	}
	cfg.Shadow.Queue = 0
	if _, err := New(cfg, log); err == nil {
		t.Error("New accepted shadow.queue 0")
	}
}
