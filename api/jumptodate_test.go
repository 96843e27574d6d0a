package api_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/testserver"
)

func TestTimestampToEvent(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	srv := testserver.Start(t, testserver.Options{Clock: clk})
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "private_chat"})
	clk.Advance(time.Minute) // 09:01
	a := alice.SendText(room, "a")
	clk.Advance(time.Minute) // 09:02: two events share one timestamp
	b1 := alice.SendText(room, "b1")
	b2 := alice.SendText(room, "b2")
	clk.Advance(time.Minute) // 09:03
	c := alice.SendText(room, "c")
	ms := func(d time.Duration) string { return strconv.FormatInt(start.Add(d).UnixMilli(), 10) }
	path := func(room, ts, dir string) string {
		return relAPI + "/rooms/" + room + "/timestamp_to_event?ts=" + ts + "&dir=" + dir
	}

	found := []struct {
		name, ts, dir, want string
	}{
		{"forwards from before an event", ms(30 * time.Second), "f", a},
		{"forwards from its exact time", ms(time.Minute), "f", a},
		{"backwards from after an event", ms(150 * time.Second), "b", b2},
		{"forwards on a shared timestamp: topologically first", ms(2 * time.Minute), "f", b1},
		{"backwards on a shared timestamp: topologically last", ms(2 * time.Minute), "b", b2},
		{"backwards from the future", ms(time.Hour), "b", c},
	}
	for _, tc := range found {
		t.Run(tc.name, func(t *testing.T) {
			var out struct {
				EventID string `json:"event_id"`
				TS      int64  `json:"origin_server_ts"`
			}
			wantOK(t, alice.Do("GET", path(room, tc.ts, tc.dir), nil), &out)
			if out.EventID != tc.want {
				t.Errorf("event_id = %s, want %s", out.EventID, tc.want)
			}
			if out.TS == 0 {
				t.Error("no origin_server_ts")
			}
		})
	}

	bob := srv.Register("bob")
	errs := []struct {
		name    string
		c       *testserver.Client
		path    string
		status  int
		errcode string
	}{
		{"nothing after the newest", alice, path(room, ms(time.Hour), "f"), http.StatusNotFound, "M_NOT_FOUND"},
		{"nothing before the creation", alice, path(room, ms(-time.Hour), "b"), http.StatusNotFound, "M_NOT_FOUND"},
		{"not a member", bob, path(room, ms(0), "f"), http.StatusForbidden, "M_FORBIDDEN"},
		{"unknown room", alice, path("!nowhere:"+srv.Config.ServerName, ms(0), "f"), http.StatusForbidden, "M_FORBIDDEN"},
		{"no ts", alice, relAPI + "/rooms/" + room + "/timestamp_to_event?dir=f", http.StatusBadRequest, "M_MISSING_PARAM"},
		{"bad ts", alice, path(room, "soon", "f"), http.StatusBadRequest, "M_INVALID_PARAM"},
		{"bad dir", alice, path(room, ms(0), "x"), http.StatusBadRequest, "M_INVALID_PARAM"},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, tc.c.Do("GET", tc.path, nil), tc.status, tc.errcode)
		})
	}
}
