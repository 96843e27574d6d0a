package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// A revoked token stops working at once: a long-poll that began before
// its session ended (logout, logout/all, a password change, a deleted
// device, deactivation) ends with 401 M_UNKNOWN_TOKEN and carries
// nothing that happened after (sync/sessions.go).

type pollResult struct {
	r   *hsReply
	err error
}

// startPoll sends a GET with token in the background.
func startPoll(t *testing.T, srv *testserver.Server, token, path string) chan pollResult {
	t.Helper()
	req := hsRequest(t, srv, "GET", path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	ch := make(chan pollResult, 1)
	go func() {
		resp, err := hsClient(srv).Do(req)
		if err != nil {
			ch <- pollResult{err: err}
			return
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		r := &hsReply{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
		_ = json.Unmarshal(raw, &r.Body)
		ch <- pollResult{r: r, err: err}
	}()
	return ch
}

// waitPolls spins until n long-polls wait on the server, failing if one
// answers first (it should have waited).
func waitPolls(t *testing.T, srv *testserver.Server, n int64, polls []chan pollResult) {
	t.Helper()
	for srv.HS.Syncer.Parked() < n {
		for _, p := range polls {
			if len(p) > 0 {
				res := <-p
				t.Fatalf("a long-poll answered before anything happened: %v %v", res.r, res.err)
			}
		}
		runtime.Gosched()
	}
}

func TestLongPollEndsWithItsSession(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	bob := hsRegister(t, srv, hsName("revbob"), nil)
	r := hsDo(t, srv, "POST", csAPI+"/createRoom", bob.Token, map[string]any{"preset": "public_chat"})
	hsOK(t, r, "createRoom")
	room := r.str("room_id")
	const news = "news after the revocation"

	type poll struct {
		device   string // "A" or "B": alice's two devices
		feed     bool   // the feed long-poll instead of /sync
		survives bool
	}
	password := func(a, b hsSession, extra map[string]any) map[string]any {
		body := map[string]any{"auth": hsPasswordAuth(a.UserID, hsPassword, "")}
		for k, v := range extra {
			body[k] = v
		}
		return body
	}
	tests := []struct {
		name   string
		polls  []poll
		revoke func(t *testing.T, a, b hsSession)
	}{
		{"logout", []poll{{device: "A"}, {device: "B", survives: true}}, func(t *testing.T, a, b hsSession) {
			hsOK(t, hsDo(t, srv, "POST", csAPI+"/logout", a.Token, map[string]any{}), "logout")
		}},
		{"logout/all", []poll{{device: "A"}, {device: "B"}}, func(t *testing.T, a, b hsSession) {
			hsOK(t, hsDo(t, srv, "POST", csAPI+"/logout/all", b.Token, map[string]any{}), "logout/all")
		}},
		{"password change", []poll{{device: "A"}, {device: "B", survives: true}}, func(t *testing.T, a, b hsSession) {
			hsOK(t, hsDo(t, srv, "POST", csAPI+"/account/password", b.Token,
				password(a, b, map[string]any{"new_password": "a new and better password"})), "password change")
		}},
		{"password change keeping devices", []poll{{device: "A", survives: true}, {device: "B", survives: true}}, func(t *testing.T, a, b hsSession) {
			hsOK(t, hsDo(t, srv, "POST", csAPI+"/account/password", b.Token,
				password(a, b, map[string]any{"new_password": "a new and better password", "logout_devices": false})), "password change")
		}},
		{"delete device", []poll{{device: "A"}, {device: "B", survives: true}}, func(t *testing.T, a, b hsSession) {
			hsOK(t, hsDo(t, srv, "DELETE", csAPI+"/devices/"+url.PathEscape(a.DeviceID), b.Token, password(a, b, nil)), "delete device")
		}},
		{"delete_devices", []poll{{device: "A"}, {device: "B", survives: true}}, func(t *testing.T, a, b hsSession) {
			hsOK(t, hsDo(t, srv, "POST", csAPI+"/delete_devices", b.Token,
				password(a, b, map[string]any{"devices": []string{a.DeviceID}})), "delete_devices")
		}},
		{"deactivation", []poll{{device: "A"}, {device: "B"}}, func(t *testing.T, a, b hsSession) {
			hsOK(t, hsDo(t, srv, "POST", csAPI+"/account/deactivate", b.Token, password(a, b, nil)), "deactivate")
		}},
		{"feed: logout", []poll{{device: "A", feed: true}}, func(t *testing.T, a, b hsSession) {
			hsOK(t, hsDo(t, srv, "POST", csAPI+"/logout", a.Token, map[string]any{}), "logout")
		}},
		{"feed: deactivation", []poll{{device: "A", feed: true}}, func(t *testing.T, a, b hsSession) {
			hsOK(t, hsDo(t, srv, "POST", csAPI+"/account/deactivate", b.Token, password(a, b, nil)), "deactivate")
		}},
	}
	// Sequential: the server's count of waiting long-polls tells when
	// this case's polls wait.
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := hsRegister(t, srv, hsName("revalice"), nil)
			b := hsLogin(t, srv, a.UserID)
			hsOK(t, hsDo(t, srv, "POST", csAPI+"/join/"+url.PathEscape(room), a.Token, map[string]any{}), "join")
			hsOK(t, hsDo(t, srv, "PUT", csAPI+"/user/"+url.PathEscape(a.UserID)+"/account_data/org.persistentchat.feeds", a.Token,
				map[string]any{"feeds": map[string]any{"news": map[string]any{"keywords": []string{"revocation"}, "rooms": []string{room}}}}), "feeds")
			// Positions after everything so far, the notification worker's
			// included, so the polls wait.
			srv.Settle()
			since := map[string]string{}
			for name, s := range map[string]hsSession{"A": a, "B": b} {
				r := hsDo(t, srv, "GET", csAPI+"/sync?timeout=0", s.Token, nil)
				hsOK(t, r, "initial sync")
				r = hsDo(t, srv, "GET", csAPI+"/sync?timeout=0&since="+r.str("next_batch"), s.Token, nil)
				hsOK(t, r, "catching up")
				since[name] = r.str("next_batch")
			}
			r := hsDo(t, srv, "GET", feedPrefixPath("news"), a.Token, nil)
			hsOK(t, r, "feed")
			feedSince := r.str("next_batch")

			var chans []chan pollResult
			for _, p := range tc.polls {
				s := map[string]hsSession{"A": a, "B": b}[p.device]
				path := csAPI + "/sync?timeout=600000&since=" + url.QueryEscape(since[p.device])
				if p.feed {
					path = feedPrefixPath("news") + "?timeout=600000&since=" + feedSince
				}
				chans = append(chans, startPoll(t, srv, s.Token, path))
			}
			waitPolls(t, srv, int64(len(chans)), chans)
			tc.revoke(t, a, b)
			// The polls of the ended sessions answer at once: nothing else
			// happens before they do. (TestSessionCheckWithoutWake covers a
			// poll woken only by a later event.)
			results := make([]pollResult, len(chans))
			for i, p := range tc.polls {
				if p.survives {
					continue
				}
				results[i] = <-chans[i]
			}
			sendMessage(t, srv, bob.Token, room, news)

			for i, p := range tc.polls {
				res := results[i]
				if p.survives {
					res = <-chans[i]
				}
				if res.err != nil {
					t.Fatalf("poll %d (%s): %v", i, p.device, res.err)
				}
				r := res.r
				if !p.survives {
					hsWantErr(t, r, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "poll of device "+p.device)
					if soft, ok := r.Body["soft_logout"].(bool); !ok || soft {
						t.Errorf("poll of device %s: soft_logout must be false: %s", p.device, r.Raw)
					}
					continue
				}
				// A surviving poll goes on and gets the news, possibly after
				// answering with something else first.
				s := map[string]hsSession{"A": a, "B": b}[p.device]
				for n := 0; !bytes.Contains(r.Raw, []byte(news)); n++ {
					if r.Status != http.StatusOK || n == 10 {
						t.Fatalf("surviving poll of device %s: %s", p.device, r)
					}
					r = hsDo(t, srv, "GET", csAPI+"/sync?timeout=600000&since="+url.QueryEscape(r.str("next_batch")), s.Token, nil)
				}
			}
			// The revoked tokens stay dead for every later request.
			for _, p := range tc.polls {
				if !p.survives {
					hsTokenDead(t, srv, map[string]hsSession{"A": a, "B": b}[p.device].Token, "revoked token")
				}
			}
		})
	}
}

