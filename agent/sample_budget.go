package agent

// The data sampling budget (the served bundle's sampling.maxBytesPerDay):
// the bytes spent per bundle version and UTC day, kept in
// DATA/sample-budget.json so that an agent restart, or a crash loop, does
// not start the day's budget afresh, and per version so that serving two
// versions in turn (a rollback and back, an A/B switch) does not either.
//
// The file is written ahead of the spend: when the bytes appended for a
// version on a day pass what the file says, it is rewritten (atomically)
// to say a 16th of the budget more, before the sample is appended. So the
// file is written at most about 16 times per version and day, off the
// request path (on the sampler's encoder goroutine), and after a crash the
// agent carries on from what the file says: it never re-spends a byte, and
// leaves at most a 16th of the day's budget unspent per crash. stop writes
// the exact spend.

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/shared/atomicfile"
)

// SampleBudgetFile, under the data directory, is the data sampling
// budget's spend per bundle version and UTC day.
const SampleBudgetFile = "sample-budget.json"

const (
	sampleBudgetSchema = 1
	// sampleBudgetChunks: the file says up to a sampleBudgetChunks'th of
	// the budget more than was spent.
	sampleBudgetChunks = 16
)

// sampleBudgetState is DATA/sample-budget.json.
type sampleBudgetState struct {
	SchemaVersion int                 `json:"schemaVersion"`
	Spent         []sampleBudgetEntry `json:"spent"`
}

type sampleBudgetEntry struct {
	Bundle string `json:"bundle"` // NAME@VERSION
	Day    string `json:"day"`    // YYYY-MM-DD, UTC
	Bytes  int64  `json:"bytes"`
}

// budgetKey is a bundle version's budget on a UTC day (YYYY-MM-DD).
type budgetKey struct{ id, day string }

type budgetSpend struct {
	used  int64 // bytes appended (restored from the file: what it said)
	saved int64 // what the file says (or is to say), at least used
}

// sampleBudget is the spend of the days around the latest request's; the
// sampler's mu guards it.
type sampleBudget struct {
	log   *slog.Logger
	path  string // "": kept in memory only
	spent map[budgetKey]*budgetSpend
	// last is the latest day accounted and the version last accounted
	// (for stats).
	last    budgetKey
	failing bool // the last write failed (logged once until one succeeds)
}

// attach loads the spend saved at path, which the budget keeps from then
// on; once. A file that cannot be read or parsed is logged and the budget
// starts from nothing spent: the file is only ever replaced atomically, so
// that takes a damaged disk or an edit by hand, and it costs at most one
// day's budget once, where counting the day as spent would stop every
// version's sampling for the day without anyone asking for it.
func (b *sampleBudget) attach(path string) {
	if b.path != "" || path == "" {
		return
	}
	b.path = path
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var st sampleBudgetState
	if err == nil {
		st, err = parseSampleBudget(data)
	}
	if err != nil {
		b.log.Warn("data sample budget state unusable: counting today's budget from zero", "file", path, "err", err)
		return
	}
	for _, e := range st.Spent {
		k := budgetKey{e.Bundle, e.Day}
		sp := b.entry(k)
		sp.used, sp.saved = max(sp.used, e.Bytes), max(sp.saved, e.Bytes)
		if k.day >= b.last.day {
			b.last = k
		}
	}
}

func parseSampleBudget(data []byte) (sampleBudgetState, error) {
	var st sampleBudgetState
	if err := json.Unmarshal(data, &st); err != nil {
		return st, err
	}
	if st.SchemaVersion != sampleBudgetSchema {
		return st, fmt.Errorf("schemaVersion %d, want %d", st.SchemaVersion, sampleBudgetSchema)
	}
	for i, e := range st.Spent {
		if _, err := time.Parse(time.DateOnly, e.Day); err != nil || e.Bundle == "" || e.Bytes < 0 {
			return st, fmt.Errorf("spent[%d] %+v: want a bundle, a YYYY-MM-DD day and bytes >= 0", i, e)
		}
	}
	return st, nil
}

func (b *sampleBudget) entry(k budgetKey) *budgetSpend {
	if b.spent == nil {
		b.spent = make(map[budgetKey]*budgetSpend)
	}
	sp := b.spent[k]
	if sp == nil {
		sp = &budgetSpend{}
		b.spent[k] = sp
	}
	return sp
}

// take spends n bytes of bundle id's budget limit on at's UTC day, saving
// ahead of the spend; false if they do not fit. It forgets the days that
// are not at's or next to it (next to it: requests on both sides of
// midnight reach the encoder in any order).
func (b *sampleBudget) take(id string, at time.Time, n, limit int64) bool {
	at = at.UTC()
	day := at.Format(time.DateOnly)
	from, to := at.AddDate(0, 0, -1).Format(time.DateOnly), at.AddDate(0, 0, 1).Format(time.DateOnly)
	for k := range b.spent {
		if k.day < from || k.day > to {
			delete(b.spent, k)
		}
	}
	k := budgetKey{id, day}
	b.last.id = id
	if day >= b.last.day {
		b.last.day = day
	}
	sp := b.entry(k)
	if sp.used+n > limit {
		return false
	}
	sp.used += n
	if b.path != "" && sp.used > sp.saved {
		prev := sp.saved
		sp.saved = min(limit, sp.used+limit/sampleBudgetChunks)
		if !b.save() {
			sp.saved = prev // tried again with the next sample
		}
	}
	return true
}

// refund gives back n bytes taken on day that were not appended after
// all (the file keeps saying what it said).
func (b *sampleBudget) refund(id, day string, n int64) {
	if sp := b.spent[budgetKey{id, day}]; sp != nil {
		sp.used = max(0, sp.used-n)
	}
}

// flush saves the exact spend (stop).
func (b *sampleBudget) flush() {
	if b.path == "" {
		return
	}
	ahead := make(map[budgetKey]int64)
	for k, sp := range b.spent {
		if sp.saved != sp.used {
			ahead[k], sp.saved = sp.saved, sp.used
		}
	}
	if len(ahead) > 0 && !b.save() {
		for k, saved := range ahead {
			b.spent[k].saved = saved
		}
	}
}

// save writes what the spend entries say is saved; false on an error
// (logged once until a write succeeds).
func (b *sampleBudget) save() bool {
	st := sampleBudgetState{SchemaVersion: sampleBudgetSchema, Spent: make([]sampleBudgetEntry, 0, len(b.spent))}
	for k, sp := range b.spent {
		st.Spent = append(st.Spent, sampleBudgetEntry{Bundle: k.id, Day: k.day, Bytes: sp.saved})
	}
	slices.SortFunc(st.Spent, func(x, y sampleBudgetEntry) int {
		if c := strings.Compare(x.Day, y.Day); c != 0 {
			return c
		}
		return strings.Compare(x.Bundle, y.Bundle)
	})
	data, err := json.Marshal(st)
	if err == nil {
		err = atomicfile.WriteFile(b.path, append(data, '\n'), 0o600)
	}
	if err != nil {
		if !b.failing {
			b.log.Warn("data sample budget not saved: an agent restart may spend today's budget again", "file", b.path, "err", err)
		}
		b.failing = true
		return false
	}
	if b.failing {
		b.log.Info("data sample budget saved again", "file", b.path)
	}
	b.failing = false
	return true
}

// today is the latest day accounted and what bundle id ("": the version
// last accounted) spent on it.
func (b *sampleBudget) today(id string) (day string, used int64) {
	if id == "" {
		id = b.last.id
	}
	if sp := b.spent[budgetKey{id, b.last.day}]; sp != nil {
		used = sp.used
	}
	return b.last.day, used
}
