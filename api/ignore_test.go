package api_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// setIgnored replaces the user's m.ignored_user_list.
func setIgnored(t testing.TB, c *testserver.Client, users ...string) {
	t.Helper()
	list := map[string]any{}
	for _, u := range users {
		list[u] = map[string]any{}
	}
	wantOK(t, c.Do("PUT", csAPI+"/user/"+url.PathEscape(c.UserID)+"/account_data/m.ignored_user_list",
		map[string]any{"ignored_users": list}), nil)
}

// ignoreSync is the part of a /sync reply these tests read.
type ignoreSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline syncTimeline `json:"timeline"`
		} `json:"join"`
		Invite map[string]any `json:"invite"`
	} `json:"rooms"`
}

func syncSince(t testing.TB, c *testserver.Client, since string) ignoreSync {
	t.Helper()
	q := "timeout=0"
	if since != "" {
		q += "&since=" + url.QueryEscape(since)
	}
	var out ignoreSync
	wantOK(t, c.Do("GET", csAPI+"/sync?"+q, nil), &out)
	return out
}

// TestIgnoredUsers: once alice ignores bob, his messages leave every view
// of the timeline (sync, /messages, /context, /relations, thread
// summaries), his state events stay, and his invites are not shown (spec:
// "Ignoring Users"). Un-ignoring him brings back what he sends next.
func TestIgnoredUsers(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := createRoom(t, carol, map[string]any{"preset": "public_chat",
		"power_level_content_override": map[string]any{"users": map[string]any{carol.UserID: 100, bob.UserID: 50}}})
	joinRoom(t, alice, room)
	joinRoom(t, bob, room)
	before := syncSince(t, alice, "").NextBatch

	setIgnored(t, alice, bob.UserID)
	root := sendText(t, carol, room, "carol's root")
	bobMsg := sendText(t, bob, room, "bob talks")
	bobTopic := putState(t, bob, room, "m.room.topic", "", map[string]any{"topic": "bob's topic"})
	bobReply := threadReply(t, bob, room, root, "bob in the thread")
	carolReply := threadReply(t, carol, room, root, "carol in the thread")
	sendText(t, carol, room, "carol again")
	// Invites: bob's is not shown, carol's is.
	bobRoom := createRoom(t, bob, map[string]any{"preset": "private_chat", "invite": []string{alice.UserID}})
	carolRoom := createRoom(t, carol, map[string]any{"preset": "private_chat", "invite": []string{alice.UserID}})

	// views are the places alice reads the room's timeline from.
	views := []struct {
		name string
		get  func(t *testing.T) []clientEvent
	}{
		{"incremental sync", func(t *testing.T) []clientEvent {
			return syncSince(t, alice, before).Rooms.Join[room].Timeline.Events
		}},
		{"initial sync", func(t *testing.T) []clientEvent { tl, _ := syncRoom(t, alice, room, 50); return tl.Events }},
		{"/messages", func(t *testing.T) []clientEvent {
			return messages(t, alice, room, query("dir", "b", "limit", "50")).Chunk
		}},
		{"/context", func(t *testing.T) []clientEvent {
			var c struct {
				EventsBefore []clientEvent `json:"events_before"`
				EventsAfter  []clientEvent `json:"events_after"`
			}
			wantOK(t, alice.Do("GET", roomPath(room, "context", root)+"?limit=20", nil), &c)
			return append(c.EventsBefore, c.EventsAfter...)
		}},
		{"/relations", func(t *testing.T) []clientEvent { return getRelations(t, alice, room, root, nil).Chunk }},
	}
	for _, v := range views {
		t.Run("ignoring/"+v.name, func(t *testing.T) {
			ids := eventIDs(v.get(t))
			for _, id := range []string{bobMsg, bobReply} {
				if slices.Contains(ids, id) {
					t.Errorf("shows bob's event %s while he is ignored", id)
				}
			}
			if !slices.Contains(ids, carolReply) {
				t.Errorf("lacks carol's reply %s: %q", carolReply, ids)
			}
			if v.name != "/relations" && !slices.Contains(ids, bobTopic) {
				t.Errorf("lacks bob's state event %s: state events stay (spec)", bobTopic)
			}
		})
	}
	// Asked for by ID, bob's message is not found, as Synapse answers
	// /event; his state event still is.
	for _, path := range []string{roomPath(room, "event", bobMsg), roomPath(room, "context", bobMsg),
		relAPI + "/rooms/" + url.PathEscape(room) + "/relations/" + url.PathEscape(bobMsg)} {
		wantErr(t, alice.Do("GET", path, nil), http.StatusNotFound, "M_NOT_FOUND")
		wantOK(t, carol.Do("GET", path, nil), nil)
	}
	if ev := getEvent(t, alice, room, bobTopic); ev.EventID != bobTopic {
		t.Errorf("bob's state event by ID = %+v", ev)
	}
	wantOK(t, alice.Do("GET", roomPath(room, "context", bobTopic), nil), nil)
	// The thread summary leaves bob out too.
	if th := bundleOf(t, getEvent(t, alice, room, root)).Thread; th == nil || th.Count != 1 || th.LatestEvent.EventID != carolReply {
		t.Errorf("thread summary while ignoring bob = %+v, want carol's reply only", th)
	}
	if th := bundleOf(t, getEvent(t, carol, room, root)).Thread; th == nil || th.Count != 2 {
		t.Errorf("carol's thread summary = %+v, want both replies", th)
	}
	// The notification worker must have counted carol's messages before
	// the token below is taken: counts it adds later list the room in the
	// next incremental sync, which the check for bob's lone message reads.
	srv.Settle()
	s := syncSince(t, alice, before)
	if _, ok := s.Rooms.Invite[bobRoom]; ok {
		t.Errorf("bob's invite shows in sync while he is ignored")
	}
	if _, ok := s.Rooms.Invite[carolRoom]; !ok {
		t.Errorf("carol's invite is missing from sync")
	}
	if _, ok := syncSince(t, alice, "").Rooms.Invite[bobRoom]; ok {
		t.Errorf("bob's invite shows in an initial sync while he is ignored")
	}
	// An incremental sync where only bob spoke lists nothing for the room.
	since := s.NextBatch
	sendText(t, bob, room, "bob alone")
	if jr, ok := syncSince(t, alice, since).Rooms.Join[room]; ok {
		t.Errorf("room listed for bob's message alone: %+v", jr.Timeline.Events)
	}

	// Un-ignoring applies to the next sync: bob's new messages come; what
	// was missed is not sent again (spec), though history has it.
	mid := syncSince(t, alice, since).NextBatch
	setIgnored(t, alice)
	again := sendText(t, bob, room, "bob is back")
	ids := eventIDs(syncSince(t, alice, mid).Rooms.Join[room].Timeline.Events)
	if !slices.Contains(ids, again) || slices.Contains(ids, bobMsg) {
		t.Errorf("sync after un-ignoring = %q, want %s and not the missed %s", ids, again, bobMsg)
	}
	if ids := eventIDs(messages(t, alice, room, query("dir", "b", "limit", "50")).Chunk); !slices.Contains(ids, bobMsg) {
		t.Errorf("/messages after un-ignoring lacks bob's earlier message")
	}
	if ev := getEvent(t, alice, room, bobMsg); ev.EventID != bobMsg {
		t.Errorf("/event after un-ignoring = %+v", ev)
	}
	if th := bundleOf(t, getEvent(t, alice, room, root)).Thread; th == nil || th.Count != 2 {
		t.Errorf("thread summary after un-ignoring = %+v, want both replies", th)
	}
}
