package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// golden reads testdata/NAME.json as a generic JSON object.
func golden(t testing.TB, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// edit returns golden NAME with f applied, as JSON.
func edit(t testing.TB, name string, f func(m map[string]any)) []byte {
	t.Helper()
	m := golden(t, name)
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sub(m map[string]any, key string) map[string]any { return m[key].(map[string]any) }

type decodeCase struct {
	name    string
	in      []byte
	wantErr error  // nil: must decode
	wantMsg string // substring of the error
}

func runDecodeCases(t *testing.T, decode func([]byte) (Message, error), cases []decodeCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := decode(c.in)
			if c.wantErr == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if m == nil {
					t.Fatal("nil message without error")
				}
				return
			}
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("error %v, want %v", err, c.wantErr)
			}
			if !strings.Contains(err.Error(), c.wantMsg) {
				t.Fatalf("error %q does not mention %q", err, c.wantMsg)
			}
		})
	}
}

// commonCases apply to every message type.
func commonCases(t *testing.T, name string) []decodeCase {
	big := append([]byte(`{"v":1,"pad":"`), bytes.Repeat([]byte("x"), MaxPayloadSize)...)
	big = append(big, `"}`...)
	return []decodeCase{
		{"golden", edit(t, name, func(map[string]any) {}), nil, ""},
		{"unknown fields tolerated", edit(t, name, func(m map[string]any) {
			m["futureField"] = map[string]any{"x": 1}
		}), nil, ""},
		{"too large", big, ErrTooLarge, "limit"},
		{"empty", []byte(""), ErrMalformed, "not a JSON object"},
		{"null", []byte("null"), ErrMalformed, "not a JSON object"},
		{"array", []byte(`[{"v":1}]`), ErrMalformed, "not a JSON object"},
		{"string", []byte(`"v"`), ErrMalformed, "not a JSON object"},
		{"syntax", []byte(`{"v":1,`), ErrMalformed, ""},
		{"trailing data", append(edit(t, name, func(map[string]any) {}), []byte(` {}`)...), ErrMalformed, "after top-level value"},
		{"v missing", edit(t, name, func(m map[string]any) { delete(m, "v") }), ErrInvalid, `"v"`},
		{"v string", edit(t, name, func(m map[string]any) { m["v"] = "1" }), ErrMalformed, ""},
		{"v fraction", edit(t, name, func(m map[string]any) { m["v"] = 1.5 }), ErrMalformed, ""},
		{"v 2", edit(t, name, func(m map[string]any) { m["v"] = 2 }), ErrVersion, "v=2"},
		{"v 2 incompatible shape", edit(t, name, func(m map[string]any) {
			m["v"] = 2
			m["deviceId"] = []any{"a", "b"}
		}), ErrVersion, "v=2"},
		{"deviceId missing", edit(t, name, func(m map[string]any) { delete(m, "deviceId") }), ErrInvalid, `"deviceId"`},
		{"deviceId wildcard", edit(t, name, func(m map[string]any) { m["deviceId"] = "a/+" }), ErrInvalid, `"deviceId"`},
		{"deviceId wrong type", edit(t, name, func(m map[string]any) { m["deviceId"] = 7 }), ErrMalformed, "deviceId"},
	}
}