func feedPrefixPath(id string) string {
	return "/_matrix/client/unstable/org.persistentchat/feeds/" + url.PathEscape(id)
}

// sendMessage sends a text message as token's user.
func sendMessage(t *testing.T, srv *testserver.Server, token, room, body string) {
	t.Helper()
	path := csAPI + "/rooms/" + url.PathEscape(room) + "/send/m.room.message/" + hsName("revtxn")
	r := hsDo(t, srv, "PUT", path, token, map[string]any{"msgtype": "m.text", "body": body})
	hsOK(t, r, "send "+strings.TrimSpace(body))
}

// TestSessionCheckWithoutWake: a long-poll checks its session whenever it
// is about to read, not only when the ending woke it. Here the ending is
// announced but its wake-up never comes (as when the poll is between
// reads); the next event wakes the poll, which answers 401 without it.
func TestSessionCheckWithoutWake(t *testing.T) {
	t.Parallel()
	srv := hsStart(t, testserver.Options{})
	bob := hsRegister(t, srv, hsName("wakebob"), nil)
	alice := hsRegister(t, srv, hsName("wakealice"), nil)
	r := hsDo(t, srv, "POST", csAPI+"/createRoom", bob.Token, map[string]any{"preset": "public_chat"})
	hsOK(t, r, "createRoom")
	room := r.str("room_id")
	hsOK(t, hsDo(t, srv, "POST", csAPI+"/join/"+url.PathEscape(room), alice.Token, map[string]any{}), "join")
	srv.Settle()
	r = hsDo(t, srv, "GET", csAPI+"/sync?timeout=0", alice.Token, nil)
	hsOK(t, r, "initial sync")
	r = hsDo(t, srv, "GET", csAPI+"/sync?timeout=0&since="+url.QueryEscape(r.str("next_batch")), alice.Token, nil)
	hsOK(t, r, "catching up")

	poll := startPoll(t, srv, alice.Token, csAPI+"/sync?timeout=600000&since="+url.QueryEscape(r.str("next_batch")))
	waitPolls(t, srv, 1, []chan pollResult{poll})
	user := roomdag.UserID(alice.UserID)
	committed := srv.HS.Syncer.Notifier().EndSessions(user)
	if err := srv.HS.DB().DeleteDevices(context.Background(), user, nil, ""); err != nil {
		t.Fatal(err)
	}
	defer committed()
	const news = "sent after the device was deleted"
	sendMessage(t, srv, bob.Token, room, news)
	res := <-poll
	if res.err != nil {
		t.Fatal(res.err)
	}
	hsWantErr(t, res.r, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "poll woken by a later event")
	if bytes.Contains(res.r.Raw, []byte(news)) {
		t.Errorf("the poll carried the event sent after its session ended: %s", res.r.Raw)
	}
}
