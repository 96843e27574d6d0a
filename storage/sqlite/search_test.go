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
)

// searchPositions runs a search and returns the hits' positions.
func searchPositions(t *testing.T, db *DB, term string, rooms []roomdag.RoomID, keys ...string) []roomdag.StreamPos {
	t.Helper()
	hits, err := db.SearchEvents(context.Background(), storage.SearchQuery{Phrases: storage.ParseSearchTerm(term), Rooms: rooms, Keys: keys})
	if err != nil {
		t.Fatalf("search %q: %v", term, err)
	}
	var out []roomdag.StreamPos
	for _, h := range hits {
		out = append(out, h.Pos)
	}
	return out
}

// Events are indexed when stored and leave the index when redacted; the
// index keeps each hit's room, sender, key and snapshot.
func TestSearchIndex(t *testing.T) {
	db := openTest(t)
	rooms := newRooms(t, db)
	ctx := context.Background()
	a, b := roomdag.RoomID("!a:test.local"), roomdag.RoomID("!b:test.local")
	owner := createRoom(t, rooms, a)
	createRoom(t, rooms, b)
	send := func(room roomdag.RoomID, typ string, stateKey *string, content string) (*roomdag.Event, roomdag.StreamPos) {
		t.Helper()
		ev, pos, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: typ, StateKey: stateKey, Sender: owner, Content: json.RawMessage(content)})
		if err != nil {
			t.Fatal(err)
		}
		return ev, pos
	}
	_, p1 := send(a, roomdag.TypeMessage, nil, `{"msgtype":"m.text","body":"The deploy FAILED on staging"}`)
	_, p2 := send(a, roomdag.TypeMessage, nil, `{"msgtype":"m.file","body":"déploy-notes.pdf","url":"mxc://x/y"}`)
	_, p3 := send(b, roomdag.TypeMessage, nil, `{"msgtype":"m.text","body":"deployment done"}`)
	_, p4 := send(a, roomdag.TypeName, sk(""), `{"name":"Deploy room"}`)
	_, p5 := send(a, roomdag.TypeTopic, sk(""), `{"topic":"all about deploys","m.topic":{"m.text":[{"body":"<b>html deploys</b>","mimetype":"text/html"},{"body":"plain deploys"}]}}`)
	send(a, "m.room.encrypted", nil, `{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"deploy"}`)
	send(a, roomdag.TypeName, sk("other"), `{"name":"deploy with a state key"}`)
	victim, p6 := send(a, roomdag.TypeMessage, nil, `{"msgtype":"m.text","body":"secret deploy token"}`)

	both := []roomdag.RoomID{a, b}
	for _, c := range []struct {
		term string
		keys []string
		want []roomdag.StreamPos
	}{
		{"deploy", nil, []roomdag.StreamPos{p6, p5, p4, p3, p2, p1}}, // prefix, diacritics folded
		{"DEPLOY failed", nil, []roomdag.StreamPos{p1}},
		{`"deploy failed"`, nil, []roomdag.StreamPos{p1}},
		{`"failed deploy"`, nil, nil},
		{"deploy", []string{storage.SearchKeyName}, []roomdag.StreamPos{p4}},
		{"deploy", []string{storage.SearchKeyTopic, storage.SearchKeyBody}, []roomdag.StreamPos{p6, p5, p3, p2, p1}},
		{"plain", nil, []roomdag.StreamPos{p5}},
		{"html", nil, nil}, // not the text/html representation
		{"notes.pdf", nil, []roomdag.StreamPos{p2}},
		{"de", nil, nil}, // two letters match whole words only
		{"token OR nothing", nil, nil},
		{`body:deploy`, nil, nil},
		{"ciphertext", nil, nil},
	} {
		if got := searchPositions(t, db, c.term, both, c.keys...); !slices.Equal(got, c.want) {
			t.Errorf("search %q keys %v = %v, want %v", c.term, c.keys, got, c.want)
		}
	}
	if got := searchPositions(t, db, "deploy", []roomdag.RoomID{b, "!unknown:test.local"}); !slices.Equal(got, []roomdag.StreamPos{p3}) {
		t.Errorf("search in room b = %v, want [%d]", got, p3)
	}

	hits, err := db.SearchEvents(ctx, storage.SearchQuery{Phrases: storage.ParseSearchTerm("notes"), Rooms: both})
	if err != nil || len(hits) != 1 {
		t.Fatalf("hits %v, %v", hits, err)
	}
	place, err := db.EventPlace(ctx, mustEventAt(t, db, p2).ID())
	if err != nil {
		t.Fatal(err)
	}
	if h := hits[0]; h.Room != a || h.Sender != owner || h.Key != storage.SearchKeyBody || !h.HasURL || h.StateBefore != place.StateBefore || h.Rank <= 0 {
		t.Errorf("hit %+v, want room %s, sender %s, body with a URL, state before %d, a positive rank", h, a, owner, place.StateBefore)
	}

	// The words that matched, as the index matched them.
	matched, err := db.SearchMatches(ctx, storage.ParseSearchTerm("DEPLOY fail"), []roomdag.StreamPos{p1, p2, p3})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(matched)
	if want := []string{"deploy", "failed"}; !slices.Equal(matched, want) {
		t.Errorf("matched %v, want %v", matched, want)
	}
	matched, err = db.SearchMatches(ctx, storage.ParseSearchTerm("deploy"), []roomdag.StreamPos{p2, p3, p5})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(matched)
	if want := []string{"deployment", "deploys", "déploy"}; !slices.Equal(matched, want) {
		t.Errorf("matched %v, want %v", matched, want)
	}

	// Redaction removes the event from the index in the same write.
	if _, _, err := rooms.Append(ctx, a, roomdag.ProtoEvent{Type: roomdag.TypeRedaction, Sender: owner,
		Content: json.RawMessage(fmt.Sprintf(`{"redacts":%q}`, victim.ID())), Redacts: victim.ID(), RedactTarget: victim}); err != nil {
		t.Fatal(err)
	}
	if got := searchPositions(t, db, "secret", both); len(got) != 0 {
		t.Errorf("redacted event still found: %v", got)
	}
	if got := searchPositions(t, db, "deploy", both); !slices.Equal(got, []roomdag.StreamPos{p5, p4, p3, p2, p1}) {
		t.Errorf("after redaction: %v", got)
	}
	if got := searchPositions(t, db, "deploy", both, storage.SearchKeyBody); slices.Contains(got, p6) {
		t.Errorf("redacted event %d found by key", p6)
	}
	if got := searchPositions(t, db, "deploy", nil); len(got) != 0 {
		t.Errorf("search without rooms found %v", got)
	}
}

