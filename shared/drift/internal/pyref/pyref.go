// Package pyref runs shared/drift/testdata/reference.py, the SciPy
// reference the drift tests compare against. It is test support: a
// missing Python or SciPy fails the test with the package to install.
package pyref

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

// Python returns a python3 that imports scipy and numpy: $EDGEFLEET_PYTHON
// if set, else python3 on $PATH, else /usr/bin/python3 (Debian's, which
// python3-scipy installs into, when $PATH leads to another Python first).
func Python(tb testing.TB) string {
	tb.Helper()
	var tried []string
	cands := []string{os.Getenv("EDGEFLEET_PYTHON"), "python3", "/usr/bin/python3"}
	for _, c := range cands {
		if c == "" {
			continue
		}
		p, err := exec.LookPath(c)
		if err != nil {
			tried = append(tried, c+": "+err.Error())
			continue
		}
		out, err := exec.Command(p, "-c", "import numpy, scipy.stats, scipy.spatial; print(scipy.__version__)").CombinedOutput()
		if err != nil {
			tried = append(tried, p+": "+string(bytes.TrimSpace(out)))
			continue
		}
		return p
	}
	tb.Fatalf("pyref: no python3 with numpy and scipy (install them: apt-get install python3-scipy; or set EDGEFLEET_PYTHON); tried %q", tried)
	return ""
}

// Run writes cases as JSON to a temporary file, runs reference.py on it
// and decodes what it prints into out.
func Run(tb testing.TB, cases any, out any) {
	tb.Helper()
	py := Python(tb)
	script := filepath.Join(testenv.Root(tb), "shared", "drift", "testdata", "reference.py")
	in := filepath.Join(tb.TempDir(), "cases.json")
	b, err := json.Marshal(cases)
	if err != nil {
		tb.Fatalf("pyref: encoding cases: %v", err)
	}
	if err := os.WriteFile(in, b, 0o600); err != nil {
		tb.Fatalf("pyref: %v", err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(py, script, in)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("pyref: %s %s: %v\n%s", py, script, err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		tb.Fatalf("pyref: decoding the output of %s: %v\n%.2000s", script, err, stdout.String())
	}
}
