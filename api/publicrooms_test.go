package api_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

func visibilityPath(room string) string {
	return csAPI + "/directory/list/room/" + url.PathEscape(room)
}

func roomVisibility(t testing.TB, c *testserver.Client, room string) string {
	t.Helper()
	var out struct {
		Visibility string `json:"visibility"`
	}
	wantOK(t, c.Do("GET", visibilityPath(room), nil), &out)
	return out.Visibility
}

func TestRoomDirectoryVisibility(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	server := srv.Config.ServerName
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	anon := srv.Anonymous()

	if v := roomVisibility(t, anon, room); v != "private" {
		t.Errorf("new room's visibility = %s, want private", v)
	}
	wantOK(t, alice.Do("PUT", visibilityPath(room), map[string]any{"visibility": "public"}), nil)
	if v := roomVisibility(t, anon, room); v != "public" {
		t.Errorf("after PUT public: %s", v)
	}
	wantOK(t, alice.Do("PUT", visibilityPath(room), map[string]any{"visibility": "private"}), nil)
	if v := roomVisibility(t, anon, room); v != "private" {
		t.Errorf("after PUT private: %s", v)
	}
	// spec: visibility "Defaults to 'public'."
	wantOK(t, alice.Do("PUT", visibilityPath(room), map[string]any{}), nil)
	if v := roomVisibility(t, anon, room); v != "public" {
		t.Errorf("after PUT without visibility: %s", v)
	}
	// createRoom's visibility publishes the room.
	if v := roomVisibility(t, anon, createRoom(t, alice, map[string]any{"visibility": "public"})); v != "public" {
		t.Errorf("createRoom visibility public: %s", v)
	}

	tests := []struct {
		name    string
		c       *testserver.Client
		method  string
		room    string
		body    any
		status  int
		errcode string
	}{
		{"member without power", bob, "PUT", room, map[string]any{"visibility": "private"}, http.StatusForbidden, "M_FORBIDDEN"},
		{"non-member", carol, "PUT", room, map[string]any{"visibility": "private"}, http.StatusForbidden, "M_FORBIDDEN"},
		{"no token", anon, "PUT", room, map[string]any{"visibility": "private"}, http.StatusUnauthorized, "M_MISSING_TOKEN"},
		{"bad visibility", alice, "PUT", room, map[string]any{"visibility": "secret"}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"visibility not a string", alice, "PUT", room, map[string]any{"visibility": 1}, http.StatusBadRequest, "M_BAD_JSON"},
		{"not JSON", alice, "PUT", room, "{", http.StatusBadRequest, "M_NOT_JSON"},
		{"unknown room", alice, "PUT", "!nowhere:" + server, map[string]any{"visibility": "public"}, http.StatusNotFound, "M_NOT_FOUND"},
		{"malformed room", alice, "PUT", "nowhere", map[string]any{"visibility": "public"}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"GET unknown room", anon, "GET", "!nowhere:" + server, nil, http.StatusNotFound, "M_NOT_FOUND"},
		{"GET malformed room", anon, "GET", "nowhere", nil, http.StatusBadRequest, "M_INVALID_PARAM"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, tc.c.Do(tc.method, visibilityPath(tc.room), tc.body), tc.status, tc.errcode)
		})
	}
	if v := roomVisibility(t, anon, room); v != "public" {
		t.Errorf("rejected PUTs changed visibility to %s", v)
	}
}

type publicRoomsPage struct {
	Chunk []struct {
		RoomID           string  `json:"room_id"`
		Name             string  `json:"name"`
		Topic            string  `json:"topic"`
		CanonicalAlias   string  `json:"canonical_alias"`
		NumJoinedMembers int     `json:"num_joined_members"`
		WorldReadable    *bool   `json:"world_readable"`
		GuestCanJoin     *bool   `json:"guest_can_join"`
		JoinRule         string  `json:"join_rule"`
		RoomType         *string `json:"room_type"`
	} `json:"chunk"`
	NextBatch string `json:"next_batch"`
	PrevBatch string `json:"prev_batch"`
	Total     *int   `json:"total_room_count_estimate"`
}

func (p publicRoomsPage) ids() []string {
	var out []string
	for _, r := range p.Chunk {
		out = append(out, r.RoomID)
	}
	return out
}

