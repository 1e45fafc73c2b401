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
	"strconv"
	"strings"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// crashHelperEnv names the outbox file the child process of
// TestCrashDurability appends to.
const crashHelperEnv = "EDGEFLEET_OUTBOX_CRASH_CHILD"

// TestHelperProcess is the child of TestCrashDurability; run normally it does
// nothing. It appends from many goroutines as fast as it can and, like a real
// drainer, acks the oldest records while there is a backlog. It prints
// "a ID" only after Append(ID) returned and "k ID" only after Ack(ID)
// returned, and runs until it is killed.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(crashHelperEnv)
	if path == "" {
		return
	}
	o, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	lines := make(chan string, 8192)
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	for w := range 32 {
		go func() {
			payload := bytes.Repeat([]byte{byte('a' + w%26)}, 200)
			for {
				id, err := o.Append(context.Background(), "prediction", payload)
				if err != nil {
					fail(err)
				}
				lines <- "a " + strconv.FormatUint(id, 10) + "\n"
			}
		}()
	}
	go func() {
		for {
			if o.Stats().Records < 2000 {
				<-o.Wait()
				continue
			}
			recs, err := o.Peek(200)
			if err != nil {
				fail(err)
			}
			if err := o.Ack(ids(recs)...); err != nil {
				fail(err)
			}
			for _, r := range recs {
				lines <- "k " + strconv.FormatUint(r.ID, 10) + "\n"
			}
		}
	}()
	w := bufio.NewWriter(os.Stdout)
	for l := range lines {
		w.WriteString(l)
		if len(lines) == 0 {
			if err := w.Flush(); err != nil {
				os.Exit(4) // parent went away
			}
		}
	}
}

// TestCrashDurability kills a real process that is appending and acking
// with SIGKILL at several points, reusing the same file each time, and
// checks after every kill that the file is consistent (bbolt's own check
// and the outbox counters), that every id the child saw Append return is
// stored unless the child also saw it acked, that every id it saw Ack return
// is gone, and that ids are never reused after the crash.
func TestCrashDurability(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	var (
		appended = map[uint64]bool{}
		acked    = map[uint64]bool{}
		maxID    uint64
	)
	for _, killAfter := range []int{1, 500, 5000, 20000} {
		t.Logf("kill after %d lines", killAfter)
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashHelperEnv+"="+path)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		prevMax, lines, killed := maxID, 0, false
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			op, num, ok := strings.Cut(sc.Text(), " ")
			id, err := strconv.ParseUint(num, 10, 64)
			if !ok || err != nil || (op != "a" && op != "k") {
				continue // not ours (test framework output)
			}
			lines++
			if op == "a" {
				if id <= prevMax {
					t.Fatalf("child appended id %d, not past %d from before the crash", id, prevMax)
				}
				if appended[id] {
					t.Fatalf("id %d returned twice", id)
				}
				appended[id] = true
				maxID = max(maxID, id)
			} else {
				acked[id] = true
			}
			if lines == killAfter {
				// Keep reading: lines already written were acknowledged too.
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		err = cmd.Wait()
		var exit *exec.ExitError
		if !killed || !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child ended after %d lines with %v, want killed after %d; stderr:\n%s", lines, err, killAfter, stderr.String())
		}
		checkAfterCrash(t, path, appended, acked, &maxID)
	}
	t.Logf("%d appends and %d acks confirmed across the kills", len(appended), len(acked))
}

func checkAfterCrash(t *testing.T, path string, appended, acked map[uint64]bool, maxID *uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatalf("bbolt open after kill: %v", err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check after kill: %v", err)
		}
		return nil
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}

	log, logBuf := testLogger(t)
	o, err := Open(path, Options{Logger: log})
	if err != nil {
		t.Fatalf("Open after kill: %v", err)
	}
	defer o.Close()
	if s := logBuf.String(); s != "" {
		t.Errorf("Open after kill had to repair:\n%s", s)
	}
	have := map[uint64]bool{}
	for _, r := range peekT(t, o, 1<<30) {
		have[r.ID] = true
		*maxID = max(*maxID, r.ID)
	}
	for id := range appended {
		if !have[id] && !acked[id] {
			t.Errorf("id %d: Append returned before the kill, record lost", id)
		}
	}
	for id := range acked {
		if have[id] {
			t.Errorf("id %d: Ack returned before the kill, record still there", id)
		}
	}
	s := o.Stats()
	if s.Dropped != 0 {
		t.Errorf("Stats %+v: drops without hitting the bound", s)
	}
	checkInvariant(t, o)
	if id := appendT(t, o, "event", nil); id <= *maxID {
		t.Errorf("first id after the kill %d <= %d", id, *maxID)
	} else {
		*maxID = id
	}
	if t.Failed() {
		t.FailNow()
	}
}
