package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/appservice/astest"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// headlineTests names, for every spec version from v1.11 on, the test of
// its headline features: /versions may advertise a version only if it is
// listed here (TestAdvertisedVersionsAreTested).
var headlineTests = map[string]func(*testing.T){
	"v1.11": TestV1_11AuthenticatedMedia,
	"v1.12": TestV1_12LockingMarkedUnreadVia,
	"v1.13": TestV1_13RoomReportsSuspension,
	"v1.14": TestV1_14UserReports,
	"v1.15": TestV1_15RoomSummary,
	"v1.16": TestV1_16ProfilesStateAfterV12,
	"v1.17": TestV1_17AppServiceDevices,
	"v1.18": TestV1_18InviteBlockingRedactViaSend,
	"v1.19": TestV1_19MutualRooms,
}

func TestAdvertisedVersionsAreTested(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	var out struct {
		Versions         []string        `json:"versions"`
		UnstableFeatures map[string]bool `json:"unstable_features"`
	}
	wantOK(t, srv.Anonymous().Do("GET", "/_matrix/client/versions", nil), &out)
	highest := 0
	for _, v := range out.Versions {
		minor, ok := strings.CutPrefix(v, "v1.")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(minor)
		if err != nil {
			t.Fatalf("version %q", v)
		}
		highest = max(highest, n)
		if n >= 11 && headlineTests[v] == nil {
			t.Errorf("%s is advertised without a test of its headline features", v)
		}
	}
	// Every version from v1.1 to the highest is listed: clients pick the
	// newest they know, and a gap would be a false promise.
	for n := 1; n <= highest; n++ {
		v := "v1." + strconv.Itoa(n)
		found := false
		for _, have := range out.Versions {
			found = found || have == v
		}
		if !found {
			t.Errorf("versions %v skip %s", out.Versions, v)
		}
	}
	if highest < 19 {
		t.Errorf("highest version v1.%d, want at least v1.19", highest)
	}
	if out.UnstableFeatures == nil {
		t.Errorf("unstable_features missing")
	}
}

// TestV1_11AuthenticatedMedia: media downloads and thumbnails through
// /_matrix/client/v1/media with an access token, and the media config
// there (MSC3916). A client seeing v1.11 uses only these.
func TestV1_11AuthenticatedMedia(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	data := []byte("authenticated media")
	id := upload(t, alice, "text/plain", "a.txt", data)
	if r := mediaDo(t, bob, "GET", "/_matrix/client/v1/media/download/localhost/"+id, "", nil); r.Status != 200 || !bytes.Equal(r.Body, data) {
		t.Errorf("authenticated download: %d %q", r.Status, r.Body)
	}
	if r := mediaDo(t, bob, "GET", "/_matrix/client/v1/media/download/localhost/"+id+"/other.txt", "", nil); r.Status != 200 ||
		r.Header.Get("Content-Disposition") != "inline; filename=other.txt" {
		t.Errorf("download with a file name: %d %v", r.Status, r.Header)
	}
	if r := mediaDo(t, srv.Anonymous(), "GET", "/_matrix/client/v1/media/download/localhost/"+id, "", nil); r.Status != 401 {
		t.Errorf("download without a token: %d", r.Status)
	}
	if r := mediaDo(t, srv.Anonymous(), "GET", "/_matrix/media/v3/download/localhost/"+id, "", nil); r.Status != 404 {
		t.Errorf("new media on the deprecated path: %d", r.Status)
	}
	var cfg map[string]int64
	wantOK(t, bob.Do("GET", "/_matrix/client/v1/media/config", nil), &cfg)
	if cfg["m.upload.size"] <= 0 {
		t.Errorf("media config %v", cfg)
	}
}

