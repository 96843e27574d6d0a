package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// toDeviceEvent is one of /sync's to_device.events.
type toDeviceEvent struct {
	Sender  string          `json:"sender"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// toDeviceInbox reads a device's to-device messages through /sync.
type toDeviceInbox struct {
	c     *testserver.Client
	since string
}

func newInbox(c *testserver.Client) *toDeviceInbox {
	out := c.Sync("timeout=0")
	return &toDeviceInbox{c: c, since: out["next_batch"].(string)}
}

// until syncs until an event of the type has arrived (or the deadline
// passes, failing the test) and returns every event received meanwhile.
func (in *toDeviceInbox) until(t *testing.T, evType string) []toDeviceEvent {
	t.Helper()
	var got []toDeviceEvent
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var out struct {
			NextBatch string `json:"next_batch"`
			ToDevice  struct {
				Events []toDeviceEvent `json:"events"`
			} `json:"to_device"`
		}
		in.c.MustDo("GET", "/_matrix/client/v3/sync?timeout=5000&since="+in.since, nil, &out)
		in.since = out.NextBatch
		got = append(got, out.ToDevice.Events...)
		for _, ev := range out.ToDevice.Events {
			if ev.Type == evType {
				return got
			}
		}
	}
	t.Fatalf("%s: no %s to-device message within the deadline; got %+v", in.c.UserID, evType, got)
	return nil
}

func sameJSON(t *testing.T, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("content %s, want %s", gb, wb)
	}
}

// fedPut sends a signed federation PUT from one server to another.
func fedPut(t *testing.T, from *testserver.Server, to, path string, body any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := from.HS.Federation.Do(ctx, roomdag.ServerName(to), req)
	if err != nil {
		t.Fatalf("PUT %s: %v", path, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, rb
}

// TestFederatedToDevice: a to-device message to users of another server
// goes there as an m.direct_to_device EDU and reaches their devices'
// /sync, to a named device and to "*" alike; neither a client's retried
// send, a replayed federation transaction nor a message_id the origin
// sends again delivers twice, and an EDU whose sender is not the
// origin's is refused.
func TestFederatedToDevice(t *testing.T) {
	fed := testserver.Federation(t, 2, testserver.Options{})
	a, b := fed[0], fed[1]
	alice := a.Register("alice")
	bob := b.Register("bob")
	carol := b.Register("carol")
	var login struct {
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	b.Anonymous().MustDo("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": carol.UserID}, "password": "correct horse battery"}, &login)
	carol2 := *carol
	carol2.Token, carol2.DeviceID = login.AccessToken, login.DeviceID
	inBob, inCarol, inCarol2 := newInbox(bob), newInbox(carol), newInbox(&carol2)

	send := map[string]any{"messages": map[string]any{
		bob.UserID:   map[string]any{bob.DeviceID: map[string]any{"to": "bob"}, "NOSUCHDEVICE": map[string]any{"to": "nobody"}},
		carol.UserID: map[string]any{"*": map[string]any{"to": "carol"}},
	}}
	alice.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.test.one/txn1", send, nil)
	// The client's retry: a replay, which sends nothing again.
	alice.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.test.one/txn1", send, nil)
	// A second send behind it marks the end of what the first delivers.
	alice.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.test.two/txn2", map[string]any{"messages": map[string]any{
		bob.UserID: map[string]any{"*": map[string]any{"n": 2}}, carol.UserID: map[string]any{"*": map[string]any{"n": 2}}}}, nil)

	for _, tc := range []struct {
		in   *toDeviceInbox
		want string
	}{{inBob, `{"to":"bob"}`}, {inCarol, `{"to":"carol"}`}, {inCarol2, `{"to":"carol"}`}} {
		got := tc.in.until(t, "m.test.two")
		if len(got) != 2 || got[0].Type != "m.test.one" || got[1].Type != "m.test.two" {
			t.Fatalf("%s/%s: got %+v, want m.test.one once, then m.test.two", tc.in.c.UserID, tc.in.c.DeviceID, got)
		}
		for _, ev := range got {
			if ev.Sender != alice.UserID {
				t.Fatalf("sender %q, want %q", ev.Sender, alice.UserID)
			}
		}
		sameJSON(t, got[0].Content, tc.want)
		sameJSON(t, got[1].Content, `{"n":2}`)
	}

	// Transactions from A as its sender would send them: a replay of a
	// transaction ID, and an EDU whose message_id was seen, deliver
	// nothing; nor does an EDU claiming a user of B as its sender.
	edu := func(sender, typ, id string) map[string]any {
		return map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{"sender": sender, "type": typ,
			"message_id": id, "messages": map[string]any{bob.UserID: map[string]any{"*": map[string]any{"id": id}}}}}
	}
	txn := func(edus ...any) map[string]any {
		return map[string]any{"origin": a.Name(), "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{}, "edus": edus}
	}
	before := b.HS.FedTxns.Stats()
	for i, step := range []struct {
		txn  string
		body map[string]any
	}{
		{"t-1", txn(edu(alice.UserID, "m.test.fed", "m1"))},
		{"t-1", txn(edu(alice.UserID, "m.test.fed", "m1"))},                                                   // replayed transaction
		{"t-2", txn(edu(alice.UserID, "m.test.fed", "m1"))},                                                   // message_id seen
		{"t-3", txn(edu("@mallory:"+b.Name(), "m.test.forged", "f1"), edu(alice.UserID, "m.test.end", "m2"))}, // forged sender
	} {
		if status, body := fedPut(t, a, b.Name(), "/_matrix/federation/v1/send/"+step.txn, step.body); status != http.StatusOK {
			t.Fatalf("step %d (%s): %d %s", i, step.txn, status, body)
		}
	}
	got := inBob.until(t, "m.test.end")
	if len(got) != 2 || got[0].Type != "m.test.fed" || got[1].Type != "m.test.end" {
		t.Fatalf("got %+v, want m.test.fed once, then m.test.end", got)
	}
	sameJSON(t, got[0].Content, `{"id":"m1"}`)
	st := b.HS.FedTxns.Stats()
	// (Processed also counts A's own sender's transactions, which B may
	// still be counting.)
	if st.Replayed-before.Replayed != 1 {
		t.Fatalf("transaction stats %+v (before %+v): want 1 replayed", st, before)
	}

	// A large send (20 messages of 40 KB for one user's devices, most of
	// which B does not know) is split into EDUs, and those into more than
	// one transaction, and still reaches the device that exists.
	pad := strings.Repeat("x", 40_000)
	big := map[string]any{bob.DeviceID: map[string]any{"pad": pad}}
	for i := range 19 {
		big[fmt.Sprintf("NOSUCH%02d", i)] = map[string]any{"pad": pad}
	}
	sentBefore := a.HS.FedSender.Stats().Sent
	alice.MustDo("PUT", "/_matrix/client/v3/sendToDevice/m.test.big/txn3", map[string]any{"messages": map[string]any{bob.UserID: big}}, nil)
	got = inBob.until(t, "m.test.big")
	if len(got) != 1 {
		t.Fatalf("got %d messages, want the one for %s", len(got), bob.DeviceID)
	}
	sameJSON(t, got[0].Content, `{"pad":"`+pad+`"}`)
	// A counts a transaction once B has answered it, which may be after
	// bob's /sync saw it; without the split there is only one to wait for.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.HS.FedSender.WaitStats(ctx, func(st federation.SenderStats) bool { return st.Sent-sentBefore >= 2 }); err != nil {
		t.Fatalf("800 KB of EDUs not split into transactions: %v", err)
	}
}
