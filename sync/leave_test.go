package sync_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// leaveSync is the part of a /sync reply the leave tests read.
type leaveSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join   map[string]any `json:"join"`
		Invite map[string]any `json:"invite"`
		Leave  map[string]struct {
			Timeline struct {
				Events    []event `json:"events"`
				Limited   bool    `json:"limited"`
				PrevBatch string  `json:"prev_batch"`
			} `json:"timeline"`
			State struct {
				Events []event `json:"events"`
			} `json:"state"`
		} `json:"leave"`
	} `json:"rooms"`
}

func leaveSyncOf(t *testing.T, c *testserver.Client, query string) leaveSync {
	t.Helper()
	var out leaveSync
	c.MustDo("GET", "/_matrix/client/v3/sync?timeout=0&"+query, nil, &out)
	return out
}

func leave(t *testing.T, c *testserver.Client, room string) {
	t.Helper()
	c.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}, nil)
}

func isMember(e event, user, membership string) bool {
	var c struct{ Membership string }
	_ = json.Unmarshal(e.Content, &c)
	return e.Type == roomdag.TypeMember && e.StateKey != nil && *e.StateKey == user && c.Membership == membership
}

// TestRejectedInvite: rejecting an invite to a room never joined puts the
// room in rooms.leave with the rejection (the leave event) in its
// timeline, even where history visibility hides the room from non-members
// (Complement TestLeaveEventInviteRejection); the invite is gone, and the
// next incremental syncs do not report the room again.
func TestRejectedInvite(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := bob.CreateRoom(map[string]any{"initial_state": []map[string]any{
		{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}})
	bob.SendText(room, "secret before the invite")
	includeLeave := filterQuery(`{"room":{"include_leave":true}}`)
	since := leaveSyncOf(t, alice, includeLeave).NextBatch
	bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", map[string]any{"user_id": alice.UserID}, nil)
	invited := leaveSyncOf(t, alice, includeLeave+"&since="+since)
	if _, ok := invited.Rooms.Invite[room]; !ok {
		t.Fatalf("invite missing: %+v", invited.Rooms)
	}
	leave(t, alice, room)

	for _, tc := range []struct{ name, query string }{
		{"incremental", includeLeave + "&since=" + invited.NextBatch},
		{"incremental without include_leave", "since=" + invited.NextBatch},
		{"incremental across invite and rejection", includeLeave + "&since=" + since},
		{"initial with include_leave", includeLeave},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := leaveSyncOf(t, alice, tc.query)
			if _, ok := out.Rooms.Invite[room]; ok {
				t.Errorf("the rejected invite is still in rooms.invite")
			}
			lr, ok := out.Rooms.Leave[room]
			if !ok {
				t.Fatalf("room missing from rooms.leave: %+v", out.Rooms)
			}
			tl := lr.Timeline.Events
			if len(tl) != 1 || !isMember(tl[0], alice.UserID, "leave") || tl[0].Sender != alice.UserID {
				t.Fatalf("leave timeline = %+v, want alice's leave alone", tl)
			}
			if m := tl[0].Unsigned["membership"]; m != "leave" {
				t.Errorf("the rejection's unsigned.membership = %v, want leave", m)
			}
			for _, e := range append(tl, lr.State.Events...) {
				if e.Type == "m.room.message" {
					t.Errorf("alice, never joined, sees %s", e.Content)
				}
			}
		})
	}
	// Once reported, the next syncs do not list it again.
	next := leaveSyncOf(t, alice, includeLeave+"&since="+invited.NextBatch).NextBatch
	bob.SendText(room, "after the rejection")
	for _, q := range []string{includeLeave + "&since=" + next, "since=" + next} {
		if out := leaveSyncOf(t, alice, q); len(out.Rooms.Leave)+len(out.Rooms.Invite)+len(out.Rooms.Join) != 0 {
			t.Errorf("sync?%s after the rejection was reported: %+v", q, out.Rooms)
		}
	}
	// Without include_leave an initial sync leaves it out (spec).
	if out := leaveSyncOf(t, alice, ""); len(out.Rooms.Leave) != 0 {
		t.Errorf("initial sync without include_leave lists %v", out.Rooms.Leave)
	}
}

