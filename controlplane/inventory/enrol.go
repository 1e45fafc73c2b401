package inventory

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"

	bolt "go.etcd.io/bbolt"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// passwordBytes is the entropy of an issued device password. Passwords are
// random, so a single SHA-256 is a sound way to store them (a slow hash
// defends weak human passwords; it would only slow down every CONNECT).
const passwordBytes = 32

// Credentials are what a device receives when it enrols with a token: its
// MQTT username (the device id) and password. The password is returned
// only once; the inventory keeps its SHA-256.
type Credentials struct {
	DeviceID string `json:"deviceId"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// Enroll enrols device id with labels, in exchange for a valid enrolment
// token, and returns its MQTT credentials. The token is compared in
// constant time against every configured one (ErrEnrolToken if none
// matches). An id already enrolled fails with ErrExists unless
// Options.AllowReenrol is set, in which case the device keeps its state
// and labels (labels, if non-empty, replace them) and gets a new password.
func (s *Store) Enroll(ctx context.Context, id string, labels map[string]string, enrolToken string) (Credentials, error) {
	if err := ctx.Err(); err != nil {
		return Credentials{}, err
	}
	if err := protocol.ValidateDeviceID(id); err != nil {
		return Credentials{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := ValidateLabels(labels); err != nil {
		return Credentials{}, fmt.Errorf("enrolling %q: %w", id, err)
	}
	tokenName, ok := s.checkEnrolToken(enrolToken)
	if !ok {
		s.log.Warn("inventory: enrolment refused: bad token", "device", id)
		return Credentials{}, fmt.Errorf("enrolling %q: %w", id, ErrEnrolToken)
	}
	creds, err := s.issuePassword(id, func(d *Device, exists bool) error {
		if exists && !s.opts.AllowReenrol {
			return fmt.Errorf("%w: %q (delete it or reset its password first)", ErrExists, id)
		}
		if !exists || len(labels) > 0 {
			d.Labels = maps.Clone(labels)
		}
		d.Enrolment.Method, d.Enrolment.Token = EnrolToken, tokenName
		return nil
	})
	if err != nil {
		return Credentials{}, fmt.Errorf("enrolling %q: %w", id, err)
	}
	s.log.Info("inventory: device enrolled", "device", id, "token", tokenName)
	return creds, nil
}

// ResetPassword issues device id a new password (for an operator, e.g.
// after the device lost its credentials); the old one stops working.
func (s *Store) ResetPassword(ctx context.Context, id string) (Credentials, error) {
	if err := ctx.Err(); err != nil {
		return Credentials{}, err
	}
	creds, err := s.issuePassword(id, func(d *Device, exists bool) error {
		if !exists {
			return fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		return nil
	})
	if err != nil {
		return Credentials{}, fmt.Errorf("resetting the password of %q: %w", id, err)
	}
	s.log.Info("inventory: device password reset", "device", id)
	return creds, nil
}

// issuePassword creates or updates device id through edit and stores the
// hash of a fresh password for it, in one transaction.
func (s *Store) issuePassword(id string, edit func(d *Device, exists bool) error) (Credentials, error) {
	var raw [passwordBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Credentials{}, fmt.Errorf("generating a password: %w", err)
	}
	password := base64.RawURLEncoding.EncodeToString(raw[:])
	hash := sha256.Sum256([]byte(password))
	now := s.now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		d, err := getDevice(tx, id)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if !exists {
			d = &Device{ID: id, Created: now}
		}
		if err := edit(d, exists); err != nil {
			return err
		}
		d.Enrolment.At = now
		d.Enrolment.Count++
		if err := tx.Bucket(bucketCreds).Put([]byte(id), hash[:]); err != nil {
			return err
		}
		return putDevice(tx, d)
	})
	s.forgetAuth(id)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{DeviceID: id, Username: id, Password: password}, nil
}

// EnrollCert enrols device id as authenticated by a client certificate
// with CommonName id (no password is issued; password logins stay
// refused). Enrolling an id that exists fails with ErrExists.
func (s *Store) EnrollCert(ctx context.Context, id string, labels map[string]string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := protocol.ValidateDeviceID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := ValidateLabels(labels); err != nil {
		return fmt.Errorf("enrolling %q: %w", id, err)
	}
	if err := s.enrollCert(id, labels); err != nil {
		return fmt.Errorf("enrolling %q: %w", id, err)
	}
	s.log.Info("inventory: device enrolled", "device", id, "method", EnrolCert)
	return nil
}

func (s *Store) enrollCert(id string, labels map[string]string) error {
	now := s.now()
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketDevices).Get([]byte(id)) != nil {
			return fmt.Errorf("%w: %q", ErrExists, id)
		}
		d := &Device{ID: id, Labels: maps.Clone(labels), Created: now,
			Enrolment: Enrolment{Method: EnrolCert, At: now, Count: 1}}
		if len(d.Labels) == 0 {
			d.Labels = nil
		}
		return putDevice(tx, d)
	})
}

// checkEnrolToken compares tok against every configured token in constant
// time and returns the name of the one it matches.
func (s *Store) checkEnrolToken(tok string) (string, bool) {
	h := sha256.Sum256([]byte(tok))
	match := -1
	for i := range s.tokens {
		if subtle.ConstantTimeCompare(h[:], s.tokens[i].hash[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return "", false
	}
	return s.tokens[match].name, true
}

// Authenticate checks a device's MQTT username (its id) and password and
// returns the device id. The comparison is constant-time (an unknown
// username costs the same hash and compare); hashes are cached after the
// first lookup, so a CONNECT costs one SHA-256 and a map lookup.
func (s *Store) Authenticate(username, password string) (deviceID string, ok bool) {
	got := sha256.Sum256([]byte(password))
	want, found := s.passwordHash(username)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 || !found {
		return "", false
	}
	return username, true
}

// AuthenticateDevice is Authenticate, under the name the embedded broker's
// Authenticator interface uses.
func (s *Store) AuthenticateDevice(username, password string) (string, bool) {
	return s.Authenticate(username, password)
}

// AuthorizeCertDevice reports whether a device presenting a verified client
// certificate with CommonName id may connect: it must be enrolled (or,
// with Options.CertAutoEnrol, it is enrolled now).
func (s *Store) AuthorizeCertDevice(id string) bool {
	if protocol.ValidateDeviceID(id) != nil {
		return false
	}
	var exists bool
	err := s.db.View(func(tx *bolt.Tx) error {
		exists = tx.Bucket(bucketDevices).Get([]byte(id)) != nil
		return nil
	})
	if err != nil {
		s.log.Error("inventory: certificate authorization", "device", id, "err", err)
		return false
	}
	if exists || !s.opts.CertAutoEnrol {
		return exists
	}
	if err := s.enrollCert(id, nil); err != nil && !errors.Is(err, ErrExists) {
		s.log.Error("inventory: certificate auto-enrolment", "device", id, "err", err)
		return false
	}
	s.log.Info("inventory: device enrolled", "device", id, "method", EnrolCert, "auto", true)
	return true
}

// passwordHash returns the stored password hash of device id, from the
// cache or the file.
func (s *Store) passwordHash(id string) (h [sha256.Size]byte, ok bool) {
	s.authMu.RLock()
	h, ok = s.auth[id]
	gen := s.gen
	s.authMu.RUnlock()
	if ok {
		return h, true
	}
	if protocol.ValidateDeviceID(id) != nil {
		return h, false
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketCreds).Get([]byte(id)); len(v) == sha256.Size {
			copy(h[:], v)
			ok = true
		}
		return nil
	})
	if err != nil || !ok {
		// Unknown ids are not cached: a flood of made-up usernames must
		// not grow memory.
		return [sha256.Size]byte{}, false
	}
	s.authMu.Lock()
	if s.gen == gen {
		s.auth[id] = h
	}
	s.authMu.Unlock()
	return h, true
}

// forgetAuth drops id's cached hash after its credentials changed.
func (s *Store) forgetAuth(id string) {
	s.authMu.Lock()
	delete(s.auth, id)
	s.gen++
	s.authMu.Unlock()
}