// TestV1_12LockingMarkedUnreadVia: account locking (MSC3939), rooms marked
// unread (MSC2867, room account data m.marked_unread, passed through), and
// via on /join (MSC4156: accepted; every room this server can join is
// local, so it names no server to ask).
func TestV1_12LockingMarkedUnreadVia(t *testing.T) {
	t.Parallel()
	const secret = "v112-admin-secret"
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) { c.RegistrationSharedSecret = configs.NewSecret(secret) }})
	admin := registerAdmin(t, srv, secret)
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})

	wantOK(t, bob.Do("POST", csAPI+"/join/"+url.PathEscape(room)+"?via=localhost&via=elsewhere.example", map[string]any{}), nil)

	unread := csAPI + "/user/" + url.PathEscape(bob.UserID) + "/rooms/" + url.PathEscape(room) + "/account_data/m.marked_unread"
	wantOK(t, bob.Do("PUT", unread, map[string]any{"unread": true}), nil)
	var got struct{ Unread bool }
	wantOK(t, bob.Do("GET", unread, nil), &got)
	if !got.Unread {
		t.Errorf("m.marked_unread did not round-trip")
	}
	var sync struct {
		Rooms struct {
			Join map[string]struct {
				AccountData struct {
					Events []struct {
						Type    string         `json:"type"`
						Content map[string]any `json:"content"`
					} `json:"events"`
				} `json:"account_data"`
			} `json:"join"`
		} `json:"rooms"`
	}
	wantOK(t, bob.Do("GET", csAPI+"/sync?timeout=0", nil), &sync)
	found := false
	for _, ev := range sync.Rooms.Join[room].AccountData.Events {
		found = found || ev.Type == "m.marked_unread" && ev.Content["unread"] == true
	}
	if !found {
		t.Errorf("m.marked_unread not in the room's account data in /sync")
	}

	wantOK(t, admin.Do("PUT", holdPath("lock", bob.UserID), map[string]any{"locked": true}), nil)
	wantErr(t, bob.Do("GET", csAPI+"/sync?timeout=0", nil), http.StatusUnauthorized, "M_USER_LOCKED")
}

// TestV1_13RoomReportsSuspension: POST /rooms/{roomId}/report (MSC4151)
// and account suspension (MSC3823).
func TestV1_13RoomReportsSuspension(t *testing.T) {
	t.Parallel()
	const secret = "v113-admin-secret"
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) { c.RegistrationSharedSecret = configs.NewSecret(secret) }})
	admin := registerAdmin(t, srv, secret)
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	wantOK(t, bob.Do("POST", roomPath(room, "report"), map[string]any{"reason": "spam room"}), nil)
	reports, _, _ := listAdminReports(t, admin, "room_reports", "")
	if len(reports) != 1 || reports[0].RoomID != room {
		t.Errorf("room reports %+v", reports)
	}
	wantOK(t, admin.Do("PUT", holdPath("suspend", bob.UserID), map[string]any{"suspended": true}), nil)
	wantErr(t, bob.Do("POST", csAPI+"/join/"+url.PathEscape(room), map[string]any{}), http.StatusForbidden, "M_USER_SUSPENDED")
}

// TestV1_14UserReports: POST /users/{userId}/report (MSC4260).
func TestV1_14UserReports(t *testing.T) {
	t.Parallel()
	const secret = "v114-admin-secret"
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) { c.RegistrationSharedSecret = configs.NewSecret(secret) }})
	admin := registerAdmin(t, srv, secret)
	alice, bob := srv.Register("alice"), srv.Register("bob")
	wantOK(t, bob.Do("POST", csAPI+"/users/"+url.PathEscape(alice.UserID)+"/report", map[string]any{"reason": "rude"}), nil)
	reports, _, _ := listAdminReports(t, admin, "user_reports", "")
	if len(reports) != 1 || reports[0].TargetUserID != alice.UserID {
		t.Errorf("user reports %+v", reports)
	}
}