func mustEventAt(t *testing.T, db *DB, pos roomdag.StreamPos) *roomdag.StoredEvent {
	t.Helper()
	evs, err := db.EventsAt(context.Background(), []roomdag.StreamPos{pos})
	if err != nil || len(evs) != 1 {
		t.Fatalf("event at %d: %v, %v", pos, evs, err)
	}
	return evs[0]
}

// Ranks favour more occurrences and shorter texts, and do not depend on
// other events.
func TestSearchRank(t *testing.T) {
	db := openTest(t)
	rooms := newRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!rank:test.local")
	owner := createRoom(t, rooms, room)
	body := map[roomdag.StreamPos]string{}
	for _, text := range []string{
		"cache", "cache cache", "the cache was cold this morning again, as it always is after a deploy",
		"cache miss", "unrelated",
	} {
		_, pos, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: roomdag.TypeMessage, Sender: owner,
			Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, text))})
		if err != nil {
			t.Fatal(err)
		}
		body[pos] = text
	}
	ranks := func() map[string]float64 {
		hits, err := db.SearchEvents(ctx, storage.SearchQuery{Phrases: storage.ParseSearchTerm("cache"), Rooms: []roomdag.RoomID{room}})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, h := range hits {
			out[body[h.Pos]] = h.Rank
		}
		return out
	}
	r := ranks()
	if !(r["cache cache"] > r["cache"] && r["cache"] > r["cache miss"] && r["cache miss"] > r["the cache was cold this morning again, as it always is after a deploy"]) {
		t.Errorf("ranks %v: want cache cache > cache > cache miss > the long one", r)
	}
	for i := 0; i < 20; i++ {
		if _, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: roomdag.TypeMessage, Sender: owner,
			Content: json.RawMessage(`{"msgtype":"m.text","body":"cache cache cache and more words"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	r2 := ranks()
	for text, v := range r {
		if r2[text] != v {
			t.Errorf("rank of %q changed from %v to %v when other events arrived", text, v, r2[text])
		}
	}
}

// The migration's SQL indexes stored events exactly as searchText does.
func TestSearchBackfillMatches(t *testing.T) {
	db := openTest(t)
	rooms := newRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!fill:test.local")
	owner := createRoom(t, rooms, room)
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
		rows, err := db.r.Query(`SELECT docid, value, room_nid, sender, state_before, kind FROM event_search ORDER BY docid`)
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
	if err := db.write(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM event_search`); err != nil {
			return err
		}
		_, err := tx.Exec(searchBackfill)
		return err
	}, nil); err != nil {
		t.Fatal(err)
	}
	if filled := dump(); !slices.Equal(filled, live) {
		t.Errorf("backfill indexed\n%s\nbut the write path indexed\n%s", strings.Join(filled, "\n"), strings.Join(live, "\n"))
	}
}

