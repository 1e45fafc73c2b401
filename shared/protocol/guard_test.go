package protocol

import (
	"errors"
	"testing"
	"time"
)

func desired(seq uint64, issued time.Time, ttl time.Duration) *DesiredState {
	return &DesiredState{
		V: 1, DeviceID: "d1", Seq: seq, IssuedAt: issued, ExpiresAt: issued.Add(ttl),
		Action: ActionInstall, Bundle: exampleBundle(),
	}
}

func TestGuard(t *testing.T) {
	now := t0
	day := 24 * time.Hour
	for _, c := range []struct {
		name    string
		g       Guard
		d       *DesiredState
		now     time.Time
		want    error
		wantSeq uint64
	}{
		{"first", Guard{}, desired(1, now, day), now, nil, 1},
		{"newer", Guard{LastSeq: 5}, desired(6, now, day), now, nil, 6},
		{"jump", Guard{LastSeq: 5}, desired(1000, now, day), now, nil, 1000},
		{"same seq", Guard{LastSeq: 5}, desired(5, now, day), now, ErrDuplicate, 5},
		{"older", Guard{LastSeq: 5}, desired(4, now, day), now, ErrReplay, 5},
		{"expired", Guard{LastSeq: 5}, desired(6, now.Add(-2*day), day), now, ErrExpired, 5},
		{"expires exactly now", Guard{}, desired(6, now.Add(-day), day), now, ErrExpired, 0},
		{"just before expiry", Guard{}, desired(6, now.Add(-day), day), now.Add(-time.Nanosecond), nil, 6},
		{"future within skew", Guard{}, desired(6, now.Add(4*time.Minute), day), now, nil, 6},
		{"future beyond skew", Guard{}, desired(6, now.Add(6*time.Minute), day), now, ErrNotYetValid, 0},
		{"custom skew", Guard{MaxSkew: time.Hour}, desired(6, now.Add(59*time.Minute), day), now, nil, 6},
		{"no skew", Guard{MaxSkew: -1}, desired(6, now.Add(time.Second), day), now, ErrNotYetValid, 0},
		{"right device", Guard{DeviceID: "d1"}, desired(6, now, day), now, nil, 6},
		{"wrong device", Guard{DeviceID: "d2"}, desired(6, now, day), now, ErrWrongDevice, 0},
		{"invalid", Guard{}, &DesiredState{V: 1, DeviceID: "d1"}, now, ErrInvalid, 0},
		{"nil", Guard{}, nil, now, ErrInvalid, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := c.g
			before := g.LastSeq
			if err := g.Check(c.d, c.now); !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
				t.Fatalf("Check = %v, want %v", err, c.want)
			}
			if g.LastSeq != before {
				t.Fatal("Check changed LastSeq")
			}
			err := g.Accept(c.d, c.now)
			if !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
				t.Fatalf("Accept = %v, want %v", err, c.want)
			}
			if c.want == nil && g.LastSeq != c.wantSeq || c.want != nil && g.LastSeq != before {
				t.Fatalf("LastSeq = %d after %v", g.LastSeq, err)
			}
		})
	}
}

func TestGuardDuplicateIsReplay(t *testing.T) {
	g := Guard{}
	d := desired(3, t0, time.Hour)
	if err := g.Accept(d, t0); err != nil {
		t.Fatal(err)
	}
	err := g.Accept(d, t0)
	if !errors.Is(err, ErrDuplicate) || !errors.Is(err, ErrReplay) {
		t.Fatalf("redelivery: %v; want ErrDuplicate, which is also ErrReplay", err)
	}
	if ReasonOf(err) != ReasonDuplicate {
		t.Fatalf("reason %q", ReasonOf(err))
	}
}
