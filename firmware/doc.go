// Package firmware holds what the device image ships for the edge agent:
// the systemd unit (edge-agent.service) and the default configuration
// (edge-agent.yaml). It has no Go code; its tests check both files against
// systemd and the agent's configuration parser.
package firmware
