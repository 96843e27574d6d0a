package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

func msg(id string) clientEvent { return clientEvent{EventID: eventID(id), Type: "m.room.message"} }

func member(id, user string) clientEvent {
	return clientEvent{EventID: eventID(id), Type: "m.room.member", StateKey: &user}
}

func TestCheckBackchat(t *testing.T) {
	history := []eventID{"$m1", "$m2", "$m3", "$m4", "$j1"} // four messages, then an earlier user's join
	const joiner = "@loadtest_x_2:h"
	for _, tc := range []struct {
		name     string
		tl       timeline
		want     int
		wantJoin eventID
		problems []string // substrings, one per expected problem
	}{
		{
			name:     "exact",
			tl:       timeline{Limited: true, Events: []clientEvent{msg("$m3"), msg("$m4"), member("$j1", "@loadtest_x_1:h"), member("$j2", joiner)}},
			want:     4,
			wantJoin: "$j2",
		},
		{
			name:     "one short",
			tl:       timeline{Limited: true, Events: []clientEvent{msg("$m4"), member("$j1", "@loadtest_x_1:h"), member("$j2", joiner)}},
			want:     4,
			wantJoin: "$j2",
			problems: []string{"has 3 events, want 4"},
		},
		{
			name:     "not limited",
			tl:       timeline{Events: []clientEvent{msg("$m3"), msg("$m4"), member("$j1", "@loadtest_x_1:h"), member("$j2", joiner)}},
			want:     4,
			wantJoin: "$j2",
			problems: []string{"limited is false"},
		},
		{
			name:     "gap",
			tl:       timeline{Limited: true, Events: []clientEvent{msg("$m2"), msg("$m4"), member("$j1", "@loadtest_x_1:h"), member("$j2", joiner)}},
			want:     4,
			wantJoin: "$j2",
			problems: []string{"timeline event 1 of 4 is $m2, want $m3"},
		},
		{
			name:     "out of order",
			tl:       timeline{Limited: true, Events: []clientEvent{msg("$m4"), msg("$m3"), member("$j1", "@loadtest_x_1:h"), member("$j2", joiner)}},
			want:     4,
			wantJoin: "$j2",
			problems: []string{"is $m4, want $m3"},
		},
		{
			name:     "join missing",
			tl:       timeline{Limited: true, Events: []clientEvent{msg("$m2"), msg("$m3"), msg("$m4"), member("$j1", "@loadtest_x_1:h")}},
			want:     4,
			problems: []string{"want the user's own join"}, // the rest is the history's tail
		},
		{
			name:     "server default, fewer than history",
			tl:       timeline{Limited: true, Events: []clientEvent{member("$j1", "@loadtest_x_1:h"), member("$j2", joiner)}},
			wantJoin: "$j2",
		},
		{
			name: "server default, reaching before history",
			tl: timeline{Events: []clientEvent{member("$create", "@c:h"), msg("$m1"), msg("$m2"), msg("$m3"), msg("$m4"),
				member("$j1", "@loadtest_x_1:h"), member("$j2", joiner)}},
			wantJoin: "$j2",
		},
		{
			name:     "empty",
			tl:       timeline{},
			want:     4,
			problems: []string{"empty"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			join, problems := checkBackchat(tc.tl, history, tc.want, joiner)
			if join != tc.wantJoin {
				t.Errorf("join = %q, want %q", join, tc.wantJoin)
			}
			if len(problems) != len(tc.problems) {
				t.Fatalf("problems = %q, want %d matching %q", problems, len(tc.problems), tc.problems)
			}
			for i, p := range problems {
				if !strings.Contains(p, tc.problems[i]) {
					t.Errorf("problem %d = %q, want it to contain %q", i, p, tc.problems[i])
				}
			}
		})
	}
}

func TestPaginationCheck(t *testing.T) {
	sent := []eventID{"$a", "$b", "$c", "$d"}
	seen := map[eventID]int{"$create": 1, "$a": 1, "$b": 2, "$d": 1, "$state": 3}
	dups, missing := paginationCheck(seen, sent)
	if dups != 2 || missing != 1 {
		t.Errorf("paginationCheck = %d duplicates, %d missing; want 2, 1", dups, missing)
	}
	if dups, missing := paginationCheck(map[eventID]int{"$a": 1, "$b": 1, "$c": 1, "$d": 1}, sent); dups != 0 || missing != 0 {
		t.Errorf("clean pagination: %d duplicates, %d missing", dups, missing)
	}
}

func TestWithRetry(t *testing.T) {
	calls := 0
	boom := errors.New("boom")
	if err := withRetry(context.Background(), func() error { calls++; return boom }); err != boom || calls != 1 {
		t.Errorf("non-429 error: got %v after %d calls, want boom after 1", err, calls)
	}

	// A 429 is retried, but not once the context has ended.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls = 0
	limited := &matrixError{Status: 429, ErrCode: "M_LIMIT_EXCEEDED"}
	if err := withRetry(ctx, func() error { calls++; return limited }); !errors.Is(err, limited) || calls != 1 {
		t.Errorf("429 with ended context: got %v after %d calls", err, calls)
	}

	calls = 0
	if err := withRetry(context.Background(), func() error { calls++; return nil }); err != nil || calls != 1 {
		t.Errorf("success: got %v after %d calls", err, calls)
	}
}

