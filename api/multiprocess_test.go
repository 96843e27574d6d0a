package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// Two processes serving the client API on one PostgreSQL database, as
// behind a load balancer: what a client carries from one request to the
// next (a user-interactive auth session, the count of its failed
// passwords) must not depend on which process a request reaches.
//
// pair is a minimal two-server harness (main has no cluster harness yet):
// a second testserver.Start on the first one's database, server name and
// signing key.
func pair(t *testing.T, opts testserver.Options) (a, b *testserver.Server) {
	t.Helper()
	if os.Getenv(testserver.PostgresEnv) == "" {
		t.Skipf("two processes on one database need PostgreSQL: set %s", testserver.PostgresEnv)
	}
	a = hsStart(t, opts)
	configure := opts.Configure
	opts.Configure = func(c *configs.Config) {
		if configure != nil {
			configure(c)
		}
		c.Database = a.Config.Database
		c.ServerName = a.Config.ServerName
		c.SigningKeyFile = a.Config.SigningKeyPath()
	}
	b = hsStart(t, opts)
	return a, b
}

// A password change begun on one process (the 401 challenge, then a wrong
// password) completes on the other; its session is then spent on both.
func TestUIAAcrossProcesses(t *testing.T) {
	t.Parallel()
	a, b := pair(t, testserver.Options{})
	const path = "/_matrix/client/v3/account/password"
	const newPassword = "a new and better password"
	me := hsRegister(t, a, hsName("mpuia"), nil)

	r := hsDo(t, a, "POST", path, me.Token, map[string]any{"new_password": newPassword})
	session := hsChallenge(t, r, "m.login.password", "challenge on A")
	r = hsDo(t, b, "POST", path, me.Token, map[string]any{"new_password": newPassword, "auth": hsPasswordAuth(me.UserID, "wrong", session)})
	if hsChallenge(t, r, "m.login.password", "wrong password on B") != session || r.errcode() != "M_FORBIDDEN" {
		t.Fatalf("wrong password on B: want the same session and M_FORBIDDEN, got %s", r)
	}
	// Bound to its request: the session cannot delete devices instead.
	r = hsDo(t, b, "POST", "/_matrix/client/v3/delete_devices", me.Token,
		map[string]any{"devices": []string{me.DeviceID}, "auth": hsPasswordAuth(me.UserID, hsPassword, session)})
	hsWantErr(t, r, http.StatusForbidden, "M_FORBIDDEN", "the session on another request")

	r = hsDo(t, b, "POST", path, me.Token, map[string]any{"new_password": newPassword, "logout_devices": false,
		"auth": hsPasswordAuth(me.UserID, hsPassword, session)})
	hsOK(t, r, "right password on B")
	hsSessionOf(t, hsDo(t, a, "POST", "/_matrix/client/v3/login", "", hsLoginBody(me.UserID, newPassword)), "new password on A")

	for _, srv := range []*testserver.Server{a, b} {
		r = hsDo(t, srv, "POST", path, me.Token, map[string]any{"new_password": "yet another password",
			"auth": hsPasswordAuth(me.UserID, newPassword, session)})
		hsWantErr(t, r, http.StatusBadRequest, "M_UNKNOWN", "a spent session")
	}

	// Device deletion with a session of two requests: challenge on B,
	// password on A.
	other := hsSessionOf(t, hsDo(t, a, "POST", "/_matrix/client/v3/login", "", hsLoginBody(me.UserID, newPassword)), "second device")
	body := map[string]any{"devices": []string{other.DeviceID}}
	session = hsChallenge(t, hsDo(t, b, "POST", "/_matrix/client/v3/delete_devices", me.Token, body), "m.login.password", "delete_devices on B")
	body["auth"] = hsPasswordAuth(me.UserID, newPassword, session)
	hsOK(t, hsDo(t, a, "POST", "/_matrix/client/v3/delete_devices", me.Token, body), "delete_devices on A")
	hsTokenDead(t, b, other.Token, "the deleted device, on B")
}

