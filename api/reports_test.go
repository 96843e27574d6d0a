package api_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

type adminReport struct {
	ID           int64  `json:"id"`
	ReceivedTS   int64  `json:"received_ts"`
	UserID       string `json:"user_id"`
	RoomID       string `json:"room_id"`
	EventID      string `json:"event_id"`
	TargetUserID string `json:"target_user_id"`
	Reason       string `json:"reason"`
	Score        *int   `json:"score"`
}

// listAdminReports reads one of Synapse's admin report listings.
func listAdminReports(t testing.TB, admin *testserver.Client, kind, query string) (reports []adminReport, total int, next *int) {
	t.Helper()
	var out map[string]any
	r := admin.Do("GET", "/_synapse/admin/v1/"+kind+"?"+query, nil)
	wantOK(t, r, &out)
	var page struct {
		Total     int           `json:"total"`
		NextToken *int          `json:"next_token"`
		Event     []adminReport `json:"event_reports"`
		Room      []adminReport `json:"room_reports"`
		User      []adminReport `json:"user_reports"`
	}
	if err := r.JSON(&page); err != nil {
		t.Fatal(err)
	}
	if _, ok := out[kind]; !ok {
		t.Fatalf("listing has no %q: %s", kind, r.Body)
	}
	switch kind {
	case "event_reports":
		reports = page.Event
	case "room_reports":
		reports = page.Room
	default:
		reports = page.User
	}
	return reports, page.Total, page.NextToken
}

// registerAdmin makes an admin account through the shared-secret
// endpoint.
func registerAdmin(t testing.TB, srv *testserver.Server, secret string) *testserver.Client {
	t.Helper()
	r, _ := adminRegister(t, srv, secret, hsName("admin"), true)
	if r.Status != http.StatusOK {
		t.Fatalf("admin registration: %v", r)
	}
	c := srv.Anonymous()
	c.Token, c.UserID = r.str("access_token"), r.str("user_id")
	return c
}

func reportEventPath(room, event string) string { return roomPath(room, "report", event) }

