package csapi

import (
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/persistentchat/homeserver/conformance/deploy"
)

const password = "complement-password-1"

func hs1() *Homeserver { return dep.HS[0] }
func hs2() *Homeserver { return dep.HS[1] }

// register makes a fresh user on hs.
func registerOn(t *testing.T, hs *Homeserver, prefix string) *Client {
	t.Helper()
	c, err := hs.Register(ctx, dep.UniqueLocalpart(prefix), password, false)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return c
}

func register(t *testing.T, prefix string) *Client { t.Helper(); return registerOn(t, hs1(), prefix) }

func anon(hs *Homeserver) *Client { return NewClient(hs, "", "") }

func esc(s string) string { return strings.ReplaceAll(s, ".", `\.`) }

func p(s string) []string { return strings.Split(strings.TrimPrefix(s, "/"), "/") }

// cs returns the path for /_matrix/client/v3/<parts...>.
func cs(parts ...string) []string { return append([]string{"_matrix", "client", "v3"}, parts...) }

func mustOK(t *testing.T, r *Res, what string) *Res {
	t.Helper()
	if r.Err != nil || r.Status < 200 || r.Status > 299 {
		t.Fatalf("%s: want 2xx, got %s", what, r)
	}
	return r
}

func expectStatus(t *testing.T, r *Res, status int, errcode string) {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("request failed: %v", r.Err)
	}
	if r.Status != status {
		t.Fatalf("want HTTP %d %s, got %s", status, errcode, r)
	}
	if errcode != "" && r.GetString("errcode") != errcode {
		t.Fatalf("want errcode %s, got %s", errcode, r)
	}
}

func expectStr(t *testing.T, r *Res, path, want string) {
	t.Helper()
	if got := r.GetString(path); got != want {
		t.Fatalf("%s: want %q, got %q in %s", path, want, got, r)
	}
}

func expectPresent(t *testing.T, r *Res, paths ...string) {
	t.Helper()
	for _, path := range paths {
		if _, ok := r.Get(path); !ok {
			t.Fatalf("missing %s in %s", path, r)
		}
	}
}

func createRoom(t *testing.T, c *Client, body map[string]any) string {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	r := mustOK(t, c.Do(ctx, "POST", cs("createRoom"), body), "createRoom")
	id := r.GetString("room_id")
	if id == "" {
		t.Fatalf("createRoom: no room_id in %s", r)
	}
	return id
}

func joinRoom(t *testing.T, c *Client, roomIDOrAlias string) {
	t.Helper()
	mustOK(t, c.Do(ctx, "POST", cs("join", roomIDOrAlias), map[string]any{}), "join "+roomIDOrAlias)
}

func inviteUser(t *testing.T, c *Client, roomID, userID string) {
	t.Helper()
	mustOK(t, c.Do(ctx, "POST", cs("rooms", roomID, "invite"), map[string]any{"user_id": userID}), "invite")
}

func sendEvent(t *testing.T, c *Client, roomID, typ string, content map[string]any) string {
	t.Helper()
	r := mustOK(t, c.Do(ctx, "PUT", cs("rooms", roomID, "send", typ, c.NextTxn()), content), "send "+typ)
	id := r.GetString("event_id")
	if id == "" {
		t.Fatalf("send: no event_id in %s", r)
	}
	return id
}

func sendText(t *testing.T, c *Client, roomID, text string) string {
	t.Helper()
	return sendEvent(t, c, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": text})
}

func sendState(t *testing.T, c *Client, roomID, typ, key string, content map[string]any) string {
	t.Helper()
	r := mustOK(t, c.Do(ctx, "PUT", cs("rooms", roomID, "state", typ, key), content), "state "+typ)
	return r.GetString("event_id")
}

// sync does one /sync.
func sync(t *testing.T, c *Client, since string, extra ...string) *Res {
	t.Helper()
	q := []string{"timeout", "0"}
	if since != "" {
		q = append(q, "since", since)
	}
	q = append(q, extra...)
	return mustOK(t, c.Do(ctx, "GET", cs("sync"), nil, WithQuery(q...)), "sync")
}

// syncUntil long-polls /sync until check is true for a response, for at
// most 10 seconds. It returns the next_batch after the matching response.
func syncUntil(t *testing.T, c *Client, since string, what string, check func(*Res) bool, extra ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q := []string{"timeout", "1000"}
		if since != "" {
			q = append(q, "since", since)
		}
		q = append(q, extra...)
		r := c.Do(ctx, "GET", cs("sync"), nil, WithQuery(q...))
		if r.Err != nil || r.Status != 200 {
			t.Fatalf("sync: %s", r)
		}
		if check(r) {
			return r.GetString("next_batch")
		}
		since = r.GetString("next_batch")
		if time.Now().After(deadline) {
			t.Fatalf("sync: gave up waiting for %s; last response %s", what, r)
		}
	}
}

func syncSince(t *testing.T, c *Client) string {
	t.Helper()
	return sync(t, c, "").GetString("next_batch")
}

// arr returns the array at path.
func arr(v any, path string) []any {
	x, _ := Path(v, path)
	a, _ := x.([]any)
	return a
}

func str(v any, path string) string {
	x, _ := Path(v, path)
	s, _ := x.(string)
	return s
}

// timelineHas is a sync check: room's timeline (join section) has an event
// matching match.
func timelineHas(roomID string, match func(ev any) bool) func(*Res) bool {
	return func(r *Res) bool {
		for _, ev := range arr(r.JSON, "rooms.join."+esc(roomID)+".timeline.events") {
			if match(ev) {
				return true
			}
		}
		return false
	}
}

func eventID(id string) func(any) bool { return func(ev any) bool { return str(ev, "event_id") == id } }

func inSection(section, roomID string) func(*Res) bool {
	return func(r *Res) bool { _, ok := r.Get("rooms." + section + "." + esc(roomID)); return ok }
}

func localpart(userID string) string {
	return strings.SplitN(strings.TrimPrefix(userID, "@"), ":", 2)[0]
}

var _ = fmt.Sprint
