package api_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// encryptionOf is the algorithm of a room's m.room.encryption, "" if it
// has none.
func encryptionOf(t *testing.T, c *testserver.Client, room string) string {
	t.Helper()
	r := c.Do("GET", csAPI+"/rooms/"+url.PathEscape(room)+"/state/m.room.encryption/", nil)
	if r.Status == http.StatusNotFound {
		return ""
	}
	var content struct {
		Algorithm string `json:"algorithm"`
	}
	if r.Status != http.StatusOK || r.JSON(&content) != nil {
		t.Fatalf("m.room.encryption: %d %s", r.Status, r.Body)
	}
	return content.Algorithm
}

// TestEncryptionByDefault: encryption_enabled_by_default_for_room_type
// encrypts new rooms by preset as Synapse does, keeps a creator's own
// m.room.encryption, and adds nothing when refuse_room_encryption is on.
func TestEncryptionByDefault(t *testing.T) {
	const megolm = "m.megolm.v1.aes-sha2"
	yes := true
	servers := map[string]*testserver.Server{}
	server := func(setting string, refuse bool) *testserver.Server {
		key := setting
		if refuse {
			key += "+refuse"
		}
		if s := servers[key]; s != nil {
			return s
		}
		s := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) {
			c.EncryptionEnabledByDefaultForRoomType = setting
			if refuse {
				c.RefuseRoomEncryption = &yes
			}
		}})
		servers[key] = s
		return s
	}
	own := map[string]any{"initial_state": []any{map[string]any{"type": "m.room.encryption", "state_key": "",
		"content": map[string]any{"algorithm": "org.example.custom"}}}}
	for _, tc := range []struct {
		setting string
		refuse  bool
		name    string
		body    map[string]any
		want    string
	}{
		{"off", false, "private room", map[string]any{"preset": "private_chat"}, ""},
		{"off", false, "own encryption", own, "org.example.custom"},
		{"all", false, "public room", map[string]any{"preset": "public_chat"}, megolm},
		{"all", false, "no preset", map[string]any{}, megolm},
		{"all", false, "own encryption", own, "org.example.custom"},
		{"invite", false, "private_chat", map[string]any{"preset": "private_chat"}, megolm},
		{"invite", false, "trusted_private_chat", map[string]any{"preset": "trusted_private_chat"}, megolm},
		{"invite", false, "private visibility", map[string]any{"visibility": "private"}, megolm},
		{"invite", false, "public_chat", map[string]any{"preset": "public_chat"}, ""},
		{"invite", false, "public visibility", map[string]any{"visibility": "public"}, ""},
		{"all", true, "refused", map[string]any{"preset": "private_chat"}, ""},
	} {
		t.Run(tc.setting+"/"+tc.name, func(t *testing.T) {
			c := server(tc.setting, tc.refuse).Register("encdefault")
			room := c.CreateRoom(tc.body)
			if got := encryptionOf(t, c, room); got != tc.want {
				t.Fatalf("room encrypted with %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRefuseRoomEncryption: with refuse_room_encryption, m.room.encryption
// is refused in a new room's initial state and as a state event later,
// 403 M_FORBIDDEN saying why; other state still goes through, and without
// the switch the same requests succeed.
func TestRefuseRoomEncryption(t *testing.T) {
	yes, no := true, false
	enc := map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}
	for _, tc := range []struct {
		name   string
		refuse *bool
		status int
	}{
		{"refused", &yes, http.StatusForbidden},
		{"set to false", &no, http.StatusOK},
		{"unset", nil, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) { c.RefuseRoomEncryption = tc.refuse }})
			c := srv.Register("encrefuse")
			r := c.Do("POST", csAPI+"/createRoom", map[string]any{"initial_state": []any{
				map[string]any{"type": "m.room.encryption", "state_key": "", "content": enc}}})
			check := func(what string, r *testserver.Response) {
				t.Helper()
				if r.Status != tc.status {
					t.Fatalf("%s: %d %s, want %d", what, r.Status, r.Body, tc.status)
				}
				if tc.status == http.StatusForbidden && (r.Errcode() != "M_FORBIDDEN" || !strings.Contains(string(r.Body), "encryption is disabled")) {
					t.Fatalf("%s: %s, want M_FORBIDDEN naming encryption", what, r.Body)
				}
			}
			check("createRoom with m.room.encryption", r)
			room := c.CreateRoom(map[string]any{})
			check("PUT m.room.encryption", c.Do("PUT", csAPI+"/rooms/"+url.PathEscape(room)+"/state/m.room.encryption/", enc))
			want := "m.megolm.v1.aes-sha2"
			if tc.status == http.StatusForbidden {
				want = ""
			}
			if got := encryptionOf(t, c, room); got != want {
				t.Fatalf("room's encryption %q, want %q", got, want)
			}
			c.MustDo("PUT", csAPI+"/rooms/"+url.PathEscape(room)+"/state/m.room.topic/", map[string]any{"topic": "still fine"}, nil)
		})
	}
}

