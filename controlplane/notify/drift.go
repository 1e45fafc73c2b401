package notify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DriftWindow is one drift window a device reported (a "drift" record).
type DriftWindow struct {
	Device string
	// Bundle is the version the window is of, "name@version".
	Bundle string
	// Labels are the device's labels.
	Labels     map[string]string
	Start, End time.Time
	// Score is the window's drift score (nil: no feature had enough
	// values to be tested; the window neither continues nor ends an
	// episode).
	Score *float64
	// Drifted names the drifted features.
	Drifted []string
}

// driftState is a device's episode of one bundle, as stored.
type driftState struct {
	// Last is the end of the latest window counted: a window ending no
	// later (a duplicate, or late) is not counted again.
	Last time.Time `json:"last"`
	// Run counts the drifted windows in a row; Start is the first's.
	Run   int       `json:"run"`
	Start time.Time `json:"start,omitzero"`
	// Scores are the run's latest scores (at most DriftWindows);
	// Features count, per feature, the run's windows it drifted in.
	Scores   []float64      `json:"scores,omitempty"`
	Features map[string]int `json:"features,omitempty"`
	// Emitted: this run's event was queued.
	Emitted bool `json:"emitted,omitempty"`
}

// maxFeatures bounds the features an episode counts.
const maxFeatures = 256

// ObserveDrift counts device drift windows towards drift episodes, in
// one transaction, and queues TypeDriftPersisted when DriftWindows
// windows in a row have drifted: once per episode, again only after a
// window that did not drift ended it. Windows must come in order per
// device and bundle (as the devices' outboxes send them); one that ends
// no later than the last counted is skipped, so a batch delivered twice
// counts once.
func (s *Service) ObserveDrift(ws []DriftWindow) error {
	if len(ws) == 0 || !s.Wants(TypeDriftPersisted) {
		return nil
	}
	return s.update(func(tx *bolt.Tx) error {
		b := sub(tx, bucketDrift)
		for _, w := range ws {
			key := []byte(w.Device + "\x00" + w.Bundle)
			var st driftState
			if v := b.Get(key); v != nil {
				if err := json.Unmarshal(v, &st); err != nil {
					return fmt.Errorf("notify: decoding the drift state of %s %s: %w", w.Device, w.Bundle, err)
				}
			}
			if !w.End.After(st.Last) {
				continue
			}
			st.Last = w.End
			switch {
			case w.Score == nil:
			case *w.Score < s.cfg.DriftShare:
				st = driftState{Last: w.End}
			default:
				if st.Run == 0 {
					st.Start, st.Features = w.Start, map[string]int{}
				}
				st.Run++
				st.Scores = append(st.Scores, *w.Score)
				if len(st.Scores) > s.cfg.DriftWindows {
					st.Scores = st.Scores[len(st.Scores)-s.cfg.DriftWindows:]
				}
				for _, f := range w.Drifted {
					if _, ok := st.Features[f]; ok || len(st.Features) < maxFeatures {
						st.Features[f]++
					}
				}
				if st.Run >= s.cfg.DriftWindows && !st.Emitted {
					st.Emitted = true
					if err := s.AddTx(tx, s.driftEvent(w, &st)); err != nil {
						return err
					}
				}
			}
			v, _ := json.Marshal(st)
			if err := b.Put(key, v); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *Service) driftEvent(w DriftWindow, st *driftState) Event {
	name, version, _ := strings.Cut(w.Bundle, "@")
	scores := map[string]float64{}
	for f, n := range st.Features {
		scores[f] = float64(n) / float64(st.Run)
	}
	d := DriftData{Device: w.Device, Bundle: w.Bundle, BundleName: name, Version: version,
		Windows: st.Run, Since: st.Start.UTC(), Until: w.End.UTC(), Scores: st.Scores, DriftShare: s.cfg.DriftShare,
		FeatureScores: scores, Labels: w.Labels}
	data, _ := json.Marshal(d)
	h := sha256.Sum256([]byte(w.Device + "\x00" + w.Bundle + "\x00" + st.Start.UTC().Format(time.RFC3339Nano)))
	return Event{ID: "drift-" + hex.EncodeToString(h[:12]), Type: TypeDriftPersisted, Source: s.Source("devices"),
		Subject: w.Device, Time: w.End, Bundles: []string{w.Bundle}, Labels: w.Labels, Data: data}
}
