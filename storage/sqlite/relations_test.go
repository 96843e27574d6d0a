package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
)

// TestRelationsBackfill: the migration that indexes events stored before
// it applies the same rule as the write path (roomdag's Event.Relation),
// and a redacted child is left out either way.
func TestRelationsBackfill(t *testing.T) {
	db := openTest(t)
	rooms := newRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!rel:test.local")
	owner := createRoom(t, rooms, room)
	send := func(stateKey *string, content string) *roomdag.Event {
		t.Helper()
		ev, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: "org.test", StateKey: stateKey, Sender: owner,
			Content: json.RawMessage(content)})
		if err != nil {
			t.Fatalf("sending %s: %v", content, err)
		}
		return ev
	}
	root := send(nil, `{"body":"root"}`).ID()
	rel := func(fields string) string {
		return strings.ReplaceAll(`{"m.relates_to":{`+fields+`}}`, "ROOT", string(root))
	}
	long := "$" + strings.Repeat("x", 254) // 255 bytes: the longest event ID
	tests := []struct {
		content string
		indexed bool
	}{
		{rel(`"rel_type":"m.thread","event_id":"ROOT"`), true},
		{rel(`"rel_type":"m.thread","event_id":"ROOT"`), true},
		{rel(`"rel_type":"m.annotation","event_id":"ROOT","key":"👍"`), true},
		{rel(`"rel_type":"m.annotation","event_id":"ROOT","key":5`), true},
		{rel(`"rel_type":"m.annotation","event_id":"ROOT","key":""`), true},
		{rel(`"rel_type":"m.replace","event_id":"ROOT","key":"not an annotation"`), true},
		{rel(`"rel_type":"org.custom","event_id":"$élan"`), true},
		{rel(`"rel_type":"m.reference","event_id":"` + long + `"`), true},
		{rel(`"rel_type":"m.reference","event_id":"` + long + `x"`), false},
		{rel(`"rel_type":"m.thread","event_id":"$"`), false},
		{rel(`"rel_type":"m.thread","event_id":"nope"`), false},
		{rel(`"rel_type":"m.thread","event_id":["ROOT"]`), false},
		{rel(`"rel_type":"","event_id":"ROOT"`), false},
		{rel(`"rel_type":5,"event_id":"ROOT"`), false},
		{rel(`"m.in_reply_to":{"event_id":"ROOT"}`), false},
		{`{"m.relates_to":"m.thread"}`, false},
		{`{"m.relates_to.rel_type":"m.thread"}`, false},
	}
	for _, tc := range tests {
		ev := send(nil, tc.content)
		if _, ok := ev.Relation(); ok != tc.indexed {
			t.Errorf("Relation of %s: %t, want %t", tc.content, ok, tc.indexed)
		}
	}
	send(sk("k"), rel(`"rel_type":"m.annotation","event_id":"ROOT","key":"state"`))
	redacted := send(nil, rel(`"rel_type":"m.thread","event_id":"ROOT"`))
	if _, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: roomdag.TypeRedaction, Sender: owner,
		Content: json.RawMessage(`{}`), Redacts: redacted.ID(), RedactTarget: redacted}); err != nil {
		t.Fatal(err)
	}

	dump := func() []string {
		t.Helper()
		var out []string
		for _, q := range []string{
			`SELECT event_pos, event_id, room_nid, relates_to, rel_type, type, is_state, sender, depth, origin_ts, key
				FROM event_relations ORDER BY event_pos`,
			`SELECT room_nid, root_id, latest_id, latest_depth, latest_pos, '', '', '', '', '', '' FROM threads ORDER BY root_id`,
		} {
			rows, err := db.r.Query(q)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				v := make([]sql.NullString, 11)
				ptrs := make([]any, len(v))
				for i := range v {
					ptrs[i] = &v[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					t.Fatal(err)
				}
				out = append(out, fmt.Sprint(v))
			}
			rows.Close()
		}
		return out
	}
	written := dump()
	indexed := 2 // the state annotation, and the thread of the two replies
	for _, tc := range tests {
		if tc.indexed {
			indexed++
		}
	}
	if len(written) != indexed {
		t.Fatalf("the write path indexed %d rows, want %d:\n%s", len(written), indexed, strings.Join(written, "\n"))
	}

	// Forget the index, then rebuild it as the migration does.
	i := slices.IndexFunc(migrations, func(m string) bool { return strings.Contains(m, "CREATE TABLE event_relations") })
	if i < 0 {
		t.Fatal("no migration creates event_relations")
	}
	backfill := migrations[i][strings.Index(migrations[i], "INSERT INTO event_relations"):]
	if err := db.write(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM event_relations; DELETE FROM threads`); err != nil {
			return err
		}
		_, err := tx.Exec(backfill)
		return err
	}, nil); err != nil {
		t.Fatalf("backfill: %v", err)
	}
	if rebuilt := dump(); !slices.Equal(rebuilt, written) {
		t.Errorf("backfill differs from the write path:\nbackfill:\n%s\nwrite path:\n%s", strings.Join(rebuilt, "\n"), strings.Join(written, "\n"))
	}
}
