package e2ee_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

const password = "correct horse battery" // testserver.Register's

var txnSeq atomic.Int64

// login opens another session (device) of c's user.
func login(t testing.TB, srv *testserver.Server, c *testserver.Client, device string) *testserver.Client {
	t.Helper()
	body := map[string]any{"type": "m.login.password", "password": password,
		"identifier": map[string]any{"type": "m.id.user", "user": c.UserID}}
	if device != "" {
		body["device_id"] = device
	}
	var out struct {
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	srv.Anonymous().MustDo("POST", "/_matrix/client/v3/login", body, &out)
	d := *c
	d.Token, d.DeviceID = out.AccessToken, out.DeviceID
	return &d
}

func sendPath(evType, txn string) string {
	return "/_matrix/client/v3/sendToDevice/" + url.PathEscape(evType) + "/" + url.PathEscape(txn)
}

// send sends one to-device send with a fresh transaction ID.
func send(t testing.TB, c *testserver.Client, evType string, messages map[string]map[string]any) {
	t.Helper()
	c.MustDo("PUT", sendPath(evType, fmt.Sprintf("txn%d", txnSeq.Add(1))), map[string]any{"messages": messages}, nil)
}

type toDeviceEvent struct {
	Sender  string         `json:"sender"`
	Type    string         `json:"type"`
	Content map[string]any `json:"content"`
}

type syncOut struct {
	NextBatch string `json:"next_batch"`
	ToDevice  struct {
		Events []toDeviceEvent `json:"events"`
	} `json:"to_device"`
}

// syncTD syncs at once (timeout 0) from since ("" for an initial sync).
func syncTD(t testing.TB, c *testserver.Client, since string) syncOut {
	t.Helper()
	q := "timeout=0"
	if since != "" {
		q += "&since=" + url.QueryEscape(since)
	}
	var out syncOut
	c.MustDo("GET", "/_matrix/client/v3/sync?"+q, nil, &out)
	return out
}

// seqs are the "seq" contents of events, in order.
func seqs(evs []toDeviceEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i], _ = e.Content["seq"].(string)
	}
	return out
}

func TestSendToDeviceRecipients(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	cases := []struct {
		name string
		// messages for bob, by device: "1" and "2" stand for his
		// devices, others are taken as they are.
		messages map[string]string
		want1    []string
		want2    []string
	}{
		{"one device", map[string]string{"1": "a"}, []string{"a"}, nil},
		{"wildcard", map[string]string{"*": "a"}, []string{"a"}, []string{"a"}},
		{"wildcard beside a named device", map[string]string{"*": "a", "2": "b"}, []string{"a"}, []string{"b"}},
		{"unknown device", map[string]string{"NOSUCHDEVICE": "a"}, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			alice := srv.Register("tdalice")
			bob1 := srv.Register("tdbob")
			bob2 := login(t, srv, bob1, "")
			byDevice := map[string]any{}
			for d, seq := range tc.messages {
				switch d {
				case "1":
					d = bob1.DeviceID
				case "2":
					d = bob2.DeviceID
				}
				byDevice[d] = map[string]any{"seq": seq}
			}
			send(t, alice, "m.test", map[string]map[string]any{bob1.UserID: byDevice})
			for _, c := range []struct {
				bob  *testserver.Client
				want []string
			}{{bob1, tc.want1}, {bob2, tc.want2}} {
				got := syncTD(t, c.bob, "").ToDevice.Events
				if !slices.Equal(seqs(got), c.want) && !(len(got) == 0 && len(c.want) == 0) {
					t.Fatalf("device %s got %v, want %v", c.bob.DeviceID, seqs(got), c.want)
				}
				for _, e := range got {
					if e.Sender != alice.UserID || e.Type != "m.test" {
						t.Fatalf("event %+v: want sender %s, type m.test", e, alice.UserID)
					}
				}
			}
		})
	}
}

