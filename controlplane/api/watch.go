package api

// Watch route:
//
//	GET /api/v1/watch   text/event-stream: an event named for a topic each
//	                    time something of that topic changed (at most one
//	                    a second per topic), data a Change; a comment
//	                    line every 15 s keeps idle connections open
//
// A watcher refetches what it shows on each event: the events say what
// changed, not how.

// Watch topics.
const (
	// TopicDevices: a device enrolled, was deleted, was assigned a
	// bundle, came online or went offline, or reported its state.
	TopicDevices = "devices"
	// TopicRollouts: a rollout or experiment was created, moved on, had
	// its gates measured or changed state.
	TopicRollouts = "rollouts"
	// TopicBundles: a bundle version was pushed.
	TopicBundles = "bundles"
)

// Change is the data of a watch event.
type Change struct {
	Topic string `json:"topic"`
}
