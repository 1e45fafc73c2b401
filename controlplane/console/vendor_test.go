package console_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

// TestVendoredAssets: the browser libraries in static/vendor are byte
// for byte the files of the npm packages the lockfile pins, as
// scripts/npm-apps.sh console installs them (make console-assets copies
// them again).
func TestVendoredAssets(t *testing.T) {
	root := testenv.Root(t)
	if out, err := exec.Command(filepath.Join(root, "scripts/npm-apps.sh"), "--check", "console").CombinedOutput(); err != nil {
		t.Fatalf("the console's npm packages are not installed (run scripts/setup.sh test): %v\n%s", err, out)
	}
	modules := filepath.Join(root, ".cache/console-web/node_modules")
	if d := os.Getenv("EDGEFLEET_CONSOLE_WEB"); d != "" {
		modules = filepath.Join(d, "node_modules")
	}
	vendor := filepath.Join(root, "controlplane/console/static/vendor")
	for vendored, pkg := range map[string]string{
		"htmx.min.js":                   "htmx.org/dist/htmx.min.js",
		"sse.min.js":                    "htmx-ext-sse/dist/sse.min.js",
		"chart.umd.min.js":              "chart.js/dist/chart.umd.min.js",
		"licenses/htmx.org.LICENSE":     "htmx.org/LICENSE",
		"licenses/htmx-ext-sse.LICENSE": "htmx-ext-sse/LICENSE",
		"licenses/chart.js.LICENSE.md":  "chart.js/LICENSE.md",
	} {
		got, err := os.ReadFile(filepath.Join(vendor, vendored))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(modules, pkg))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("static/vendor/%s differs from the pinned package's %s: run make console-assets", vendored, pkg)
		}
	}
}
