package lake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/edgefleet/edgefleet/controlplane/dedup"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/controlplane/registry"
	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/tensor"
	"github.com/edgefleet/edgefleet/shared/testenv"
)

// oracle is an in-memory dedup oracle (inventory.SeenRecords remembers
// ids durably; here the test process is the only life).
type oracle struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (o *oracle) seenBy(device, epoch string) dedup.Oracle {
	return func(ids []uint64) ([]bool, error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.seen == nil {
			o.seen = map[string]bool{}
		}
		dup := make([]bool, len(ids))
		for i, id := range ids {
			k := fmt.Sprintf("%s/%s/%d", device, epoch, id)
			dup[i] = o.seen[k]
			o.seen[k] = true
		}
		return dup, nil
	}
}

// sample is a sample record of bundle vad@version at t with input x.
func sample(t testing.TB, version string, at time.Time, req string, x []float32) []byte {
	t.Helper()
	r := protocol.SampleRecord{
		Time: at, Model: "vad@" + version, RequestID: req, Labels: map[string]string{"site": "lab"},
		Inputs: []protocol.SampleTensor{
			protocol.NewSampleTensor(tensor.Tensor{Name: "input", Datatype: tensor.FP32, Shape: []int64{1, int64(len(x))}, Data: x}),
			protocol.NewSampleTensor(tensor.Tensor{Name: "sr", Datatype: tensor.Int64, Shape: []int64{1}, Data: []int64{16000}}),
		},
		Outputs: []protocol.SampleTensor{protocol.NewSampleTensor(tensor.Tensor{Name: "output", Datatype: tensor.FP32, Shape: []int64{1, 1}, Data: []float32{x[0] / 2}})},
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// want is one sample a simulated device sent.
type want struct {
	device, epoch string
	id            uint64
	version, date string
	x0            float32
}

func (w want) key() string { return fmt.Sprintf("%s/%s/%d", w.device, w.epoch, w.id) }

func openLake(t *testing.T, dir string, opts Options) *Lake {
	t.Helper()
	if opts.Store == nil {
		opts.Store = &registry.DirObjects{Dir: filepath.Join(dir, "samples")}
	}
	opts.Logger = testenv.Logger(t)
	l, err := Open(filepath.Join(dir, "samples.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// simulate has three devices deliver samples of two bundle versions over
// UTC midnight, each batch delivered twice (at least once), and returns
// what they sent.
func simulate(t *testing.T, l *Lake, o *oracle, perDevice int) []want {
	t.Helper()
	t0 := time.Date(2026, 3, 1, 23, 59, 58, 0, time.UTC)
	var out []want
	for d := range 3 {
		dev, epoch := fmt.Sprintf("dev-%d", d), fmt.Sprintf("ep%d", d)
		var batch []Record
		for i := range perDevice {
			id := uint64(i + 1)
			at := t0.Add(time.Duration(i) * 300 * time.Millisecond)
			version := "1.0.0"
			if d == 2 {
				version = "2.0.0-rc.1"
			}
			x := []float32{float32(d*1000+i) + 0.5, 1, 2}
			batch = append(batch, Record{ID: id, Payload: sample(t, version, at, fmt.Sprintf("%s-%d", dev, i), x)})
			out = append(out, want{dev, epoch, id, version, at.Format(time.DateOnly), x[0]})
			if len(batch) == 5 || i == perDevice-1 {
				for range 2 { // delivered twice
					if _, err := l.Ingest(dev, epoch, batch, o.seenBy(dev, epoch)); err != nil {
						t.Fatal(err)
					}
				}
				batch = nil
			}
		}
	}
	return out
}

// TestLakeDuckDB: what simulated devices sampled, delivered at least
// once, is read back by DuckDB from the Hive-partitioned files, every
// record exactly once with its values.
func TestLakeDuckDB(t *testing.T) {
	dir := t.TempDir()
	l := openLake(t, dir, Options{FlushRows: 7, RowGroupRows: 3})
	sent := simulate(t, l, &oracle{}, 12)
	if st := l.Stats(); st.Accepted != uint64(len(sent)) || st.Duplicates != uint64(len(sent)) {
		t.Fatalf("stats %+v, want %d accepted and as many duplicates", st, len(sent))
	}
	res, err := l.Flush(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != len(sent) || len(res.Files) < 6 {
		t.Fatalf("flush %+v", res)
	}
	if err := l.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "samples")
	got := testenv.DuckDB(t, fmt.Sprintf(`SELECT device_id, epoch, record_id, bundle, version, CAST(date AS VARCHAR) AS date,
		request_id, input_input, input_input_shape, input_sr, output_output, labels['site'] AS site, time, received, model
		FROM read_parquet('%s/**/*.parquet', hive_partitioning = true) ORDER BY device_id, record_id`, root))
	byKey := map[string]map[string]any{}
	for _, r := range got.Rows {
		k := fmt.Sprintf("%v/%v/%v", r["device_id"], r["epoch"], r["record_id"])
		if byKey[k] != nil {
			t.Errorf("record %s read twice", k)
		}
		byKey[k] = r
	}
	if len(got.Rows) != len(sent) {
		t.Errorf("DuckDB read %d rows, the devices sent %d samples", len(got.Rows), len(sent))
	}
	for _, w := range sent {
		r := byKey[w.key()]
		if r == nil {
			t.Errorf("sample %s is in no file", w.key())
			continue
		}
		in, _ := r["input_input"].([]any)
		out, _ := r["output_output"].([]any)
		if r["bundle"] != "vad" || r["version"] != w.version || r["date"] != w.date || r["site"] != "lab" ||
			r["model"] != "vad@"+w.version || len(in) != 3 || in[0] != float64(w.x0) || len(out) != 1 || out[0] != float64(w.x0/2) {
			t.Errorf("sample %s: row %v", w.key(), r)
		}
		if sh, _ := r["input_input_shape"].([]any); len(sh) != 2 || sh[1] != "3" {
			t.Errorf("sample %s: shape %v", w.key(), r["input_input_shape"])
		}
	}
	// Partitions are directories as Hive names them.
	for _, p := range []string{"bundle=vad/version=1.0.0/date=2026-03-01", "bundle=vad/version=1.0.0/date=2026-03-02", "bundle=vad/version=2.0.0-rc.1/date=2026-03-02"} {
		if m, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(p), "part-*.parquet")); len(m) == 0 {
			t.Errorf("no file in %s", p)
		}
	}
	// The schema DuckDB sees.
	desc := testenv.DuckDB(t, fmt.Sprintf(`DESCRIBE SELECT * FROM read_parquet('%s/**/*.parquet', hive_partitioning = true, union_by_name = true)`, root))
	types := map[string]any{}
	for _, r := range desc.Rows {
		types[r["column_name"].(string)] = r["column_type"]
	}
	for col, typ := range map[string]string{
		"time": "TIMESTAMP WITH TIME ZONE", "received": "TIMESTAMP WITH TIME ZONE", "device_id": "VARCHAR", "record_id": "BIGINT",
		"input_input": "FLOAT[]", "input_input_shape": "BIGINT[]", "input_sr": "BIGINT[]", "output_output": "FLOAT[]",
		"labels": "MAP(VARCHAR, VARCHAR)", "raw": "BOOLEAN",
	} {
		if types[col] != typ {
			t.Errorf("column %s: %v, want %s (all: %v)", col, types[col], typ, types)
		}
	}
}

// flakyStore fails the writes it is told to, after or before writing.
type flakyStore struct {
	*registry.DirObjects
	mu         sync.Mutex
	failAfter  int // writes that land, then fail ("crash" after the write)
	failBefore int // writes that fail without landing
	puts       []string
}

func (f *flakyStore) PutObject(ctx context.Context, key string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.puts = append(f.puts, key)
	if f.failBefore > 0 {
		f.failBefore--
		return errors.New("store unreachable")
	}
	if err := f.DirObjects.PutObject(ctx, key, data); err != nil {
		return err
	}
	if f.failAfter > 0 {
		f.failAfter--
		return errors.New("lost the answer")
	}
	return nil
}

// TestLakeRecovery: a write that failed, or landed without the flush
// being completed (a crash), is written again under the same name; a
// flush planned before a crash is written at the next start; records
// redelivered after their file was written are not written again.
func TestLakeRecovery(t *testing.T) {
	dir := t.TempDir()
	store := &flakyStore{DirObjects: &registry.DirObjects{Dir: filepath.Join(dir, "samples")}, failBefore: 1, failAfter: 1}
	o := &oracle{}
	l := openLake(t, dir, Options{Store: store, FlushRows: 4})
	sent := simulate(t, l, o, 6)
	ctx := t.Context()
	// The first file's write fails, the next one's answer is lost: both
	// flushes stay pending, the other partitions' files are written.
	if _, err := l.Flush(ctx); err == nil {
		t.Fatal("flush with an unreachable store and a lost answer succeeded")
	}
	if seqs, err := l.pendingFlushes(); err != nil || len(seqs) != 2 {
		t.Fatalf("pending flushes after the failures: %d %v, want 2", len(seqs), err)
	}
	// A crash after planning: the staging file is closed as it is.
	if _, ok, err := l.plan(true); err != nil || !ok {
		t.Fatalf("plan: %v %v", ok, err)
	}
	if err := l.db.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLake(t, dir, Options{Store: store, FlushRows: 4})
	if st := l.Stats(); st.StagedBytes == 0 {
		t.Fatalf("nothing staged after the restart: %+v", st)
	}
	if _, err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Redelivered after being written: duplicates, by the oracle.
	again := simulate(t, l, o, 6)
	if st := l.Stats(); st.Accepted != 0 || st.Duplicates != uint64(2*len(again)) {
		t.Fatalf("stats after redelivery %+v", st)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.StagedBytes != 0 {
		t.Errorf("staged after close: %+v", st)
	}
	// Every flush wrote one name: the first two twice (unreachable, then
	// done; answer lost, then done), the others once.
	counts := map[string]int{}
	var names []string // in the order first written
	for _, k := range store.puts {
		if counts[k] == 0 {
			names = append(names, k)
		}
		counts[k]++
	}
	for i, k := range names {
		if want := map[bool]int{true: 2, false: 1}[i < 2]; counts[k] != want {
			t.Errorf("%s written %d times, want %d (%v)", k, counts[k], want, store.puts)
		}
	}
	rows := readAll(t, filepath.Join(dir, "samples"))
	if len(rows) != len(sent) {
		t.Fatalf("%d rows in the files, %d samples sent", len(rows), len(sent))
	}
	seen := map[string]bool{}
	for _, r := range rows {
		k := fmt.Sprintf("%s/%s/%d", r.Device, r.Epoch, r.RecordID)
		if seen[k] {
			t.Errorf("%s twice", k)
		}
		seen[k] = true
	}
}

// fileRow is the fixed columns of a file's row, as parquet-go reads them.
type fileRow struct {
	Time     time.Time `parquet:"time"`
	Device   string    `parquet:"device_id"`
	Epoch    string    `parquet:"epoch"`
	RecordID int64     `parquet:"record_id"`
	Model    string    `parquet:"model"`
	Input    []float32 `parquet:"input_input,optional,list"`
}

// readAll reads every file under root with parquet-go.
func readAll(t *testing.T, root string) []fileRow {
	t.Helper()
	var out []fileRow
	err := filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() || filepath.Ext(p) != ".parquet" {
			return err
		}
		rows, err := parquet.ReadFile[fileRow](p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, rows...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLakeFlushAge: a partition is written when its oldest record has
// been staged FlushAge, not before (unless it is full).
func TestLakeFlushAge(t *testing.T) {
	dir := t.TempDir()
	clock := cptest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	l := openLake(t, dir, Options{FlushAge: time.Minute, FlushRows: 1000, Now: clock.Now})
	defer l.Close(t.Context())
	at := clock.Now()
	if _, err := l.Ingest("d", "", []Record{{ID: 1, Payload: sample(t, "1.0.0", at, "", []float32{1})}}, (&oracle{}).seenBy("d", "")); err != nil {
		t.Fatal(err)
	}
	if res, err := l.flush(t.Context(), false); err != nil || len(res.Files) != 0 {
		t.Fatalf("young partition flushed: %+v %v", res, err)
	}
	clock.Advance(time.Minute)
	if res, err := l.flush(t.Context(), false); err != nil || len(res.Files) != 1 || res.Rows != 1 {
		t.Fatalf("aged partition: %+v %v", res, err)
	}
}

// TestLakeRefuses: records that are not valid sample records, of a
// bundle version without a sampling policy, too far ahead of the clock or
// beyond the device's daily budget are dropped and counted; the rest of
// the delivery is staged.
func TestLakeRefuses(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	good := sample(t, "1.0.0", at, "", []float32{1})
	budget := func(model string) (int64, error) {
		switch model {
		case "vad@1.0.0":
			return int64(len(good)) * 2, nil
		case "vad@9.0.0":
			return 0, errors.New("registry down")
		}
		return 0, nil
	}
	tests := []struct {
		name    string
		recs    []Record
		want    Result
		wantErr string
	}{
		{"invalid", []Record{{ID: 1, Payload: []byte(`{"time":"x"}`)}, {ID: 2, Payload: good}, {ID: 0, Payload: good}},
			Result{Accepted: 1, Invalid: 2}, ""},
		{"no sampling policy", []Record{{ID: 1, Payload: sample(t, "2.0.0", at, "", []float32{1})}, {ID: 2, Payload: good}},
			Result{Accepted: 1, Invalid: 1}, ""},
		{"ahead of the clock", []Record{{ID: 1, Payload: sample(t, "1.0.0", at.Add(25*time.Hour), "", []float32{1})}},
			Result{Invalid: 1}, ""},
		{"over the budget", []Record{{ID: 1, Payload: good}, {ID: 2, Payload: good}, {ID: 3, Payload: good}, {ID: 4, Payload: sample(t, "1.0.0", at.AddDate(0, 0, -1), "", []float32{1})}},
			Result{Accepted: 3, Dropped: 1}, ""},
		{"policy unknown", []Record{{ID: 1, Payload: sample(t, "9.0.0", at, "", []float32{1})}},
			Result{}, "registry down"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sub := filepath.Join(dir, strconv.Itoa(i))
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			l := openLake(t, sub, Options{Policy: budget, Now: func() time.Time { return at }})
			defer l.Close(t.Context())
			res, err := l.Ingest("d", "e", tc.recs, (&oracle{}).seenBy("d", "e"))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Ingest: %+v %v, want an error with %q", res, err, tc.wantErr)
				}
				return
			}
			if err != nil || res != tc.want {
				t.Fatalf("Ingest: %+v %v, want %+v", res, err, tc.want)
			}
		})
	}
	if _, err := Open(filepath.Join(dir, "x.db"), Options{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Open without a store: %v", err)
	}
}

// TestLakeBudgetDurable: a device's daily budget spent before a restart
// stays spent; a redelivery does not spend it twice; the next day has a
// fresh one.
func TestLakeBudgetDurable(t *testing.T) {
	dir := t.TempDir()
	clock := cptest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	rec := func(id uint64) Record {
		return Record{ID: id, Payload: sample(t, "1.0.0", clock.Now(), "", []float32{1})}
	}
	budget := func(string) (int64, error) { return int64(len(rec(1).Payload)) * 2, nil }
	o := &oracle{}
	l := openLake(t, dir, Options{Policy: budget, Now: clock.Now})
	if res, err := l.Ingest("d", "", []Record{rec(1), rec(1)}, o.seenBy("d", "")); err != nil || res != (Result{Accepted: 1, Duplicates: 1}) {
		t.Fatalf("first delivery: %+v %v", res, err)
	}
	if err := l.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	l = openLake(t, dir, Options{Policy: budget, Now: clock.Now})
	defer l.Close(t.Context())
	if res, err := l.Ingest("d", "", []Record{rec(1), rec(2), rec(3)}, o.seenBy("d", "")); err != nil || res != (Result{Accepted: 1, Duplicates: 1, Dropped: 1}) {
		t.Fatalf("after the restart: %+v %v", res, err)
	}
	if res, err := l.Ingest("e", "", []Record{rec(1), rec(2)}, o.seenBy("e", "")); err != nil || res != (Result{Accepted: 2}) {
		t.Fatalf("another device: %+v %v", res, err)
	}
	clock.Advance(24 * time.Hour)
	if res, err := l.Ingest("d", "", []Record{rec(4)}, o.seenBy("d", "")); err != nil || res != (Result{Accepted: 1}) {
		t.Fatalf("the next day: %+v %v", res, err)
	}
}

// TestLakeFullRefusesDelivery: a delivery that does not fit the staging
// area is refused whole, none of it staged or shown to the oracle, and
// accepted when it is delivered again after a flush made room.
func TestLakeFullRefusesDelivery(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rec := func(id uint64) Record {
		return Record{ID: id, Payload: sample(t, "1.0.0", at, "", []float32{float32(id)})}
	}
	o := &oracle{}
	l := openLake(t, dir, Options{MaxStagedBytes: int64(len(rec(1).Payload))*3/2 + 200, FlushRows: 1000, Now: func() time.Time { return at }})
	defer l.Close(t.Context())
	if res, err := l.Ingest("d", "", []Record{rec(1)}, o.seenBy("d", "")); err != nil || res.Accepted != 1 {
		t.Fatalf("first delivery: %+v %v", res, err)
	}
	if _, err := l.Ingest("d", "", []Record{rec(2), rec(3)}, o.seenBy("d", "")); !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "samples.maxStagedBytes") {
		t.Fatalf("delivery into a full staging area: %v, want ErrFull naming samples.maxStagedBytes", err)
	}
	if o.seen["d//2"] || o.seen["d//3"] {
		t.Fatalf("the refused records were shown to the oracle: %v", o.seen)
	}
	if st := l.Stats(); st.Full != 1 || st.Accepted != 1 {
		t.Fatalf("stats %+v", st)
	}
	if res, err := l.flush(t.Context(), true); err != nil || res.Rows != 1 {
		t.Fatalf("flush: %+v %v", res, err)
	}
	if res, err := l.Ingest("d", "", []Record{rec(2)}, o.seenBy("d", "")); err != nil || res.Accepted != 1 {
		t.Fatalf("redelivery after the flush: %+v %v", res, err)
	}
}

// TestColumnNames: tensor names become column names of [A-Za-z0-9_];
// names that collide, or a name given two datatypes, get columns of
// their own.
func TestColumnNames(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	mk := func(ins ...tensor.Tensor) row {
		r := protocol.SampleRecord{Time: at, Model: "a@1.0.0", Outputs: []protocol.SampleTensor{protocol.NewSampleTensor(tensor.Tensor{Name: "y", Datatype: tensor.Bool, Shape: []int64{}, Data: []bool{true}})}}
		for _, in := range ins {
			r.Inputs = append(r.Inputs, protocol.NewSampleTensor(in))
		}
		b, _ := json.Marshal(r)
		return row{Device: "d", ID: 1, Received: at, Sample: b}
	}
	rows := []row{
		mk(tensor.Tensor{Name: "a.b", Datatype: tensor.Int8, Shape: []int64{2}, Data: []int8{-1, 2}},
			tensor.Tensor{Name: "a-b", Datatype: tensor.Uint8, Shape: []int64{1}, Data: []uint8{255}}),
		mk(tensor.Tensor{Name: "a.b", Datatype: tensor.FP64, Shape: []int64{1}, Data: []float64{0.5}}),
	}
	data, err := encodeParquet(rows, 10)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "x.parquet")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	got := testenv.DuckDB(t, fmt.Sprintf(`SELECT * FROM read_parquet('%s')`, p))
	cols := slices.Sorted(slices.Values(got.Columns))
	wantCols := []string{"device_id", "epoch", "input_a_b", "input_a_b_fp642", "input_a_b_fp642_shape", "input_a_b_shape",
		"input_a_b_uint82", "input_a_b_uint82_shape", "labels", "model", "output_y", "output_y_shape", "raw", "received", "record_id", "request_id", "time"}
	if !slices.Equal(cols, wantCols) {
		t.Fatalf("columns %v\nwant %v", cols, wantCols)
	}
	if v := got.Rows[0]["input_a_b"].([]any); len(v) != 2 || v[0] != float64(-1) || v[1] != float64(2) {
		t.Errorf("INT8 column %v", v)
	}
	if v := got.Rows[0]["input_a_b_uint82"].([]any); len(v) != 1 || v[0] != float64(255) {
		t.Errorf("UINT8 column %v", v)
	}
	if v := got.Rows[1]["input_a_b_fp642"].([]any); len(v) != 1 || v[0] != 0.5 || got.Rows[1]["input_a_b"] != nil {
		t.Errorf("row 1 %v", got.Rows[1])
	}
	if got.Rows[0]["output_y"].([]any)[0] != true {
		t.Errorf("row %v", got.Rows[0])
	}
}
