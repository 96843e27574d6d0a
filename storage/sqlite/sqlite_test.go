package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage/sqlstore"
	"github.com/persistentchat/homeserver/storage/storagetest"
)

func openTest(t testing.TB) *sqlstore.DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "test.db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// The conformance suite, on a fresh database file per test.
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) *sqlstore.DB { return openTest(t) })
}

func sk(s string) *string { return &s }

func TestRelationsBackfill(t *testing.T) {
	db := openTest(t)
	rooms := storagetest.NewRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!rel:test.local")
	owner := storagetest.CreateRoom(t, rooms, room)
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
			rows, err := db.Reader().Query(q)
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
	if err := db.Write(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM event_relations; DELETE FROM threads`); err != nil {
			return err
		}
		_, err := tx.Exec(backfill)
		return err
	}); err != nil {
		t.Fatalf("backfill: %v", err)
	}
	if rebuilt := dump(); !slices.Equal(rebuilt, written) {
		t.Errorf("backfill differs from the write path:\nbackfill:\n%s\nwrite path:\n%s", strings.Join(rebuilt, "\n"), strings.Join(written, "\n"))
	}
}

func BenchmarkRoomCacheMemory(b *testing.B) {
	for _, tc := range []struct{ rooms, members int }{{400, 12}, {40, 100}, {4, 1000}} {
		b.Run(fmt.Sprintf("members=%d", tc.members), func(b *testing.B) {
			db := openTest(b)
			rooms := storagetest.NewRooms(b, db)
			ids := make([]roomdag.RoomID, tc.rooms)
			var wg sync.WaitGroup
			sem := make(chan struct{}, 8)
			for i := range ids {
				ids[i] = roomdag.RoomID(fmt.Sprintf("!mem%d:test.local", i))
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					if err := typicalRoom(rooms, ids[i], tc.members); err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
			if b.Failed() {
				return
			}
			heap := func() uint64 {
				runtime.GC()
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return ms.HeapAlloc
			}
			for range b.N {
				rooms = nil
				db.DropCaches()
				fresh := storagetest.NewRooms(b, db)
				base := heap()
				start := time.Now()
				for _, id := range ids {
					if _, err := fresh.State(context.Background(), id); err != nil {
						b.Fatal(err)
					}
				}
				took := time.Since(start)
				loaded := heap()
				db.DropCaches()
				own := heap()
				if fresh.CachedRooms() != len(ids) {
					b.Fatalf("%d rooms cached, want %d", fresh.CachedRooms(), len(ids))
				}
				b.ReportMetric(float64(loaded-base)/float64(len(ids)), "B/room")
				b.ReportMetric(float64(own-base)/float64(len(ids)), "B/room-own")
				b.ReportMetric(float64(took.Microseconds())/float64(len(ids)), "µs/load")
				runtime.KeepAlive(fresh)
			}
		})
	}
}

func typicalRoom(rooms *roomdag.Rooms, id roomdag.RoomID, members int) error {
	ctx := context.Background()
	owner := roomdag.UserID("@owner:test.local")
	v, _ := roomdag.LookupRoomVersion("11")
	state := func(typ, key, content string) roomdag.ProtoEvent {
		return roomdag.ProtoEvent{Type: typ, StateKey: sk(key), Sender: owner, Content: json.RawMessage(content)}
	}
	if _, err := rooms.CreateRoom(ctx, v, id, state(roomdag.TypeCreate, "", `{"room_version":"11"}`), []roomdag.ProtoEvent{
		state(roomdag.TypeMember, string(owner), `{"membership":"join","displayname":"Owner"}`),
		state(roomdag.TypePowerLevels, "", `{"users":{"@owner:test.local":100},"users_default":0,"events":{"m.room.name":50,"m.room.power_levels":100},"events_default":0,"state_default":50,"ban":50,"kick":50,"redact":50,"invite":0}`),
		state(roomdag.TypeJoinRules, "", `{"join_rule":"public"}`),
		state("m.room.history_visibility", "", `{"history_visibility":"shared"}`),
		state(roomdag.TypeName, "", `{"name":"Project planning"}`),
		state(roomdag.TypeTopic, "", `{"topic":"Where the team plans the next release"}`),
	}); err != nil {
		return err
	}
	for i := 1; i < members; i++ {
		u := roomdag.UserID(fmt.Sprintf("@member%d:test.local", i))
		if _, _, err := rooms.Append(ctx, id, roomdag.ProtoEvent{Type: roomdag.TypeMember, StateKey: sk(string(u)), Sender: u,
			Content: json.RawMessage(fmt.Sprintf(`{"membership":"join","displayname":"Member %d"}`, i))}); err != nil {
			return err
		}
	}
	return nil
}