func TestReports(t *testing.T) {
	t.Parallel()
	const secret = "report-admin-secret"
	srv := hsStart(t, testserver.Options{Configure: func(c *configs.Config) { c.RegistrationSharedSecret = configs.NewSecret(secret) }})
	admin := registerAdmin(t, srv, secret)
	alice, bob, carol := srv.Register("alice"), srv.Register("bob"), srv.Register("carol")
	room := createRoom(t, alice, map[string]any{"preset": "public_chat"})
	joinRoom(t, bob, room)
	ev := sendText(t, alice, room, "something nasty")
	server := srv.Config.ServerName

	t.Run("event", func(t *testing.T) {
		wantOK(t, bob.Do("POST", reportEventPath(room, ev), map[string]any{"reason": "this makes me sad", "score": -100}), nil)
		wantOK(t, bob.Do("POST", reportEventPath(room, ev), map[string]any{}), nil) // both optional (score gone in v1.18)
		reports, total, _ := listAdminReports(t, admin, "event_reports", "dir=f")
		if total != 2 || len(reports) != 2 {
			t.Fatalf("event reports %+v (total %d)", reports, total)
		}
		r := reports[0]
		if r.UserID != bob.UserID || r.RoomID != room || r.EventID != ev || r.Reason != "this makes me sad" ||
			r.Score == nil || *r.Score != -100 || r.ReceivedTS == 0 || r.ID == 0 {
			t.Errorf("stored report %+v", r)
		}
		if reports[1].Score != nil || reports[1].Reason != "" {
			t.Errorf("report without reason or score stored as %+v", reports[1])
		}
	})
	t.Run("event not found or not visible", func(t *testing.T) {
		// Not joined (carol), unknown event, event of another room,
		// unknown room: all the same 404.
		other := createRoom(t, carol, map[string]any{"preset": "public_chat"})
		otherEv := sendText(t, carol, other, "elsewhere")
		for name, r := range map[string]*testserver.Response{
			"not joined":    carol.Do("POST", reportEventPath(room, ev), map[string]any{"reason": "x"}),
			"unknown event": bob.Do("POST", reportEventPath(room, "$nope"), map[string]any{"reason": "x"}),
			"other room":    bob.Do("POST", reportEventPath(room, otherEv), map[string]any{"reason": "x"}),
			"unknown room":  bob.Do("POST", reportEventPath("!nowhere:"+server, ev), map[string]any{"reason": "x"}),
		} {
			if r.Status != http.StatusNotFound || r.Errcode() != "M_NOT_FOUND" {
				t.Errorf("%s: %d %s", name, r.Status, r.Body)
			}
		}
		// A redacted event cannot be reported.
		gone := sendText(t, alice, room, "soon gone")
		wantOK(t, alice.Do("PUT", roomPath(room, "redact", gone, "redact-report-1"), map[string]any{}), nil)
		wantErr(t, bob.Do("POST", reportEventPath(room, gone), map[string]any{"reason": "x"}), http.StatusNotFound, "M_NOT_FOUND")
		// Once bob leaves, he cannot report events of the room.
		leaveRoom(t, bob, room)
		wantErr(t, bob.Do("POST", reportEventPath(room, ev), map[string]any{"reason": "x"}), http.StatusNotFound, "M_NOT_FOUND")
		joinRoom(t, bob, room)
		if _, total, _ := listAdminReports(t, admin, "event_reports", ""); total != 2 {
			t.Errorf("refused reports were stored: total %d", total)
		}
	})
	t.Run("bad bodies", func(t *testing.T) {
		for name, tc := range map[string]struct {
			body    any
			errcode string
		}{
			"score too low":     {map[string]any{"score": -101}, "M_INVALID_PARAM"},
			"score positive":    {map[string]any{"score": 1}, "M_INVALID_PARAM"},
			"score not integer": {map[string]any{"score": -1.5}, "M_INVALID_PARAM"},
			"score a string":    {map[string]any{"score": "-5"}, "M_INVALID_PARAM"},
			"reason not string": {map[string]any{"reason": 7}, "M_BAD_JSON"},
			"reason too long":   {map[string]any{"reason": strings.Repeat("é", 1001)}, "M_BAD_JSON"},
			"not json":          {"{", "M_NOT_JSON"},
		} {
			r := bob.Do("POST", reportEventPath(room, ev), tc.body)
			if r.Status != http.StatusBadRequest || r.Errcode() != tc.errcode {
				t.Errorf("%s: %d %s, want 400 %s", name, r.Status, r.Body, tc.errcode)
			}
		}
		wantOK(t, bob.Do("POST", reportEventPath(room, ev), map[string]any{"reason": strings.Repeat("é", 1000), "score": 0}), nil)
		wantErr(t, bob.Do("POST", roomPath(room, "report"), map[string]any{"reason": []string{"x"}}), http.StatusBadRequest, "M_BAD_JSON")
		wantErr(t, bob.Do("POST", csAPI+"/users/"+url.PathEscape(alice.UserID)+"/report", map[string]any{"reason": strings.Repeat("x", 1001)}),
			http.StatusBadRequest, "M_BAD_JSON")
		wantErr(t, bob.Do("POST", csAPI+"/users/nobody/report", map[string]any{"reason": "x"}), http.StatusBadRequest, "M_INVALID_PARAM")
		wantErr(t, srv.Anonymous().Do("POST", roomPath(room, "report"), map[string]any{"reason": "x"}), http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
	t.Run("room", func(t *testing.T) {
		// carol is not in the room: she may still report it.
		wantOK(t, carol.Do("POST", roomPath(room, "report"), map[string]any{"reason": "spam room"}), nil)
		// An unknown room answers the same, and nothing is kept.
		wantOK(t, carol.Do("POST", roomPath("!nowhere:"+server, "report"), map[string]any{"reason": "?"}), nil)
		reports, total, _ := listAdminReports(t, admin, "room_reports", "")
		if total != 1 || len(reports) != 1 || reports[0].UserID != carol.UserID || reports[0].RoomID != room || reports[0].Reason != "spam room" {
			t.Errorf("room reports %+v (total %d)", reports, total)
		}
	})
	t.Run("user", func(t *testing.T) {
		wantOK(t, bob.Do("POST", csAPI+"/users/"+url.PathEscape(alice.UserID)+"/report", map[string]any{"reason": "rude"}), nil)
		// Unknown and remote users answer the same, and nothing is kept.
		wantOK(t, bob.Do("POST", csAPI+"/users/"+url.PathEscape("@ghost:"+server)+"/report", map[string]any{"reason": "?"}), nil)
		wantOK(t, bob.Do("POST", csAPI+"/users/"+url.PathEscape("@someone:elsewhere.example")+"/report", map[string]any{"reason": "?"}), nil)
		reports, total, _ := listAdminReports(t, admin, "user_reports", "")
		if total != 1 || len(reports) != 1 || reports[0].UserID != bob.UserID || reports[0].TargetUserID != alice.UserID || reports[0].Reason != "rude" {
			t.Errorf("user reports %+v (total %d)", reports, total)
		}
	})
	t.Run("admin listing", func(t *testing.T) {
		wantErr(t, bob.Do("GET", "/_synapse/admin/v1/event_reports", nil), http.StatusForbidden, "M_FORBIDDEN")
		all, total, _ := listAdminReports(t, admin, "event_reports", "")
		if total != 3 || len(all) != 3 || all[0].ID < all[1].ID {
			t.Fatalf("event reports newest first: %+v (total %d)", all, total)
		}
		page, _, next := listAdminReports(t, admin, "event_reports", "limit=2")
		if len(page) != 2 || next == nil || *next != 2 || page[0].ID != all[0].ID {
			t.Errorf("first page %+v next %v", page, next)
		}
		page, _, next = listAdminReports(t, admin, "event_reports", "limit=2&from=2")
		if len(page) != 1 || next != nil || page[0].ID != all[2].ID {
			t.Errorf("last page %+v next %v", page, next)
		}
		wantErr(t, admin.Do("GET", "/_synapse/admin/v1/event_reports?from=-1", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		wantErr(t, admin.Do("GET", "/_synapse/admin/v1/event_reports?dir=x", nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}
