package testenv

import (
	"testing"
	"time"
)

// WaitLimit bounds every wait of Eventually and EventuallyState. It is a
// safety net against a hang, never a measurement: what the tests wait
// for normally takes milliseconds, and a loaded machine (-race, every
// package at once) must never meet it by accident.
const WaitLimit = time.Minute

// pollInterval is how often Eventually asks again.
const pollInterval = 10 * time.Millisecond

// Eventually polls cond until it holds, failing tb ("timed out waiting
// for what") once WaitLimit has passed. cond runs on tb's goroutine, so
// it may fail tb itself.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	EventuallyState(tb, what, func() (bool, string) { return cond(), "" })
}

// EventuallyState is Eventually for a cond that also describes what it
// saw; the last description is in the failure.
func EventuallyState(tb testing.TB, what string, cond func() (ok bool, state string)) {
	tb.Helper()
	deadline := time.Now().Add(WaitLimit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if state != "" {
				tb.Fatalf("timed out waiting for %s; last state: %s", what, state)
			}
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(pollInterval)
	}
}
