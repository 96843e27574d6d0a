package storagetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/storage/sqlstore"
)

// SearchPositions returns the stream positions of db's search hits for
// term, in the order returned; the test fails on an error.
func SearchPositions(t *testing.T, db *sqlstore.DB, term string, rooms []roomdag.RoomID, keys ...string) []roomdag.StreamPos {
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

func testSearchIndex(t *testing.T, open Opener) {
	db := open(t)
	rooms := NewRooms(t, db)
	ctx := context.Background()
	a, b := roomdag.RoomID("!a:test.local"), roomdag.RoomID("!b:test.local")
	owner := CreateRoom(t, rooms, a)
	CreateRoom(t, rooms, b)
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
		if got := SearchPositions(t, db, c.term, both, c.keys...); !slices.Equal(got, c.want) {
			t.Errorf("search %q keys %v = %v, want %v", c.term, c.keys, got, c.want)
		}
	}
	if got := SearchPositions(t, db, "deploy", []roomdag.RoomID{b, "!unknown:test.local"}); !slices.Equal(got, []roomdag.StreamPos{p3}) {
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
	if got := SearchPositions(t, db, "secret", both); len(got) != 0 {
		t.Errorf("redacted event still found: %v", got)
	}
	if got := SearchPositions(t, db, "deploy", both); !slices.Equal(got, []roomdag.StreamPos{p5, p4, p3, p2, p1}) {
		t.Errorf("after redaction: %v", got)
	}
	if got := SearchPositions(t, db, "deploy", both, storage.SearchKeyBody); slices.Contains(got, p6) {
		t.Errorf("redacted event %d found by key", p6)
	}
	if got := SearchPositions(t, db, "deploy", nil); len(got) != 0 {
		t.Errorf("search without rooms found %v", got)
	}
}

func testSearchRank(t *testing.T, open Opener) {
	db := open(t)
	rooms := NewRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!rank:test.local")
	owner := CreateRoom(t, rooms, room)
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

func testStateEntries(t *testing.T, open Opener) {
	db := open(t)
	rooms := NewRooms(t, db)
	ctx := context.Background()
	room := roomdag.RoomID("!entries:test.local")
	owner := CreateRoom(t, rooms, room)
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
		db.DropCaches()
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
				db.DropCaches()
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

func mustEventAt(t *testing.T, db *sqlstore.DB, pos roomdag.StreamPos) *roomdag.StoredEvent {
	t.Helper()
	evs, err := db.EventsAt(context.Background(), []roomdag.StreamPos{pos})
	if err != nil || len(evs) != 1 {
		t.Fatalf("event at %d: %v, %v", pos, evs, err)
	}
	return evs[0]
}
