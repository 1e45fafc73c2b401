package broker

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// target is a broker under test: the embedded one or a real mosquitto
// configured with MosquittoACL. The same scenarios run against both.
type target struct {
	addr     string
	embedded *Broker // nil for mosquitto
}

// More service users: mosquitto (use_username_as_clientid) needs one per
// concurrent service connection.
var services = map[string]string{
	svcUser:     svcPass,
	svc2User:    svc2Pass,
	"_fleetd-3": "service-password-three-01234",
	"_fleetd-4": "service-password-four-012345",
	"_fleetd-5": "service-password-five-012345",
}

const (
	svc2User = "_fleetd-2"
	svc2Pass = "service-password-two-0123456"
)

func topic(id string, k protocol.Kind) string {
	s, err := protocol.Topic(id, k)
	if err != nil {
		panic(err)
	}
	return s
}

// expectRefusal checks the embedded broker's counter for reason grew.
func (tg target) expectRefusal(t *testing.T, reason string, before uint64) {
	t.Helper()
	if tg.embedded == nil {
		return
	}
	if got := tg.embedded.Refused(reason); got <= before {
		t.Errorf("refusal counter %s = %d, want > %d", reason, got, before)
	}
}

func (tg target) refused(reason string) uint64 {
	if tg.embedded == nil {
		return 0
	}
	return tg.embedded.Refused(reason)
}

var notAuthorized = regexp.MustCompile(`(?i)not authori[sz]ed|bad user ?name or password`)

