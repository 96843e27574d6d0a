package api_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// TestCreateRoomCanonicalJSON: createRoom's creation_content gets the same
// canonical-JSON checks as send: in room versions 6 and later, content
// send refuses (floats, integers out of range, duplicate keys) is refused
// in creation_content too (createRoom used to decode it into Go values,
// which turned 1.0 into 1 and kept one duplicate key), and in v1-v5,
// which accept floats, a float is kept as sent, as send keeps it.
func TestCreateRoomCanonicalJSON(t *testing.T) {
	t.Parallel()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := createRoom(t, alice, map[string]any{})
	for _, content := range []string{`{"x":1.0}`, `{"x":1.5}`, `{"x":1e3}`, `{"x":-0.0}`, `{"x":9007199254740993}`, `{"x":1,"x":2}`} {
		t.Run(content, func(t *testing.T) {
			wantErr(t, alice.Do("PUT", roomPath(room, "send", "org.example.test", "t"+url.PathEscape(content)), content), http.StatusBadRequest, "M_BAD_JSON")
			before := joinedRooms(t, alice)
			for _, field := range []string{"creation_content", "power_level_content_override"} {
				r := alice.Do("POST", csAPI+"/createRoom", `{"room_version":"11","`+field+`":`+content+`}`)
				wantErr(t, r, http.StatusBadRequest, "M_BAD_JSON")
				if !strings.Contains(string(r.Body), field) {
					t.Errorf("%s: the error does not name the field: %s", field, r.Body)
				}
			}
			r := alice.Do("POST", csAPI+"/createRoom", `{"initial_state":[{"type":"org.example.test","state_key":"","content":`+content+`}]}`)
			wantErr(t, r, http.StatusBadRequest, "M_BAD_JSON")
			if after := joinedRooms(t, alice); len(after) != len(before) {
				t.Errorf("joined rooms went from %v to %v", before, after)
			}
		})
	}

	// Room version 5 takes floats, and keeps them as sent.
	var out struct {
		RoomID string `json:"room_id"`
	}
	wantOK(t, alice.Do("POST", csAPI+"/createRoom", `{"room_version":"5","creation_content":{"x":1.0,"y":2.50}}`), &out)
	r := alice.Do("GET", roomPath(out.RoomID, "state", "m.room.create", ""), nil)
	wantOK(t, r, nil)
	if body := string(r.Body); !strings.Contains(body, `"x":1.0`) || !strings.Contains(body, `"y":2.5`) {
		t.Errorf("v5 create content %s, want x 1.0 and y 2.5 as send keeps them", body)
	}
	ev := sendEvent(t, alice, out.RoomID, "org.example.test", `{"x":1.0}`)
	r = alice.Do("GET", roomPath(out.RoomID, "event", ev), nil)
	if !strings.Contains(string(r.Body), `"x":1.0`) {
		t.Errorf("v5 send keeps %s, not x 1.0: the reference changed", r.Body)
	}
}
