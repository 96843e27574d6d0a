package api_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

func summaryPath(roomOrAlias string) string {
	return "/_matrix/client/v1/room_summary/" + url.PathEscape(roomOrAlias)
}

type summary struct {
	RoomID           string   `json:"room_id"`
	Name             string   `json:"name"`
	Topic            string   `json:"topic"`
	AvatarURL        string   `json:"avatar_url"`
	CanonicalAlias   string   `json:"canonical_alias"`
	NumJoinedMembers int      `json:"num_joined_members"`
	JoinRule         string   `json:"join_rule"`
	WorldReadable    *bool    `json:"world_readable"`
	GuestCanJoin     *bool    `json:"guest_can_join"`
	RoomType         string   `json:"room_type"`
	RoomVersion      string   `json:"room_version"`
	Membership       *string  `json:"membership"`
	Encryption       string   `json:"encryption"`
	AllowedRoomIDs   []string `json:"allowed_room_ids"`
}

func getSummary(t testing.TB, c *testserver.Client, roomOrAlias string) summary {
	t.Helper()
	var s summary
	wantOK(t, c.Do("GET", summaryPath(roomOrAlias), nil), &s)
	return s
}

func TestRoomSummary(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	server := srv.Config.ServerName
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	anon := srv.Anonymous()

	public := createRoom(t, alice, map[string]any{
		"preset": "public_chat", "name": "Lobby", "topic": "Say hello", "room_alias_name": "lobby",
		"initial_state": []map[string]any{
			{"type": "m.room.avatar", "content": map[string]any{"url": "mxc://" + server + "/face"}},
			{"type": "m.room.encryption", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
		},
	})
	joinRoom(t, bob, public)
	private := createRoom(t, alice, map[string]any{"preset": "private_chat", "name": "Secret", "room_alias_name": "secret"})
	inviteUser(t, alice, private, bob.UserID)
	readable := createRoom(t, alice, map[string]any{"preset": "private_chat", "creation_content": map[string]any{"type": "m.space"},
		"initial_state": []map[string]any{{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "world_readable"}}}})
	knock := createRoom(t, alice, map[string]any{"preset": "private_chat",
		"initial_state": []map[string]any{{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "knock"}}}})
	restricted := createRoom(t, alice, map[string]any{"preset": "private_chat",
		"initial_state": []map[string]any{{"type": "m.room.join_rules", "content": map[string]any{"join_rule": "restricted",
			"allow": []map[string]any{{"type": "m.room_membership", "room_id": public}}}}}})

	t.Run("public room by alias, for a member", func(t *testing.T) {
		s := getSummary(t, bob, "#lobby:"+server)
		if s.RoomID != public || s.Name != "Lobby" || s.Topic != "Say hello" || s.CanonicalAlias != "#lobby:"+server ||
			s.AvatarURL != "mxc://"+server+"/face" || s.NumJoinedMembers != 2 || s.JoinRule != "public" ||
			s.WorldReadable == nil || *s.WorldReadable || s.GuestCanJoin == nil || *s.GuestCanJoin ||
			s.RoomVersion == "" || s.Encryption != "m.megolm.v1.aes-sha2" || s.Membership == nil || *s.Membership != "join" || s.RoomType != "" {
			t.Errorf("summary = %+v", s)
		}
	})
	t.Run("public room for a stranger and without a token", func(t *testing.T) {
		if s := getSummary(t, carol, public); s.Membership == nil || *s.Membership != "leave" {
			t.Errorf("stranger's membership = %v", s.Membership)
		}
		if s := getSummary(t, anon, public); s.Membership != nil || s.Name != "Lobby" {
			t.Errorf("anonymous summary = %+v", s)
		}
	})
	t.Run("private room for the invitee", func(t *testing.T) {
		if s := getSummary(t, bob, private); s.Membership == nil || *s.Membership != "invite" || s.Name != "Secret" || s.JoinRule != "invite" {
			t.Errorf("invitee's summary = %+v", s)
		}
	})
	t.Run("world readable space", func(t *testing.T) {
		if s := getSummary(t, anon, readable); s.RoomType != "m.space" || s.WorldReadable == nil || !*s.WorldReadable {
			t.Errorf("summary = %+v", s)
		}
	})
	t.Run("knock room", func(t *testing.T) {
		if s := getSummary(t, carol, knock); s.JoinRule != "knock" {
			t.Errorf("summary = %+v", s)
		}
	})
	t.Run("restricted room, for a member of the allowed room", func(t *testing.T) {
		s := getSummary(t, bob, restricted)
		if s.JoinRule != "restricted" || len(s.AllowedRoomIDs) != 1 || s.AllowedRoomIDs[0] != public {
			t.Errorf("summary = %+v", s)
		}
	})

	t.Run("rejects", func(t *testing.T) {
		tests := []struct {
			name    string
			c       *testserver.Client
			target  string
			status  int
			errcode string
		}{
			{"private room, stranger", carol, private, http.StatusNotFound, "M_NOT_FOUND"},
			{"private room by alias, stranger", carol, "#secret:" + server, http.StatusNotFound, "M_NOT_FOUND"},
			{"private room, no token", anon, private, http.StatusNotFound, "M_NOT_FOUND"},
			{"restricted room, not in the allowed room", carol, restricted, http.StatusNotFound, "M_NOT_FOUND"},
			{"unknown room", alice, "!nowhere:" + server, http.StatusNotFound, "M_NOT_FOUND"},
			{"unknown alias", alice, "#nowhere:" + server, http.StatusNotFound, "M_NOT_FOUND"},
			{"malformed room ID", alice, "!nowhere:bad server", http.StatusBadRequest, "M_INVALID_PARAM"},
			{"malformed alias", alice, "#nowhere", http.StatusBadRequest, "M_INVALID_PARAM"},
			{"neither ID nor alias", alice, "lobby", http.StatusBadRequest, "M_INVALID_PARAM"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				wantErr(t, tc.c.Do("GET", summaryPath(tc.target), nil), tc.status, tc.errcode)
			})
		}
	})
}
