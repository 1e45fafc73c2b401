package lake

// The Parquet files: one row per sample, the schema of
// docs/integrations.md (Samples out to a feature store).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/edgefleet/edgefleet/shared/protocol"
	"github.com/edgefleet/edgefleet/shared/tensor"
)

// SchemaVersion is the version of the files' schema, in each file's
// key-value metadata under SchemaKey.
const (
	SchemaVersion = "1"
	SchemaKey     = "edgefleet.samples.schema"
)

// The fixed columns of every file. Tensor columns are ROLE_NAME with ROLE
// input, output or feature; each has a ROLE_NAME_shape column beside it.
const (
	ColTime      = "time"       // TIMESTAMP(us, UTC): when the request arrived (the event timestamp)
	ColReceived  = "received"   // TIMESTAMP(us, UTC): when fleetd accepted the record
	ColDevice    = "device_id"  // STRING
	ColEpoch     = "epoch"      // STRING: the device's outbox epoch ("" for none)
	ColRecordID  = "record_id"  // INT64: the outbox record id, unique per device and epoch
	ColModel     = "model"      // STRING: "name@version"
	ColRequestID = "request_id" // STRING, null without one
	ColRaw       = "raw"        // BOOLEAN: inputs came from the pre-processor
	ColLabels    = "labels"     // MAP<STRING, STRING>: the device's labels
)

// column is one tensor column of a file.
type column struct {
	role, name string
	dt         tensor.Datatype
	col        string // its column name; col+"_shape" holds the shape
}

// colKey identifies a tensor column within a file.
type colKey struct {
	role, name string
	dt         tensor.Datatype
}

// elemType is the Parquet type of dt's elements: FLOAT for FP32, DOUBLE
// for FP64, INT64 for INT64, INT32 for the smaller integers and UINT8,
// BOOLEAN for BOOL.
func elemType(dt tensor.Datatype) parquet.Type {
	switch dt {
	case tensor.FP32:
		return parquet.FloatType
	case tensor.FP64:
		return parquet.DoubleType
	case tensor.Int64:
		return parquet.Int64Type
	case tensor.Bool:
		return parquet.BooleanType
	}
	return parquet.Int32Type
}

// values is t's elements as the Go slice its column takes.
func values(t tensor.Tensor) any {
	widen := func(n int, at func(int) int32) []int32 {
		out := make([]int32, n)
		for i := range out {
			out[i] = at(i)
		}
		return out
	}
	switch d := t.Data.(type) {
	case []int8:
		return widen(len(d), func(i int) int32 { return int32(d[i]) })
	case []int16:
		return widen(len(d), func(i int) int32 { return int32(d[i]) })
	case []uint8:
		return widen(len(d), func(i int) int32 { return int32(d[i]) })
	}
	return t.Data
}

// sanitize makes a tensor name part of a column name: [A-Za-z0-9_] kept,
// anything else _.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// roles are the tensor lists of a sample with their column prefixes.
var roles = []string{"input", "output", "feature"}

func tensorsOf(s *protocol.SampleRecord, role string) []protocol.SampleTensor {
	switch role {
	case "input":
		return s.Inputs
	case "output":
		return s.Outputs
	}
	return s.Features
}

// encodeParquet writes rows as one Parquet file (zstd, row groups of at
// most rowGroupRows rows).
func encodeParquet(rows []row, rowGroupRows int) ([]byte, error) {
	samples := make([]protocol.SampleRecord, len(rows))
	for i, r := range rows {
		if err := json.Unmarshal(r.Sample, &samples[i]); err != nil {
			return nil, fmt.Errorf("row %s/%s/%d: %w", r.Device, r.Epoch, r.ID, err)
		}
	}
	// The tensor columns, in the order first seen.
	used := map[string]bool{}
	for _, c := range []string{ColTime, ColReceived, ColDevice, ColEpoch, ColRecordID, ColModel, ColRequestID, ColRaw, ColLabels} {
		used[c] = true
	}
	cols := map[colKey]*column{}
	var order []*column
	for i := range samples {
		for _, role := range roles {
			for _, t := range tensorsOf(&samples[i], role) {
				k := colKey{role, t.Name, t.Datatype}
				if cols[k] != nil {
					continue
				}
				base := role + "_" + sanitize(t.Name)
				name := base
				for n := 2; used[name] || used[name+"_shape"]; n++ {
					name = fmt.Sprintf("%s_%s%d", base, strings.ToLower(string(t.Datatype)), n)
				}
				used[name], used[name+"_shape"] = true, true
				c := &column{role: role, name: t.Name, dt: t.Datatype, col: name}
				cols[k] = c
				order = append(order, c)
			}
		}
	}
	group := parquet.Group{
		ColTime:      parquet.TimestampAdjusted(parquet.Microsecond, true),
		ColReceived:  parquet.TimestampAdjusted(parquet.Microsecond, true),
		ColDevice:    parquet.String(),
		ColEpoch:     parquet.String(),
		ColRecordID:  parquet.Leaf(parquet.Int64Type),
		ColModel:     parquet.String(),
		ColRequestID: parquet.Optional(parquet.String()),
		ColRaw:       parquet.Leaf(parquet.BooleanType),
		ColLabels:    parquet.Map(parquet.String(), parquet.String()),
	}
	for _, c := range order {
		group[c.col] = parquet.Optional(parquet.List(parquet.Leaf(elemType(c.dt))))
		group[c.col+"_shape"] = parquet.Optional(parquet.List(parquet.Leaf(parquet.Int64Type)))
	}
	schema := parquet.NewSchema("sample", group)
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[any](&buf, schema, parquet.Compression(&zstd.Codec{}),
		parquet.MaxRowsPerRowGroup(int64(rowGroupRows)),
		parquet.KeyValueMetadata(SchemaKey, SchemaVersion),
		parquet.CreatedBy("edgefleet fleetd", "", ""))
	batch := make([]any, 0, 256)
	write := func() error {
		if _, err := w.Write(batch); err != nil {
			return err
		}
		batch = batch[:0]
		return nil
	}
	for i, r := range rows {
		s := &samples[i]
		m := map[string]any{
			ColTime: s.Time.UTC().Truncate(time.Microsecond), ColReceived: r.Received.UTC().Truncate(time.Microsecond),
			ColDevice: r.Device, ColEpoch: r.Epoch, ColRecordID: int64(r.ID), ColModel: s.Model, ColRaw: s.Raw,
			ColLabels: labelsOf(s.Labels),
		}
		if s.RequestID != "" {
			m[ColRequestID] = s.RequestID
		}
		for _, role := range roles {
			for _, st := range tensorsOf(s, role) {
				t, err := st.Tensor()
				if err != nil {
					return nil, fmt.Errorf("row %s/%s/%d: %w", r.Device, r.Epoch, r.ID, err)
				}
				c := cols[colKey{role, st.Name, st.Datatype}]
				m[c.col] = values(t)
				m[c.col+"_shape"] = append([]int64{}, st.Shape...)
			}
		}
		batch = append(batch, m)
		if len(batch) == cap(batch) {
			if err := write(); err != nil {
				return nil, err
			}
		}
	}
	if err := write(); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func labelsOf(l map[string]string) map[string]string {
	if l == nil {
		return map[string]string{}
	}
	return l
}