// The search migration indexes the events a database already holds.
func TestSearchMigrationIndexesExistingEvents(t *testing.T) {
	db := openTest(t)
	rooms := newRooms(t, db)
	room := roomdag.RoomID("!old:test.local")
	owner := createRoom(t, rooms, room)
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
	if err := db.write(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DROP TABLE event_search`); err != nil {
			return err
		}
		_, err := tx.Exec(searchMigration)
		return err
	}, nil); err != nil {
		t.Fatal(err)
	}
	if got := searchPositions(t, db, "upgrade", []roomdag.RoomID{room}); !slices.Equal(got, []roomdag.StreamPos{pos}) {
		t.Errorf("after migrating: %v, want [%d]", got, pos)
	}
}

// Whatever a user types, the query is well-formed: parsing yields bounded
// phrases of plain words, and SQLite accepts the match expression.
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
	if err := db.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO event_search (docid, value, room_nid, sender, state_before, kind) VALUES (1, 'hello exact phrase école 日本語', 1, '@a:x', 0, 1)`)
		return err
	}, nil); err != nil {
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
		rows, err := db.r.Query(`SELECT docid, matchinfo(event_search, 'pcy'), length(value) FROM event_search WHERE event_search MATCH ?`, matchExpr(phrases))
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
			if _, err := rank(info, length); err != nil {
				t.Fatal(err)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("term %q: match %q: %v", term, matchExpr(phrases), err)
		}
	})
}

// BenchmarkSearch1M measures searches over 1,000,000 stored messages in
// 200 rooms, of which the searcher's 50 rooms hold a quarter. Building the
// database through the storage layer's insert path (event row plus index
// row, 20,000 events a transaction) takes about a minute; -short skips it.
//
// On a shared 2-core VM: a rare word (255 hits) 5 ms; a medium one (3,047
// hits) 30-55 ms; a frequent one (32,500 hits among 130,000 matches in all
// rooms) 80 ms for the first 5,000 hits (what order=recent reads first)
// and 200 ms for all; a word in 78% of all messages (195,750 hits) 55 ms
// for 5,000, 240 ms for 50,000 (the order=rank bound) and 1 s for all.
// Two words together: 0.6 ms; the phrase "frequent common": 75 ms. The
// cost is per match in any room (FTS4 reads each match's row to check its
// room), so it grows with the server's size, not only the searcher's.
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
		err := db.write(func(tx *sql.Tx) error {
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
				if _, err := db.insertEvent(tx, &roomdag.Persist{Event: ev, NewRoom: done < nRooms, StateBefore: 1, StateAfter: 1}); err != nil {
					return err
				}
			}
			return nil
		}, nil)
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

// StateEntries reads the same entries as Snapshot, across delta chains
// and full copies, from the database and from the cache.
func TestStateEntries(t *testing.T) {
	db := openTest(t)
	rooms := newRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!entries:test.local")
	owner := createRoom(t, rooms, room)
	var snaps []int64
	for i := 0; i < 150; i++ {
		key := fmt.Sprintf("k%d", i%7)
		if _, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: "org.test.state", StateKey: sk(key), Sender: owner,
			Content: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}); err != nil {
			t.Fatal(err)
		}
		st, err := rooms.State(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, st.Snapshot)
	}
	keys := []roomdag.StateKey{{Type: "org.test.state", StateKey: "k3"}, {Type: roomdag.TypeMember, StateKey: string(owner)},
		{Type: roomdag.TypeCreate}, {Type: "org.test.state", StateKey: "missing"}}
	found := 0
	for _, cached := range []bool{false, true} {
		db.snapshots = newLRU[int64, map[roomdag.StateKey]roomdag.EventID](snapshotCacheSize)
		for _, id := range snaps {
			want := map[roomdag.StateKey]roomdag.EventID{}
			if cached {
				full, err := db.Snapshot(ctx, id) // fills the cache
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range keys {
					if v, ok := full[k]; ok {
						want[k] = v
					}
				}
			}
			got, err := db.StateEntries(ctx, id, keys)
			if err != nil {
				t.Fatal(err)
			}
			if !cached {
				full, err := db.Snapshot(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range keys {
					if v, ok := full[k]; ok {
						want[k] = v
					}
				}
				db.snapshots = newLRU[int64, map[roomdag.StateKey]roomdag.EventID](snapshotCacheSize)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("snapshot %d (cached %v): %v, want %v", id, cached, got, want)
			}
			if len(got) == 3 {
				found++
			}
		}
	}
	if found < 2*140 {
		t.Errorf("k3 found in %d snapshots, want every one after the fourth event, both times", found)
	}
}
