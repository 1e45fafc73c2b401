package broker

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgefleet/edgefleet/shared/protocol"
)

// accessHook authenticates clients on CONNECT, enforces the topic rules
// and runs Config.Ingest.
type accessHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *accessHook) ID() string { return "edgefleet-access" }

func (h *accessHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect,
		mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck,
		mqtt.OnPublish,
	}, []byte{b})
}

// connectError is a refused CONNECT: the CONNACK reason and the counter.
type connectError struct {
	code   packets.Code
	reason string
	msg    string
}

func (e *connectError) Error() string { return e.msg }

// OnConnect authenticates the client and checks its client id and will,
// answering a refusal with a CONNACK that says why. OnConnectAuthenticate
// then admits what OnConnect passed.
func (h *accessHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	b := h.b
	who, err := b.authenticate(cl, pk)
	if err != nil {
		var ce *connectError
		if !errors.As(err, &ce) {
			ce = &connectError{code: packets.ErrNotAuthorized, reason: RefusedAuth, msg: err.Error()}
		}
		code := ce.code
		if cl.Properties.ProtocolVersion < 5 && code == packets.ErrNotAuthorized {
			code = packets.Err3NotAuthorized // 0x87 has no MQTT 3.1.1 equivalent but 5
		}
		b.refuse(ce.reason, cl, "mqtt connect refused", "error", ce.msg)
		_ = b.srv.SendConnack(cl, code, false, nil)
		return code
	}
	b.pending.Store(cl, struct{}{})
	b.log.Debug("mqtt client authenticated", "client", cl.ID, "as", who, "remote", cl.Net.Remote)
	return nil
}

// OnConnectAuthenticate admits exactly the clients OnConnect passed.
func (h *accessHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	_, ok := h.b.pending.LoadAndDelete(cl)
	return ok
}

// OnACLCheck applies the topic rules to publishes (write), subscription
// filters and deliveries (read).
func (h *accessHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	b := h.b
	if write {
		if b.mayWrite(cl, topic) {
			return true
		}
		b.refuse(RefusedPublish, cl, "mqtt publish refused", "topic", topic)
		return false
	}
	if b.mayRead(cl, topic) {
		return true
	}
	b.refuse(RefusedSubscribe, cl, "mqtt subscribe refused", "filter", topic)
	return false
}

// OnPublish hands an allowed device publish to Config.Ingest before the
// broker acknowledges it.
func (h *accessHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	b := h.b
	if b.cfg.Ingest == nil || b.isService(cl) {
		return pk, nil
	}
	id, kind, err := protocol.ParseTopic(pk.TopicName)
	if err != nil || id != cl.ID {
		// The ACL check let it through, so this cannot happen; refuse
		// rather than hand Ingest something unattributed.
		return pk, packets.ErrRejectPacket
	}
	err = b.cfg.Ingest(DeviceMessage{
		DeviceID: id,
		Kind:     kind,
		Topic:    pk.TopicName,
		Payload:  pk.Payload,
		Retained: pk.FixedHeader.Retain,
		QoS:      pk.FixedHeader.Qos,
	})
	if err == nil {
		return pk, nil
	}
	b.refuse(RefusedIngest, cl, "mqtt publish not ingested", "topic", pk.TopicName, "error", err)
	if pk.FixedHeader.Qos > 0 {
		if cl.Properties.ProtocolVersion == 5 {
			return pk, packets.ErrUnspecifiedError // PUBACK 0x80: not accepted
		}
		// MQTT 3.1.1 has no negative PUBACK: drop the connection so the
		// client resends after reconnecting.
		cl.Stop(fmt.Errorf("ingest refused: %w", err))
	}
	return pk, packets.ErrRejectPacket
}

