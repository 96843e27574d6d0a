package sync_test

import (
	"encoding/json"
	"fmt"
	gosync "sync"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// TestSummaryMatchesTimeline: a /sync's room summary counts the members
// as of the sync's position, not of the moment it was built. With users
// joining while alice syncs, every response's m.joined_member_count must
// be the number of joins alice has been given (timeline and state) up to
// then: matrix-js-sdk takes the count from the summary, and its crypto
// encrypted a message for nobody when the count said 2 but the second
// member's join had not come (e2e/crypto.test.mjs step 3, now and then).
func TestSummaryMatchesTimeline(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("sumalice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	const n = 40
	joiners := make([]*testserver.Client, n)
	for i := range joiners {
		joiners[i] = srv.Register(fmt.Sprintf("sumjoin%d", i))
	}
	var wg gosync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, c := range joiners {
			c.Join(room)
		}
	}()
	joined := map[string]bool{}
	since := ""
	for len(joined) < n+1 {
		q := "timeout=0"
		if since != "" {
			q += "&since=" + since
		}
		resp := doSync(t, alice, q)
		since = resp.NextBatch
		r, ok := resp.Rooms.Join[room]
		if !ok {
			continue
		}
		for _, evs := range [][]event{r.State.Events, r.Timeline.Events} {
			for _, ev := range evs {
				if ev.Type != "m.room.member" || ev.StateKey == nil {
					continue
				}
				var c struct{ Membership string }
				_ = json.Unmarshal(ev.Content, &c)
				joined[*ev.StateKey] = c.Membership == "join"
			}
		}
		count := 0
		for _, j := range joined {
			if j {
				count++
			}
		}
		if got, _ := r.Summary["m.joined_member_count"].(float64); int(got) != count {
			t.Fatalf("summary m.joined_member_count %v, but alice has been given %d joins (since %s)", r.Summary["m.joined_member_count"], count, since)
		}
	}
	wg.Wait()
}