func TestDecodeDesired(t *testing.T) {
	dec := func(b []byte) (Message, error) { return DecodeDesired(b) }
	cases := append(commonCases(t, "desired"), []decodeCase{
		{"rollback golden", edit(t, "desired-rollback", func(map[string]any) {}), nil, ""},
		{"shadow golden", edit(t, "desired-shadow", func(map[string]any) {}), nil, ""},
		{"no rolloutId", edit(t, "desired", func(m map[string]any) { delete(m, "rolloutId") }), nil, ""},
		{"seq missing", edit(t, "desired", func(m map[string]any) { delete(m, "seq") }), ErrInvalid, `"seq"`},
		{"seq negative", edit(t, "desired", func(m map[string]any) { m["seq"] = -1 }), ErrMalformed, "seq"},
		{"seq string", edit(t, "desired", func(m map[string]any) { m["seq"] = "17" }), ErrMalformed, "seq"},
		{"issuedAt missing", edit(t, "desired", func(m map[string]any) { delete(m, "issuedAt") }), ErrInvalid, `"issuedAt"`},
		{"issuedAt not a time", edit(t, "desired", func(m map[string]any) { m["issuedAt"] = "yesterday" }), ErrMalformed, ""},
		{"expiresAt missing", edit(t, "desired", func(m map[string]any) { delete(m, "expiresAt") }), ErrInvalid, `"expiresAt"`},
		{"expiresAt before issuedAt", edit(t, "desired", func(m map[string]any) { m["expiresAt"] = "2026-02-01T00:00:00Z" }), ErrInvalid, "after issuedAt"},
		{"action missing", edit(t, "desired", func(m map[string]any) { delete(m, "action") }), ErrInvalid, `"action"`},
		{"action unknown", edit(t, "desired", func(m map[string]any) { m["action"] = "uninstall" }), ErrInvalid, `"uninstall"`},
		{"bundle missing", edit(t, "desired", func(m map[string]any) { delete(m, "bundle") }), ErrInvalid, `"bundle.name"`},
		{"bundle name bad", edit(t, "desired", func(m map[string]any) { sub(m, "bundle")["name"] = "../etc" }), ErrInvalid, `"bundle.name"`},
		{"bundle version missing", edit(t, "desired", func(m map[string]any) { delete(sub(m, "bundle"), "version") }), ErrInvalid, `"bundle.version"`},
		{"bundle version leading v", edit(t, "desired", func(m map[string]any) { sub(m, "bundle")["version"] = "v1.4.0" }), ErrInvalid, `"bundle.version"`},
		{"bundle version short", edit(t, "desired", func(m map[string]any) { sub(m, "bundle")["version"] = "1.4" }), ErrInvalid, `"bundle.version"`},
		{"bundle version prerelease", edit(t, "desired", func(m map[string]any) { sub(m, "bundle")["version"] = "1.4.0-rc.1+build.5" }), nil, ""},
		{"bundle url missing", edit(t, "desired", func(m map[string]any) { delete(sub(m, "bundle"), "url") }), ErrInvalid, `"bundle.url"`},
		{"bundle url scheme", edit(t, "desired", func(m map[string]any) { sub(m, "bundle")["url"] = "file:///etc/passwd" }), ErrInvalid, `"bundle.url"`},
		{"bundle url no host", edit(t, "desired", func(m map[string]any) { sub(m, "bundle")["url"] = "https:///x" }), ErrInvalid, `"bundle.url"`},
		{"bundle sigUrl missing", edit(t, "desired", func(m map[string]any) { delete(sub(m, "bundle"), "sigUrl") }), ErrInvalid, `"bundle.sigUrl"`},
		{"bundle sha256 missing", edit(t, "desired", func(m map[string]any) { delete(sub(m, "bundle"), "sha256") }), ErrInvalid, `"bundle.sha256"`},
		{"bundle sha256 upper", edit(t, "desired", func(m map[string]any) { sub(m, "bundle")["sha256"] = strings.ToUpper(sum) }), ErrInvalid, `"bundle.sha256"`},
		{"bundle size zero", edit(t, "desired", func(m map[string]any) { sub(m, "bundle")["size"] = 0 }), ErrInvalid, `"bundle.size"`},
		{"shadow bundle bad", edit(t, "desired-shadow", func(m map[string]any) { delete(sub(sub(m, "shadow"), "bundle"), "sha256") }), ErrInvalid, `"shadow.bundle.sha256"`},
		{"rolloutId bad", edit(t, "desired", func(m map[string]any) { m["rolloutId"] = "a b" }), ErrInvalid, `"rolloutId"`},
	}...)
	runDecodeCases(t, dec, cases)
}

