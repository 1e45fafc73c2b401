package broker

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
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
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
	}, []byte{b})
}

// OnSessionEstablished registers the connection, so that a connection
// replacing it can wait for it to end (retire).
func (h *accessHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.b.attached.Store(cl, make(chan struct{}))
}

// OnDisconnect signals that the connection's last will, if any, has been
// published. mochi calls it once for every established session.
func (h *accessHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if ch, ok := h.b.attached.LoadAndDelete(cl); ok {
		close(ch.(chan struct{}))
	}
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
	b.retire(cl.ID)
	b.pending.Store(cl, struct{}{})
	b.log.Debug("mqtt client authenticated", "client", cl.ID, "as", who, "remote", cl.Net.Remote)
	return nil
}

// takeoverWait bounds how long a new connection waits for the one it
// replaces to finish.
const takeoverWait = 5 * time.Second

// retire ends the connection a new one with the same client id replaces,
// and waits until it has finished, before mochi takes the session over.
//
// mochi v2.7.9 races here: the replaced connection's goroutine, if its
// session ends with it, deletes "its" client id from the client table
// unless it has already been marked as taken over, and the mark is set
// only after the new connection kicked it. When the old goroutine wins,
// it deletes the new connection's entry, which then silently receives
// nothing (seen when a device reconnects right after disconnecting).
// Waiting for the old connection to clear out first closes the window; it
// also publishes the old connection's last will before the new
// connection's first message, so "offline" cannot overwrite "online".
func (b *Broker) retire(clientID string) {
	old, ok := b.srv.Clients.Get(clientID)
	if !ok || old.Net.Inline {
		return
	}
	if !old.Closed() {
		_ = b.srv.DisconnectClient(old, packets.ErrSessionTakenOver)
	}
	timeout := time.NewTimer(takeoverWait)
	defer timeout.Stop()
	if ch, ok := b.attached.Load(old); ok {
		select {
		case <-ch.(chan struct{}):
		case <-timeout.C:
			b.log.Warn("mqtt takeover: replaced connection did not end", "client", clientID)
			return
		}
	}
	if !sessionEnds(old) {
		return // mochi hands a persistent session over; nothing deletes it
	}
	// The old goroutine deletes its entry right after OnDisconnect.
	for {
		cur, ok := b.srv.Clients.Get(clientID)
		if !ok || cur != old {
			return
		}
		select {
		case <-timeout.C:
			b.log.Warn("mqtt takeover: replaced connection did not clear its session", "client", clientID)
			return
		case <-time.After(time.Millisecond):
		}
	}
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

// storeHook is mochi's bbolt store, narrowed to what must survive a
// restart. mochi's hook writes (and fsyncs) the $SYS statistics every tick
// and every QoS 1 exchange twice, including the PUBACK the broker returns
// for each inbound publish, which caps device ingest at a few hundred
// messages a second. storeHook keeps retained messages, sessions and
// subscriptions as they are, but persists an inflight message only when it
// is an outbound publish to a client whose session outlives the
// connection (a persistent device waiting for fleetd's message), and
// deletes only what it persisted.
type storeHook struct {
	*bolt.Hook

	mu        sync.Mutex
	persisted map[string]struct{} // inflight keys in the store
}

func newStoreHook() *storeHook {
	return &storeHook{Hook: new(bolt.Hook), persisted: make(map[string]struct{})}
}

func (h *storeHook) Provides(b byte) bool {
	if b == mqtt.OnSysInfoTick || b == mqtt.StoredSysInfo {
		return false
	}
	return h.Hook.Provides(b)
}

// inflightKey is the bolt hook's key for an inflight packet.
func inflightKey(cl *mqtt.Client, pk packets.Packet) string {
	return storage.InflightKey + "_" + cl.ID + ":" + pk.FormatID()
}

// sessionEnds reports whether the client's session ends with its
// connection (mochi's own rule).
func sessionEnds(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval == 0
	}
	return cl.Properties.Clean
}

func (h *storeHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type != packets.Publish || sessionEnds(cl) {
		return
	}
	h.Hook.OnQosPublish(cl, pk, sent, resends)
	h.mu.Lock()
	h.persisted[inflightKey(cl, pk)] = struct{}{}
	h.mu.Unlock()
}

// forget reports whether key was persisted, and forgets it.
func (h *storeHook) forget(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.persisted[key]
	delete(h.persisted, key)
	return ok
}

func (h *storeHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	// The broker's own PUBACK to an inbound publish (built by the server,
	// so it has a creation time; a client's PUBACK read off the wire has
	// none) shares the packet-id space with outbound messages in the key:
	// it must not delete an outbound message waiting for its PUBACK.
	if pk.FixedHeader.Type == packets.Puback && pk.Created != 0 {
		return
	}
	if h.forget(inflightKey(cl, pk)) {
		h.Hook.OnQosComplete(cl, pk)
	}
}

func (h *storeHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if h.forget(inflightKey(cl, pk)) {
		h.Hook.OnQosDropped(cl, pk)
	}
}

// StoredInflightMessages loads the persisted inflight messages. mochi
// v2.7.9's bolt hook does not store the packet id (its badger hook does),
// so a restored message would be resent with id 0, which clients drop;
// the id is recovered from the key ("IFM_{client}:{id}").
func (h *storeHook) StoredInflightMessages() ([]storage.Message, error) {
	v, err := h.Hook.StoredInflightMessages()
	h.mu.Lock()
	defer h.mu.Unlock()
	out := v[:0]
	for _, m := range v {
		if m.PacketID == 0 {
			i := strings.LastIndexByte(m.ID, ':')
			id, perr := strconv.ParseUint(m.ID[i+1:], 10, 16)
			if i < 0 || perr != nil || id == 0 {
				h.Log.Warn("dropping stored inflight message without a packet id", "key", m.ID)
				continue
			}
			m.PacketID = uint16(id)
		}
		h.persisted[m.ID] = struct{}{}
		out = append(out, m)
	}
	return out, err
}
