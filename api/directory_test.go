package api_test

import (
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

func aliasPath(alias string) string { return csAPI + "/directory/room/" + url.PathEscape(alias) }

// resolveAlias is GET /directory/room/{alias}.
func resolveAlias(t testing.TB, c *testserver.Client, alias string) (room string, servers []string) {
	t.Helper()
	var out struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	wantOK(t, c.Do("GET", aliasPath(alias), nil), &out)
	return out.RoomID, out.Servers
}

func roomAliases(t testing.TB, c *testserver.Client, room string) []string {
	t.Helper()
	var out struct {
		Aliases []string `json:"aliases"`
	}
	wantOK(t, c.Do("GET", roomPath(room, "aliases"), nil), &out)
	if out.Aliases == nil {
		t.Fatal("aliases missing")
	}
	return out.Aliases
}

func TestAliases(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	server := srv.Config.ServerName
	room := createRoom(t, alice, map[string]any{"preset": "public_chat", "room_alias_name": "made"})
	other := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	lobby := "#lobby:" + server

	// Create and resolve.
	wantOK(t, bob.Do("PUT", aliasPath(lobby), map[string]any{"room_id": room}), nil)
	got, servers := resolveAlias(t, carol, lobby)
	if got != room || !slices.Contains(servers, server) {
		t.Errorf("resolved to %s via %v, want %s via %s", got, servers, room, server)
	}
	// Resolving needs no account.
	if got, _ := resolveAlias(t, srv.Anonymous(), lobby); got != room {
		t.Errorf("anonymous resolve = %s", got)
	}
	if got, _ := resolveAlias(t, carol, "#made:"+server); got != room {
		t.Errorf("createRoom's alias resolves to %s", got)
	}
	// Joining through it.
	joinRoom(t, carol, lobby)

	t.Run("create rejects", func(t *testing.T) {
		tests := []struct {
			name    string
			alias   string
			body    any
			status  int
			errcode string
		}{
			// spec: 409 "A room alias with that name already exists", for
			// the same room or another.
			{"taken, same room", lobby, map[string]any{"room_id": room}, http.StatusConflict, "M_UNKNOWN"},
			{"taken, other room", lobby, map[string]any{"room_id": other}, http.StatusConflict, "M_UNKNOWN"},
			{"taken by createRoom", "#made:" + server, map[string]any{"room_id": other}, http.StatusConflict, "M_UNKNOWN"},
			{"malformed alias", "lobby", map[string]any{"room_id": room}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"another server's alias", "#lobby:elsewhere.example", map[string]any{"room_id": room}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"no room_id", "#x:" + server, map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"malformed room_id", "#x:" + server, map[string]any{"room_id": "room"}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"unknown room", "#x:" + server, map[string]any{"room_id": "!unknown:" + server}, http.StatusNotFound, "M_NOT_FOUND"},
			{"not JSON", "#x:" + server, "{", http.StatusBadRequest, "M_NOT_JSON"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				wantErr(t, bob.Do("PUT", aliasPath(tc.alias), tc.body), tc.status, tc.errcode)
			})
		}
		if got, _ := resolveAlias(t, carol, lobby); got != room {
			t.Errorf("a refused PUT moved the alias to %s", got)
		}
		wantErr(t, srv.Anonymous().Do("PUT", aliasPath("#anon:"+server), map[string]any{"room_id": room}), http.StatusUnauthorized, "M_MISSING_TOKEN")
	})

	t.Run("resolve rejects", func(t *testing.T) {
		wantErr(t, carol.Do("GET", aliasPath("#nothing:"+server), nil), http.StatusNotFound, "M_NOT_FOUND")
		wantErr(t, carol.Do("GET", aliasPath("nothing"), nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})

	t.Run("room aliases", func(t *testing.T) {
		wantOK(t, bob.Do("PUT", aliasPath("#another:"+server), map[string]any{"room_id": room}), nil)
		want := []string{"#another:" + server, lobby, "#made:" + server}
		slices.Sort(want)
		gotAliases := roomAliases(t, bob, room)
		slices.Sort(gotAliases)
		if !slices.Equal(gotAliases, want) {
			t.Errorf("aliases = %q, want %q", gotAliases, want)
		}
		if a := roomAliases(t, alice, other); len(a) != 0 {
			t.Errorf("aliases of a room without any = %q", a)
		}
		// spec: "external users receive an M_FORBIDDEN error response",
		// unless the room is world readable.
		stranger := srv.Register("stranger")
		wantErr(t, stranger.Do("GET", roomPath(room, "aliases"), nil), http.StatusForbidden, "M_FORBIDDEN")
		readable := createRoom(t, alice, map[string]any{"room_alias_name": "readable", "initial_state": []map[string]any{
			{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "world_readable"}},
		}})
		if a := roomAliases(t, stranger, readable); !slices.Equal(a, []string{"#readable:" + server}) {
			t.Errorf("world-readable room's aliases for a stranger = %q", a)
		}
	})

	t.Run("delete", func(t *testing.T) {
		doomed := "#doomed:" + server
		wantOK(t, bob.Do("PUT", aliasPath(doomed), map[string]any{"room_id": room}), nil)
		// Neither the creator nor powerful enough (canonical alias needs 50).
		wantErr(t, carol.Do("DELETE", aliasPath(doomed), nil), http.StatusForbidden, "M_FORBIDDEN")
		dave := srv.Register("dave")
		wantErr(t, dave.Do("DELETE", aliasPath(doomed), nil), http.StatusForbidden, "M_FORBIDDEN")
		if got, _ := resolveAlias(t, carol, doomed); got != room {
			t.Fatalf("refused delete removed the alias")
		}
		// The alias's creator may delete it, without any power.
		wantOK(t, bob.Do("DELETE", aliasPath(doomed), nil), nil)
		wantErr(t, carol.Do("GET", aliasPath(doomed), nil), http.StatusNotFound, "M_NOT_FOUND")
		wantErr(t, bob.Do("DELETE", aliasPath(doomed), nil), http.StatusNotFound, "M_NOT_FOUND")
		if slices.Contains(roomAliases(t, bob, room), doomed) {
			t.Error("deleted alias still listed")
		}
		// A room admin may delete aliases others made.
		wantOK(t, alice.Do("DELETE", aliasPath(lobby), nil), nil)
		wantErr(t, carol.Do("GET", aliasPath(lobby), nil), http.StatusNotFound, "M_NOT_FOUND")
		// A deleted alias is free again.
		wantOK(t, carol.Do("PUT", aliasPath(lobby), map[string]any{"room_id": other}), nil)
		if got, _ := resolveAlias(t, bob, lobby); got != other {
			t.Errorf("re-created alias resolves to %s, want %s", got, other)
		}
	})
}

// TestDeleteCanonicalAlias: deleting an alias the room advertises in
// m.room.canonical_alias sends a new one without it, as the deleter (as
// Synapse does; Complement "Can delete canonical alias"). A deleter
// without the power to change the event still deletes the alias
// (Complement "Alias creators can delete canonical alias with no ops").
func TestDeleteCanonicalAlias(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	server := srv.Config.ServerName
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	main, alt1, alt2, bobs := "#main:"+server, "#alt1:"+server, "#alt2:"+server, "#bobs:"+server
	for _, a := range []string{main, alt1, alt2} {
		wantOK(t, alice.Do("PUT", aliasPath(a), map[string]any{"room_id": room}), nil)
	}
	wantOK(t, bob.Do("PUT", aliasPath(bobs), map[string]any{"room_id": room}), nil)
	putState(t, alice, room, "m.room.canonical_alias", "", map[string]any{"alias": main, "alt_aliases": []string{alt1, alt2, bobs}, "org.example.extra": 1})
	canonical := func() map[string]any { return stateContent(t, alice, room, "m.room.canonical_alias", "") }

	steps := []struct {
		name   string
		by     *testserver.Client
		alias  string
		want   map[string]any
		sender string
	}{
		{"the main alias", alice, main, map[string]any{"alt_aliases": []any{alt1, alt2, bobs}, "org.example.extra": 1.0}, alice.UserID},
		{"one of alt_aliases", alice, alt1, map[string]any{"alt_aliases": []any{alt2, bobs}, "org.example.extra": 1.0}, alice.UserID},
		// bob has no power to send m.room.canonical_alias (50).
		{"by a creator without power", bob, bobs, map[string]any{"alt_aliases": []any{alt2, bobs}, "org.example.extra": 1.0}, alice.UserID},
		{"the last of alt_aliases", alice, alt2, map[string]any{"alt_aliases": []any{bobs}, "org.example.extra": 1.0}, alice.UserID},
	}
	for _, st := range steps {
		wantOK(t, st.by.Do("DELETE", aliasPath(st.alias), nil), nil)
		wantErr(t, alice.Do("GET", aliasPath(st.alias), nil), http.StatusNotFound, "M_NOT_FOUND")
		if got := canonical(); !reflect.DeepEqual(got, st.want) {
			t.Errorf("%s: canonical alias = %v, want %v", st.name, got, st.want)
		}
		if ev := stateEvent(roomState(t, alice, room), "m.room.canonical_alias", ""); ev == nil || ev.Sender != st.sender {
			t.Errorf("%s: canonical alias event = %+v, want sent by %s", st.name, ev, st.sender)
		}
	}
	// bobs (now dangling) was left in alt_aliases; re-creating and deleting
	// it as alice empties the list, and the key goes with it.
	wantOK(t, alice.Do("PUT", aliasPath(bobs), map[string]any{"room_id": room}), nil)
	wantOK(t, alice.Do("DELETE", aliasPath(bobs), nil), nil)
	if got := canonical(); !reflect.DeepEqual(got, map[string]any{"org.example.extra": 1.0}) {
		t.Errorf("after the last alias went: %v", got)
	}
	// An alias the event does not name changes nothing.
	before := stateEvent(roomState(t, alice, room), "m.room.canonical_alias", "").EventID
	other := "#other:" + server
	wantOK(t, alice.Do("PUT", aliasPath(other), map[string]any{"room_id": room}), nil)
	wantOK(t, alice.Do("DELETE", aliasPath(other), nil), nil)
	if after := stateEvent(roomState(t, alice, room), "m.room.canonical_alias", "").EventID; after != before {
		t.Errorf("deleting an unadvertised alias sent %s", after)
	}
}