func publicRooms(t testing.TB, c *testserver.Client, method, query string, body any) publicRoomsPage {
	t.Helper()
	var p publicRoomsPage
	wantOK(t, c.Do(method, csAPI+"/publicRooms"+query, body), &p)
	if p.Chunk == nil {
		t.Fatalf("publicRooms without chunk")
	}
	return p
}

func TestPublicRooms(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	server := srv.Config.ServerName
	var others []*testserver.Client
	for range 3 {
		others = append(others, srv.Register("member"))
	}
	// big (4 members) > mid (3) > small and space (1 each, by room ID).
	big := createRoom(t, alice, map[string]any{"visibility": "public", "name": "Big Room", "topic": "Test Topic Wombles"})
	mid := createRoom(t, alice, map[string]any{"visibility": "public", "name": "Middle", "room_alias_name": "middling"})
	small := createRoom(t, alice, map[string]any{"visibility": "public", "topic": "quiet"})
	space := createRoom(t, alice, map[string]any{"visibility": "public", "name": "Topics", "creation_content": map[string]any{"type": "m.space"}})
	for i, c := range others {
		joinRoom(t, c, big)
		if i < 2 {
			joinRoom(t, c, mid)
		}
	}
	// Unpublished, and published but invite-only: neither is listed.
	createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Unlisted Wombles"})
	hidden := createRoom(t, alice, map[string]any{"preset": "private_chat", "name": "Secret Wombles"})
	wantOK(t, alice.Do("PUT", visibilityPath(hidden), map[string]any{"visibility": "public"}), nil)

	ordered := []string{big, mid}
	rest := []string{small, space}
	slices.Sort(rest)
	ordered = append(ordered, rest...)

	t.Run("GET without a token lists all, largest first", func(t *testing.T) {
		p := publicRooms(t, srv.Anonymous(), "GET", "", nil)
		if !slices.Equal(p.ids(), ordered) {
			t.Fatalf("rooms = %v, want %v", p.ids(), ordered)
		}
		if p.Total == nil || *p.Total != 4 || p.NextBatch != "" || p.PrevBatch != "" {
			t.Errorf("total %v next %q prev %q, want 4 and no tokens", p.Total, p.NextBatch, p.PrevBatch)
		}
		r := p.Chunk[0]
		if r.Name != "Big Room" || r.Topic != "Test Topic Wombles" || r.NumJoinedMembers != 4 || r.JoinRule != "public" ||
			r.WorldReadable == nil || *r.WorldReadable || r.GuestCanJoin == nil || *r.GuestCanJoin || r.RoomType != nil {
			t.Errorf("big room entry = %+v", r)
		}
		if p.Chunk[1].CanonicalAlias != "#middling:"+server || p.Chunk[1].NumJoinedMembers != 3 {
			t.Errorf("mid room entry = %+v", p.Chunk[1])
		}
		for _, r := range p.Chunk {
			if r.RoomID == space && (r.RoomType == nil || *r.RoomType != "m.space") {
				t.Errorf("space entry = %+v", r)
			}
		}
	})

	t.Run("paging forward and back", func(t *testing.T) {
		var got []string
		var pages []publicRoomsPage
		q := "?limit=1"
		for range 10 {
			p := publicRooms(t, alice, "GET", q, nil)
			pages = append(pages, p)
			got = append(got, p.ids()...)
			if p.NextBatch == "" {
				break
			}
			q = "?limit=1&since=" + url.QueryEscape(p.NextBatch)
		}
		if !slices.Equal(got, ordered) {
			t.Fatalf("paged forward: %v, want %v", got, ordered)
		}
		if pages[0].PrevBatch != "" || pages[1].PrevBatch == "" {
			t.Errorf("prev_batch on first page %q, on second %q", pages[0].PrevBatch, pages[1].PrevBatch)
		}
		// Back from the last page, through POST, two at a time.
		p := publicRooms(t, alice, "POST", "", map[string]any{"limit": 2, "since": pages[len(pages)-1].PrevBatch})
		if !slices.Equal(p.ids(), ordered[1:3]) || p.PrevBatch == "" || p.NextBatch == "" {
			t.Fatalf("back page = %v prev %q next %q, want %v with both tokens", p.ids(), p.PrevBatch, p.NextBatch, ordered[1:3])
		}
		p = publicRooms(t, alice, "POST", "", map[string]any{"limit": 2, "since": p.PrevBatch})
		if !slices.Equal(p.ids(), ordered[:1]) || p.PrevBatch != "" {
			t.Fatalf("first page going back = %v prev %q", p.ids(), p.PrevBatch)
		}
	})

	t.Run("search and room types", func(t *testing.T) {
		tests := []struct {
			name   string
			filter map[string]any
			want   []string
		}{
			{"topic, any case", map[string]any{"generic_search_term": "wombles"}, []string{big}},
			{"name", map[string]any{"generic_search_term": "MIDDLE"}, []string{mid}},
			{"alias", map[string]any{"generic_search_term": "#middling"}, []string{mid}},
			{"no match", map[string]any{"generic_search_term": "zebra"}, nil},
			{"rooms without a type", map[string]any{"room_types": []any{nil}}, []string{big, mid, small}},
			{"spaces", map[string]any{"room_types": []any{"m.space"}}, []string{space}},
			{"both", map[string]any{"room_types": []any{nil, "m.space"}}, ordered},
			{"term and type", map[string]any{"generic_search_term": "topic", "room_types": []any{"m.space"}}, []string{space}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				p := publicRooms(t, alice, "POST", "", map[string]any{"filter": tc.filter})
				want := tc.want
				if !slices.Equal(p.ids(), want) {
					t.Errorf("rooms = %v, want %v", p.ids(), want)
				}
				if p.Total == nil || *p.Total != len(want) {
					t.Errorf("total = %v, want %d", p.Total, len(want))
				}
			})
		}
	})

	t.Run("own server name is fine", func(t *testing.T) {
		if p := publicRooms(t, alice, "GET", "?server="+url.QueryEscape(server), nil); len(p.Chunk) != 4 {
			t.Errorf("rooms = %v", p.ids())
		}
	})

	t.Run("rejects", func(t *testing.T) {
		tests := []struct {
			name    string
			c       *testserver.Client
			method  string
			query   string
			body    any
			status  int
			errcode string
		}{
			{"negative limit", alice, "GET", "?limit=-1", nil, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"limit not a number", alice, "GET", "?limit=ten", nil, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"negative limit in body", alice, "POST", "", map[string]any{"limit": -5}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"limit a string in body", alice, "POST", "", map[string]any{"limit": "5"}, http.StatusBadRequest, "M_BAD_JSON"},
			{"malformed since", alice, "GET", "?since=garbage", nil, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"since with a bad room", alice, "GET", "?since=n3_room", nil, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"filter not an object", alice, "POST", "", map[string]any{"filter": "wombles"}, http.StatusBadRequest, "M_BAD_JSON"},
			{"room_types not a list", alice, "POST", "", map[string]any{"filter": map[string]any{"room_types": "m.space"}}, http.StatusBadRequest, "M_BAD_JSON"},
			{"search term not a string", alice, "POST", "", map[string]any{"filter": map[string]any{"generic_search_term": 3}}, http.StatusBadRequest, "M_BAD_JSON"},
			{"body not JSON", alice, "POST", "", "{", http.StatusBadRequest, "M_NOT_JSON"},
			{"POST without a token", srv.Anonymous(), "POST", "", map[string]any{}, http.StatusUnauthorized, "M_MISSING_TOKEN"},
			{"another server", alice, "GET", "?server=elsewhere.example", nil, http.StatusNotFound, "M_NOT_FOUND"},
			{"malformed server", alice, "POST", "?server=" + url.QueryEscape("bad server!"), map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM"},
			{"unknown third party instance", alice, "POST", "", map[string]any{"third_party_instance_id": "irc"}, http.StatusNotFound, "M_NOT_FOUND"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				wantErr(t, tc.c.Do(tc.method, csAPI+"/publicRooms"+tc.query, tc.body), tc.status, tc.errcode)
			})
		}
	})

	t.Run("unlisting removes a room", func(t *testing.T) {
		wantOK(t, alice.Do("PUT", visibilityPath(small), map[string]any{"visibility": "private"}), nil)
		p := publicRooms(t, alice, "GET", "", nil)
		if slices.Contains(p.ids(), small) || len(p.Chunk) != 3 {
			t.Errorf("after unlisting: %v", p.ids())
		}
	})
}
