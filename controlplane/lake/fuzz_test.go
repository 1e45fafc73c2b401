package lake

import (
	"bytes"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// FuzzEncode: every payload Ingest accepts (protocol.DecodeSampleRecord)
// encodes as a Parquet file that reads back with its one row.
func FuzzEncode(f *testing.F) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Add(sample(f, "1.0.0", at, "r", []float32{1, 2}))
	f.Add([]byte(`{"time":"2026-01-01T00:00:00Z","model":"a@1.0.0","labels":{"k":"v"},"inputs":[{"name":"x.y","datatype":"BOOL","shape":[],"data":"AQ=="}],"outputs":[{"name":"y","datatype":"UINT8","shape":[0],"data":""}],"features":[{"name":"x.y","datatype":"INT16","shape":[1],"data":"AQI="}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := protocol.DecodeSampleRecord(b)
		if err != nil {
			return
		}
		data, err := encodeParquet([]row{{Device: "d", Epoch: "e", ID: 1, Received: at, Sample: b}}, 10)
		if err != nil {
			t.Fatalf("valid sample %s does not encode: %v", b, err)
		}
		pf, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatalf("written file does not open: %v", err)
		}
		if n := pf.NumRows(); n != 1 {
			t.Fatalf("%d rows", n)
		}
		if got := len(pf.Schema().Fields()); got < 9+2*(len(s.Inputs)+len(s.Outputs)) {
			t.Fatalf("%d columns for %d inputs and %d outputs", got, len(s.Inputs), len(s.Outputs))
		}
	})
}