func TestSenderRooms(t *testing.T) {
	for _, tc := range []struct{ senders, rooms int }{{8, 1}, {32, 1}, {8, 50}, {32, 50}, {8, 8}, {3, 2}, {1, 5}} {
		senders := make([]int, tc.rooms) // senders per room
		for i := range tc.senders {
			rooms := senderRooms(i, tc.senders, tc.rooms)
			if len(rooms) == 0 {
				t.Errorf("%d senders, %d rooms: sender %d has no room", tc.senders, tc.rooms, i)
			}
			for _, j := range rooms {
				senders[j]++
			}
		}
		for j, c := range senders {
			// Every room is sent to, and its creator (sender j mod
			// senders) is one of its senders.
			if c == 0 || !slices.Contains(senderRooms(j%tc.senders, tc.senders, tc.rooms), j) {
				t.Errorf("%d senders, %d rooms: room %d has %d senders, creator in it: %v", tc.senders, tc.rooms, j, c,
					slices.Contains(senderRooms(j%tc.senders, tc.senders, tc.rooms), j))
			}
			// Rooms are shared as evenly as whole senders allow.
			if lo, hi := tc.senders/tc.rooms, (tc.senders+tc.rooms-1)/tc.rooms; c < max(lo, 1) || c > max(hi, 1) {
				t.Errorf("%d senders, %d rooms: room %d has %d senders, want %d to %d", tc.senders, tc.rooms, j, c, lo, hi)
			}
		}
	}
	if got := senderRooms(1, 8, 50); !slices.Equal(got, []int{1, 9, 17, 25, 33, 41, 49}) {
		t.Errorf("senderRooms(1, 8, 50) = %v", got)
	}
	if got := senderRooms(9, 32, 8); !slices.Equal(got, []int{1}) {
		t.Errorf("senderRooms(9, 32, 8) = %v", got)
	}
}

func TestCheckInitialSync(t *testing.T) {
	newest := map[roomID]eventID{"!a:h": "$a3", "!b:h": "$b3", "!c:h": "$c3"}
	var sr syncResponse
	sr.Rooms.Join = map[roomID]struct {
		Timeline timeline `json:"timeline"`
	}{
		"!a:h":     {Timeline: timeline{Events: []clientEvent{msg("$a2"), msg("$a3")}}},
		"!b:h":     {Timeline: timeline{Events: []clientEvent{msg("$b3"), msg("$b2")}}},
		"!c:h":     {},
		"!other:h": {Timeline: timeline{Events: []clientEvent{msg("$o")}}},
	}
	got := checkInitialSync(&sr, newest)
	if len(got) != 2 || !strings.Contains(got[0], "!b:h: timeline ends with $b2, want the newest message $b3") ||
		!strings.Contains(got[1], "!c:h: empty timeline") {
		t.Errorf("problems = %q", got)
	}
	delete(sr.Rooms.Join, "!c:h")
	sr.Rooms.Join["!b:h"] = sr.Rooms.Join["!a:h"]
	if got := checkInitialSync(&sr, newest); len(got) != 2 || !strings.Contains(got[1], "room !c:h missing") {
		t.Errorf("problems = %q", got)
	}
	sr.Rooms.Join["!b:h"] = struct {
		Timeline timeline `json:"timeline"`
	}{timeline{Events: []clientEvent{msg("$b3")}}}
	sr.Rooms.Join["!c:h"] = struct {
		Timeline timeline `json:"timeline"`
	}{timeline{Events: []clientEvent{member("$j", "@u:h"), msg("$c3")}}}
	if got := checkInitialSync(&sr, newest); len(got) != 0 {
		t.Errorf("complete sync: problems %q", got)
	}
}

// TestUsersSpreadRoundRobin registers users against two fake processes:
// consecutive users alternate between them, each session then talks only
// to its own process, and newUserOn picks the given one.
func TestUsersSpreadRoundRobin(t *testing.T) {
	var servers [2]*httptest.Server
	var registered [2]atomic.Int64
	for p := range servers {
		servers[p] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path != registerPath {
				http.NotFound(w, req)
				return
			}
			var body struct {
				Username string `json:"username"`
			}
			json.NewDecoder(req.Body).Decode(&body)
			registered[p].Add(1)
			json.NewEncoder(w).Encode(map[string]string{"user_id": "@" + body.Username + ":h", "access_token": "t"})
		}))
		defer servers[p].Close()
	}
	hss, err := newHomeservers([]string{servers[0].URL, servers[1].URL + "/"}, 4)
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{hs: hss, runID: "x"}
	users, err := r.newUsers(context.Background(), 6)
	if err != nil {
		t.Fatal(err)
	}
	if registered[0].Load() != 3 || registered[1].Load() != 3 {
		t.Errorf("registrations per process: %d, %d; want 3, 3", registered[0].Load(), registered[1].Load())
	}
	for _, u := range users {
		// User loadtest_x_<n> is on process (n-1) mod 2.
		var n int
		if _, err := fmt.Sscanf(string(u.user), "@loadtest_x_%d:h", &n); err != nil {
			t.Fatalf("user %s: %v", u.user, err)
		}
		if want := hss[(n-1)%2]; u.hs != want {
			t.Errorf("%s on %s, want %s", u.user, u.hs.base, want.base)
		}
	}
	u, err := r.newUserOn(context.Background(), hss[1])
	if err != nil || u.hs != hss[1] || registered[1].Load() != 4 {
		t.Errorf("newUserOn: %v, %v, %d registrations on the second process", u, err, registered[1].Load())
	}
}
