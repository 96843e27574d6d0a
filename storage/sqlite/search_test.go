package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/storage/storagetest"
)

// The migration's SQL indexes stored events exactly as sqlstore.SearchText does.
func TestSearchBackfillMatches(t *testing.T) {
	db := openTest(t)
	rooms := storagetest.NewRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!fill:test.local")
	owner := storagetest.CreateRoom(t, rooms, room)
	for _, e := range []struct {
		typ, content string
		stateKey     *string
	}{
		{roomdag.TypeMessage, `{"msgtype":"m.text","body":"plain text"}`, nil},
		{roomdag.TypeMessage, `{"msgtype":"m.text","body":"line\nbreak \"quoted\" \\ and é \u2603"}`, nil},
		{roomdag.TypeMessage, `{"msgtype":"m.image","body":"cat.png","url":"mxc://a/b"}`, nil},
		{roomdag.TypeMessage, `{"msgtype":"m.image","body":"dog.png","url":42}`, nil},
		{roomdag.TypeMessage, `{"msgtype":"m.text","body":""}`, nil},
		{roomdag.TypeMessage, `{"msgtype":"m.text","body":7}`, nil},
		{roomdag.TypeMessage, `{"msgtype":"m.text"}`, nil},
		{roomdag.TypeMessage, `{"body":"a state message"}`, sk("")},
		{roomdag.TypeName, `{"name":"Room name"}`, sk("")},
		{roomdag.TypeName, `{"name":"keyed name"}`, sk("k")},
		{roomdag.TypeName, `{"name":null}`, sk("")},
		{roomdag.TypeTopic, `{"topic":"just a topic"}`, sk("")},
		{roomdag.TypeTopic, `{"topic":"same","m.topic":{"m.text":[{"body":"same"}]}}`, sk("")},
		{roomdag.TypeTopic, `{"topic":"t","m.topic":{"m.text":[{"body":"<i>x</i>","mimetype":"text/html"},{"body":"p1","mimetype":"text/plain"},{"body":"p2","mimetype":null},"junk",{"body":3},{"body":"p3","mimetype":5}]}}`, sk("")},
		{roomdag.TypeTopic, `{"m.topic":{"m.text":[{"body":"only m.topic"}]}}`, sk("")},
		{roomdag.TypeTopic, `{"topic":"","m.topic":{"m.text":[{"body":"after empty"}]}}`, sk("")},
		{roomdag.TypeTopic, `{"topic":"x","m.topic":{"m.text":{"body":"not an array"}}}`, sk("")},
		{roomdag.TypeTopic, `{"topic":"y","m.topic":"nonsense"}`, sk("")},
		{roomdag.TypeTopic, `{"topic":""}`, sk("")},
		{"m.room.encrypted", `{"ciphertext":"abc"}`, nil},
	} {
		if _, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: e.typ, StateKey: e.stateKey, Sender: owner, Content: json.RawMessage(e.content)}); err != nil {
			t.Fatalf("%s %s: %v", e.typ, e.content, err)
		}
	}
	dump := func() []string {
		rows, err := db.Reader().Query(`SELECT docid, value, room_nid, sender, state_before, kind FROM event_search ORDER BY docid`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var pos, nid, before, kind int64
			var value, sender string
			if err := rows.Scan(&pos, &value, &nid, &sender, &before, &kind); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%d %q %d %s %d %d", pos, value, nid, sender, before, kind))
		}
		return out
	}
	live := dump()
	if len(live) != 12 {
		t.Errorf("%d events indexed, want 12:\n%s", len(live), strings.Join(live, "\n"))
	}
	if err := db.Write(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM event_search`); err != nil {
			return err
		}
		_, err := tx.Exec(searchBackfill)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if filled := dump(); !slices.Equal(filled, live) {
		t.Errorf("backfill indexed\n%s\nbut the write path indexed\n%s", strings.Join(filled, "\n"), strings.Join(live, "\n"))
	}
}

func TestSearchMigrationIndexesExistingEvents(t *testing.T) {
	db := openTest(t)
	rooms := storagetest.NewRooms(t, db)
	room := roomdag.RoomID("!old:test.local")
	owner := storagetest.CreateRoom(t, rooms, room)
	_, pos, err := rooms.Append(context.Background(), room, roomdag.ProtoEvent{Type: roomdag.TypeMessage, Sender: owner,
		Content: json.RawMessage(`{"msgtype":"m.text","body":"written before the upgrade"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(migrations, searchMigration) {
		t.Fatal("searchMigration is not among the migrations")
	}
	// Run the migration again on a database without the index, as migrate
	// does for one that predates it.
	if err := db.Write(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DROP TABLE event_search`); err != nil {
			return err
		}
		_, err := tx.Exec(searchMigration)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := storagetest.SearchPositions(t, db, "upgrade", []roomdag.RoomID{room}); !slices.Equal(got, []roomdag.StreamPos{pos}) {
		t.Errorf("after migrating: %v, want [%d]", got, pos)
	}
}

func FuzzSearchTerm(f *testing.F) {
	for _, s := range []string{
		"hello", `"exact phrase"`, `unterminated "quote`, `a AND b OR NOT c`, `body:x`, `(x OR y)`, `x NEAR/3 y`,
		`-x +y`, `*`, `"*"`, `^start`, `a"b"c`, `""`, "\x00", "e\u0301cole", "日本語のテキスト", "don't e-mail me",
		strings.Repeat("word ", 100), `"` + strings.Repeat("x ", 100) + `"`, "\xff\xfe", "ǅ ᾈ ﬁ",
	} {
		f.Add(s)
	}
	db, err := Open(filepath.Join(f.TempDir(), "fuzz.db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	if err := db.Write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO event_search (docid, value, room_nid, sender, state_before, kind) VALUES (1, 'hello exact phrase école 日本語', 1, '@a:x', 0, 1)`)
		return err
	}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, term string) {
		phrases := storage.ParseSearchTerm(term)
		if len(phrases) > storage.MaxSearchPhrases {
			t.Fatalf("%d phrases", len(phrases))
		}
		for _, p := range phrases {
			if len(p.Words) == 0 || len(p.Words) > storage.MaxPhraseWords {
				t.Fatalf("phrase of %d words", len(p.Words))
			}
			for _, w := range p.Words {
				if w == "" || strings.IndexFunc(w, func(r rune) bool {
					return !(unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r))
				}) >= 0 {
					t.Fatalf("word %q", w)
				}
			}
		}
		if len(phrases) == 0 {
			return
		}
		rows, err := db.Reader().Query(`SELECT docid, matchinfo(event_search, 'pcy'), length(value) FROM event_search WHERE event_search MATCH ?`, matchExpr(phrases))
		if err != nil {
			t.Fatalf("term %q: match %q: %v", term, matchExpr(phrases), err)
		}
		defer rows.Close()
		for rows.Next() {
			var pos, length int64
			var info []byte
			if err := rows.Scan(&pos, &info, &length); err != nil {
				t.Fatal(err)
			}
			if _, err := phraseHits(info, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("term %q: match %q: %v", term, matchExpr(phrases), err)
		}
	})
}

