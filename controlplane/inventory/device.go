package inventory

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// EnrolMethod says how a device enrolled.
type EnrolMethod string

// Enrolment methods.
const (
	// EnrolToken: with a pre-shared enrolment token, in exchange for a
	// per-device MQTT password.
	EnrolToken EnrolMethod = "token"
	// EnrolCert: by a client certificate whose CommonName is the device
	// id, verified by the broker against the client CA.
	EnrolCert EnrolMethod = "cert"
)

// Enrolment records how and when a device enrolled.
type Enrolment struct {
	Method EnrolMethod `json:"method"`
	// Token is the name of the enrolment token used (EnrolToken).
	Token string `json:"token,omitempty"`
	// At is when the device (last) enrolled or had its password reset.
	At time.Time `json:"at"`
	// Count is how many times it enrolled (re-enrolments and password
	// resets included).
	Count int `json:"count"`
}

// Status is a device's connection state, from its status messages.
type Status struct {
	// Online is true between an online status and the offline one (the
	// agent's or its last will) of the same connection.
	Online bool `json:"online"`
	// Session is the connection the state belongs to (protocol.Status);
	// older sessions' messages are ignored.
	Session uint64 `json:"session,omitempty"`
	// Since is when the state was recorded.
	Since time.Time `json:"since,omitzero"`
	// Reason says why the device went offline, if known.
	Reason string `json:"reason,omitempty"`
	// AgentVersion is the version the agent gave when it connected.
	AgentVersion string `json:"agentVersion,omitempty"`
}

// Device is what the inventory holds about one device.
type Device struct {
	ID string `json:"id"`
	// Labels are the labels an operator (or enrolment) gave the device.
	Labels    map[string]string `json:"labels,omitempty"`
	Enrolment Enrolment         `json:"enrolment"`
	Created   time.Time         `json:"created"`
	// LastSeen is the latest time a message from the device was
	// recorded (reported state, status, Touch).
	LastSeen time.Time `json:"lastSeen,omitzero"`
	Status   Status    `json:"status"`
	// Reported is the state the device last reported, received at
	// ReportedAt (fleetd's clock).
	Reported   *protocol.ReportedState `json:"reported,omitempty"`
	ReportedAt time.Time               `json:"reportedAt,omitzero"`
	// Desired is the state fleetd last issued to the device.
	Desired *protocol.DesiredState `json:"desired,omitempty"`
}

// EffectiveLabels are the labels selectors match: the labels the device
// reports, overlaid by the inventory's own (which win on a conflict).
func (d *Device) EffectiveLabels() map[string]string {
	var reported map[string]string
	if d.Reported != nil {
		reported = d.Reported.Labels
	}
	return effectiveLabels(d.Labels, reported)
}

func (d *Device) seen(at time.Time) {
	if at.After(d.LastSeen) {
		d.LastSeen = at
	}
}