func TestDecodeReported(t *testing.T) {
	dec := func(b []byte) (Message, error) { return DecodeReported(b) }
	manyLabels := map[string]any{}
	for i := 0; i <= MaxLabels; i++ {
		manyLabels[string(rune('a'+i%26))+strings.Repeat("x", i)] = "v"
	}
	cases := append(commonCases(t, "reported"), []decodeCase{
		{"installing golden", edit(t, "reported-installing", func(map[string]any) {}), nil, ""},
		{"minimal", []byte(`{"v":1,"deviceId":"d1","time":"2026-03-01T12:00:00Z","agentVersion":"0.1.0"}`), nil, ""},
		{"unknown phase tolerated", edit(t, "reported", func(m map[string]any) { sub(m, "install")["phase"] = "defragmenting" }), nil, ""},
		{"time missing", edit(t, "reported", func(m map[string]any) { delete(m, "time") }), ErrInvalid, `"time"`},
		{"agentVersion missing", edit(t, "reported", func(m map[string]any) { delete(m, "agentVersion") }), ErrInvalid, `"agentVersion"`},
		{"agentVersion bad", edit(t, "reported", func(m map[string]any) { m["agentVersion"] = "latest" }), ErrInvalid, `"agentVersion"`},
		{"label key bad", edit(t, "reported", func(m map[string]any) { sub(m, "labels")["a key"] = "x" }), ErrInvalid, `"labels"`},
		{"label value long", edit(t, "reported", func(m map[string]any) { sub(m, "labels")["k"] = strings.Repeat("x", 256) }), ErrInvalid, `"labels.k"`},
		{"too many labels", edit(t, "reported", func(m map[string]any) { m["labels"] = manyLabels }), ErrInvalid, `"labels"`},
		{"active version bad", edit(t, "reported", func(m map[string]any) { sub(m, "active")["version"] = "x" }), ErrInvalid, `"active.version"`},
		{"lastKnownGood name missing", edit(t, "reported", func(m map[string]any) { delete(sub(m, "lastKnownGood"), "name") }), ErrInvalid, `"lastKnownGood.name"`},
		{"provider bad", edit(t, "reported", func(m map[string]any) { m["provider"] = "CUDA!" }), ErrInvalid, `"provider"`},
		{"install seq missing", edit(t, "reported", func(m map[string]any) { delete(sub(m, "install"), "seq") }), ErrInvalid, `"install.seq"`},
		{"install phase missing", edit(t, "reported", func(m map[string]any) { delete(sub(m, "install"), "phase") }), ErrInvalid, `"install.phase"`},
		{"install time missing", edit(t, "reported", func(m map[string]any) { delete(sub(m, "install"), "time") }), ErrInvalid, `"install.time"`},
		{"install retrying", edit(t, "reported", func(m map[string]any) {
			in := sub(m, "install")
			in["phase"], in["attempt"], in["reason"], in["nextAttemptAt"] = "retrying", 2, "download", "2026-03-01T12:00:00Z"
		}), nil, ""},
		{"install reason bad", edit(t, "reported", func(m map[string]any) { sub(m, "install")["reason"] = "Download Cut" }), ErrInvalid, `"install.reason"`},
		{"install attempt negative", edit(t, "reported", func(m map[string]any) { sub(m, "install")["attempt"] = -1 }), ErrInvalid, `"install.attempt"`},
		{"install next attempt when not retrying", edit(t, "reported", func(m map[string]any) { sub(m, "install")["nextAttemptAt"] = "2026-03-01T12:00:00Z" }), ErrInvalid, `"install.nextAttemptAt"`},
		{"install progress negative", edit(t, "reported-installing", func(m map[string]any) { sub(sub(m, "install"), "progress")["done"] = -1 }), ErrInvalid, `"install.progress.done"`},
		{"lastError ok", edit(t, "reported", func(m map[string]any) {
			m["lastError"] = map[string]any{"time": "2026-11-27T08:00:00Z", "op": "install", "bundle": "silero-vad@1.5.0", "error": "smoke test failed"}
		}), nil, ""},
		{"lastError time missing", edit(t, "reported", func(m map[string]any) { m["lastError"] = map[string]any{"op": "install", "error": "x"} }), ErrInvalid, `"lastError.time"`},
		{"lastError op bad", edit(t, "reported", func(m map[string]any) {
			m["lastError"] = map[string]any{"time": "2026-11-27T08:00:00Z", "op": "Install!", "error": "x"}
		}), ErrInvalid, `"lastError.op"`},
		{"lastError too long", edit(t, "reported", func(m map[string]any) {
			m["lastError"] = map[string]any{"time": "2026-11-27T08:00:00Z", "op": "install", "error": strings.Repeat("x", MaxTextBytes+1)}
		}), ErrInvalid, `"lastError.error"`},
		{"buffer negative", edit(t, "reported", func(m map[string]any) { sub(m, "buffer")["records"] = -1 }), ErrInvalid, `"buffer.records"`},
		{"buffer dropped negative", edit(t, "reported", func(m map[string]any) { sub(m, "buffer")["dropped"] = -1 }), ErrMalformed, "dropped"},
	}...)
	runDecodeCases(t, dec, cases)
}