// A replayed transaction stores nothing; the same transaction ID from
// another device of the sender, or another ID, is a new send.
func TestSendToDeviceIdempotent(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("idalice")
	alice2 := login(t, srv, alice, "")
	bob := srv.Register("idbob")
	msg := func(seq string) map[string]any {
		return map[string]any{"messages": map[string]any{bob.UserID: map[string]any{bob.DeviceID: map[string]any{"seq": seq}}}}
	}
	steps := []struct {
		from *testserver.Client
		txn  string
		seq  string
	}{
		{alice, "t1", "1"},
		{alice, "t1", "replayed"}, // same device and txn: ignored, even with other content
		{alice2, "t1", "2"},       // another device of alice
		{alice, "t2", "3"},
		{alice2, "t1", "replayed"},
	}
	for _, s := range steps {
		s.from.MustDo("PUT", sendPath("m.test", s.txn), msg(s.seq), nil)
	}
	if got := seqs(syncTD(t, bob, "").ToDevice.Events); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Fatalf("bob got %v, want [1 2 3]", got)
	}
}

// Messages come in order, again and again until a sync with a later
// since acknowledges them, and never after.
func TestToDeviceAcknowledgement(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("ackalice")
	bob := srv.Register("ackbob")
	to := func(seq string) {
		send(t, alice, "m.test", map[string]map[string]any{bob.UserID: {bob.DeviceID: map[string]any{"seq": seq}}})
	}
	for _, s := range []string{"1", "2", "3"} {
		to(s)
	}
	first := syncTD(t, bob, "")
	if got := seqs(first.ToDevice.Events); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Fatalf("initial sync: %v, want [1 2 3]", got)
	}
	if got := seqs(syncTD(t, bob, "").ToDevice.Events); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Fatalf("a second initial sync acknowledges nothing: got %v", got)
	}
	to("4")
	second := syncTD(t, bob, first.NextBatch) // acknowledges 1-3
	if got := seqs(second.ToDevice.Events); !slices.Equal(got, []string{"4"}) {
		t.Fatalf("sync since the first: %v, want [4]", got)
	}
	if got := seqs(syncTD(t, bob, first.NextBatch).ToDevice.Events); !slices.Equal(got, []string{"4"}) {
		t.Fatalf("the same since again: %v, want [4] redelivered", got)
	}
	if got := syncTD(t, bob, "").ToDevice.Events; !slices.Equal(seqs(got), []string{"4"}) {
		t.Fatalf("initial sync after the acknowledgement of 1-3: %v, want [4]", seqs(got))
	}
	third := syncTD(t, bob, second.NextBatch) // acknowledges 4
	if len(third.ToDevice.Events) != 0 {
		t.Fatalf("sync since the second: %v, want none", seqs(third.ToDevice.Events))
	}
	for _, since := range []string{"", first.NextBatch, second.NextBatch} {
		if got := syncTD(t, bob, since).ToDevice.Events; len(got) != 0 {
			t.Fatalf("since %q after the acknowledgement: %v, want none", since, seqs(got))
		}
	}
}

// A response holds at most 100 messages; the rest come, in order, with
// the syncs that follow, each of which returns at once.
func TestToDeviceBatches(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("batchalice")
	bob := srv.Register("batchbob")
	const n = 250
	for i := range n {
		send(t, alice, "m.test", map[string]map[string]any{bob.UserID: {bob.DeviceID: map[string]any{"seq": fmt.Sprint(i)}}})
	}
	var all []string
	since := ""
	for _, want := range []int{100, 100, 50, 0} {
		q := "timeout=30000" // returns at once while messages wait
		if since == "" {
			q = "timeout=0"
		} else {
			q += "&since=" + url.QueryEscape(since)
		}
		if want == 0 {
			q = "timeout=0&since=" + url.QueryEscape(since)
		}
		var out syncOut
		bob.MustDo("GET", "/_matrix/client/v3/sync?"+q, nil, &out)
		if len(out.ToDevice.Events) != want {
			t.Fatalf("batch of %d, want %d", len(out.ToDevice.Events), want)
		}
		all = append(all, seqs(out.ToDevice.Events)...)
		since = out.NextBatch
	}
	for i, s := range all {
		if s != fmt.Sprint(i) {
			t.Fatalf("message %d is %s: out of order", i, s)
		}
	}
}

