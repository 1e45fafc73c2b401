package outbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

// Environment of the child process of the crash tests: the outbox file it
// appends to, and (broken mode) how long each commit answers its callers
// before bbolt writes anything.
const (
	crashHelperEnv = "EDGEFLEET_OUTBOX_CRASH_CHILD"
	crashBrokenEnv = "EDGEFLEET_OUTBOX_CRASH_ANSWER_EARLY"
)

// TestHelperProcess is the child of the crash tests; run normally it does
// nothing. It appends from many goroutines as fast as it can and, like a real
// drainer, acks the oldest records while there is a backlog. It prints
// "a ID" only after Append(ID) returned and "k ID" only after Ack(ID)
// returned, both buffered (a line lost in the kill only means the parent
// checks less). Before it calls Ack it writes "p ID..." for the ids it is
// about to ack straight to the pipe: once Ack is called the records may be
// gone at any moment, and the parent must know that before the kill can
// land, or it counts a record acked in the kill's window as lost. It runs
// until it is killed.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(crashHelperEnv)
	if path == "" {
		return
	}
	if d, err := time.ParseDuration(os.Getenv(crashBrokenEnv)); err == nil {
		testAnswerBeforeWrite = d
	}
	o, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	var mu sync.Mutex // the stdout buffer
	w := bufio.NewWriterSize(os.Stdout, 64<<10)
	emit := func(line string, flush bool) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteString(line)
		if flush || w.Available() < 4096 {
			if err := w.Flush(); err != nil {
				os.Exit(4) // parent went away
			}
		}
	}
	for i := range 32 {
		go func() {
			payload := bytes.Repeat([]byte{byte('a' + i%26)}, 200)
			for {
				id, err := o.Append(context.Background(), "prediction", payload)
				if err != nil {
					fail(err)
				}
				emit("a "+strconv.FormatUint(id, 10)+"\n", false)
			}
		}()
	}
	for {
		if o.Stats().Records < 2000 {
			<-o.Wait()
			continue
		}
		recs, err := o.Peek(200)
		if err != nil {
			fail(err)
		}
		var b strings.Builder
		b.WriteString("p")
		for _, r := range recs {
			b.WriteString(" " + strconv.FormatUint(r.ID, 10))
		}
		emit(b.String()+"\n", true)
		if err := o.Ack(ids(recs)...); err != nil {
			fail(err)
		}
		for _, r := range recs {
			emit("k "+strconv.FormatUint(r.ID, 10)+"\n", false)
		}
	}
}

// crashLedger is what the parent learned from the child's lines across the
// kills: which ids Append returned, which Ack returned, and which the child
// was about to ack when it was killed (either present or gone afterwards).
type crashLedger struct {
	appended, acked, acking map[uint64]bool
	maxID                   uint64
}