// TestV1_15RoomSummary: GET /_matrix/client/v1/room_summary/{roomIdOrAlias}
// (MSC3266), and GET /auth_metadata answering 404 M_UNRECOGNIZED, which
// tells clients to log in with the legacy API (this server has no OAuth
// 2.0 API, which v1.15 makes optional).
func TestV1_15RoomSummary(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "Lobby", "room_alias_name": "v115lobby"})
	s := getSummary(t, srv.Anonymous(), "#v115lobby:localhost")
	if s.RoomID != room || s.Name != "Lobby" || s.JoinRule != "public" || s.NumJoinedMembers != 1 || s.RoomVersion == "" {
		t.Errorf("summary %+v", s)
	}
	wantErr(t, srv.Anonymous().Do("GET", "/_matrix/client/v1/auth_metadata", nil), http.StatusNotFound, "M_UNRECOGNIZED")
}

// TestV1_16ProfilesStateAfterV12: extensible profiles (MSC4133: custom
// fields, m.tz (MSC4175), DELETE, the m.profile_fields capability),
// state_after on /sync (MSC4222), and room version 12, whose invites carry
// the stripped m.room.create event (MSC4311).
func TestV1_16ProfilesStateAfterV12(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")

	wantOK(t, alice.Do("PUT", profilePath(alice.UserID, "m.tz"), map[string]any{"m.tz": "Europe/Paris"}), nil)
	wantOK(t, alice.Do("PUT", profilePath(alice.UserID, "org.example.team"), map[string]any{"org.example.team": []string{"ops"}}), nil)
	var p map[string]any
	wantOK(t, bob.Do("GET", profilePath(alice.UserID), nil), &p)
	if p["m.tz"] != "Europe/Paris" || p["org.example.team"] == nil {
		t.Errorf("profile %v", p)
	}
	wantOK(t, alice.Do("DELETE", profilePath(alice.UserID, "org.example.team"), nil), nil)
	wantErr(t, bob.Do("GET", profilePath(alice.UserID, "org.example.team"), nil), http.StatusNotFound, "M_NOT_FOUND")
	var caps struct {
		Capabilities struct {
			ProfileFields *struct {
				Enabled bool `json:"enabled"`
			} `json:"m.profile_fields"`
			RoomVersions struct {
				Available map[string]string `json:"available"`
			} `json:"m.room_versions"`
		} `json:"capabilities"`
	}
	wantOK(t, alice.Do("GET", csAPI+"/capabilities", nil), &caps)
	if caps.Capabilities.ProfileFields == nil || !caps.Capabilities.ProfileFields.Enabled || caps.Capabilities.RoomVersions.Available["12"] != "stable" {
		t.Errorf("capabilities %+v", caps.Capabilities)
	}

	room := createRoom(t, alice, map[string]any{"room_version": "12", "preset": "private_chat"})
	inviteUser(t, alice, room, bob.UserID)
	var sync struct {
		Rooms struct {
			Join   map[string]map[string]json.RawMessage `json:"join"`
			Invite map[string]struct {
				InviteState struct {
					Events []struct {
						Type string `json:"type"`
					} `json:"events"`
				} `json:"invite_state"`
			} `json:"invite"`
		} `json:"rooms"`
	}
	wantOK(t, bob.Do("GET", csAPI+"/sync?timeout=0", nil), &sync)
	hasCreate := false
	for _, ev := range sync.Rooms.Invite[room].InviteState.Events {
		hasCreate = hasCreate || ev.Type == "m.room.create"
	}
	if !hasCreate {
		t.Errorf("invite_state of a v12 room without m.room.create")
	}
	wantOK(t, alice.Do("GET", csAPI+"/sync?timeout=0&use_state_after=true", nil), &sync)
	if jr := sync.Rooms.Join[room]; jr["state_after"] == nil || jr["state"] != nil {
		t.Errorf("use_state_after: room keys %v", jr)
	}
}

