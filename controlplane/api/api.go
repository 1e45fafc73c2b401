// Package api holds the wire types of fleetd's HTTP API (JSON under
// /api/v1), shared by the server (controlplane/fleetd) and its client
// (controlplane/client, fleetctl). docs/operations.md lists the routes.
//
// Every call but Health and Enrol carries an API token (the operator
// token or one of auth.tokens) as "Authorization: Bearer TOKEN", whose
// Role must reach the route's; Enrol carries an enrolment token the same
// way. Errors are an Error object with the HTTP status saying what kind:
// 400 bad input, 401 missing or wrong token, 403 a role below the
// route's, 404 no such thing, 405 wrong method, 409 conflict, 413 body
// too large, 5xx fleetd's fault.
package api

import (
	"time"

	"github.com/edgefleet/edgefleet/controlplane/inventory"
	"github.com/edgefleet/edgefleet/controlplane/registry"
	"github.com/edgefleet/edgefleet/controlplane/telemetry"
	"github.com/edgefleet/edgefleet/shared/bundle"
	"github.com/edgefleet/edgefleet/shared/protocol"
)

// Prefix is the root of the API's routes.
const Prefix = "/api/v1"

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
}

// Health is GET /api/v1/health (no authentication).
type Health struct {
	Status  string `json:"status"` // "ok"
	Version string `json:"version"`
	// Broker is "embedded" or "external".
	Broker string `json:"broker"`
	// Registry is "fs" or "s3".
	Registry string `json:"registry"`
}

// Device is one device as GET /api/v1/devices and /devices/{id} show it:
// the inventory's record plus the counters of the records it delivered.
type Device struct {
	inventory.Device
	Records telemetry.Stats `json:"records"`
	// Lineage is where the model of the device's active bundle came from
	// (the training run), as the registry's manifest says; only in GET
	// /api/v1/devices/{id}, and only when the manifest says.
	Lineage *bundle.Lineage `json:"lineage,omitempty"`
}

// DeviceList is GET /api/v1/devices[?selector=S][&q=SUB][&offset=N][&limit=N]:
// the devices a label selector picks whose id contains SUB, in id order;
// with limit, only that page of them (limit 1 to 10000, from offset).
type DeviceList struct {
	Devices []Device `json:"devices"`
	// Total counts the devices that matched, on every page.
	Total int `json:"total"`
}

// FleetSummary is GET /api/v1/fleet: counts over every device, cheap
// enough for a dashboard of a large fleet.
type FleetSummary struct {
	Devices int `json:"devices"`
	Online  int `json:"online"`
	// Versions counts the devices by the bundle they report active
	// ("" for none).
	Versions map[string]int `json:"versions"`
	// Labels counts the devices by each KEY=VALUE of their labels.
	Labels map[string]int `json:"labels"`
}

// EnrolRequest is the body of POST /api/v1/devices, authenticated by an
// enrolment token.
type EnrolRequest struct {
	// ID is the device id (protocol.ValidateDeviceID).
	ID string `json:"id"`
	// Labels are the device's inventory labels.
	Labels map[string]string `json:"labels,omitempty"`
}

// Enrolment is the answer to POST /api/v1/devices (201): the device's MQTT
// credentials, shown this once, and where to connect.
type Enrolment struct {
	inventory.Credentials
	// Brokers are the MQTT broker URLs devices connect to.
	Brokers []string `json:"brokers"`
}

// BundleList is GET /api/v1/bundles and /bundles/{name}.
type BundleList struct {
	Bundles []registry.Entry `json:"bundles"`
}

// Bundle is GET /api/v1/bundles/{name}/{version} and the answer to POST
// /api/v1/bundles (201 when stored, 200 when the same bundle was there).
type Bundle struct {
	registry.Entry
	// URL and SigURL are download URLs for an operator (short-lived where
	// the registry signs them).
	URL    string `json:"url,omitempty"`
	SigURL string `json:"sigUrl,omitempty"`
}

// AssignRequest is the body of POST /api/v1/devices/{id}/assign.
type AssignRequest struct {
	// Bundle is "name@version", a bundle in the registry.
	Bundle string `json:"bundle"`
	// Action is "install" (default) or "rollback".
	Action protocol.Action `json:"action,omitempty"`
}

// Keys is GET /api/v1/keys: the publisher keys fleetd trusts. With none,
// every push is refused unless InsecureAcceptAnyKey.
type Keys struct {
	// Keys are the publisher keys of registry.trustedKeys, each with the
	// file it was read from.
	Keys                 []bundle.KeyInfo `json:"keys"`
	InsecureAcceptAnyKey bool             `json:"insecureAcceptAnyKey"`
}

// Assignment is the answer to POST /api/v1/devices/{id}/assign: the
// desired state issued, and whether it reached the broker (if not, fleetd
// keeps retrying).
type Assignment struct {
	Desired   protocol.DesiredState `json:"desired"`
	Published bool                  `json:"published"`
}

// Records is GET /api/v1/devices/{id}/records[?kind=&since=&until=&limit=&order=]:
// the records oldest first, or newest first with order=desc (limit then
// keeps the newest).
type Records struct {
	Device  string             `json:"device"`
	Stats   telemetry.Stats    `json:"stats"`
	Records []telemetry.Record `json:"records"`
}

// Time formats accepted for the since and until query parameters.
const TimeFormat = time.RFC3339Nano
