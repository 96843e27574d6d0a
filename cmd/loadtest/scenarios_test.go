package main

import (
	"context"
	"errors"
	"strings"
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
