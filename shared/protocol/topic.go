package protocol

import (
	"fmt"
	"strings"
)

const (
	// Prefix is the versioned root of the topic tree. A change to the tree
	// that old peers cannot follow gets a new prefix (ef/v2/).
	Prefix = "ef/v1/"
	// DevicePrefix is the root of the per-device subtrees:
	// DevicePrefix + deviceID + "/" + kind.
	DevicePrefix = Prefix + "dev/"
	// SharedGroup is the MQTT 5 shared-subscription group fleetd replicas
	// join so that the broker splits device traffic between them.
	SharedGroup = "fleetd"
	// MaxDeviceIDLen is the longest device id, in bytes.
	MaxDeviceIDLen = 64
)

// Kind is the last level of a device topic: which message travels on it.
type Kind string

// The kinds of the device subtree.
const (
	// KindDesired carries DesiredState from fleetd to the device (retained).
	KindDesired Kind = "desired"
	// KindReported carries ReportedState from the device (retained).
	KindReported Kind = "reported"
	// KindEvents carries Event messages from the device.
	KindEvents Kind = "events"
	// KindTelemetry carries TelemetryBatch messages from the device.
	KindTelemetry Kind = "telemetry"
	// KindStatus carries Status from the device (retained); the device's
	// last will sets it offline.
	KindStatus Kind = "status"
)

// Kinds lists every kind of the device subtree, in documentation order.
func Kinds() []Kind {
	return []Kind{KindDesired, KindReported, KindEvents, KindTelemetry, KindStatus}
}

// Valid reports whether k is one of the kinds of the device subtree.
func (k Kind) Valid() bool {
	switch k {
	case KindDesired, KindReported, KindEvents, KindTelemetry, KindStatus:
		return true
	}
	return false
}

// FromDevice reports whether devices publish messages of kind k (every
// kind but desired, which only fleetd writes).
func (k Kind) FromDevice() bool {
	return k.Valid() && k != KindDesired
}

// Retained reports whether messages of kind k are published with the
// MQTT retain flag, so that a subscriber gets the latest one on subscribe.
func (k Kind) Retained() bool {
	switch k {
	case KindDesired, KindReported, KindStatus:
		return true
	}
	return false
}

// QoS is the MQTT quality of service messages of kind k are published and
// subscribed with. Every kind is at-least-once (1).
func (k Kind) QoS() byte { return 1 }

// ValidateDeviceID checks a device id: 1 to MaxDeviceIDLen bytes of ASCII
// letters, digits, '.', '_' and '-', starting with a letter or a digit. The
// charset keeps ids safe as an MQTT topic level (no '/', '+', '#', '$'), as
// a mosquitto %u/%c substitution, and as a file name. The error wraps
// ErrDeviceID.
func ValidateDeviceID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrDeviceID)
	}
	if len(id) > MaxDeviceIDLen {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrDeviceID, len(id), MaxDeviceIDLen)
	}
	if i := badIdentByte(id); i >= 0 {
		return fmt.Errorf("%w: %q: byte %d (%q) is not allowed (letters, digits, '.', '_', '-'; first a letter or digit)",
			ErrDeviceID, id, i, id[i])
	}
	return nil
}

// badIdentByte returns the index of the first byte of s outside
// [A-Za-z0-9._-] (or of a leading '.', '_', '-'), or -1.
func badIdentByte(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return i
		}
	}
	return -1
}

// Topic returns the topic of kind k in the subtree of device id.
func Topic(id string, k Kind) (string, error) {
	if err := ValidateDeviceID(id); err != nil {
		return "", err
	}
	if !k.Valid() {
		return "", fmt.Errorf("%w: unknown kind %q", ErrTopic, k)
	}
	return DevicePrefix + id + "/" + string(k), nil
}

// Filter returns the subscription filter that matches kind k of every
// device, e.g. "ef/v1/dev/+/telemetry".
func Filter(k Kind) string {
	return DevicePrefix + "+/" + string(k)
}

// SharedFilter returns the MQTT 5 shared-subscription form of Filter for
// group, e.g. "$share/fleetd/ef/v1/dev/+/telemetry": the broker hands each
// message to one member of the group. Pass SharedGroup unless fleetd
// replicas are partitioned on purpose.
func SharedFilter(group string, k Kind) string {
	return "$share/" + group + "/" + Filter(k)
}

// ParseTopic splits a device topic into its device id and kind. It refuses
// anything outside the device subtree, an invalid device id, an unknown
// kind and extra levels; the error wraps ErrTopic.
func ParseTopic(topic string) (deviceID string, kind Kind, err error) {
	rest, ok := strings.CutPrefix(topic, DevicePrefix)
	if !ok {
		return "", "", fmt.Errorf("%w: %q is not under %q", ErrTopic, topic, DevicePrefix)
	}
	id, k, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", fmt.Errorf("%w: %q has no kind level", ErrTopic, topic)
	}
	if err := ValidateDeviceID(id); err != nil {
		return "", "", fmt.Errorf("%w: %q: %w", ErrTopic, topic, err)
	}
	kind = Kind(k)
	if !kind.Valid() {
		return "", "", fmt.Errorf("%w: %q: unknown kind %q", ErrTopic, topic, k)
	}
	return id, kind, nil
}
