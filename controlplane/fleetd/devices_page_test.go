package fleetd_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/client"
	"github.com/edgefleet/edgefleet/controlplane/fleetd"
	"github.com/edgefleet/edgefleet/controlplane/internal/cptest"
)

// TestDevicesPage: GET /api/v1/devices pages in id order with the total
// of what matched, filters by id substring and selector together, and
// refuses a bad page; GET /api/v1/fleet counts every device.
func TestDevicesPage(t *testing.T) {
	ts := startServer(t, baseConfig(t))
	for i := range 7 {
		region := "eu"
		if i%2 == 1 {
			region = "us"
		}
		ts.enroll(t, fmt.Sprintf("cam-%02d", 6-i), map[string]string{"region": region})
	}
	ts.enroll(t, "gw-1", map[string]string{"region": "eu"})
	ids := func(dq client.DevicesQuery) string {
		t.Helper()
		l, err := ts.api.DevicesPage(t.Context(), dq)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range l.Devices {
			out = append(out, d.ID)
		}
		return fmt.Sprintf("%d %s", l.Total, strings.Join(out, ","))
	}
	for _, tc := range []struct {
		dq   client.DevicesQuery
		want string
	}{
		{client.DevicesQuery{}, "8 cam-00,cam-01,cam-02,cam-03,cam-04,cam-05,cam-06,gw-1"},
		{client.DevicesQuery{Limit: 3}, "8 cam-00,cam-01,cam-02"},
		{client.DevicesQuery{Offset: 3, Limit: 3}, "8 cam-03,cam-04,cam-05"},
		{client.DevicesQuery{Offset: 6, Limit: 3}, "8 cam-06,gw-1"},
		{client.DevicesQuery{Offset: 9, Limit: 3}, "8 "},
		{client.DevicesQuery{Search: "cam", Selector: "region=eu", Limit: 2}, "4 cam-00,cam-02"},
		{client.DevicesQuery{Search: "gw"}, "1 gw-1"},
	} {
		if got := ids(tc.dq); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.dq, got, tc.want)
		}
	}
	tok := strings.TrimSpace(cptest.ReadFile(t, filepath.Join(ts.cfg.DataDir, fleetd.OperatorTokenFile)))
	for _, q := range []string{"limit=0", "limit=10001", "limit=x", "offset=-1"} {
		code, msg, _ := call(t, ts, "GET", "/api/v1/devices?"+q, tok, "", nil)
		if code != http.StatusBadRequest || !strings.Contains(msg, strings.SplitN(q, "=", 2)[0]) {
			t.Errorf("%s: %d %q, want 400 naming the parameter", q, code, msg)
		}
	}
	f, err := ts.api.Fleet(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if f.Devices != 8 || f.Online != 0 || f.Versions[""] != 8 || f.Labels["region=eu"] != 5 || f.Labels["region=us"] != 3 {
		t.Errorf("fleet summary %+v", f)
	}
}