// authenticate identifies the client: a service user, a device with a
// verified client certificate, or a device with a password; then checks
// its client id and its will topic. It returns a description for logs.
func (b *Broker) authenticate(cl *mqtt.Client, pk packets.Packet) (string, error) {
	user := string(pk.Connect.Username)
	clientID := pk.Connect.ClientIdentifier

	if isService, ok := b.checkService(user, pk.Connect.Password); isService {
		if !ok {
			return "", &connectError{packets.ErrBadUsernameOrPassword, RefusedAuth, fmt.Sprintf("service user %q: bad password", user)}
		}
		if !strings.HasPrefix(clientID, user) {
			return "", &connectError{packets.ErrClientIdentifierNotValid, RefusedServiceClient,
				fmt.Sprintf("service user %q: client id %q must start with the username", user, clientID)}
		}
		return "service " + user, nil
	}

	var deviceID string
	if cn, ok := verifiedCertName(cl); ok {
		if user != "" && user != cn {
			return "", &connectError{packets.ErrBadUsernameOrPassword, RefusedAuth,
				fmt.Sprintf("certificate for %q presented with username %q", cn, user)}
		}
		if err := protocol.ValidateDeviceID(cn); err != nil {
			return "", &connectError{packets.ErrNotAuthorized, RefusedAuth, fmt.Sprintf("client certificate: %v", err)}
		}
		if ca, ok := b.cfg.Auth.(CertAuthorizer); ok && !ca.AuthorizeCertDevice(cn) {
			return "", &connectError{packets.ErrNotAuthorized, RefusedAuth, fmt.Sprintf("device %q (certificate) not authorized", cn)}
		}
		deviceID = cn
	} else {
		if b.cfg.Auth == nil {
			return "", &connectError{packets.ErrBadUsernameOrPassword, RefusedAuth, "no client certificate, and password logins are not configured"}
		}
		id, ok := b.cfg.Auth.AuthenticateDevice(user, string(pk.Connect.Password))
		if !ok {
			return "", &connectError{packets.ErrBadUsernameOrPassword, RefusedAuth, fmt.Sprintf("device login %q: bad username or password", user)}
		}
		if err := protocol.ValidateDeviceID(id); err != nil {
			return "", &connectError{packets.ErrNotAuthorized, RefusedAuth, fmt.Sprintf("authenticator returned %v", err)}
		}
		deviceID = id
	}
	if deviceID == mqtt.InlineClientId {
		return "", &connectError{packets.ErrClientIdentifierNotValid, RefusedReservedID, fmt.Sprintf("device id %q is reserved", deviceID)}
	}
	if clientID != deviceID {
		return "", &connectError{packets.ErrClientIdentifierNotValid, RefusedClientID,
			fmt.Sprintf("device %q connected with client id %q: the client id must be the device id", deviceID, clientID)}
	}
	if cl.Properties.Will.Flag == 1 && !b.mayWriteDevice(deviceID, cl.Properties.Will.TopicName) {
		return "", &connectError{packets.ErrNotAuthorized, RefusedWill,
			fmt.Sprintf("device %q: last will on %q, which it may not publish to", deviceID, cl.Properties.Will.TopicName)}
	}
	return "device " + deviceID, nil
}

// mayWriteDevice is mayWrite for a device not attached yet.
func (b *Broker) mayWriteDevice(deviceID, topic string) bool {
	id, kind, err := protocol.ParseTopic(topic)
	return err == nil && id == deviceID && kind.FromDevice()
}

// verifiedCertName returns the CommonName of the client's certificate if
// the TLS handshake verified it against the client CA.
func verifiedCertName(cl *mqtt.Client) (string, bool) {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return "", false
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return "", false
	}
	return st.PeerCertificates[0].Subject.CommonName, true
}

// storeHook is mochi's bbolt store without the $SYS statistics, which it
// would otherwise rewrite (with an fsync) every tick.
type storeHook struct {
	*bolt.Hook
}

func (h *storeHook) Provides(b byte) bool {
	if b == mqtt.OnSysInfoTick || b == mqtt.StoredSysInfo {
		return false
	}
	return h.Hook.Provides(b)
}
