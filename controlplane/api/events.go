package api

import (
	"encoding/json"
	"time"
)

// Event routes (docs/integrations.md#retraining-triggers):
//
//	GET /api/v1/events[?limit=N][&type=T][&subscription=NAME][&state=S]
//	    EventList: the latest events, newest first (limit default 50, at
//	    most 1000), only of type T, only those queued for subscription
//	    NAME, only those with a delivery in state S (pending, delivered,
//	    failed)

// EventList is GET /api/v1/events.
type EventList struct {
	Events []Event `json:"events"`
	// Subscriptions are the configured subscriptions' names.
	Subscriptions []string `json:"subscriptions"`
}

// Event is one event fleetd emitted (controlplane/notify) and its
// delivery to each subscription it was queued for.
type Event struct {
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	Source  string    `json:"source"`
	Subject string    `json:"subject"`
	Time    time.Time `json:"time"`
	// Queued is when fleetd queued it.
	Queued  time.Time         `json:"queued"`
	Bundles []string          `json:"bundles,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Data    json.RawMessage   `json:"data"`
	// Deliveries are per subscription, in the configuration's order.
	Deliveries []Delivery `json:"deliveries"`
}

// Delivery states.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
)

// Delivery is an event's delivery to one subscription.
type Delivery struct {
	Subscription string `json:"subscription"`
	// State is pending, delivered or failed.
	State string `json:"state"`
	// Attempts counts the HTTP requests sent.
	Attempts int `json:"attempts"`
	// LastStatus is the last answer's HTTP status (0: none, e.g. the
	// connection failed); LastError what went wrong last, if anything.
	LastStatus  int       `json:"lastStatus,omitempty"`
	LastError   string    `json:"lastError,omitempty"`
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	// Done is when it was delivered or given up.
	Done time.Time `json:"done,omitzero"`
}