func TestDecodeEvent(t *testing.T) {
	dec := func(b []byte) (Message, error) { return DecodeEvent(b) }
	cases := append(commonCases(t, "event-install-failed"), []decodeCase{
		{"refused golden", edit(t, "event-desired-refused", func(map[string]any) {}), nil, ""},
		{"unknown type tolerated", edit(t, "event-install-failed", func(m map[string]any) { m["type"] = "gpu.overheated" }), nil, ""},
		{"no epoch", edit(t, "event-install-failed", func(m map[string]any) { delete(m, "epoch") }), nil, ""},
		{"data object", edit(t, "event-install-failed", func(m map[string]any) { m["data"] = map[string]any{"k": 1} }), nil, ""},
		{"data not object", edit(t, "event-install-failed", func(m map[string]any) { m["data"] = []any{1} }), ErrInvalid, `"data"`},
		{"id missing", edit(t, "event-install-failed", func(m map[string]any) { delete(m, "id") }), ErrInvalid, `"id"`},
		{"time missing", edit(t, "event-install-failed", func(m map[string]any) { delete(m, "time") }), ErrInvalid, `"time"`},
		{"type missing", edit(t, "event-install-failed", func(m map[string]any) { delete(m, "type") }), ErrInvalid, `"type"`},
		{"type bad", edit(t, "event-install-failed", func(m map[string]any) { m["type"] = "Install Failed" }), ErrInvalid, `"type"`},
		{"epoch bad", edit(t, "event-install-failed", func(m map[string]any) { m["epoch"] = "a/b" }), ErrInvalid, `"epoch"`},
		{"reason bad", edit(t, "event-install-failed", func(m map[string]any) { m["reason"] = "no such thing!" }), ErrInvalid, `"reason"`},
		{"from bad", edit(t, "event-install-failed", func(m map[string]any) { sub(m, "from")["version"] = "" }), ErrInvalid, `"from.version"`},
		{"message long", edit(t, "event-install-failed", func(m map[string]any) { m["message"] = strings.Repeat("x", 4097) }), ErrInvalid, `"message"`},
	}...)
	runDecodeCases(t, dec, cases)
}

func TestDecodeTelemetry(t *testing.T) {
	dec := func(b []byte) (Message, error) { return DecodeTelemetry(b) }
	rec := func(m map[string]any, i int) map[string]any { return m["records"].([]any)[i].(map[string]any) }
	cases := append(commonCases(t, "telemetry"), []decodeCase{
		{"unknown kind tolerated", edit(t, "telemetry", func(m map[string]any) { rec(m, 0)["kind"] = "histogram" }), nil, ""},
		{"scalar payload", edit(t, "telemetry", func(m map[string]any) { rec(m, 0)["payload"] = 3.5 }), nil, ""},
		{"records missing", edit(t, "telemetry", func(m map[string]any) { delete(m, "records") }), ErrInvalid, `"records"`},
		{"records empty", edit(t, "telemetry", func(m map[string]any) { m["records"] = []any{} }), ErrInvalid, `"records"`},
		{"records not array", edit(t, "telemetry", func(m map[string]any) { m["records"] = map[string]any{} }), ErrMalformed, "records"},
		{"record id missing", edit(t, "telemetry", func(m map[string]any) { delete(rec(m, 1), "id") }), ErrInvalid, `"records[1].id"`},
		{"record ids not increasing", edit(t, "telemetry", func(m map[string]any) { rec(m, 1)["id"] = rec(m, 0)["id"] }), ErrInvalid, `"records[1].id"`},
		{"record kind missing", edit(t, "telemetry", func(m map[string]any) { delete(rec(m, 0), "kind") }), ErrInvalid, `"records[0].kind"`},
		{"record time missing", edit(t, "telemetry", func(m map[string]any) { delete(rec(m, 0), "time") }), ErrInvalid, `"records[0].time"`},
		{"record payload missing", edit(t, "telemetry", func(m map[string]any) { delete(rec(m, 0), "payload") }), ErrInvalid, `"records[0].payload"`},
		{"record payload null", edit(t, "telemetry", func(m map[string]any) { rec(m, 0)["payload"] = nil }), ErrInvalid, `"records[0].payload"`},
	}...)
	runDecodeCases(t, dec, cases)
}

