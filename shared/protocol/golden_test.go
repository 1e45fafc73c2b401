package protocol

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/shared/testenv"
)

var (
	t0  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)

func exampleBundle() BundleRef {
	return BundleRef{
		Name:    "silero-vad",
		Version: "1.4.0",
		URL:     "https://fleetd.example.com/v1/bundles/silero-vad-1.4.0.bundle",
		SigURL:  "https://fleetd.example.com/v1/bundles/silero-vad-1.4.0.bundle.sig",
		SHA256:  sum,
		Size:    2359296,
	}
}

// goldens are the examples of docs/protocol.md: each is written to
// testdata/NAME.json (go test -run Golden -update) and must decode back to
// the same value.
func goldens() []struct {
	name   string
	msg    Message
	decode func([]byte) (Message, error)
} {
	dd := func(b []byte) (Message, error) { return DecodeDesired(b) }
	dr := func(b []byte) (Message, error) { return DecodeReported(b) }
	de := func(b []byte) (Message, error) { return DecodeEvent(b) }
	dt := func(b []byte) (Message, error) { return DecodeTelemetry(b) }
	ds := func(b []byte) (Message, error) { return DecodeStatus(b) }
	old := BundleID{Name: "silero-vad", Version: "1.3.2"}
	cur := BundleID{Name: "silero-vad", Version: "1.4.0"}
	shadow := exampleBundle()
	shadow.Version = "1.5.0-rc.1"
	shadow.URL = "https://fleetd.example.com/v1/bundles/silero-vad-1.5.0-rc.1.bundle"
	shadow.SigURL = shadow.URL + ".sig"
	return []struct {
		name   string
		msg    Message
		decode func([]byte) (Message, error)
	}{
		{"desired", &DesiredState{
			V: 1, DeviceID: "jetson-0042", Seq: 17,
			IssuedAt: t0, ExpiresAt: t0.Add(7 * 24 * time.Hour),
			Action: ActionInstall, Bundle: exampleBundle(),
			RolloutID: "ro-2026-03-01-vad",
		}, dd},
		{"desired-rollback", &DesiredState{
			V: 1, DeviceID: "jetson-0042", Seq: 18,
			IssuedAt: t0.Add(time.Hour), ExpiresAt: t0.Add(time.Hour + 7*24*time.Hour),
			Action: ActionRollback, Bundle: func() BundleRef {
				b := exampleBundle()
				b.Version = "1.3.2"
				b.URL = "https://fleetd.example.com/v1/bundles/silero-vad-1.3.2.bundle"
				b.SigURL = b.URL + ".sig"
				b.SHA256 = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
				b.Size = 2351104
				return b
			}(),
			RolloutID: "ro-2026-03-01-vad",
		}, dd},
		{"desired-shadow", &DesiredState{
			V: 1, DeviceID: "jetson-0042", Seq: 19,
			IssuedAt: t0.Add(2 * time.Hour), ExpiresAt: t0.Add(2*time.Hour + 7*24*time.Hour),
			Action: ActionInstall, Bundle: exampleBundle(),
			Shadow: &Shadow{Bundle: shadow},
		}, dd},
		{"reported", &ReportedState{
			V: 1, DeviceID: "jetson-0042", Time: t0.Add(3 * time.Minute),
			AgentVersion:  "0.3.1",
			Labels:        map[string]string{"site": "plant-7", "hw": "jetson-orin-nano", "ring": "canary"},
			Active:        &cur,
			LastKnownGood: &old,
			Provider:      "cuda",
			AppliedSeq:    17,
			Install: &InstallStatus{
				Seq: 17, Bundle: cur, Phase: PhaseSucceeded, Time: t0.Add(2 * time.Minute),
			},
			Buffer: BufferStats{Records: 12, Bytes: 8192, Dropped: 0},
		}, dr},
		{"reported-installing", &ReportedState{
			V: 1, DeviceID: "jetson-0042", Time: t0.Add(30 * time.Second),
			AgentVersion:  "0.3.1",
			Active:        &old,
			LastKnownGood: &old,
			Provider:      "cuda",
			AppliedSeq:    17,
			Install: &InstallStatus{
				Seq: 17, Bundle: cur, Phase: PhaseDownloading,
				Progress: &Progress{Done: 1048576, Total: 2359296}, Time: t0.Add(10 * time.Second),
			},
			Buffer: BufferStats{Records: 2048, Bytes: 1572864, Dropped: 310},
		}, dr},
		{"event-install-failed", &Event{
			V: 1, DeviceID: "jetson-0042", Epoch: "c9a1f3e2", ID: 90412, Time: t0.Add(95 * time.Second),
			Type: EventInstallFailed, Seq: 17, RolloutID: "ro-2026-03-01-vad",
			Bundle: &cur, From: &old, Reason: "smoke-failed",
			Message: `smoke vector "two-sines": output[0] = 0.91, want 0.069 ± 0.001`,
		}, de},
		{"event-desired-refused", &Event{
			V: 1, DeviceID: "jetson-0042", Epoch: "c9a1f3e2", ID: 90413, Time: t0.Add(100 * time.Second),
			Type: EventDesiredRefused, Seq: 12, Reason: ReasonReplay,
			Message: "protocol: desired state replayed: seq 12 is below the last accepted 17",
		}, de},
		{"telemetry", &TelemetryBatch{
			V: 1, DeviceID: "jetson-0042", Epoch: "c9a1f3e2",
			Records: []Record{
				{ID: 90414, Kind: RecordPrediction, Time: t0.Add(101 * time.Second),
					Payload: json.RawMessage(`{"model":"silero-vad@1.4.0","latencyMs":3.2,"outputs":{"output":[0.0690874]}}`)},
				{ID: 90415, Kind: RecordMetrics, Time: t0.Add(160 * time.Second),
					Payload: json.RawMessage(`{"window":"1m","requests":240,"errors":0,"p95Ms":4.1}`)},
			},
		}, dt},
		{"status-online", &Status{
			V: 1, DeviceID: "jetson-0042", State: StateOnline, Session: 311, Time: t0, AgentVersion: "0.3.1",
		}, ds},
		{"status-offline", &Status{
			V: 1, DeviceID: "jetson-0042", State: StateOffline, Session: 311, Time: t0, AgentVersion: "0.3.1",
			Reason: "connection-lost",
		}, ds},
	}
}