// TestCrashDurability kills a real process that is appending and acking
// with SIGKILL at several points, reusing the same file each time, and
// checks after every kill that the file is consistent (bbolt's own check
// and the outbox counters), that every id the child saw Append return is
// stored unless the child was acking it, that every id it saw Ack return
// is gone, and that ids are never reused after the crash.
func TestCrashDurability(t *testing.T) {
	l, err := crashRun(t, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d appends and %d acks confirmed across the kills", len(l.appended), len(l.acked))
}

// TestCrashDurabilityCatchesLostWrites runs the same kills against an
// outbox broken on purpose, one that answers Append before its commit is
// written (testAnswerBeforeWrite), and checks that the crash test reports
// lost records: a test that passes with that bug could not catch it.
func TestCrashDurabilityCatchesLostWrites(t *testing.T) {
	_, err := crashRun(t, "20ms")
	if err == nil || !strings.Contains(err.Error(), "record lost") {
		t.Fatalf("crash test against an outbox that answers before writing: %v, want lost records reported", err)
	}
	t.Logf("reported as it should be: %.300s", err)
}

// crashRun kills the child at several points and checks the file after
// each kill. The first failed check ends it: its error names every id the
// check found wrong. Set-up failures end the test.
func crashRun(t *testing.T, answerEarly string) (*crashLedger, error) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	l := &crashLedger{appended: map[uint64]bool{}, acked: map[uint64]bool{}, acking: map[uint64]bool{}}
	for _, killAfter := range []int{1, 500, 5000, 20000} {
		t.Logf("kill after %d lines", killAfter)
		cmd, stdout, stderr := testenv.HelperProcess(t, crashHelperEnv+"="+path, crashBrokenEnv+"="+answerEarly)
		prevMax, lines, killed := l.maxID, 0, false
		r := bufio.NewReader(stdout)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				break // a last line without its newline was cut by the kill
			}
			line = strings.TrimSuffix(line, "\n")
			op, rest, _ := strings.Cut(line, " ")
			if op != "a" && op != "k" && op != "p" {
				continue // not ours (test framework output)
			}
			for num := range strings.FieldsSeq(rest) {
				id, err := strconv.ParseUint(num, 10, 64)
				if err != nil {
					t.Fatalf("child line %q: %v", line, err)
				}
				switch op {
				case "a":
					if id <= prevMax {
						return l, fmt.Errorf("child appended id %d, not past %d from before the crash", id, prevMax)
					}
					if l.appended[id] {
						return l, fmt.Errorf("id %d returned twice", id)
					}
					l.appended[id] = true
					l.maxID = max(l.maxID, id)
				case "p":
					l.acking[id] = true
				case "k":
					l.acked[id] = true
					delete(l.acking, id)
				}
			}
			lines++
			if lines == killAfter {
				// Keep reading: lines already written were acknowledged too.
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		err := cmd.Wait()
		var exit *exec.ExitError
		if !killed || !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child ended after %d lines with %v, want killed after %d; stderr:\n%s", lines, err, killAfter, stderr.String())
		}
		if err := checkAfterCrash(t, path, l); err != nil {
			return l, fmt.Errorf("after the kill at %d lines: %w", killAfter, err)
		}
	}
	return l, nil
}

// checkAfterCrash opens the file the child was killed with and checks it
// against the ledger, then settles the acks that were in flight at the
// kill: those ids are acked if they are gone, and pending again if not.
func checkAfterCrash(t *testing.T, path string, l *crashLedger) error {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return fmt.Errorf("bbolt open after kill: %w", err)
	}
	var errs []error
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			errs = append(errs, fmt.Errorf("bbolt check after kill: %w", err))
		}
		return nil
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}

	log, logBuf := testLogger(t)
	o, err := Open(path, Options{Logger: log})
	if err != nil {
		return fmt.Errorf("Open after kill: %w", err)
	}
	defer o.Close()
	if s := logBuf.String(); s != "" {
		errs = append(errs, fmt.Errorf("Open after kill had to repair:\n%s", s))
	}
	have := map[uint64]bool{}
	for _, r := range peekT(t, o, 1<<30) {
		have[r.ID] = true
		l.maxID = max(l.maxID, r.ID)
	}
	var lost, kept []uint64
	for id := range l.appended {
		if !have[id] && !l.acked[id] && !l.acking[id] {
			lost = append(lost, id)
		}
	}
	for id := range l.acked {
		if have[id] {
			kept = append(kept, id)
		}
	}
	if len(lost) > 0 {
		slices.Sort(lost)
		errs = append(errs, fmt.Errorf("%d ids whose Append returned before the kill, record lost: %v", len(lost), lost))
	}
	if len(kept) > 0 {
		slices.Sort(kept)
		errs = append(errs, fmt.Errorf("%d ids whose Ack returned before the kill, record still there: %v", len(kept), kept))
	}
	for id := range l.acking {
		if !have[id] {
			l.acked[id] = true
		}
	}
	clear(l.acking)
	if s := o.Stats(); s.Dropped != 0 {
		errs = append(errs, fmt.Errorf("Stats %+v: drops without hitting the bound", s))
	}
	checkInvariant(t, o)
	if id := appendT(t, o, "event", nil); id <= l.maxID {
		errs = append(errs, fmt.Errorf("first id after the kill %d <= %d", id, l.maxID))
	} else {
		l.maxID = id
	}
	return errors.Join(errs...)
}
