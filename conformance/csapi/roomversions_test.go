package csapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"testing"

	. "github.com/persistentchat/homeserver/conformance/deploy"
)

// stateEventOf returns the full state event of type typ and key "" from
// GET /rooms/{roomId}/state.
func stateEventOf(t *testing.T, c *Client, room, typ string) any {
	t.Helper()
	r := mustOK(t, c.Do(ctx, "GET", cs("rooms", room, "state"), nil), "state")
	evs, _ := r.JSON.([]any)
	for _, ev := range evs {
		if str(ev, "type") == typ && str(ev, "state_key") == "" {
			return ev
		}
	}
	t.Fatalf("no %s in the room's state: %s", typ, r)
	return nil
}

// Event ID formats (spec: room versions): v1 and v2 have $opaque:server,
// v3 the unpadded standard base64 of the reference hash, v4 and later the
// URL-safe alphabet. Room IDs are !opaque:server up to v11; in v12 the
// create event's ID with a ! sigil (MSC4291).
var (
	v1EventID    = regexp.MustCompile(`^\$[^:]+:.+$`)
	v3EventID    = regexp.MustCompile(`^\$[A-Za-z0-9+/]{43}$`)
	v4EventID    = regexp.MustCompile(`^\$[A-Za-z0-9_-]{43}$`)
	v12RoomID    = regexp.MustCompile(`^![A-Za-z0-9_-]{43}$`)
	v1to11RoomID = regexp.MustCompile(`^![^:]+:.+$`)
)

// roomIDOf is the v12 room ID of a create event ID: the same hash with a
// ! sigil (MSC4291); "" if eventID is not an event ID.
func roomIDOf(eventID string) string {
	if len(eventID) < 2 || eventID[0] != '$' {
		return ""
	}
	return "!" + eventID[1:]
}

func TestRoomVersions(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	t.Run("GET /capabilities lists room versions 1 to 12 as stable", func(t *testing.T) {
		r := mustOK(t, alice.Do(ctx, "GET", cs("capabilities"), nil), "capabilities")
		for v := 1; v <= 12; v++ {
			if got := r.GetString("capabilities.m\\.room_versions.available." + strconv.Itoa(v)); got != "stable" {
				t.Errorf("room version %d: %q, want stable: %s", v, got, r)
			}
		}
	})
	for v := 1; v <= 12; v++ {
		ver := strconv.Itoa(v)
		t.Run("POST /createRoom creates a room with room version "+ver, func(t *testing.T) {
			room := createRoom(t, alice, map[string]any{"room_version": ver, "preset": "public_chat", "name": "v" + ver})
			create := stateEventOf(t, alice, room, "m.room.create")
			if got := str(create, "content.room_version"); got != ver {
				t.Fatalf("room_version %q: %v", got, create)
			}
			// content.creator is gone from v11 on (MSC2175).
			if _, has := Path(create, "content.creator"); has != (v < 11) {
				t.Errorf("content.creator present = %v in v%d: %v", has, v, create)
			}
			idFormat := map[bool]*regexp.Regexp{true: v12RoomID, false: v1to11RoomID}[v >= 12]
			if !idFormat.MatchString(room) {
				t.Errorf("room ID %q does not have the v%d form", room, v)
			}
			joinRoom(t, bob, room)
			id := sendText(t, bob, room, "hello v"+ver)
			evFormat := v4EventID
			switch {
			case v <= 2:
				evFormat = v1EventID
			case v == 3:
				evFormat = v3EventID
			}
			if !evFormat.MatchString(id) {
				t.Errorf("event ID %q does not have the v%d form", id, v)
			}
			r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "event", id), nil), "event")
			expectStr(t, r, "content.body", "hello v"+ver)
			sendState(t, alice, room, "m.room.topic", "", map[string]any{"topic": "t" + ver})
			expectStr(t, mustOK(t, bob.Do(ctx, "GET", cs("rooms", room, "state", "m.room.topic", ""), nil), "topic"), "topic", "t"+ver)
			// Power is enforced in every version.
			expectStatus(t, bob.Do(ctx, "PUT", cs("rooms", room, "state", "m.room.name", ""), map[string]any{"name": "bob's"}), 403, "M_FORBIDDEN")
		})
	}
}

func TestMSC4289PrivilegedRoomCreators(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	t.Run("PL event is missing creator in users map", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"room_version": "12"})
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.power_levels", ""), nil), "pl")
		if u, ok := r.Get("users"); !ok || len(u.(map[string]any)) != 0 {
			t.Fatalf("users: %s", r)
		}
	})
	t.Run("m.room.tombstone needs PL150 in the PL event", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"room_version": "12"})
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.power_levels", ""), nil), "pl")
		if v, _ := r.Get("events.m\\.room\\.tombstone"); v != float64(150) {
			t.Fatalf("events.m.room.tombstone = %v: %s", v, r)
		}
		// Below v12 the creator is an ordinary admin at 100.
		old := createRoom(t, alice, map[string]any{"room_version": "11"})
		r = mustOK(t, alice.Do(ctx, "GET", cs("rooms", old, "state", "m.room.power_levels", ""), nil), "pl")
		if v, _ := r.Get("users." + esc(alice.UserID)); v != float64(100) {
			t.Fatalf("v11 creator's level %v: %s", v, r)
		}
	})
	t.Run("creator cannot set self in PL event", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"room_version": "12"})
		r := alice.Do(ctx, "PUT", cs("rooms", room, "state", "m.room.power_levels", ""), map[string]any{"users": map[string]any{alice.UserID: 100}})
		expectStatus(t, r, 400, "")
	})
	t.Run("creator can kick admin", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"room_version": "12", "preset": "public_chat"})
		joinRoom(t, bob, room)
		sendState(t, alice, room, "m.room.power_levels", "", map[string]any{"users": map[string]any{bob.UserID: 100}})
		mustOK(t, alice.Do(ctx, "POST", cs("rooms", room, "kick"), map[string]any{"user_id": bob.UserID}), "kick")
	})
	t.Run("admin cannot kick creator", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"room_version": "12", "preset": "public_chat"})
		joinRoom(t, bob, room)
		sendState(t, alice, room, "m.room.power_levels", "", map[string]any{"users": map[string]any{bob.UserID: 1000}})
		expectStatus(t, bob.Do(ctx, "POST", cs("rooms", room, "kick"), map[string]any{"user_id": alice.UserID}), 403, "M_FORBIDDEN")
	})
}