func marshalGolden(t *testing.T, m Message) []byte {
	t.Helper()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// checkGolden holds testdata/NAME.json to want (testenv.Golden) and
// returns the file's path.
func checkGolden(t *testing.T, name string, want []byte) string {
	t.Helper()
	path := filepath.Join("testdata", name+".json")
	testenv.Golden(t, path, want)
	return path
}

func TestGolden(t *testing.T) {
	for _, g := range goldens() {
		t.Run(g.name, func(t *testing.T) {
			want := marshalGolden(t, g.msg)
			path := checkGolden(t, g.name, want)
			m, err := g.decode(want)
			if err != nil {
				t.Fatalf("decode %s: %v", path, err)
			}
			if re := marshalGolden(t, m); !bytes.Equal(re, want) {
				t.Fatalf("decode+encode of %s is not the identity:\n%s", path, re)
			}
			wire, err := Encode(g.msg)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if m2, err := g.decode(wire); err != nil {
				t.Fatalf("decode(Encode(x)): %v", err)
			} else if re := marshalGolden(t, m2); !bytes.Equal(re, want) {
				t.Fatalf("decode(Encode(x)) != x:\n%s", re)
			}
		})
	}
}

// TestDocsExamples keeps docs/protocol.md in step with the goldens: every
// golden file (messages and records) appears there verbatim in a ```json
// block.
func TestDocsExamples(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testenv.Root(t), "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range goldens() {
		names = append(names, g.name)
	}
	for _, g := range recordGoldens() {
		names = append(names, "record-"+g.name)
	}
	for _, name := range names {
		want, err := os.ReadFile(filepath.Join("testdata", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(doc), "```json\n"+string(want)+"```") {
			t.Errorf("docs/protocol.md lacks testdata/%s.json verbatim in a ```json block", name)
		}
	}
}
