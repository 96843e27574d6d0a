package e2ee_test

import (
	"fmt"
	"net/url"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/e2ee"
	"github.com/persistentchat/homeserver/testserver"
)

type dehydratedEvents struct {
	Events    []toDeviceEvent `json:"events"`
	NextBatch string          `json:"next_batch"`
}

func fetchDehydrated(t testing.TB, c *testserver.Client, device string, next *string) dehydratedEvents {
	t.Helper()
	body := map[string]any{}
	if next != nil {
		body["next_batch"] = *next
	}
	var out dehydratedEvents
	c.MustDo("POST", e2ee.DehydratedPrefix+"/"+url.PathEscape(device)+"/events", body, &out)
	return out
}

func devices(t testing.TB, c *testserver.Client) []string {
	t.Helper()
	var out struct {
		Devices []struct {
			DeviceID string `json:"device_id"`
		} `json:"devices"`
	}
	c.MustDo("GET", "/_matrix/client/v3/devices", nil, &out)
	var ids []string
	for _, d := range out.Devices {
		ids = append(ids, d.DeviceID)
	}
	slices.Sort(ids)
	return ids
}

// The lifecycle of a dehydrated device (MSC3814): none; uploaded; it
// receives what is sent to "*"; its events are fetched in batches and not
// deleted by fetching; a new upload replaces (deletes) it; deleted.
func TestDehydratedDeviceLifecycle(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("dhalice")
	bob := srv.Register("dhbob")

	if r := bob.Do("GET", e2ee.DehydratedPrefix, nil); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
		t.Fatalf("GET with none: %d %s", r.Status, r.Body)
	}
	data := map[string]any{"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "opaque"}
	var put struct {
		DeviceID string `json:"device_id"`
	}
	bob.MustDo("PUT", e2ee.DehydratedPrefix, map[string]any{"device_id": "DEHYDRATED1", "device_data": data,
		"initial_device_display_name": "Dehydrated device"}, &put)
	if put.DeviceID != "DEHYDRATED1" {
		t.Fatalf("PUT answered device %q", put.DeviceID)
	}
	var got struct {
		DeviceID   string         `json:"device_id"`
		DeviceData map[string]any `json:"device_data"`
	}
	bob.MustDo("GET", e2ee.DehydratedPrefix, nil, &got)
	if got.DeviceID != "DEHYDRATED1" || got.DeviceData["device_pickle"] != "opaque" {
		t.Fatalf("GET: %+v", got)
	}
	if ds := devices(t, bob); !slices.Contains(ds, "DEHYDRATED1") {
		t.Fatalf("devices %v lack the dehydrated one", ds)
	}

	// Room keys reach it as any device of bob's.
	const n = 150
	for i := range n {
		send(t, alice, "m.room.encrypted", map[string]map[string]any{bob.UserID: {"*": map[string]any{"seq": fmt.Sprint(i)}}})
	}
	var all []string
	var next *string
	for _, want := range []int{100, 50, 0} {
		out := fetchDehydrated(t, bob, "DEHYDRATED1", next)
		if len(out.Events) != want || out.NextBatch == "" {
			t.Fatalf("batch of %d with next_batch %q, want %d", len(out.Events), out.NextBatch, want)
		}
		all = append(all, seqs(out.Events)...)
		next = &out.NextBatch
	}
	for i, s := range all {
		if s != fmt.Sprint(i) {
			t.Fatalf("message %d is %s", i, s)
		}
	}
	// Fetching deletes nothing: a rehydration may start over.
	if out := fetchDehydrated(t, bob, "DEHYDRATED1", nil); len(out.Events) != 100 || seqs(out.Events)[0] != "0" {
		t.Fatalf("fetching again from the start: %d events", len(out.Events))
	}

	// Only the dehydrated device's events, and only the user's own.
	for _, tc := range []struct {
		name   string
		c      *testserver.Client
		device string
		body   any
		status int
		code   string
	}{
		{"an ordinary device", bob, bob.DeviceID, map[string]any{}, 403, "M_FORBIDDEN"},
		{"someone else's", alice, "DEHYDRATED1", map[string]any{}, 403, "M_FORBIDDEN"},
		{"bad next_batch", bob, "DEHYDRATED1", map[string]any{"next_batch": "abc"}, 400, "M_INVALID_PARAM"},
		{"next_batch not a string", bob, "DEHYDRATED1", map[string]any{"next_batch": 5}, 400, "M_BAD_JSON"},
		{"no token", srv.Anonymous(), "DEHYDRATED1", map[string]any{}, 401, "M_MISSING_TOKEN"},
	} {
		r := tc.c.Do("POST", e2ee.DehydratedPrefix+"/"+tc.device+"/events", tc.body)
		if r.Status != tc.status || r.Errcode() != tc.code {
			t.Fatalf("%s: %d %s, want %d %s", tc.name, r.Status, r.Body, tc.status, tc.code)
		}
	}

	// A new one replaces the old, which is deleted with its messages.
	bob.MustDo("PUT", e2ee.DehydratedPrefix, map[string]any{"device_id": "DEHYDRATED2", "device_data": data}, nil)
	if ds := devices(t, bob); slices.Contains(ds, "DEHYDRATED1") || !slices.Contains(ds, "DEHYDRATED2") {
		t.Fatalf("devices after the replacement: %v", ds)
	}
	if r := bob.Do("POST", e2ee.DehydratedPrefix+"/DEHYDRATED1/events", map[string]any{}); r.Status != 403 {
		t.Fatalf("the replaced device's events: %d %s", r.Status, r.Body)
	}
	if out := fetchDehydrated(t, bob, "DEHYDRATED2", nil); len(out.Events) != 0 {
		t.Fatalf("the new device has %d events", len(out.Events))
	}
	// Uploading the same device again keeps it and its messages.
	send(t, alice, "m.room.encrypted", map[string]map[string]any{bob.UserID: {"DEHYDRATED2": map[string]any{"seq": "x"}}})
	bob.MustDo("PUT", e2ee.DehydratedPrefix, map[string]any{"device_id": "DEHYDRATED2", "device_data": map[string]any{"v": 2}}, nil)
	if out := fetchDehydrated(t, bob, "DEHYDRATED2", nil); !slices.Equal(seqs(out.Events), []string{"x"}) {
		t.Fatalf("after re-uploading the same device: %v", seqs(out.Events))
	}

	var del struct {
		DeviceID string `json:"device_id"`
	}
	bob.MustDo("DELETE", e2ee.DehydratedPrefix, nil, &del)
	if del.DeviceID != "DEHYDRATED2" {
		t.Fatalf("DELETE answered %q", del.DeviceID)
	}
	if ds := devices(t, bob); !slices.Equal(ds, []string{bob.DeviceID}) {
		t.Fatalf("devices after DELETE: %v", ds)
	}
	for _, m := range []string{"GET", "DELETE"} {
		if r := bob.Do(m, e2ee.DehydratedPrefix, nil); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
			t.Fatalf("%s after DELETE: %d %s", m, r.Status, r.Body)
		}
	}
}

func TestPutDehydratedDeviceErrors(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	bob := srv.Register("dherr")
	data := map[string]any{"algorithm": "org.matrix.msc3814.v1.olm"}
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"no device_id", map[string]any{"device_data": data}, 400, "M_MISSING_PARAM"},
		{"no device_data", map[string]any{"device_id": "D1"}, 400, "M_MISSING_PARAM"},
		{"device_data not an object", map[string]any{"device_id": "D1", "device_data": "x"}, 400, "M_BAD_JSON"},
		{"an ordinary device's ID", map[string]any{"device_id": bob.DeviceID, "device_data": data}, 400, "M_INVALID_PARAM"},
		{"not JSON", "{", 400, "M_NOT_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := bob.Do("PUT", e2ee.DehydratedPrefix, tc.body)
			if r.Status != tc.status || r.Errcode() != tc.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
		})
	}
	if r := bob.Do("GET", e2ee.DehydratedPrefix, nil); r.Status != 404 {
		t.Fatalf("a refused PUT stored a device: %d %s", r.Status, r.Body)
	}
	if r := srv.Anonymous().Do("GET", e2ee.DehydratedPrefix, nil); r.Status != 401 {
		t.Fatalf("GET without a token: %d", r.Status)
	}
}