func TestMSC4289PrivilegedRoomCreators_InvitedAreCreators(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	carol := register(t, "carol")
	t.Run("trusted_private_chat makes the invitees additional creators", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"room_version": "12", "preset": "trusted_private_chat", "is_direct": true, "invite": []string{bob.UserID}})
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.create", ""), nil), "create")
		if a := arr(r.JSON, "additional_creators"); len(a) != 1 || a[0] != bob.UserID {
			t.Fatalf("additional_creators: %s", r)
		}
		pl := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.power_levels", ""), nil), "pl")
		if _, listed := pl.Get("users." + esc(bob.UserID)); listed {
			t.Fatalf("creator bob listed in power levels: %s", pl)
		}
	})
	t.Run("trusted_private_chat keeps the additional_creators given", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"room_version": "12", "preset": "trusted_private_chat", "invite": []string{bob.UserID},
			"creation_content": map[string]any{"additional_creators": []string{carol.UserID}}})
		r := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.create", ""), nil), "create")
		got := map[any]bool{}
		for _, c := range arr(r.JSON, "additional_creators") {
			got[c] = true
		}
		if len(got) != 2 || !got[bob.UserID] || !got[carol.UserID] {
			t.Fatalf("additional_creators: %s", r)
		}
	})
	t.Run("Below v12, trusted_private_chat gives the invitees power 100", func(t *testing.T) {
		room := createRoom(t, alice, map[string]any{"room_version": "11", "preset": "trusted_private_chat", "invite": []string{bob.UserID}})
		pl := mustOK(t, alice.Do(ctx, "GET", cs("rooms", room, "state", "m.room.power_levels", ""), nil), "pl")
		if v, _ := pl.Get("users." + esc(bob.UserID)); v != float64(100) {
			t.Fatalf("bob's level %v: %s", v, pl)
		}
	})
}

func TestMSC4291RoomIDAsHashOfCreateEvent(t *testing.T) {
	alice := register(t, "alice")
	room := createRoom(t, alice, map[string]any{"room_version": "12"})
	create := stateEventOf(t, alice, room, "m.room.create")
	id := str(create, "event_id")
	if room != roomIDOf(id) {
		t.Fatalf("room ID %s is not the create event ID %s with a ! sigil", room, id)
	}
	if _, has := Path(create, "room_id"); !has {
		t.Errorf("the create event served to clients has no room_id: %v", create)
	}
}

// referenceHashID is the event ID of a v4+ PDU: the URL-safe unpadded
// base64 of the SHA-256 of its canonical JSON without signatures and
// unsigned (spec: "Calculating the reference hash for an event"; the create
// event keeps every key under v11+ redaction).
func referenceHashID(t *testing.T, pdu any) string {
	t.Helper()
	raw, err := json.Marshal(pdu)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	delete(m, "signatures")
	delete(m, "unsigned")
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(m); err != nil { // Go sorts object keys: canonical for these events
		t.Fatal(err)
	}
	sum := sha256.Sum256(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	return "$" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestMSC4311FullCreateEventOnStrippedState: the invite's stripped state
// must hold m.room.create (MSC4311, spec v1.16). In v12 it is the full PDU,
// as Synapse gives it, so that the client can check the room ID against
// the create event's reference hash.
func TestMSC4311FullCreateEventOnStrippedState(t *testing.T) {
	alice := register(t, "alice")
	bob := register(t, "bob")
	for _, ver := range []string{"10", "11", "12"} {
		t.Run(fmt.Sprintf("invite_state holds the create event (v%s)", ver), func(t *testing.T) {
			room := createRoom(t, alice, map[string]any{"room_version": ver, "preset": "public_chat"})
			since := syncSince(t, bob)
			inviteUser(t, alice, room, bob.UserID)
			var create any
			syncUntil(t, bob, since, "invite", func(r *Res) bool {
				for _, ev := range arr(r.JSON, "rooms.invite."+esc(room)+".invite_state.events") {
					if str(ev, "type") == "m.room.create" {
						create = ev
					}
				}
				return inSection("invite", room)(r)
			})
			if create == nil {
				t.Fatalf("no m.room.create in invite_state")
			}
			for _, k := range []string{"sender", "content", "state_key"} {
				if _, ok := Path(create, k); !ok {
					t.Errorf("create event in invite_state lacks %s: %v", k, create)
				}
			}
			if str(create, "content.room_version") != ver || str(create, "sender") != alice.UserID {
				t.Errorf("create event: %v", create)
			}
			if ver != "12" {
				return
			}
			for _, k := range []string{"origin_server_ts", "hashes", "signatures", "auth_events", "prev_events", "depth"} {
				if _, ok := Path(create, k); !ok {
					t.Errorf("v12 create event in invite_state is not a full PDU, no %s: %v", k, create)
				}
			}
			if id := referenceHashID(t, create); room != roomIDOf(id) {
				t.Errorf("room ID %s does not match the create event's reference hash %s: %v", room, id, create)
			}
		})
	}
}