// Get returns the device id.
func (s *Store) Get(id string) (*Device, error) {
	var d *Device
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		d, err = getDevice(tx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// List returns the devices whose effective labels sel matches, sorted by
// id. The zero Selector lists every device.
func (s *Store) List(sel Selector) ([]*Device, error) {
	var out []*Device
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
			var d Device
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("inventory: decoding device %q: %w", k, err)
			}
			if sel.Matches(d.EffectiveLabels()) {
				out = append(out, &d)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetLabels replaces the inventory labels of device id.
func (s *Store) SetLabels(id string, labels map[string]string) error {
	if err := ValidateLabels(labels); err != nil {
		return fmt.Errorf("device %q: %w", id, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		d, err := getDevice(tx, id)
		if err != nil {
			return err
		}
		d.Labels = maps.Clone(labels)
		if len(d.Labels) == 0 {
			d.Labels = nil
		}
		return putDevice(tx, d)
	})
}

// Delete removes device id with its credentials and dedup windows. The
// high-water mark of its desired seq is kept, so that a device enrolled
// again under the same id never sees a seq it saw before.
func (s *Store) Delete(id string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketDevices).Get([]byte(id)) == nil {
			return fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		if err := tx.Bucket(bucketDevices).Delete([]byte(id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketCreds).Delete([]byte(id)); err != nil {
			return err
		}
		return deletePrefix(tx.Bucket(bucketDedup), dedupPrefix(id))
	})
	s.forgetAuth(id)
	if err != nil {
		return err
	}
	s.log.Info("inventory: device deleted", "device", id)
	return nil
}

// UpdateReported stores rs as the state device id reports, received at at.
// rs must be valid and name the device.
func (s *Store) UpdateReported(id string, rs *protocol.ReportedState, at time.Time) error {
	if err := rs.Validate(); err != nil {
		return fmt.Errorf("%w: device %q: %w", ErrInvalid, id, err)
	}
	if rs.DeviceID != id {
		return fmt.Errorf("%w: reported state of device %q stored for %q", ErrInvalid, rs.DeviceID, id)
	}
	b, err := json.Marshal(rs)
	if err != nil {
		return fmt.Errorf("inventory: encoding reported state of %q: %w", id, err)
	}
	return s.db.Batch(func(tx *bolt.Tx) error {
		d, err := getDevice(tx, id)
		if err != nil {
			return err
		}
		// A private copy, so that a retried batch and the caller's later
		// changes to rs do not alias what is stored.
		var cp protocol.ReportedState
		if err := json.Unmarshal(b, &cp); err != nil {
			return err
		}
		d.Reported, d.ReportedAt = &cp, at
		d.seen(at)
		return putDevice(tx, d)
	})
}

// SetStatus records a status message from (or, for the last will, on
// behalf of) device id, received at at. Messages of a session older than
// the latest recorded one are ignored, as is an online message of the
// session that has already gone offline, so that a late will cannot mark a
// reconnected device offline. It reports whether st was applied.
func (s *Store) SetStatus(id string, st *protocol.Status, at time.Time) (applied bool, err error) {
	if err := st.Validate(); err != nil {
		return false, fmt.Errorf("%w: device %q: %w", ErrInvalid, id, err)
	}
	if st.DeviceID != id {
		return false, fmt.Errorf("%w: status of device %q stored for %q", ErrInvalid, st.DeviceID, id)
	}
	online := st.State == protocol.StateOnline
	err = s.db.Batch(func(tx *bolt.Tx) error {
		applied = false
		d, err := getDevice(tx, id)
		if err != nil {
			return err
		}
		d.seen(at)
		cur := d.Status
		if st.Session > cur.Session || (st.Session == cur.Session && !online && cur.Online) {
			applied = true
			d.Status = Status{Online: online, Session: st.Session, Since: at, Reason: st.Reason, AgentVersion: st.AgentVersion}
			if !online && st.AgentVersion == "" {
				d.Status.AgentVersion = cur.AgentVersion
			}
		}
		return putDevice(tx, d)
	})
	return applied, err
}

// Touch records that device id was heard from at at (e.g. a telemetry
// batch), moving LastSeen forward.
func (s *Store) Touch(id string, at time.Time) error {
	return s.db.Batch(func(tx *bolt.Tx) error {
		d, err := getDevice(tx, id)
		if err != nil {
			return err
		}
		if !at.After(d.LastSeen) {
			return nil
		}
		d.seen(at)
		return putDevice(tx, d)
	})
}

// SetDesired issues a new desired state to device id: fn gets the one
// issued last (nil if none) and returns the next; SetDesired sets its Seq
// to one above every seq this device id was ever issued (persisted, and
// kept across Delete), fills in DeviceID and V, validates and stores it,
// all in one transaction, and returns it. If fn returns an error nothing
// changes and SetDesired returns that error as is. fn runs exactly once,
// inside the transaction: it must not call the Store.
func (s *Store) SetDesired(id string, fn func(prev *protocol.DesiredState) (protocol.DesiredState, error)) (protocol.DesiredState, error) {
	var out protocol.DesiredState
	err := s.db.Update(func(tx *bolt.Tx) error {
		d, err := getDevice(tx, id)
		if err != nil {
			return err
		}
		var prev *protocol.DesiredState
		if d.Desired != nil {
			cp := *d.Desired
			prev = &cp
		}
		next, err := fn(prev)
		if err != nil {
			return err
		}
		seqs := tx.Bucket(bucketSeq)
		var hw uint64
		if v := seqs.Get([]byte(id)); len(v) == 8 {
			hw = binary.BigEndian.Uint64(v)
		}
		if d.Desired != nil && d.Desired.Seq > hw {
			hw = d.Desired.Seq
		}
		next.Seq = hw + 1
		next.DeviceID = id
		if next.V == 0 {
			next.V = protocol.Version
		}
		if err := next.Validate(); err != nil {
			return fmt.Errorf("%w: desired state for %q: %w", ErrInvalid, id, err)
		}
		if err := seqs.Put([]byte(id), u64(next.Seq)); err != nil {
			return err
		}
		d.Desired = &next
		out = next
		return putDevice(tx, d)
	})
	if err != nil {
		return protocol.DesiredState{}, err
	}
	return out, nil
}

// Active is the bundle d reports running, nil if it reported none (or d
// is nil).
func (d *Device) Active() *protocol.BundleID {
	if d == nil || d.Reported == nil {
		return nil
	}
	return d.Reported.Active
}
