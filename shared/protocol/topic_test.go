package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateDeviceID(t *testing.T) {
	for _, c := range []struct {
		id string
		ok bool
	}{
		{"d", true},
		{"jetson-0042", true},
		{"Rpi4.lab_3", true},
		{"0", true},
		{strings.Repeat("a", MaxDeviceIDLen), true},
		{strings.Repeat("a", MaxDeviceIDLen+1), false},
		{"", false},
		{"-lead", false},
		{".lead", false},
		{"_lead", false},
		{"a/b", false},
		{"a+b", false},
		{"a#", false},
		{"$SYS", false},
		{"a b", false},
		{"a:b", false},
		{"é", false},
		{"a\x00", false},
	} {
		err := ValidateDeviceID(c.id)
		if (err == nil) != c.ok {
			t.Errorf("ValidateDeviceID(%q) = %v, want ok=%v", c.id, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrDeviceID) {
			t.Errorf("ValidateDeviceID(%q) = %v, not ErrDeviceID", c.id, err)
		}
	}
}

func TestTopicRoundTrip(t *testing.T) {
	for _, k := range Kinds() {
		topic, err := Topic("jetson-0042", k)
		if err != nil {
			t.Fatal(err)
		}
		if want := "ef/v1/dev/jetson-0042/" + string(k); topic != want {
			t.Fatalf("Topic = %q, want %q", topic, want)
		}
		id, kind, err := ParseTopic(topic)
		if err != nil || id != "jetson-0042" || kind != k {
			t.Fatalf("ParseTopic(%q) = %q, %q, %v", topic, id, kind, err)
		}
	}
	if _, err := Topic("a/b", KindDesired); !errors.Is(err, ErrDeviceID) {
		t.Errorf("Topic with a bad id: %v", err)
	}
	if _, err := Topic("a", "secrets"); !errors.Is(err, ErrTopic) {
		t.Errorf("Topic with a bad kind: %v", err)
	}
}

func TestKindProperties(t *testing.T) {
	for _, c := range []struct {
		k                   Kind
		fromDevice, retains bool
	}{
		{KindDesired, false, true},
		{KindReported, true, true},
		{KindEvents, true, false},
		{KindTelemetry, true, false},
		{KindStatus, true, true},
		{"bogus", false, false},
	} {
		if c.k.FromDevice() != c.fromDevice || c.k.Retained() != c.retains {
			t.Errorf("%s: FromDevice=%v Retained=%v", c.k, c.k.FromDevice(), c.k.Retained())
		}
		if c.k.Valid() && c.k.QoS() != 1 {
			t.Errorf("%s: QoS %d", c.k, c.k.QoS())
		}
	}
}

func TestFilters(t *testing.T) {
	if got := Filter(KindTelemetry); got != "ef/v1/dev/+/telemetry" {
		t.Errorf("Filter = %q", got)
	}
	if got := SharedFilter(SharedGroup, KindEvents); got != "$share/fleetd/ef/v1/dev/+/events" {
		t.Errorf("SharedFilter = %q", got)
	}
}

func TestParseTopicRefuses(t *testing.T) {
	for _, topic := range []string{
		"",
		"ef/v1/dev/",
		"ef/v1/dev/d1",
		"ef/v1/dev/d1/",
		"ef/v1/dev//desired",
		"ef/v1/dev/d1/desired/extra",
		"ef/v1/dev/d1/Desired",
		"ef/v1/dev/+/desired",
		"ef/v1/dev/#",
		"ef/v1/dev/d1/#",
		"ef/v2/dev/d1/desired",
		"/ef/v1/dev/d1/desired",
		"$share/fleetd/ef/v1/dev/d1/telemetry",
		"ef/v1/dev/d1/status\x00",
	} {
		if id, k, err := ParseTopic(topic); !errors.Is(err, ErrTopic) {
			t.Errorf("ParseTopic(%q) = %q, %q, %v; want ErrTopic", topic, id, k, err)
		}
	}
}