// TestUpgradeEncryptedRoomRefused: an upgrade copies m.room.encryption
// into the replacement room; with refuse_room_encryption on (here set
// after the rooms were made, over the same data), upgrading an encrypted
// room is 403 M_FORBIDDEN saying why, and nothing changes: no replacement,
// no tombstone, the room still usable. An unencrypted room upgrades as
// before, and its replacement is not encrypted.
func TestUpgradeEncryptedRoomRefused(t *testing.T) {
	const megolm = "m.megolm.v1.aes-sha2"
	yes := true
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("encupgrade")
	encrypted := func() string {
		return alice.CreateRoom(map[string]any{"initial_state": []any{map[string]any{"type": "m.room.encryption", "state_key": "",
			"content": map[string]any{"algorithm": megolm}}}})
	}
	// Without the switch the encryption is carried over.
	if got := encryptionOf(t, alice, upgrade(t, alice, encrypted(), "11")); got != megolm {
		t.Fatalf("replacement of an encrypted room: encryption %q, want %q", got, megolm)
	}
	enc, plain := encrypted(), alice.CreateRoom(map[string]any{})
	srv.Stop()

	srv = testserver.Start(t, testserver.Options{DataDir: srv.DataDir, Configure: func(c *configs.Config) { c.RefuseRoomEncryption = &yes }})
	alice.Base, alice.HTTP = srv.URL, srv.Anonymous().HTTP
	r := upgradeRaw(alice, enc, map[string]any{"new_version": "11"})
	if r.Status != http.StatusForbidden || r.Errcode() != "M_FORBIDDEN" || !strings.Contains(string(r.Body), "encryption is disabled") ||
		!strings.Contains(string(r.Body), "this room is encrypted") {
		t.Fatalf("upgrading an encrypted room with encryption refused: %d %s, want 403 M_FORBIDDEN saying why", r.Status, r.Body)
	}
	if r := alice.Do("GET", csAPI+"/rooms/"+url.PathEscape(enc)+"/state/m.room.tombstone/", nil); r.Status != http.StatusNotFound || r.Errcode() != "M_NOT_FOUND" {
		t.Fatalf("the refused upgrade left a tombstone: %d %s", r.Status, r.Body)
	}
	var joined struct {
		Rooms []string `json:"joined_rooms"`
	}
	wantOK(t, alice.Do("GET", csAPI+"/joined_rooms", nil), &joined)
	if len(joined.Rooms) != 4 { // the first encrypted room, its replacement, enc and plain
		t.Fatalf("joined rooms after the refused upgrade: %v, want no new room", joined.Rooms)
	}
	alice.MustDo("PUT", csAPI+"/rooms/"+url.PathEscape(enc)+"/send/m.room.encrypted/t1", map[string]any{"algorithm": megolm, "ciphertext": "x",
		"sender_key": "k", "session_id": "s", "device_id": alice.DeviceID}, nil)
	// Asking again gets the same answer (a refusal is not cached as an
	// upgrade in progress).
	if r := upgradeRaw(alice, enc, map[string]any{"new_version": "11"}); r.Status != http.StatusForbidden {
		t.Fatalf("second attempt: %d %s", r.Status, r.Body)
	}

	repl := upgrade(t, alice, plain, "11")
	if got := encryptionOf(t, alice, repl); got != "" {
		t.Fatalf("replacement of an unencrypted room is encrypted: %q", got)
	}
}
