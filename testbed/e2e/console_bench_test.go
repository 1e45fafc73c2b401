package e2e_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/edgefleet/edgefleet/testbed/browser"
	"github.com/edgefleet/edgefleet/testbed/fleet"
)

var consoleDevices = flag.Int("console.devices", 10000, "simulated devices of BenchmarkConsoleDevices")

// BenchmarkConsoleDevices: with 10,000 simulated devices online, how
// long the console's device list (its first page of 50) and fleet page
// take in Debian's chromium, from navigation until the rows are on
// screen (testdata/console_devices.mjs: five loads each, the median).
func BenchmarkConsoleDevices(b *testing.B) {
	n := *consoleDevices
	f := fleet.Start(b, fleet.Options{Artifacts: fleet.TestArtifacts(b)})
	startSimFleet(b, f, n, "silero-vad@1.0.0")
	env := map[string]string{"URL": f.URL(), "OPERATOR_TOKEN": f.OperatorToken, "DEVICES": strconv.Itoa(n)}
	for b.Loop() {
		browser.Run(b, "testdata/console_devices.mjs", env)
	}
	var got struct {
		DevicesMs, DevicesMaxMs, FleetMs, FleetMaxMs, DevicesServerMs float64
	}
	raw, err := os.ReadFile(filepath.Join(browser.Artifacts(b), "timing.json"))
	if err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(got.DevicesMs, "ms/devices-page")
	b.ReportMetric(got.DevicesServerMs, "ms/devices-page-server")
	b.ReportMetric(got.FleetMs, "ms/fleet-page")
	b.Logf("%d devices: device list first page %.0f ms (max %.0f; the server's part %.0f ms), fleet page %.0f ms (max %.0f)",
		n, got.DevicesMs, got.DevicesMaxMs, got.DevicesServerMs, got.FleetMs, got.FleetMaxMs)
}
