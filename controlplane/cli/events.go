package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/client"
)

// eventStates are --state's values.
var eventStates = []string{api.DeliveryPending, api.DeliveryDelivered, api.DeliveryFailed}

func newEventsCmd(a *app) *cobra.Command {
	var rf remoteFlags
	var q client.EventQuery
	out := &outputFlag{}
	cmd := &cobra.Command{
		Use:   "events [--type TYPE] [--subscription NAME] [--state pending|delivered|failed] [--limit N]",
		Short: "List the events fleetd emitted and their delivery to each subscription",
		Long: `List the latest events fleetd emitted (retraining triggers: drift that
persisted, gate breaches, rollbacks, concluded experiments, failed
installs), newest first, one line per event and subscription it was
queued for: the delivery's state (pending, delivered, failed), the HTTP
requests sent, and the last status or error. An event no subscription
selected has one line with subscription "-". -o json prints the events
with their data; -o name their ids.

The subscriptions are in fleetd's configuration (events.subscriptions;
see docs/integrations.md).`,
		Example: `  fleetctl events
  fleetctl events --state failed
  fleetctl events --type dev.edgefleet.rollout.rolled_back -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if q.State != "" && !slices.Contains(eventStates, q.State) {
				return usagef("--state %q: want one of %s", q.State, strings.Join(eventStates, ", "))
			}
			if q.Limit < 0 || q.Limit > 1000 {
				return usagef("--limit %d: want 1 to 1000", q.Limit)
			}
			return fetchAndPrint(a, &rf, out, func(c *client.Client) (api.EventList, error) {
				l, err := c.Events(cmd.Context(), q)
				if err != nil {
					return api.EventList{}, err
				}
				return *l, nil
			}, func(w io.Writer, l api.EventList) error {
				return printEvents(w, &l, out.wide())
			})
		},
	}
	cmd.Flags().StringVar(&q.Type, "type", "", "only events of this type (e.g. dev.edgefleet.rollout.gate_breached)")
	cmd.Flags().StringVar(&q.Subscription, "subscription", "", "only events queued for this subscription")
	cmd.Flags().StringVar(&q.State, "state", "", "only events with a delivery in this state: "+strings.Join(eventStates, ", "))
	cmd.Flags().IntVar(&q.Limit, "limit", 0, "at most this many events (default 50)")
	rf.register(cmd)
	out.register(cmd)
	return cmd
}

// printEvents prints one line per event and delivery; wide adds the
// source, the bundles and the last attempt's time.
func printEvents(w io.Writer, l *api.EventList, wide bool) error {
	tw := newTable(w)
	head := "TIME\tTYPE\tSUBJECT\tID\tSUBSCRIPTION\tSTATE\tATTEMPTS\tLAST"
	if wide {
		head += "\tBUNDLES\tSOURCE\tLAST ATTEMPT"
	}
	fmt.Fprintln(tw, head)
	for _, e := range l.Events {
		ds := e.Deliveries
		if len(ds) == 0 {
			ds = []api.Delivery{{}}
		}
		for _, d := range ds {
			last := "-"
			switch {
			case d.LastError != "":
				last = d.LastError
			case d.LastStatus != 0:
				last = fmt.Sprintf("HTTP %d", d.LastStatus)
			}
			state, attempts := orDash(d.State), "-"
			if d.Subscription != "" {
				attempts = fmt.Sprint(d.Attempts)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", formatTime(e.Time), strings.TrimPrefix(e.Type, "dev.edgefleet."),
				e.Subject, e.ID, orDash(d.Subscription), state, attempts, last)
			if wide {
				fmt.Fprintf(tw, "\t%s\t%s\t%s", orDash(strings.Join(e.Bundles, ",")), e.Source, formatTime(d.LastAttempt))
			}
			fmt.Fprintln(tw)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(l.Events) == 0 {
		subs := "no subscriptions configured"
		if len(l.Subscriptions) > 0 {
			subs = "subscriptions: " + strings.Join(l.Subscriptions, ", ")
		}
		_, err := fmt.Fprintf(w, "no events (%s)\n", subs)
		return err
	}
	return nil
}
