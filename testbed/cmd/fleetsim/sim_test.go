package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/testbed/fleet"
)

// TestRun simulates a small fleet for a moment: every device connects,
// takes the bundle, answers predictions, and fleetd ends up with every
// record each agent appended, once.
func TestRun(t *testing.T) {
	c := simConfig{
		Devices: 4, Duration: 2 * time.Second, Rate: 5, SampleRate: 1, MetricsInterval: time.Second,
		Progress: time.Second, DrainTimeout: time.Minute, Dir: t.TempDir(), Broker: "embedded", Registry: "files",
		Prefix: "sim-", Version: "1.2.3", Logger: slog.New(slog.DiscardHandler), Artifacts: fleet.TestArtifacts(t),
	}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s, err := run(t.Context(), c, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if s.OnlineAtEnd != 4 || !s.ExactlyOnce || s.Predictions == 0 || s.PredictionErrors != 0 || s.Appended == 0 ||
		s.Delivered != s.Appended || s.ModelsLoaded != 1 {
		t.Fatalf("summary %+v", s)
	}
	var text, js bytes.Buffer
	if err := s.print(&text, false); err != nil || !strings.Contains(text.String(), "exactly once               yes") {
		t.Errorf("text summary (%v):\n%s", err, text.String())
	}
	if err := s.print(&js, true); err != nil {
		t.Fatal(err)
	}
	var back summary
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Delivered != s.Delivered {
		t.Errorf("JSON summary %s: %v", js.String(), err)
	}
}

// TestFlags checks that bad flags are refused with the flag named.
func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"-help"}, 0},
		{[]string{"-devices", "0"}, 2},
		{[]string{"-sample", "1.5"}, 2},
		{[]string{"-broker", "rabbit"}, 2},
		{[]string{"-server", "http://x"}, 2},
		{[]string{"-token-file", "t"}, 2},
		{[]string{"extra"}, 2},
		{[]string{"-log-level", "loud"}, 2},
	} {
		if code := realMain(tc.args); code != tc.code {
			t.Errorf("fleetsim %v: exit %d, want %d", tc.args, code, tc.code)
		}
	}
}