// A deleted device's messages are dropped: a device of the same ID made
// later does not get them.
func TestToDeviceDeletedDevice(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("delalice")
	bob := srv.Register("delbob")
	bob2 := login(t, srv, bob, "BOBTWO")
	send(t, alice, "m.test", map[string]map[string]any{bob.UserID: {"*": map[string]any{"seq": "1"}}})
	bob2.MustDo("POST", "/_matrix/client/v3/logout", map[string]any{}, nil)
	again := login(t, srv, bob, "BOBTWO")
	if got := syncTD(t, again, "").ToDevice.Events; len(got) != 0 {
		t.Fatalf("the new BOBTWO got %v", seqs(got))
	}
	if got := seqs(syncTD(t, bob, "").ToDevice.Events); !slices.Equal(got, []string{"1"}) {
		t.Fatalf("bob's other device got %v, want [1]", got)
	}
}

func TestSendToDeviceErrors(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("erralice")
	bob := srv.Register("errbob")
	big := strings.Repeat("x", 70_000)
	cases := []struct {
		name    string
		anon    bool
		path    string
		body    any
		status  int
		errcode string
	}{
		{"no token", true, "", map[string]any{"messages": map[string]any{}}, 401, "M_MISSING_TOKEN"},
		{"not JSON", false, "", "{nope", 400, "M_NOT_JSON"},
		{"not an object", false, "", "[]", 400, "M_BAD_JSON"},
		{"no messages", false, "", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"messages not an object", false, "", map[string]any{"messages": []any{}}, 400, "M_BAD_JSON"},
		{"bad user ID", false, "", map[string]any{"messages": map[string]any{"bob": map[string]any{"D": map[string]any{}}}}, 400, "M_INVALID_PARAM"},
		{"devices not an object", false, "", map[string]any{"messages": map[string]any{bob.UserID: "D"}}, 400, "M_BAD_JSON"},
		{"content not an object", false, "", map[string]any{"messages": map[string]any{bob.UserID: map[string]any{bob.DeviceID: "x"}}}, 400, "M_BAD_JSON"},
		{"empty device ID", false, "", map[string]any{"messages": map[string]any{bob.UserID: map[string]any{"": map[string]any{}}}}, 400, "M_INVALID_PARAM"},
		{"content too large", false, "", map[string]any{"messages": map[string]any{bob.UserID: map[string]any{bob.DeviceID: map[string]any{"x": big}}}}, 413, "M_TOO_LARGE"},
		{"remote user: accepted", false, "", map[string]any{"messages": map[string]any{"@carol:remote.invalid": map[string]any{"D": map[string]any{}}}}, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := alice
			if tc.anon {
				c = srv.Anonymous()
			}
			r := c.Do("PUT", sendPath("m.test", fmt.Sprintf("e%d", txnSeq.Add(1))), tc.body)
			if r.Status != tc.status || r.Errcode() != tc.errcode {
				t.Fatalf("status %d %s, want %d %s: %s", r.Status, r.Errcode(), tc.status, tc.errcode, r.Body)
			}
		})
	}
	if got := syncTD(t, bob, "").ToDevice.Events; len(got) != 0 {
		t.Fatalf("bob got %v from refused sends", seqs(got))
	}
}

