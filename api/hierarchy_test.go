package api_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

type hierarchyPage struct {
	Rooms []struct {
		RoomID           string `json:"room_id"`
		Name             string `json:"name"`
		RoomType         string `json:"room_type"`
		JoinRule         string `json:"join_rule"`
		NumJoinedMembers int    `json:"num_joined_members"`
		WorldReadable    *bool  `json:"world_readable"`
		GuestCanJoin     *bool  `json:"guest_can_join"`
		ChildrenState    []struct {
			Type           string         `json:"type"`
			StateKey       string         `json:"state_key"`
			Sender         string         `json:"sender"`
			OriginServerTS int64          `json:"origin_server_ts"`
			Content        map[string]any `json:"content"`
		} `json:"children_state"`
	} `json:"rooms"`
	NextBatch string `json:"next_batch"`
}

func hierarchyPath(room string, q url.Values) string {
	p := "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/hierarchy"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

func getHierarchy(t testing.TB, c *testserver.Client, room string, q url.Values) hierarchyPage {
	t.Helper()
	var p hierarchyPage
	wantOK(t, c.Do("GET", hierarchyPath(room, q), nil), &p)
	return p
}

func (p hierarchyPage) ids() []string {
	var out []string
	for _, r := range p.Rooms {
		out = append(out, r.RoomID)
	}
	return out
}

func TestSpaceHierarchy(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	space := func(name string) map[string]any {
		return map[string]any{"preset": "public_chat", "name": name, "creation_content": map[string]any{"type": "m.space"}}
	}
	via := []string{srv.Config.ServerName}
	child := func(parent, room string, extra map[string]any) {
		content := map[string]any{"via": via}
		for k, v := range extra {
			content[k] = v
		}
		putState(t, alice, parent, "m.space.child", room, content)
	}

	root := createRoom(t, alice, space("Root"))
	public := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Public"})
	private := createRoom(t, alice, map[string]any{"preset": "private_chat", "name": "Private"})
	restricted := createRoom(t, alice, map[string]any{"preset": "private_chat", "name": "Restricted",
		"initial_state": []map[string]any{{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "restricted",
			"allow": []map[string]any{{"type": "m.room_membership", "room_id": root}}}}}})
	sub := createRoom(t, alice, space("Sub"))
	leaf := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Leaf"})
	joinRoom(t, bob, root)

	// Children of root, in the spec's order: by "order", then the rest.
	child(root, private, map[string]any{"order": "a"})
	child(root, public, map[string]any{"order": "b"})
	child(root, restricted, map[string]any{"order": "c"})
	child(root, sub, map[string]any{"suggested": true})
	child(root, "!unknown:"+srv.Config.ServerName, map[string]any{"order": "d"}) // not known here: left out
	putState(t, alice, root, "m.space.child", leaf, map[string]any{})            // no via: a removed child
	putState(t, alice, root, "m.space.child", leaf+"x", map[string]any{"via": []any{1}})
	// A loop back to the root, and a suggested leaf.
	child(sub, root, nil)
	child(sub, leaf, map[string]any{"suggested": true})

	t.Run("whole tree, depth first, loops cut", func(t *testing.T) {
		p := getHierarchy(t, bob, root, nil)
		if want := []string{root, public, restricted, sub, leaf}; !slices.Equal(p.ids(), want) {
			t.Fatalf("rooms %v, want %v", p.ids(), want)
		}
		if p.NextBatch != "" {
			t.Errorf("next_batch %q on the last page", p.NextBatch)
		}
		r := p.Rooms[0]
		if r.Name != "Root" || r.RoomType != "m.space" || r.JoinRule != "public" || r.NumJoinedMembers != 2 ||
			r.WorldReadable == nil || r.GuestCanJoin == nil {
			t.Errorf("root entry %+v", r)
		}
		var keys []string
		for _, ev := range r.ChildrenState {
			keys = append(keys, ev.StateKey)
			if ev.Type != "m.space.child" || ev.Sender != alice.UserID || ev.OriginServerTS == 0 || ev.Content["via"] == nil {
				t.Errorf("child event %+v is not a stripped m.space.child", ev)
			}
		}
		// Every valid child is listed, seen or not; invalid ones are not.
		if want := []string{private, public, restricted, "!unknown:" + srv.Config.ServerName, sub}; !slices.Equal(keys, want) {
			t.Errorf("children_state keys %v, want %v", keys, want)
		}
		if len(p.Rooms[1].ChildrenState) != 0 || p.Rooms[1].ChildrenState == nil {
			t.Errorf("a plain room's children_state = %v, want []", p.Rooms[1].ChildrenState)
		}
	})
	t.Run("restricted rooms need membership of an allowed room", func(t *testing.T) {
		p := getHierarchy(t, carol, root, nil)
		if want := []string{root, public, sub, leaf}; !slices.Equal(p.ids(), want) {
			t.Errorf("carol sees %v, want %v", p.ids(), want)
		}
	})
	t.Run("max_depth", func(t *testing.T) {
		if got := getHierarchy(t, bob, root, url.Values{"max_depth": {"0"}}).ids(); !slices.Equal(got, []string{root}) {
			t.Errorf("max_depth 0: %v", got)
		}
		if got := getHierarchy(t, bob, root, url.Values{"max_depth": {"1"}}).ids(); !slices.Equal(got, []string{root, public, restricted, sub}) {
			t.Errorf("max_depth 1: %v", got)
		}
	})
	t.Run("suggested_only", func(t *testing.T) {
		p := getHierarchy(t, bob, root, url.Values{"suggested_only": {"true"}})
		if want := []string{root, sub, leaf}; !slices.Equal(p.ids(), want) {
			t.Fatalf("rooms %v, want %v", p.ids(), want)
		}
		if n := len(p.Rooms[0].ChildrenState); n != 1 {
			t.Errorf("root lists %d children with suggested_only, want 1", n)
		}
	})
	t.Run("pages", func(t *testing.T) {
		q := url.Values{"limit": {"2"}}
		var got []string
		p := getHierarchy(t, bob, root, q)
		got = append(got, p.ids()...)
		first := p.NextBatch
		for p.NextBatch != "" {
			if len(p.Rooms) > 2 {
				t.Fatalf("page of %d rooms with limit 2", len(p.Rooms))
			}
			q.Set("from", p.NextBatch)
			p = getHierarchy(t, bob, root, q)
			got = append(got, p.ids()...)
		}
		if want := []string{root, public, restricted, sub, leaf}; !slices.Equal(got, want) {
			t.Errorf("paged rooms %v, want %v", got, want)
		}
		// A page asked for again is the same page.
		again := getHierarchy(t, bob, root, url.Values{"limit": {"2"}, "from": {first}})
		if want := []string{restricted, sub}; !slices.Equal(again.ids(), want) {
			t.Errorf("second page again: %v, want %v", again.ids(), want)
		}
		for name, q := range map[string]url.Values{
			"max_depth changed":      {"from": {first}, "max_depth": {"3"}},
			"suggested_only changed": {"from": {first}, "suggested_only": {"true"}},
			"unknown token":          {"from": {"nonsense"}},
		} {
			r := bob.Do("GET", hierarchyPath(root, q), nil)
			if r.Status != http.StatusBadRequest || r.Errcode() != "M_INVALID_PARAM" {
				t.Errorf("%s: %d %s", name, r.Status, r.Body)
			}
		}
		// Another user cannot continue bob's walk.
		wantErr(t, carol.Do("GET", hierarchyPath(root, url.Values{"from": {first}, "limit": {"2"}}), nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})
	t.Run("rooms that cannot be previewed", func(t *testing.T) {
		hidden := createRoom(t, alice, map[string]any{"preset": "private_chat", "creation_content": map[string]any{"type": "m.space"}})
		wantErr(t, bob.Do("GET", hierarchyPath(hidden, nil), nil), http.StatusForbidden, "M_FORBIDDEN")
		wantErr(t, bob.Do("GET", hierarchyPath("!nowhere:"+srv.Config.ServerName, nil), nil), http.StatusForbidden, "M_FORBIDDEN")
		// Members see it, invitees too.
		if got := getHierarchy(t, alice, hidden, nil).ids(); !slices.Equal(got, []string{hidden}) {
			t.Errorf("owner sees %v", got)
		}
		inviteUser(t, alice, hidden, bob.UserID)
		if got := getHierarchy(t, bob, hidden, nil).ids(); !slices.Equal(got, []string{hidden}) {
			t.Errorf("invitee sees %v", got)
		}
		// Without a token: no.
		wantErr(t, srv.Anonymous().Do("GET", hierarchyPath(root, nil), nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
	t.Run("bad parameters", func(t *testing.T) {
		for _, q := range []url.Values{{"limit": {"0"}}, {"limit": {"x"}}, {"max_depth": {"-1"}}, {"suggested_only": {"yes"}}} {
			wantErr(t, bob.Do("GET", hierarchyPath(root, q), nil), http.StatusBadRequest, "M_INVALID_PARAM")
		}
		wantErr(t, bob.Do("GET", hierarchyPath("not-a-room", nil), nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}
