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

// The cases reference.py takes: a list of any of these, each with its
// Kind, in the JSON Run writes.

// Numerical compares two samples binned at Edges (Kind "numerical").
type Numerical struct {
	Kind      string    `json:"kind"`
	Reference []float64 `json:"reference"`
	Current   []float64 `json:"current"`
	Edges     []float64 `json:"edges"`
}

// Categorical compares two samples of labels over Categories, the rest
// counted as "other" (Kind "categorical").
type Categorical struct {
	Kind       string   `json:"kind"`
	Reference  []string `json:"reference"`
	Current    []string `json:"current"`
	Categories []string `json:"categories"`
}

// Grid asks for a survival function at X: Kind "kstwo" (Kolmogorov, N
// samples) or "chi2" (chi-squared, DF degrees of freedom).
type Grid struct {
	Kind string    `json:"kind"`
	N    int64     `json:"n,omitempty"`
	DF   int       `json:"df,omitempty"`
	X    []float64 `json:"x"`
}

// Result is reference.py's answer to one case, in the case's order; each
// kind of case fills its own fields.
type Result struct {
	// Numerical: the two-sample K-S statistic, its p-value (SciPy's
	// method "auto") and asymptotic p-value; the Wasserstein distance,
	// raw and over the reference's standard deviation.
	KS              float64 `json:"ks"`
	KSP             float64 `json:"ks_p"`
	KSPAsymp        float64 `json:"ks_p_asymp"`
	Wasserstein     float64 `json:"wasserstein"`
	WassersteinNorm float64 `json:"wasserstein_norm"`
	// Categorical: Pearson's chi-squared statistic and its p-value.
	ChiSquare  float64 `json:"chisquare"`
	ChiSquareP float64 `json:"chisquare_p"`
	// Numerical and categorical: PSI, Jensen-Shannon distance and the bin
	// counts both were computed on.
	PSI       float64   `json:"psi"`
	JS        float64   `json:"js"`
	RefCounts []float64 `json:"ref_counts"`
	CurCounts []float64 `json:"cur_counts"`
	// Grid: the survival function at each X.
	SF []float64 `json:"sf"`
}