func BenchmarkSearch1M(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1,000,000-event database")
	}
	const (
		total  = 1_000_000
		nRooms = 200
		mine   = 50
		perTx  = 20_000
	)
	db, err := Open(filepath.Join(b.TempDir(), "bench.db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	v, _ := roomdag.LookupRoomVersion("11")
	rng := rand.New(rand.NewPCG(1, 2))
	// A Zipf-like vocabulary: word i is about 1/i as frequent as word 1.
	vocab := make([]string, 5000)
	for i := range vocab {
		vocab[i] = fmt.Sprintf("w%dx", i)
	}
	vocab[0], vocab[9], vocab[99], vocab[999] = "common", "frequent", "medium", "rare"
	zipf := rand.NewZipf(rand.New(rand.NewPCG(3, 4)), 1.07, 1, uint64(len(vocab)-1))
	roomIDs := make([]roomdag.RoomID, nRooms)
	for i := range roomIDs {
		roomIDs[i] = roomdag.RoomID(fmt.Sprintf("!r%d:bench.local", i))
	}
	start := time.Now()
	for done := 0; done < total; {
		var queued []<-chan error
		err := func() error {
			for end := done + perTx; done < end; done++ {
				room := roomIDs[done%nRooms]
				words := make([]string, 4+rng.IntN(16))
				for i := range words {
					words[i] = vocab[zipf.Uint64()]
				}
				raw, _ := json.Marshal(map[string]any{
					"type": roomdag.TypeMessage, "room_id": room, "sender": fmt.Sprintf("@u%d:bench.local", done%97),
					"content": map[string]any{"msgtype": "m.text", "body": strings.Join(words, " ")},
					"depth":   done/nRooms + 1, "origin_server_ts": 1_700_000_000_000 + done, "prev_events": []string{}, "auth_events": []string{},
				})
				ev, err := roomdag.EventFromTrustedJSON(v, roomdag.EventID(fmt.Sprintf("$e%d", done)), raw)
				if err != nil {
					return err
				}
				queued = append(queued, db.EnqueueEvent(&roomdag.Persist{Event: ev, NewRoom: done < nRooms, StateBefore: 1, StateAfter: 1}))
			}
			for _, q := range queued {
				if err := <-q; err != nil {
					return err
				}
			}
			return nil
		}()
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("stored and indexed %d messages in %v", total, time.Since(start).Round(time.Second))
	// Each term with no limit (every hit), and with the limits /search
	// reads with: 5,000 (the first read of an order=recent search) and
	// 50,000 (order=rank).
	for _, term := range []string{"rare", "medium", "frequent", "common", "medium rare", `"frequent common"`} {
		for _, limit := range []int{0, 5_000, 50_000} {
			phrases := storage.ParseSearchTerm(term)
			b.Run(fmt.Sprintf("%s/limit=%d", strings.ReplaceAll(term, " ", "_"), limit), func(b *testing.B) {
				var hits []storage.SearchHit
				for i := 0; i < b.N; i++ {
					if hits, err = db.SearchEvents(context.Background(), storage.SearchQuery{Phrases: phrases, Rooms: roomIDs[:mine], Limit: limit}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(hits)), "hits")
			})
		}
	}
}