// longPoll starts a /sync from since that may wait a minute, and returns
// where its answer will arrive.
func longPoll(c *testserver.Client, since string) <-chan syncResult {
	ch := make(chan syncResult, 1)
	go func() {
		req, _ := http.NewRequest("GET", c.Base+"/_matrix/client/v3/sync?timeout=60000&since="+url.QueryEscape(since), nil)
		req.Header.Set("Authorization", "Bearer "+c.Token)
		resp, err := c.HTTP.Do(req)
		if err != nil {
			ch <- syncResult{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		var out syncOut
		if err == nil {
			err = json.Unmarshal(b, &out)
		}
		ch <- syncResult{out: out, err: err}
	}()
	return ch
}

type syncResult struct {
	out syncOut
	err error
}

// waitParked waits until srv holds n long-polls, failing if the poll
// answers first.
func waitPollParked(t *testing.T, srv *testserver.Server, n int64, poll <-chan syncResult) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for srv.HS.Syncer.Parked() < n {
		if len(poll) > 0 {
			t.Fatalf("the long-poll answered before the send: %+v", <-poll)
		}
		if time.Now().After(deadline) {
			t.Fatal("the long-poll never waited")
		}
		runtime.Gosched()
	}
}

func waitDelivered(t *testing.T, poll <-chan syncResult, want []string) {
	t.Helper()
	select {
	case res := <-poll:
		if res.err != nil {
			t.Fatal(res.err)
		}
		if got := seqs(res.out.ToDevice.Events); !slices.Equal(got, want) {
			t.Fatalf("the long-poll got %v, want %v", got, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the send did not wake the long-poll")
	}
}

// A send wakes the recipient's long-poll.
func TestToDeviceWakesLongPoll(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("wakealice")
	bob := srv.Register("wakebob")
	since := syncTD(t, bob, "").NextBatch
	poll := longPoll(bob, since)
	waitPollParked(t, srv, 1, poll)
	send(t, alice, "m.test", map[string]map[string]any{bob.UserID: {bob.DeviceID: map[string]any{"seq": "1"}}})
	waitDelivered(t, poll, []string{"1"})
}

// On two processes of one homeserver (PostgreSQL), a message sent through
// one wakes the recipient's long-poll on the other, and an
// acknowledgement on either holds on both.
func TestToDeviceAcrossProcesses(t *testing.T) {
	t.Parallel()
	procs := testserver.Cluster(t, 2, testserver.Options{})
	a, b := procs[0], procs[1]
	alice := a.Register("clalice")
	bobA := a.Register("clbob")
	bobB := bobA.On(b)
	since := syncTD(t, bobB, "").NextBatch
	poll := longPoll(bobB, since)
	waitPollParked(t, b, 1, poll)
	send(t, alice, "m.test", map[string]map[string]any{bobA.UserID: {"*": map[string]any{"seq": "1"}}})
	waitDelivered(t, poll, []string{"1"})
	// Delivered through B, acknowledged through A.
	next := syncTD(t, bobB, since).NextBatch
	if got := syncTD(t, bobA, next).ToDevice.Events; len(got) != 0 {
		t.Fatalf("A after the acknowledgement: %v", seqs(got))
	}
	if got := syncTD(t, bobB, since).ToDevice.Events; len(got) != 0 {
		t.Fatalf("B after A's acknowledgement: %v", seqs(got))
	}
}

// An m.direct_to_device EDU from another server reaches the local users it
// names, once per message_id; one claiming a user of a third server is
// refused.
func TestReceiveDirectToDeviceEDU(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	bob := srv.Register("edubob")
	edu := func(sender, id, seq string) json.RawMessage {
		b, _ := json.Marshal(map[string]any{"sender": sender, "type": "m.room_key_request", "message_id": id,
			"messages": map[string]any{bob.UserID: map[string]any{"*": map[string]any{"seq": seq}},
				"@someone:elsewhere.invalid": map[string]any{"*": map[string]any{}}}})
		return b
	}
	ctx := t.Context()
	for _, tc := range []struct {
		name    string
		origin  string
		content json.RawMessage
		status  int // of the *httpapi.Error; 0: accepted
	}{
		{"from its origin", "remote.invalid", edu("@carol:remote.invalid", "m1", "1"), 0},
		{"retried", "remote.invalid", edu("@carol:remote.invalid", "m1", "again"), 0},
		{"another message", "remote.invalid", edu("@carol:remote.invalid", "m2", "2"), 0},
		{"a user of another server", "remote.invalid", edu("@mallory:third.invalid", "m3", "forged"), 403},
		{"no message_id", "remote.invalid", edu("@carol:remote.invalid", "", "x"), 400},
		{"not JSON", "remote.invalid", json.RawMessage(`{"sender":`), 400},
	} {
		err := srv.HS.ToDevice.ReceiveEDU(ctx, roomdag.ServerName(tc.origin), tc.content)
		var he *httpapi.Error
		switch {
		case tc.status == 0 && err != nil:
			t.Fatalf("%s: %v", tc.name, err)
		case tc.status != 0 && (!errors.As(err, &he) || he.Status != tc.status):
			t.Fatalf("%s: %v, want status %d", tc.name, err, tc.status)
		}
	}
	got := syncTD(t, bob, "").ToDevice.Events
	if !slices.Equal(seqs(got), []string{"1", "2"}) {
		t.Fatalf("bob got %v, want [1 2]", seqs(got))
	}
	if got[0].Sender != "@carol:remote.invalid" || got[0].Type != "m.room_key_request" {
		t.Fatalf("event %+v", got[0])
	}
}
