package rollout

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/semver"

	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// Defaults filled in by Normalize.
const (
	DefaultWaveDeadline     = time.Hour
	DefaultLatencyBaseline  = 24 * time.Hour
	DefaultInstallMin       = 0.95
	DefaultInstallReports   = 80 // percent of a step's devices
	DefaultTelemetryReports = 50 // percent, for the other gates and experiments
)

// Limits on a spec.
const (
	MaxWaves   = 32
	MaxWindows = 32
	MaxNameLen = 256
)

var bundleNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ParseBundleID parses "name@version" (a semantic version without a
// leading v).
func ParseBundleID(s string) (protocol.BundleID, error) {
	name, version, ok := strings.Cut(s, "@")
	if !ok {
		return protocol.BundleID{}, fmt.Errorf("must be name@version (e.g. silero-vad@1.4.0), got %q", s)
	}
	if !bundleNameRE.MatchString(name) {
		return protocol.BundleID{}, fmt.Errorf("bundle name %q: must be 1 to 64 characters of [a-z0-9._-], starting with a letter or digit", name)
	}
	if version == "" || len(version) > 64 || version[0] == 'v' || !semver.IsValid("v"+version) ||
		strings.Count(strings.SplitN(strings.SplitN(version, "+", 2)[0], "-", 2)[0], ".") != 2 {
		return protocol.BundleID{}, fmt.Errorf("version %q: must be a semantic version like 1.4.0 (no leading v)", version)
	}
	return protocol.BundleID{Name: name, Version: version}, nil
}

// Validate checks s on its own (Engine.Plan also checks it against the
// fleet and the registry). Every problem is reported, each a *FieldError
// naming the field; errors.Is(err, ErrInvalid) holds.
func (s *Spec) Validate() error {
	var l errorList
	s.validate(&l)
	return l.err()
}

// validate reports every problem of s into l.
func (s *Spec) validate(l *errorList) {
	kind := s.Kind
	switch kind {
	case "", KindRollout:
		kind = KindRollout
	case KindExperiment:
	default:
		l.add("kind", "must be %q or %q, got %q", KindRollout, KindExperiment, s.Kind)
	}
	if len(s.Name) > MaxNameLen || !utf8.ValidString(s.Name) {
		l.add("name", "must be valid UTF-8 text of at most %d bytes", MaxNameLen)
	}
	if _, err := inventory.ParseSelector(s.Target); err != nil {
		l.add("target", "%s", strings.TrimPrefix(err.Error(), inventory.ErrSelector.Error()+": "))
	}
	if s.WaveDeadline < 0 {
		l.add("waveDeadline", "must not be negative, got %s", s.WaveDeadline)
	}
	if kind == KindRollout {
		s.validateRollout(l)
	} else {
		s.validateExperiment(l)
	}
	s.Gates.validate(l, kind, s.Shadow != nil)
	s.Limits.validate(l)
}

func (s *Spec) validateRollout(l *errorList) {
	if s.Bundle == "" {
		l.add("bundle", "required (name@version)")
	} else if _, err := ParseBundleID(s.Bundle); err != nil {
		l.add("bundle", "%s", err)
	}
	if s.Experiment != nil {
		l.add("experiment", "only for kind %q", KindExperiment)
	}
	switch {
	case len(s.Waves) == 0:
		l.add("waves", "at least one wave is required (e.g. count: 1, then percent: 100)")
	case len(s.Waves) > MaxWaves:
		l.add("waves", "%d waves, the limit is %d", len(s.Waves), MaxWaves)
	}
	lastPct, lastPctAt, lastCount, lastCountAt := 0.0, -1, 0, -1
	for i, w := range s.Waves {
		p := fmt.Sprintf("waves[%d]", i)
		if len(w.Name) > MaxNameLen || !utf8.ValidString(w.Name) {
			l.add(p+".name", "must be valid UTF-8 text of at most %d bytes", MaxNameLen)
		}
		checkShare(l, p, w.Percent, w.Count, w.MinDevices, w.Bake)
		if w.Percent != nil && *w.Percent > 0 && *w.Percent <= 100 {
			if lastPctAt >= 0 && *w.Percent <= lastPct {
				l.add(p+".percent", "must be above the %v%% of waves[%d]: waves are cumulative and must grow", lastPct, lastPctAt)
			}
			lastPct, lastPctAt = *w.Percent, i
		}
		if w.Count != nil && *w.Count >= 1 {
			if lastCountAt >= 0 && *w.Count <= lastCount {
				l.add(p+".count", "must be above the %d of waves[%d]: waves are cumulative and must grow", lastCount, lastCountAt)
			}
			lastCount, lastCountAt = *w.Count, i
		}
	}
	if sh := s.Shadow; sh != nil {
		checkShare(l, "shadow", sh.Percent, sh.Count, sh.MinDevices, sh.Bake)
	}
}

func (s *Spec) validateExperiment(l *errorList) {
	if s.Bundle != "" {
		l.add("bundle", "not used by kind %q: name the versions in experiment.arms", KindExperiment)
	}
	if len(s.Waves) > 0 {
		l.add("waves", "not used by kind %q (promote the winner into a rollout to use waves)", KindExperiment)
	}
	if s.Shadow != nil {
		l.add("shadow", "not used by kind %q", KindExperiment)
	}
	x := s.Experiment
	if x == nil {
		l.add("experiment", "required for kind %q (arms and duration)", KindExperiment)
		return
	}
	if len(x.Arms) != 2 {
		l.add("experiment.arms", "exactly two arms are required, got %d", len(x.Arms))
	}
	checkQuota(l, "experiment.minReports", x.MinReports)
	if x.Duration <= 0 {
		l.add("experiment.duration", "required: how long both arms run (e.g. 24h)")
	}
	total, allPct := 0.0, true
	seen := map[string]int{}
	for i, a := range x.Arms {
		p := fmt.Sprintf("experiment.arms[%d]", i)
		if len(a.Name) > MaxNameLen || !utf8.ValidString(a.Name) {
			l.add(p+".name", "must be valid UTF-8 text of at most %d bytes", MaxNameLen)
		}
		if a.Bundle == "" {
			l.add(p+".bundle", "required (name@version)")
		} else if _, err := ParseBundleID(a.Bundle); err != nil {
			l.add(p+".bundle", "%s", err)
		} else if j, dup := seen[a.Bundle]; dup {
			l.add(p+".bundle", "%s is already arm %d: the arms must run different versions", a.Bundle, j)
		} else {
			seen[a.Bundle] = i
		}
		name := armName(x, i)
		for j := range i {
			if armName(x, j) == name {
				l.add(p+".name", "%q is already the name of arm %d", name, j)
			}
		}
		checkShare(l, p, a.Percent, a.Count, 0, 0)
		if a.Percent != nil && finite(*a.Percent) {
			total += *a.Percent
		} else if a.Percent == nil {
			allPct = false
		}
	}
	if allPct && total > 100 {
		l.add("experiment.arms", "the arms' percentages add up to %v, more than 100", total)
	}
}

// armName returns arm i's name or its default ("a", "b").
func armName(x *Experiment, i int) string {
	if x.Arms[i].Name != "" {
		return x.Arms[i].Name
	}
	return string(rune('a' + i))
}

func checkShare(l *errorList, p string, pct *float64, count *int, minDevices int, bake Duration) {
	switch {
	case pct != nil && !finite(*pct):
		l.add(p+".percent", "must be a finite number, got %v", *pct)
	case pct == nil && count == nil:
		l.add(p, "one of percent or count is required")
	case pct != nil && count != nil:
		l.add(p, "percent and count are exclusive: set one")
	case pct != nil && (*pct <= 0 || *pct > 100):
		l.add(p+".percent", "must be in (0,100], got %v", *pct)
	case count != nil && *count < 1:
		l.add(p+".count", "must be at least 1, got %d", *count)
	}
	if minDevices < 0 {
		l.add(p+".minDevices", "must not be negative, got %d", minDevices)
	}
	if bake < 0 {
		l.add(p+".bake", "must not be negative, got %s", bake)
	}
}

// finite reports whether v is a number (YAML reads .nan and .inf too).
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func checkQuota(l *errorList, p string, q *Quota) {
	if q == nil {
		return
	}
	if q.Percent != 0 {
		if q.N != 0 || !(q.Percent > 0 && q.Percent <= 100) {
			l.add(p, "a percentage must be in (0,100]%%, got %v%%", q.Percent)
		}
	} else if q.N < 1 {
		l.add(p, "must be at least 1 device (or a percentage), got %d", q.N)
	}
}

func (g *Gates) validate(l *errorList, kind Kind, shadow bool) {
	ratio := func(p string, v *float64, required bool) {
		switch {
		case v != nil && !finite(*v):
			l.add(p, "must be a finite number, got %v", *v)
		case v == nil && required:
			l.add(p, "required")
		case v != nil && (*v < 0 || *v > 1):
			l.add(p, "must be a ratio in [0,1], got %v", *v)
		}
	}
	if g.InstallSuccess != nil {
		ratio("gates.installSuccess.min", g.InstallSuccess.Min, false)
		checkQuota(l, "gates.installSuccess.minReports", g.InstallSuccess.MinReports)
	}
	if g.ErrorRate != nil {
		checkQuota(l, "gates.errorRate.minReports", g.ErrorRate.MinReports)
	}
	if g.LatencyP95 != nil {
		checkQuota(l, "gates.latencyP95.minReports", g.LatencyP95.MinReports)
	}
	if g.Drift != nil {
		checkQuota(l, "gates.drift.minReports", g.Drift.MinReports)
	}
	if g.ShadowAgreement != nil {
		checkQuota(l, "gates.shadowAgreement.minReports", g.ShadowAgreement.MinReports)
	}
	if kind == KindExperiment {
		for _, n := range []struct {
			name string
			set  bool
		}{
			{"errorRate", g.ErrorRate != nil}, {"latencyP95", g.LatencyP95 != nil},
			{"drift", g.Drift != nil}, {"shadowAgreement", g.ShadowAgreement != nil},
		} {
			if n.set {
				l.add("gates."+n.name, "not evaluated in experiments: the comparison reports error rate, latency and outputs (only installSuccess guards an experiment)")
			}
		}
		return
	}
	if g.ErrorRate != nil {
		ratio("gates.errorRate.max", g.ErrorRate.Max, true)
	}
	if lg := g.LatencyP95; lg != nil {
		switch {
		case lg.MaxRatio == nil:
			l.add("gates.latencyP95.maxRatio", "required (e.g. 1.2: at most 20%% slower than the previous version)")
		case !finite(*lg.MaxRatio):
			l.add("gates.latencyP95.maxRatio", "must be a finite number, got %v", *lg.MaxRatio)
		case *lg.MaxRatio <= 0:
			l.add("gates.latencyP95.maxRatio", "must be above 0, got %v", *lg.MaxRatio)
		}
		if lg.Baseline < 0 {
			l.add("gates.latencyP95.baseline", "must not be negative, got %s", lg.Baseline)
		}
	}
	if d := g.Drift; d != nil {
		switch {
		case d.MaxScore == nil:
			l.add("gates.drift.maxScore", "required")
		case !finite(*d.MaxScore):
			l.add("gates.drift.maxScore", "must be a finite number, got %v", *d.MaxScore)
		case *d.MaxScore < 0:
			l.add("gates.drift.maxScore", "must not be negative, got %v", *d.MaxScore)
		}
	}
	if sa := g.ShadowAgreement; sa != nil {
		ratio("gates.shadowAgreement.min", sa.Min, true)
		if !shadow {
			l.add("gates.shadowAgreement", "needs a shadow step (shadow:) to be evaluated on")
		}
	}
}

func (lm *Limits) validate(l *errorList) {
	if lm.MaxConcurrentDownloads < 0 {
		l.add("limits.maxConcurrentDownloads", "must not be negative, got %d", lm.MaxConcurrentDownloads)
	}
	if len(lm.MaintenanceWindows) > MaxWindows {
		l.add("limits.maintenanceWindows", "%d windows, the limit is %d", len(lm.MaintenanceWindows), MaxWindows)
	}
	for i, w := range lm.MaintenanceWindows {
		p := fmt.Sprintf("limits.maintenanceWindows[%d]", i)
		if _, err := inventory.ParseSelector(w.Selector); err != nil {
			l.add(p+".selector", "%s", strings.TrimPrefix(err.Error(), inventory.ErrSelector.Error()+": "))
		}
		for _, c := range []struct {
			name string
			t    *ClockTime
		}{{"start", w.Start}, {"end", w.End}} {
			switch {
			case c.t == nil:
				l.add(p+"."+c.name, "required (\"HH:MM\", UTC)")
			case c.t.Minute < 0 || c.t.Minute >= 24*60:
				l.add(p+"."+c.name, "must be a time of day, got minute %d", c.t.Minute)
			}
		}
		if w.Start != nil && w.End != nil && *w.Start == *w.End {
			l.add(p+".end", "must differ from start (%s): the window would be empty", w.Start)
		}
	}
}

// Normalize returns a copy of s with every default filled in (kind,
// waveDeadline, the installSuccess gate, minReports, the latency
// baseline, rollback.auto, wave and arm names): what is stored and shown.
// s must be valid.
func (s *Spec) Normalize() *Spec {
	n := s.clone()
	if n.Kind == "" {
		n.Kind = KindRollout
	}
	if n.WaveDeadline == 0 {
		n.WaveDeadline = Duration(DefaultWaveDeadline)
	}
	g := &n.Gates
	if g.InstallSuccess == nil {
		g.InstallSuccess = &RatioGate{}
	}
	if g.InstallSuccess.Min == nil {
		g.InstallSuccess.Min = new(float64(DefaultInstallMin))
	}
	if g.InstallSuccess.MinReports == nil {
		g.InstallSuccess.MinReports = &Quota{Percent: DefaultInstallReports}
	}
	def := func(q **Quota) {
		if *q == nil {
			*q = &Quota{Percent: DefaultTelemetryReports}
		}
	}
	if g.ErrorRate != nil {
		def(&g.ErrorRate.MinReports)
	}
	if g.LatencyP95 != nil {
		def(&g.LatencyP95.MinReports)
		if g.LatencyP95.Baseline == 0 {
			g.LatencyP95.Baseline = Duration(DefaultLatencyBaseline)
		}
	}
	if g.Drift != nil {
		def(&g.Drift.MinReports)
	}
	if g.ShadowAgreement != nil {
		def(&g.ShadowAgreement.MinReports)
	}
	if n.Rollback.Auto == nil {
		n.Rollback.Auto = new(true)
	}
	for i := range n.Waves {
		if n.Waves[i].Name == "" {
			n.Waves[i].Name = fmt.Sprintf("wave %d", i+1)
		}
	}
	if x := n.Experiment; x != nil {
		def(&x.MinReports)
		for i := range x.Arms {
			x.Arms[i].Name = armName(x, i)
		}
	}
	return n
}

// clone deep-copies s (through its JSON form, which covers every field).
func (s *Spec) clone() *Spec { return deepCopy(s, "a spec") }