// runAccessScenarios is the access-control contract both brokers must
// meet: what a device may and may not do.
func runAccessScenarios(t *testing.T, tg target) {
	obs := newObserver(t, tg.addr, svcUser, svcPass)
	nonce := func(what string) string { return fmt.Sprintf("%s-%d", what, time.Now().UnixNano()) }

	t.Run("device publishes to its own subtree", func(t *testing.T) {
		c := mustDial(t, tg.addr, devA, devA, devices[devA])
		for _, k := range protocol.Kinds() {
			if !k.FromDevice() {
				continue
			}
			p := nonce(string(k))
			if err := c.publish(t, topic(devA, k), []byte(p), k.Retained()); err != nil {
				t.Fatalf("publish %s: %v", k, err)
			}
			obs.until(t, topic(devA, k), p)
		}
	})

	forbidden := []string{
		topic(devB, protocol.KindTelemetry),
		topic(devB, protocol.KindStatus),
		topic(devB, protocol.KindDesired),
		topic(devA, protocol.KindDesired),
		"ef/v1/fleet/broadcast",
		"elsewhere",
	}
	for _, ft := range forbidden {
		t.Run("paho publish refused/"+ft, func(t *testing.T) {
			before := tg.refused(RefusedPublish)
			c := mustDial(t, tg.addr, devA, devA, devices[devA])
			p := nonce("forbidden")
			// MQTT 3.1.1 has no negative PUBACK: the embedded broker drops
			// the connection, mosquitto acknowledges and discards.
			_ = c.publish(t, ft, []byte(p), true)
			assertNone(t, marker(t, tg.addr, obs, devA, devices[devA]), p)
			tg.expectRefusal(t, RefusedPublish, before)
		})
	}
	for _, v5 := range []bool{false, true} {
		for _, ft := range forbidden[:4] {
			t.Run(fmt.Sprintf("mosquitto_pub v5=%v refused/%s", v5, ft), func(t *testing.T) {
				before := tg.refused(RefusedPublish)
				p := nonce("forbidden-cli")
				out, _ := runCLI(t, "mosquitto_pub", append(cliArgs(tg.addr, devA, devA, devices[devA], v5),
					"-t", ft, "-m", p, "-q", "1", "-r")...)
				if v5 && !notAuthorized.MatchString(out) {
					t.Errorf("MQTT 5 publish to %s: no 'not authorized' PUBACK in output:\n%s", ft, out)
				}
				assertNone(t, marker(t, tg.addr, obs, devA, devices[devA]), p)
				tg.expectRefusal(t, RefusedPublish, before)
			})
		}
	}

	// Subscriptions: the refused filter's retained message must never
	// reach the device, while its own desired state does.
	svc := mustDial(t, tg.addr, svc2User, svc2User, svc2Pass)
	publishRetained := func(t *testing.T, tp, p string) {
		t.Helper()
		if err := svc.publish(t, tp, []byte(p), true); err != nil {
			t.Fatalf("service publish %s: %v", tp, err)
		}
	}
	badFilters := []string{
		topic(devB, protocol.KindDesired),
		"#",
		"ef/v1/dev/+/desired",
		"ef/v1/dev/dev-b/#",
		topic(devB, protocol.KindTelemetry),
	}
	for _, f := range badFilters {
		t.Run("paho subscribe refused/"+f, func(t *testing.T) {
			before := tg.refused(RefusedSubscribe)
			leak := nonce("leak")
			publishRetained(t, topic(devB, protocol.KindDesired), leak)
			publishRetained(t, topic(devB, protocol.KindTelemetry), leak)
			c := mustDial(t, tg.addr, devA, devA, devices[devA])
			ch := make(chan paho.Message, 16)
			code := c.subscribe(t, f, ch)
			if tg.embedded != nil && code != 0x80 {
				t.Errorf("SUBACK for %s: %#x, want 0x80", f, code)
			}
			if code := c.subscribe(t, topic(devA, protocol.KindDesired), ch); code != 1 {
				t.Fatalf("SUBACK for own desired: %#x", code)
			}
			own := nonce("own")
			publishRetained(t, topic(devB, protocol.KindDesired), leak+"-live")
			publishRetained(t, topic(devA, protocol.KindDesired), own)
			for {
				select {
				case m := <-ch:
					if strings.HasPrefix(string(m.Payload()), leak) {
						t.Fatalf("refused subscription %s delivered %s", f, m.Topic())
					}
					if string(m.Payload()) == own {
						tg.expectRefusal(t, RefusedSubscribe, before)
						return
					}
				case <-time.After(wait):
					t.Fatal("own desired state never arrived")
				}
			}
		})
	}
	for _, v5 := range []bool{false, true} {
		for _, f := range badFilters[:2] {
			t.Run(fmt.Sprintf("mosquitto_sub v5=%v refused/%s", v5, f), func(t *testing.T) {
				before := tg.refused(RefusedSubscribe)
				leak, own := nonce("leak"), nonce("own")
				publishRetained(t, topic(devB, protocol.KindDesired), leak)
				publishRetained(t, topic(devA, protocol.KindDesired), own)
				// Retained messages come in subscription order: were the
				// first filter allowed, B's desired state would be first.
				out, code := runCLI(t, "mosquitto_sub", append(cliArgs(tg.addr, devA, devA, devices[devA], v5),
					"-d", "-v", "-C", "1", "-W", "25", "-q", "1", "-t", f, "-t", topic(devA, protocol.KindDesired))...)
				if code != 0 || !strings.Contains(out, topic(devA, protocol.KindDesired)+" "+own) {
					t.Fatalf("mosquitto_sub exit %d, own desired state not received:\n%s", code, out)
				}
				if strings.Contains(out, leak) {
					t.Fatalf("refused subscription %s delivered B's desired state:\n%s", f, out)
				}
				if tg.embedded != nil {
					want := "): 128, 1"
					if v5 {
						want = "): 135, 1"
					}
					if !strings.Contains(out, want) {
						t.Errorf("SUBACK codes not %q:\n%s", want, out)
					}
				}
				tg.expectRefusal(t, RefusedSubscribe, before)
			})
		}
	}

	for _, cred := range []struct{ name, user, pass string }{
		{"bad password", devA, "wrong"},
		{"unknown device", "dev-z", "whatever"},
		{"service bad password", svcUser, "wrong-password-0123456789"},
	} {
		t.Run("connect refused/"+cred.name, func(t *testing.T) {
			before := tg.refused(RefusedAuth)
			clientID := cred.user
			if cred.user == svcUser {
				clientID = svcUser + "-x"
			}
			if _, err := dial(t, tg.addr, clientID, cred.user, cred.pass); err == nil || !notAuthorized.MatchString(err.Error()) {
				t.Errorf("paho: %v, want not authorized", err)
			}
			for _, v5 := range []bool{false, true} {
				out, code := runCLI(t, "mosquitto_pub", append(cliArgs(tg.addr, clientID, cred.user, cred.pass, v5),
					"-t", topic(devA, protocol.KindTelemetry), "-m", "x", "-q", "1")...)
				if code == 0 || !notAuthorized.MatchString(out) {
					t.Errorf("mosquitto_pub v5=%v: exit %d, output %q; want a refusal", v5, code, out)
				}
			}
			tg.expectRefusal(t, RefusedAuth, before)
		})
	}

	t.Run("no session takeover by another device", func(t *testing.T) {
		before := tg.refused(RefusedClientID)
		b := mustDial(t, tg.addr, devB, devB, devices[devB])
		ch := make(chan paho.Message, 16)
		b.subscribe(t, topic(devB, protocol.KindDesired), ch)
		// A logs in with its own credentials but B's client id: the
		// embedded broker refuses, mosquitto renames the client to A.
		a, err := dial(t, tg.addr, devB, devA, devices[devA])
		if tg.embedded != nil {
			if err == nil || !strings.Contains(err.Error(), "identifier rejected") {
				t.Fatalf("connect with another device's client id: %v, want identifier rejected", err)
			}
			tg.expectRefusal(t, RefusedClientID, before)
		} else if err != nil {
			t.Fatalf("mosquitto refused a login it should rename: %v", err)
		} else {
			// Renamed to its username, A is confined to its own subtree.
			_ = a.publish(t, topic(devB, protocol.KindTelemetry), []byte("as-b"), false)
		}
		p := nonce("still-b")
		publishRetained(t, topic(devB, protocol.KindDesired), p)
		for {
			select {
			case m := <-ch:
				if string(m.Payload()) == p {
					return
				}
			case err := <-b.lost:
				t.Fatalf("B lost its session: %v", err)
			case <-time.After(wait):
				t.Fatal("B no longer receives its desired state")
			}
		}
	})

	t.Run("will on another device's topic", func(t *testing.T) {
		before := tg.refused(RefusedWill)
		p := nonce("evil-will")
		c, err := dial(t, tg.addr, devA, devA, devices[devA], func(o *paho.ClientOptions) {
			o.SetBinaryWill(topic(devB, protocol.KindStatus), []byte(p), 1, true)
		})
		if tg.embedded != nil {
			if err == nil || !notAuthorized.MatchString(err.Error()) {
				t.Fatalf("connect with a will on B's status: %v, want not authorized", err)
			}
			tg.expectRefusal(t, RefusedWill, before)
		} else if err == nil {
			// mosquitto accepts the connection but not the will.
			(<-c.conn).Close()
		}
		assertNone(t, marker(t, tg.addr, obs, devA, devices[devA]), p)
	})

	t.Run("retained desired state reaches a device connecting later", func(t *testing.T) {
		d := &protocol.DesiredState{
			V: protocol.Version, DeviceID: "dev-c", Seq: uint64(time.Now().UnixNano()),
			IssuedAt: time.Now().UTC().Truncate(time.Second), ExpiresAt: time.Now().UTC().Add(time.Hour).Truncate(time.Second),
			Action: protocol.ActionInstall,
			Bundle: protocol.BundleRef{Name: "vad", Version: "1.0.0", URL: "https://r.example/vad-1.0.0.bundle",
				SigURL: "https://r.example/vad-1.0.0.bundle.sig", SHA256: strings.Repeat("ab", 32), Size: 10},
		}
		payload, err := protocol.Encode(d)
		if err != nil {
			t.Fatal(err)
		}
		if tg.embedded != nil {
			if err := tg.embedded.PublishDesired(d); err != nil {
				t.Fatal(err)
			}
		} else {
			publishRetained(t, topic("dev-c", protocol.KindDesired), string(payload))
		}
		out, code := runCLI(t, "mosquitto_sub", append(cliArgs(tg.addr, "dev-c", "dev-c", devices["dev-c"], true),
			"-C", "1", "-W", "25", "-q", "1", "-t", topic("dev-c", protocol.KindDesired))...)
		if code != 0 {
			t.Fatalf("mosquitto_sub: exit %d: %s", code, out)
		}
		got, err := protocol.DecodeDesired([]byte(strings.TrimSpace(out)))
		if err != nil || got.Seq != d.Seq {
			t.Fatalf("device got %q: %v", out, err)
		}
	})

	t.Run("last will marks a lost device offline", func(t *testing.T) {
		session := uint64(time.Now().UnixNano())
		st := func(s protocol.State) []byte {
			b, err := protocol.Encode(&protocol.Status{V: protocol.Version, DeviceID: devB, State: s, Session: session})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		c := mustDial(t, tg.addr, devB, devB, devices[devB], func(o *paho.ClientOptions) {
			o.SetBinaryWill(topic(devB, protocol.KindStatus), st(protocol.StateOffline), 1, true)
		})
		if err := c.publish(t, topic(devB, protocol.KindStatus), st(protocol.StateOnline), true); err != nil {
			t.Fatal(err)
		}
		obs.until(t, topic(devB, protocol.KindStatus), string(st(protocol.StateOnline)))
		(<-c.conn).Close() // the device vanishes without DISCONNECT
		obs.until(t, topic(devB, protocol.KindStatus), string(st(protocol.StateOffline)))
		// And it is retained for whoever subscribes next.
		out, code := runCLI(t, "mosquitto_sub", append(cliArgs(tg.addr, "_fleetd-5-late", "_fleetd-5", services["_fleetd-5"], false),
			"-C", "1", "-W", "25", "-t", topic(devB, protocol.KindStatus))...)
		if code != 0 || strings.TrimSpace(out) != string(st(protocol.StateOffline)) {
			t.Fatalf("retained status: exit %d, %q", code, out)
		}
	})

	t.Run("shared subscription splits telemetry between fleetd replicas", func(t *testing.T) {
		ch := make(chan paho.Message, 256)
		for _, u := range []string{"_fleetd-3", "_fleetd-4"} {
			r := mustDial(t, tg.addr, u+"-replica", u, services[u])
			if code := r.subscribe(t, protocol.SharedFilter(protocol.SharedGroup, protocol.KindTelemetry), ch); code >= 0x80 {
				t.Fatalf("shared SUBACK %#x", code)
			}
		}
		c := mustDial(t, tg.addr, devA, devA, devices[devA])
		const n = 20
		base := nonce("shared")
		for i := range n {
			if err := c.publish(t, topic(devA, protocol.KindTelemetry), fmt.Appendf(nil, "%s-%d", base, i), false); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		for len(got) < n {
			select {
			case m := <-ch:
				if strings.HasPrefix(string(m.Payload()), base) {
					got = append(got, string(m.Payload()))
				}
			case <-time.After(wait):
				t.Fatalf("replicas got %d of %d messages", len(got), n)
			}
		}
		slices.Sort(got)
		if len(slices.Compact(got)) != n {
			t.Fatalf("duplicates across the group: %v", got)
		}
	})
}

func TestEmbeddedAccess(t *testing.T) {
	b := newBroker(t, func(c *Config) { c.ServiceUsers = services })
	runAccessScenarios(t, target{addr: b.Addr(), embedded: b})
	t.Logf("refusals: %v", b.Refusals())
}

func TestMosquittoAccess(t *testing.T) {
	acl, err := MosquittoACL(slices.Collect(maps.Keys(services))...)
	if err != nil {
		t.Fatal(err)
	}
	// dev-a's line comes from mosquitto_passwd -b itself, the rest from
	// MosquittoPasswd: mosquitto must take both.
	pwFile := t.TempDir() + "/passwd"
	if out, code := runCLI(t, "mosquitto_passwd", "-b", "-c", pwFile, devA, devices[devA]); code != 0 {
		t.Fatalf("mosquitto_passwd: %s", out)
	}
	pw := cptest.ReadFile(t, pwFile)
	others := map[string]string{devB: devices[devB], "dev-c": devices["dev-c"]}
	maps.Copy(others, services)
	for user, pass := range others {
		line, err := MosquittoPasswd(user, pass)
		if err != nil {
			t.Fatal(err)
		}
		pw += line + "\n"
	}
	addr := startMosquitto(t, pw, acl).Addr()
	runAccessScenarios(t, target{addr: addr})
}