func TestDecodeStatus(t *testing.T) {
	dec := func(b []byte) (Message, error) { return DecodeStatus(b) }
	cases := append(commonCases(t, "status-online"), []decodeCase{
		{"offline golden", edit(t, "status-offline", func(map[string]any) {}), nil, ""},
		{"minimal will", []byte(`{"v":1,"deviceId":"d1","state":"offline","session":1}`), nil, ""},
		{"state missing", edit(t, "status-online", func(m map[string]any) { delete(m, "state") }), ErrInvalid, `"state"`},
		{"state unknown", edit(t, "status-online", func(m map[string]any) { m["state"] = "sleeping" }), ErrInvalid, `"state"`},
		{"session missing", edit(t, "status-online", func(m map[string]any) { delete(m, "session") }), ErrInvalid, `"session"`},
		{"agentVersion bad", edit(t, "status-online", func(m map[string]any) { m["agentVersion"] = "x" }), ErrInvalid, `"agentVersion"`},
	}...)
	runDecodeCases(t, dec, cases)
}

func TestEncodeRefusesInvalid(t *testing.T) {
	for _, m := range []Message{
		&DesiredState{V: 1, DeviceID: "d1"},
		&ReportedState{V: 1, DeviceID: "d1"},
		&Event{V: 1},
		&TelemetryBatch{V: 1, DeviceID: "d1"},
		&Status{DeviceID: "d1"},
		(*DesiredState)(nil),
		nil,
	} {
		if _, err := Encode(m); err == nil {
			t.Errorf("Encode(%#v) succeeded", m)
		} else if m != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("Encode(%#v): %v, want ErrInvalid", m, err)
		}
	}
	big := &TelemetryBatch{V: 1, DeviceID: "d1"}
	for i := range 300 {
		big.Records = append(big.Records, Record{ID: uint64(i + 1), Kind: "k", Time: t0,
			Payload: json.RawMessage(`"` + strings.Repeat("x", 1024) + `"`)})
	}
	if _, err := Encode(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Encode(300 KiB batch): %v, want ErrTooLarge", err)
	}
}

func TestReasonOf(t *testing.T) {
	_, errMalformed := DecodeDesired([]byte("{"))
	_, _, errTopic := ParseTopic("ef/v1/dev/a+b/desired")
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, ReasonOther},
		{errors.New("x"), ReasonOther},
		{errMalformed, ReasonMalformed},
		{errTopic, ReasonTopic},
		{ErrDuplicate, ReasonDuplicate},
		{ErrReplay, ReasonReplay},
		{ErrExpired, ReasonExpired},
		{ErrNotYetValid, ReasonNotYetValid},
		{ErrWrongDevice, ReasonWrongDevice},
		{ErrVersion, ReasonVersion},
		{ErrInvalid, ReasonInvalid},
		{ErrTooLarge, ReasonTooLarge},
		{ErrDeviceID, ReasonDeviceID},
	} {
		if got := ReasonOf(c.err); got != c.want {
			t.Errorf("ReasonOf(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if !errors.Is(ErrDuplicate, ErrReplay) {
		t.Error("ErrDuplicate does not wrap ErrReplay")
	}
}

func TestCounters(t *testing.T) {
	var c Counters
	if c.Get("x") != 0 {
		t.Fatal("fresh counter not zero")
	}
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 1000 {
				c.Inc(ReasonReplay)
			}
		}()
	}
	for range 4 {
		<-done
	}
	c.Count(ErrExpired)
	c.Add("custom", 5)
	if got := c.Get(ReasonReplay); got != 4000 {
		t.Fatalf("replay = %d, want 4000", got)
	}
	snap := c.Snapshot()
	if snap[ReasonExpired] != 1 || snap["custom"] != 5 || len(snap) != 3 {
		t.Fatalf("snapshot %v", snap)
	}
	if r := c.Reasons(); strings.Join(r, ",") != "custom,expired,replay" {
		t.Fatalf("reasons %v", r)
	}
}

func TestTruncate(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 3, "abc"},
		{"abcd", 3, "abc…"},
		{"ab€", 3, "ab…"}, // € is three bytes: the cut backs off to a rune boundary
		{"€", 2, "…"},
		{"", 0, ""},
	} {
		if got := Truncate(c.in, c.n); got != c.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
