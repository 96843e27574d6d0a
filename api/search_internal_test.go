package api

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// searchStore serves a fixed list of hits, newest first, for the scan
// logic of /search; hits with StateBefore 2 are in a "joined" history the
// searcher was not in. Other Store methods are not called.
type searchStore struct {
	Store
	hits    []storage.SearchHit
	queries []storage.SearchQuery
}

func (f *searchStore) SearchEvents(_ context.Context, q storage.SearchQuery) ([]storage.SearchHit, error) {
	f.queries = append(f.queries, q)
	var out []storage.SearchHit
	for _, h := range f.hits {
		if q.UpTo != 0 && h.Pos > q.UpTo {
			continue
		}
		if q.Limit > 0 && len(out) == q.Limit {
			break
		}
		out = append(out, h)
	}
	return out, nil
}

var searchRoom = roomdag.RoomID("!r:test.local")

func testEvent(id string, typ string, stateKey *string, content string) *roomdag.Event {
	v, _ := roomdag.LookupRoomVersion("11")
	raw, _ := json.Marshal(map[string]any{"type": typ, "state_key": stateKey, "room_id": searchRoom, "sender": "@a:test.local",
		"content": json.RawMessage(content), "depth": 1, "origin_server_ts": 1})
	ev, err := roomdag.EventFromTrustedJSON(v, roomdag.EventID(id), raw)
	if err != nil {
		panic(err)
	}
	return ev
}

func (f *searchStore) EventsAt(_ context.Context, positions []roomdag.StreamPos) ([]*roomdag.StoredEvent, error) {
	var out []*roomdag.StoredEvent
	for _, p := range positions {
		for _, h := range f.hits {
			if h.Pos == p {
				ev := testEvent(fmt.Sprintf("$%d", p), roomdag.TypeMessage, nil, `{"body":"x"}`)
				out = append(out, &roomdag.StoredEvent{Event: ev, Pos: p, StateBefore: h.StateBefore})
			}
		}
	}
	return out, nil
}

func (f *searchStore) StateEntries(_ context.Context, id int64, _ []roomdag.StateKey) (map[roomdag.StateKey]roomdag.EventID, error) {
	if id == 2 {
		return map[roomdag.StateKey]roomdag.EventID{{Type: roomdag.TypeHistoryVisibility}: "$hv"}, nil
	}
	return map[roomdag.StateKey]roomdag.EventID{}, nil
}

func (f *searchStore) Events(_ context.Context, ids []roomdag.EventID) ([]*roomdag.StoredEvent, error) {
	var out []*roomdag.StoredEvent
	for _, id := range ids {
		if id == "$hv" {
			empty := ""
			out = append(out, &roomdag.StoredEvent{Event: testEvent("$hv", roomdag.TypeHistoryVisibility, &empty, `{"history_visibility":"joined"}`)})
		}
	}
	return out, nil
}

// The scan of a large search stops early, as documented on searchCountScan,
// and says where; a small one reads everything.
func TestSearchScanBudget(t *testing.T) {
	// 100 hits at positions 100..1; every third one is invisible.
	var hits []storage.SearchHit
	for p := 100; p >= 1; p-- {
		h := storage.SearchHit{Pos: roomdag.StreamPos(p), Room: searchRoom, Sender: "@a:test.local", Key: storage.SearchKeyBody, StateBefore: 1, Rank: float64(p % 7)}
		if p%3 == 0 {
			h.StateBefore = 2
		}
		hits = append(hits, h)
	}
	current := map[roomdag.RoomID]string{searchRoom: roomdag.MembershipJoin}
	for _, c := range []struct {
		name          string
		order         string
		limit         int
		tok           *searchToken
		budget        scanBudget
		wantVisible   int
		wantTruncated roomdag.StreamPos
		wantLimits    []int
	}{
		{"recent: page and count budget met in one read", orderRecent, 5, nil, scanBudget{10, 30}, 7, 91, []int{10}},
		{"recent: reads on, doubling, until the page is full", orderRecent, 15, nil, scanBudget{10, 25}, 20, 71, []int{10, 20}},
		{"recent: a later page reads on past its cursor", orderRecent, 5, &searchToken{Order: orderRecent, UpTo: 100, Pos: 60}, scanBudget{10, 100}, 47, 31, []int{10, 20, 40}},
		{"recent: everything when it is small", orderRecent, 5, nil, scanBudget{1000, 1000}, 67, 0, []int{1000}},
		{"rank: the newest budget.rank hits", orderRank, 5, nil, scanBudget{10, 30}, 20, 71, []int{30}},
		{"rank: everything when it is small", orderRank, 5, nil, scanBudget{10, 200}, 67, 0, []int{200}},
	} {
		t.Run(c.name, func(t *testing.T) {
			store := &searchStore{hits: hits}
			s := &Server{store: store}
			q := &roomSearch{phrases: storage.ParseSearchTerm("x"), order: c.order, limit: c.limit}
			visible, upTo, truncated, err := s.collectHits(context.Background(), "@b:test.local", current, []roomdag.RoomID{searchRoom}, q, c.tok, c.budget)
			if err != nil {
				t.Fatal(err)
			}
			if len(visible) != c.wantVisible || truncated != c.wantTruncated || upTo != 100 {
				t.Errorf("%d visible, truncated at %d, up to %d; want %d, %d, 100", len(visible), truncated, upTo, c.wantVisible, c.wantTruncated)
			}
			for _, h := range visible {
				if h.StateBefore == 2 {
					t.Errorf("invisible hit %d kept", h.Pos)
				}
			}
			var limits []int
			for _, sq := range store.queries {
				limits = append(limits, sq.Limit)
			}
			if fmt.Sprint(limits) != fmt.Sprint(c.wantLimits) {
				t.Errorf("read with limits %v, want %v", limits, c.wantLimits)
			}
		})
	}
}

func TestEstimateCount(t *testing.T) {
	for _, c := range []struct {
		n               int
		upTo, truncated roomdag.StreamPos
		want            int
	}{
		{7, 100, 0, 7},
		{7, 100, 91, 70},   // a tenth of the stream read
		{7, 100, 100, 700}, // a hundredth read
		{7, 100, 2, 8},     // all but one position read: at least one more
		{0, 100, 50, 1},
	} {
		if got := estimateCount(c.n, c.upTo, c.truncated); got != c.want {
			t.Errorf("estimateCount(%d, %d, %d) = %d, want %d", c.n, c.upTo, c.truncated, got, c.want)
		}
	}
}
