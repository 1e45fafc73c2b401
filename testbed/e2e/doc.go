// Package e2e holds the end-to-end tests of fleetd and the MQTT link: a
// real fleetd and real edge agents in one process (testbed/fleet), a
// signed Silero VAD bundle assigned to every device, and a broker cut
// during which the agents keep serving and buffering, after which every
// buffered record reaches fleetd exactly once. They run with `make test`;
// docs/testbed.md says what they prove.
package e2e
