// Package firmware holds what the device image ships for the edge agent:
// the systemd unit (edge-agent.service) and the default configuration
// (edge-agent.yaml). Its tests check both files against systemd and the
// agent's configuration parser. Its only Go code embeds the default
// configuration, which fleetctl enroll --agent-config starts from.
package firmware

import _ "embed"

// DefaultConfig is edge-agent.yaml: the configuration the Debian package
// installs as /etc/edge-agent/config.yaml.
//
//go:embed edge-agent.yaml
var DefaultConfig []byte