// rc_login.failed_attempts counts an account's wrong passwords on both
// processes together: two on A and one on B spend the burst of three, and
// then both refuse even the right password.
func TestLoginLimitAcrossProcesses(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	a, b := pair(t, testserver.Options{Clock: clk, Configure: func(c *configs.Config) {
		c.RateLimiting.Enabled = true // failed_attempts: 0.17/s, burst 3
		c.RateLimiting.Login.PerSecond, c.RateLimiting.Login.BurstCount = 100, 100
	}})
	victim := hsRegister(t, a, hsName("mplimit"), nil)
	checks := func() uint64 { return a.HS.API.PasswordChecks() + b.HS.API.PasswordChecks() }
	before := checks()
	for i, srv := range []*testserver.Server{a, a, b} {
		r := hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody(victim.UserID, "wrong"))
		hsWantErr(t, r, http.StatusForbidden, "M_FORBIDDEN", "wrong password "+string(rune('1'+i)))
	}
	for _, srv := range []*testserver.Server{a, b} {
		r := hsDo(t, srv, "POST", "/_matrix/client/v3/login", "", hsLoginBody(victim.UserID, hsPassword))
		if d := retryAfter(t, r, "the right password over the limit"); d > 6*time.Second {
			t.Errorf("retry_after %v, want at most 1/0.17 s", d)
		}
	}
	if n := checks() - before; n != 3 {
		t.Errorf("%d password checks, want 3", n)
	}
	// One token back on both once a token's time has passed.
	clk.Advance(6 * time.Second)
	hsSessionOf(t, hsDo(t, b, "POST", "/_matrix/client/v3/login", "", hsLoginBody(victim.UserID, hsPassword)), "login on B after the wait")
}

// Notices sent to one user at once through three processes make one
// notices room, which holds every notice.
func TestServerNoticesRoomAcrossProcesses(t *testing.T) {
	t.Parallel()
	const secret = "notices-admin-secret"
	hs := testserver.Cluster(t, 3, testserver.Options{Configure: func(c *configs.Config) {
		c.RegistrationSharedSecret = configs.NewSecret(secret)
		c.ServerNotices = configs.ServerNotices{SystemMXIDLocalpart: "notices", RoomName: "Server Notices"}
	}})
	admin := registerAdmin(t, hs[0], secret)
	alice := hs[0].Register("alice")
	const perProcess = 3
	var wg sync.WaitGroup
	for k, srv := range hs {
		for i := range perProcess {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := admin.On(srv).Do("POST", sendNotice, map[string]any{"user_id": alice.UserID,
					"content": map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("notice %d-%d", k, i)}})
				if r.Status != http.StatusOK {
					t.Errorf("notice %d-%d through process %d: %d %s", k, i, k, r.Status, r.Body)
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	_, invited := noticeRooms(t, alice)
	if len(invited) != 1 {
		t.Fatalf("alice is invited to %d rooms, want one notices room: %v", len(invited), invited)
	}
	wantOK(t, alice.Do("POST", csAPI+"/join/"+url.PathEscape(invited[0]), map[string]any{}), nil)
	joined, _ := noticeRooms(t, alice)
	if len(joined) != 1 || len(joined[invited[0]]) != len(hs)*perProcess {
		t.Fatalf("alice's notices rooms after joining: %v, want one with %d notices", joined, len(hs)*perProcess)
	}
}

// Two users upgrade one room at once through two processes: the room is
// replaced once. One request answers with the replacement room; the other
// with that same room or a refusal, never a second replacement.
func TestRoomUpgradeAcrossProcesses(t *testing.T) {
	t.Parallel()
	hs := testserver.Cluster(t, 2, testserver.Options{})
	alice := hs[0].Register("alice")
	bob := hs[1].Register("bob")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat",
		"power_level_content_override": map[string]any{"users": map[string]any{alice.UserID: 100, bob.UserID: 100}}})
	joinRoom(t, bob, room)
	type answer struct {
		status int
		room   string
		body   string
	}
	answers := make([]answer, 2)
	var wg sync.WaitGroup
	for i, c := range []*testserver.Client{alice, bob} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := c.Do("POST", roomPath(room, "upgrade"), map[string]any{"new_version": "10"})
			var out struct {
				ReplacementRoom string `json:"replacement_room"`
			}
			_ = r.JSON(&out)
			answers[i] = answer{r.Status, out.ReplacementRoom, string(r.Body)}
		}()
	}
	wg.Wait()
	var tomb struct {
		ReplacementRoom string `json:"replacement_room"`
	}
	wantOK(t, alice.Do("GET", roomPath(room, "state", "m.room.tombstone", ""), nil), &tomb)
	ok := 0
	for i, a := range answers {
		switch {
		case a.status == http.StatusOK:
			ok++
			if a.room != tomb.ReplacementRoom {
				t.Errorf("upgrade %d answered %s, but the tombstone names %s: two replacement rooms", i, a.room, tomb.ReplacementRoom)
			}
		case a.status == http.StatusBadRequest:
		default:
			t.Errorf("upgrade %d: %d %s", i, a.status, a.body)
		}
	}
	if ok == 0 {
		t.Errorf("neither upgrade succeeded: %+v", answers)
	}
}