// TestLeaveSectionRules: which left rooms rooms.leave lists, as Synapse
// decides (Syncer.leftRoomsShown documents the rules).
func TestLeaveSectionRules(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	newRoom := func() string {
		room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
		bob.Join(room)
		return room
	}
	left, kicked, banned, forgotten := newRoom(), newRoom(), newRoom(), newRoom()
	before := leaveSyncOf(t, bob, "").NextBatch
	leave(t, bob, left)
	alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(kicked)+"/kick", map[string]any{"user_id": bob.UserID}, nil)
	alice.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(banned)+"/ban", map[string]any{"user_id": bob.UserID}, nil)
	leave(t, bob, forgotten)
	bob.MustDo("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(forgotten)+"/forget", map[string]any{}, nil)
	includeLeave := filterQuery(`{"room":{"include_leave":true}}`)
	for _, tc := range []struct {
		name  string
		query string
		want  []string
	}{
		// Kicks and bans always; the user's own leaves with include_leave.
		{"initial", "", []string{kicked, banned}},
		{"initial with include_leave", includeLeave, []string{left, kicked, banned}},
		// Every leave since the token, forgotten or not.
		{"incremental", "since=" + before, []string{left, kicked, banned, forgotten}},
		{"incremental with include_leave", includeLeave + "&since=" + before, []string{left, kicked, banned, forgotten}},
		{"full_state incremental", "full_state=true&since=" + before, []string{left, kicked, banned, forgotten}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := leaveSyncOf(t, bob, tc.query)
			var got []string
			for room, lr := range out.Rooms.Leave {
				got = append(got, room)
				tl := lr.Timeline.Events
				if len(tl) == 0 || tl[len(tl)-1].StateKey == nil || *tl[len(tl)-1].StateKey != bob.UserID {
					t.Errorf("room %s: the timeline does not end at bob's membership: %+v", room, tl)
					continue
				}
				// unsigned.membership: join until the last event, which ends it.
				for i, e := range tl {
					want := "join"
					if i == len(tl)-1 {
						want = "leave"
						if room == banned {
							want = "ban"
						}
					}
					if m := e.Unsigned["membership"]; m != want {
						t.Errorf("room %s: %s has unsigned.membership %v, want %s", room, e.Type, m, want)
					}
				}
			}
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("rooms.leave = %q, want %q", got, want)
			}
		})
	}
}

// TestLeftRoomTimelineLimitZero: timeline.limit 0 is honoured for a left
// room: no timeline events, and the state at the leave, the leave
// included, and nothing from after it (Complement TestArchivedRoomsHistory
// "timeline is empty").
func TestLeftRoomTimelineLimitZero(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(room)
	since := leaveSyncOf(t, bob, "").NextBatch
	putState := func(v string) {
		alice.MustDo("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/org.example.madeup/", map[string]any{"my_key": v}, nil)
	}
	alice.SendText(room, "before")
	putState("before")
	leave(t, bob, room)
	alice.SendText(room, "after")
	putState("after")
	zero := filterQuery(`{"room":{"timeline":{"limit":0},"include_leave":true}}`)
	for _, q := range []string{zero, zero + "&since=" + since} {
		out := leaveSyncOf(t, bob, q)
		lr, ok := out.Rooms.Leave[room]
		if !ok {
			t.Fatalf("sync?%s: room not in rooms.leave", q)
		}
		if len(lr.Timeline.Events) != 0 || !lr.Timeline.Limited || lr.Timeline.PrevBatch == "" {
			t.Errorf("sync?%s: timeline = %+v, want empty, limited, with a prev_batch", q, lr.Timeline)
		}
		var sawLeave, sawMadeup bool
		for _, e := range lr.State.Events {
			sawLeave = sawLeave || isMember(e, bob.UserID, "leave")
			if e.Type == "org.example.madeup" {
				sawMadeup = true
				if !strings.Contains(string(e.Content), `"before"`) {
					t.Errorf("sync?%s: state from after the leave: %s", q, e.Content)
				}
			}
		}
		if !sawLeave || !sawMadeup {
			t.Errorf("sync?%s: state lacks bob's leave (%v) or the state set before it (%v)", q, sawLeave, sawMadeup)
		}
	}
	// Joined rooms honour it too: an empty timeline, the state whole.
	out := doSync(t, alice, filterQuery(`{"room":{"timeline":{"limit":0}}}`))
	jr := out.Rooms.Join[room]
	if len(jr.Timeline.Events) != 0 || !jr.Timeline.Limited || countType(jr.State.Events, "org.example.madeup") != 1 {
		t.Errorf("joined room with limit 0: %d timeline events (limited %v), state %d events", len(jr.Timeline.Events), jr.Timeline.Limited, len(jr.State.Events))
	}
}