// TestV1_17AppServiceDevices: application services create their users'
// devices with PUT /devices/{deviceId} and delete them without
// user-interactive auth (MSC4190), register users with inhibit_login, and
// act as one of a user's devices with device_id (MSC4326).
func TestV1_17AppServiceDevices(t *testing.T) {
	t.Parallel()
	reg := bridgeReg("v117")
	srv := testserver.Start(t, astest.Options(t, nil, reg))
	as := asClient(srv, reg)
	ghost := asRegister(t, as, "_v117_alice") // inhibit_login: no token
	q := "?user_id=" + url.QueryEscape(ghost)
	if r := as.Do("PUT", csAPI+"/devices/V117DEV"+q, map[string]any{"display_name": "bridge"}); r.Status != http.StatusCreated {
		t.Fatalf("creating a device: %d %s", r.Status, r.Body)
	}
	var who map[string]any
	wantOK(t, as.Do("GET", csAPI+"/account/whoami"+q+"&device_id=V117DEV", nil), &who)
	if who["device_id"] != "V117DEV" {
		t.Errorf("whoami as the device: %v", who)
	}
	wantOK(t, as.Do("DELETE", csAPI+"/devices/V117DEV"+q, nil), nil)
	wantErr(t, as.Do("GET", csAPI+"/account/whoami"+q+"&device_id=V117DEV", nil), http.StatusBadRequest, "M_UNKNOWN_DEVICE")
}

// TestV1_18InviteBlockingRedactViaSend: invite blocking (MSC4380),
// redactions through PUT /send/m.room.redaction (MSC4169), the
// m.forget_forced_upon_leave capability (MSC4267; false here) and
// m.account_moderation for administrators (MSC4323).
func TestV1_18InviteBlockingRedactViaSend(t *testing.T) {
	t.Parallel()
	const secret = "v118-admin-secret"
	srv := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) { c.RegistrationSharedSecret = configs.NewSecret(secret) }})
	admin := registerAdmin(t, srv, secret)
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "private_chat"})
	blockInvites(t, bob, map[string]any{"default_action": "block"})
	wantErr(t, alice.Do("POST", roomPath(room, "invite"), map[string]any{"user_id": bob.UserID}), http.StatusForbidden, "M_INVITE_BLOCKED")

	msg := sendText(t, alice, room, "oops")
	redaction := sendEvent(t, alice, room, "m.room.redaction", map[string]any{"redacts": msg})
	if ev := getEvent(t, alice, room, msg); len(ev.Content) != 0 || ev.Unsigned["redacted_because"] == nil {
		t.Errorf("after redaction %s through /send: %+v", redaction, ev)
	}

	var caps struct {
		Capabilities struct {
			Forget     *struct{ Enabled bool }       `json:"m.forget_forced_upon_leave"`
			Moderation *struct{ Lock, Suspend bool } `json:"m.account_moderation"`
		} `json:"capabilities"`
	}
	wantOK(t, alice.Do("GET", csAPI+"/capabilities", nil), &caps)
	if f := caps.Capabilities.Forget; f == nil || f.Enabled {
		t.Errorf("m.forget_forced_upon_leave = %+v", f)
	}
	wantOK(t, admin.Do("GET", csAPI+"/capabilities", nil), &caps)
	if m := caps.Capabilities.Moderation; m == nil || !m.Lock || !m.Suspend {
		t.Errorf("an administrator's m.account_moderation = %+v", m)
	}
}

// TestV1_19MutualRooms: GET /_matrix/client/v1/mutual_rooms (MSC2666), and
// unsigned.replaces_state on a state event that replaced another.
func TestV1_19MutualRooms(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice, bob := srv.Register("alice"), srv.Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat", "name": "first"})
	joinRoom(t, bob, room)
	if p := mutualRooms(t, bob, alice.UserID, ""); len(p.Joined) != 1 || p.Joined[0] != room || *p.Count != 1 {
		t.Errorf("mutual rooms %+v", p)
	}
	first := stateEvent(roomState(t, alice, room), "m.room.name", "")
	second := putState(t, alice, room, "m.room.name", "", map[string]any{"name": "second"})
	if ev := getEvent(t, alice, room, second); first == nil || ev.Unsigned["replaces_state"] != first.EventID {
		t.Errorf("unsigned of the new name: %v", ev.Unsigned)
	}
}
