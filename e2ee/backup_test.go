package e2ee_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

const backupVersion = "/_matrix/client/v3/room_keys/version"

func backupKeys(path, version string) string {
	return "/_matrix/client/v3/room_keys/keys" + path + "?version=" + url.QueryEscape(version)
}

func newBackup(t *testing.T, c *testserver.Client) string {
	t.Helper()
	var out struct {
		Version string `json:"version"`
	}
	c.MustDo("POST", backupVersion, map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
		"auth_data": map[string]any{"public_key": "abc"}}, &out)
	if out.Version == "" {
		t.Fatal("no version")
	}
	return out.Version
}

func session(fmi, fwd int, verified bool, data string) map[string]any {
	return map[string]any{"first_message_index": fmi, "forwarded_count": fwd, "is_verified": verified,
		"session_data": map[string]any{"ciphertext": data}}
}

type backupCounts struct {
	ETag  string `json:"etag"`
	Count int    `json:"count"`
}

// TestBackupReplacement: the spec's rule for which copy of a session the
// backup keeps, one stored session against one uploaded.
func TestBackupReplacement(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	c := srv.Register("bkrepl")
	for i, tc := range []struct {
		name     string
		old, new map[string]any
		replaced bool
	}{
		{"verified replaces unverified", session(5, 5, false, "old"), session(9, 9, true, "new"), true},
		{"unverified never replaces verified", session(9, 9, true, "old"), session(0, 0, false, "new"), false},
		{"lower first_message_index replaces", session(5, 0, false, "old"), session(4, 9, false, "new"), true},
		{"higher first_message_index does not", session(5, 0, true, "old"), session(6, 0, true, "new"), false},
		{"same index, lower forwarded_count replaces", session(5, 3, true, "old"), session(5, 2, true, "new"), true},
		{"same index, higher forwarded_count does not", session(5, 3, false, "old"), session(5, 4, false, "new"), false},
		{"an identical copy does not", session(5, 3, false, "old"), session(5, 3, false, "new"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newBackup(t, c)
			room := fmt.Sprintf("!room%d:test", i)
			p := "/" + url.PathEscape(room) + "/sess"
			c.MustDo("PUT", backupKeys(p, v), tc.old, nil)
			c.MustDo("PUT", backupKeys(p, v), tc.new, nil)
			var got struct {
				SessionData struct {
					Ciphertext string `json:"ciphertext"`
				} `json:"session_data"`
			}
			c.MustDo("GET", backupKeys(p, v), nil, &got)
			want := "old"
			if tc.replaced {
				want = "new"
			}
			if got.SessionData.Ciphertext != want {
				t.Fatalf("kept %q, want %q", got.SessionData.Ciphertext, want)
			}
		})
	}
}

// TestBackupCountsAndETag: every put and delete answers the version's
// count and etag; the etag changes exactly when sessions change, and the
// version's GET says the same.
func TestBackupCountsAndETag(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	c := srv.Register("bketag")
	v := newBackup(t, c)
	var version struct {
		backupCounts
		Version   string `json:"version"`
		Algorithm string `json:"algorithm"`
	}
	c.MustDo("GET", backupVersion, nil, &version)
	if version.Count != 0 || version.Version != v {
		t.Fatalf("new version: %+v", version)
	}
	etags := map[string]bool{version.ETag: true}
	steps := []struct {
		name, method, path string
		body               any
		count              int
		changes            bool
	}{
		{"two rooms at once", "PUT", "", map[string]any{"rooms": map[string]any{
			"!a:test": map[string]any{"sessions": map[string]any{"s1": session(1, 0, false, "a1"), "s2": session(1, 0, false, "a2")}},
			"!b:test": map[string]any{"sessions": map[string]any{"s1": session(1, 0, false, "b1")}}}}, 3, true},
		{"one room", "PUT", "/!c:test", map[string]any{"sessions": map[string]any{"s1": session(1, 0, false, "c1")}}, 4, true},
		{"one session", "PUT", "/!c:test/s2", session(1, 0, false, "c2"), 5, true},
		{"a worse copy changes nothing", "PUT", "/!c:test/s2", session(2, 0, false, "c2"), 5, false},
		{"a better copy", "PUT", "/!c:test/s2", session(0, 0, false, "c2"), 5, true},
		{"delete one session", "DELETE", "/!a:test/s1", nil, 4, true},
		{"delete an absent session", "DELETE", "/!a:test/s1", nil, 4, false},
		{"delete one room", "DELETE", "/!c:test", nil, 2, true},
		{"delete all", "DELETE", "", nil, 0, true},
	}
	for _, st := range steps {
		var got backupCounts
		c.MustDo(st.method, backupKeys(st.path, v), st.body, &got)
		if got.Count != st.count {
			t.Fatalf("%s: count %d, want %d", st.name, got.Count, st.count)
		}
		if etags[got.ETag] == st.changes {
			t.Fatalf("%s: etag %q (seen before: %v), want a change: %v", st.name, got.ETag, etags[got.ETag], st.changes)
		}
		etags[got.ETag] = true
		c.MustDo("GET", backupVersion+"/"+v, nil, &version)
		if version.Count != got.Count || version.ETag != got.ETag {
			t.Fatalf("%s: version says %+v, the write said %+v", st.name, version.backupCounts, got)
		}
	}
}

// TestBackupVersions: versions, their reads, and what is refused where.
func TestBackupVersions(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	c := srv.Register("bkver")
	other := srv.Register("bkverother")
	if r := c.Do("GET", backupVersion, nil); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
		t.Fatalf("latest without a backup: %d %s", r.Status, r.Body)
	}
	if r := c.Do("PUT", backupKeys("/!a:test/s", "1"), session(0, 0, false, "x")); r.Status != 404 {
		t.Fatalf("put without a backup: %d %s", r.Status, r.Body)
	}
	v1 := newBackup(t, c)
	c.MustDo("PUT", backupKeys("/!a:test/s", v1), session(0, 0, false, "in v1"), nil)
	v2 := newBackup(t, c)
	if v1 == v2 {
		t.Fatal("two versions with one number")
	}
	var latest struct {
		Version string `json:"version"`
		Count   int    `json:"count"`
	}
	c.MustDo("GET", backupVersion, nil, &latest)
	if latest.Version != v2 || latest.Count != 0 {
		t.Fatalf("latest: %+v, want %s, empty", latest, v2)
	}
	// Writes to an old or unknown version name the current one.
	for _, v := range []string{v1, "999", "notanumber"} {
		r := c.Do("PUT", backupKeys("/!a:test/s", v), session(0, 0, false, "x"))
		var e struct {
			Errcode        string `json:"errcode"`
			CurrentVersion string `json:"current_version"`
		}
		if r.Status != http.StatusForbidden || r.JSON(&e) != nil || e.Errcode != "M_WRONG_ROOM_KEYS_VERSION" || e.CurrentVersion != v2 {
			t.Fatalf("put to version %q: %d %s, want 403 M_WRONG_ROOM_KEYS_VERSION with current_version %s", v, r.Status, r.Body, v2)
		}
	}
	// The old version is still readable.
	var s struct {
		SessionData map[string]string `json:"session_data"`
	}
	c.MustDo("GET", backupKeys("/!a:test/s", v1), nil, &s)
	if s.SessionData["ciphertext"] != "in v1" {
		t.Fatalf("old version's session: %v", s)
	}
	for _, tc := range []struct {
		name, method, path string
		client             *testserver.Client
		body               any
		status             int
		code               string
	}{
		{"unknown version", "GET", backupVersion + "/999", c, nil, 404, "M_NOT_FOUND"},
		{"malformed version", "GET", backupVersion + "/x", c, nil, 404, "M_NOT_FOUND"},
		{"another user's version", "GET", backupVersion + "/" + v2, other, nil, 404, "M_NOT_FOUND"},
		{"keys of an unknown version", "GET", backupKeys("", "999"), c, nil, 404, "M_NOT_FOUND"},
		{"absent session", "GET", backupKeys("/!a:test/absent", v1), c, nil, 404, "M_NOT_FOUND"},
		{"no version parameter", "GET", "/_matrix/client/v3/room_keys/keys", c, nil, 400, "M_MISSING_PARAM"},
		{"bad room ID", "PUT", backupKeys("/notaroom/s", v2), c, session(0, 0, false, "x"), 400, "M_INVALID_PARAM"},
		{"session data missing", "PUT", backupKeys("/!a:test/s", v2), c, map[string]any{"first_message_index": 0}, 400, "M_MISSING_PARAM"},
		{"session_data not an object", "PUT", backupKeys("/!a:test/s", v2), c,
			map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": "x"}, 400, "M_BAD_JSON"},
		{"create without algorithm", "POST", backupVersion, c, map[string]any{"auth_data": map[string]any{}}, 400, "M_MISSING_PARAM"},
		{"create without auth_data", "POST", backupVersion, c, map[string]any{"algorithm": "a"}, 400, "M_MISSING_PARAM"},
		{"update changing the algorithm", "PUT", backupVersion + "/" + v2, c, map[string]any{"algorithm": "other", "auth_data": map[string]any{}}, 400, "M_INVALID_PARAM"},
		{"update naming another version", "PUT", backupVersion + "/" + v2, c,
			map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{}, "version": v1}, 400, "M_INVALID_PARAM"},
		{"update of an unknown version", "PUT", backupVersion + "/999", c, map[string]any{"algorithm": "a", "auth_data": map[string]any{}}, 404, "M_NOT_FOUND"},
		{"delete of an unknown version", "DELETE", backupVersion + "/999", c, nil, 404, "M_NOT_FOUND"},
		{"without a token", "GET", backupVersion, srv.Anonymous(), nil, 401, "M_MISSING_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.client.Do(tc.method, tc.path, tc.body)
			if r.Status != tc.status || r.Errcode() != tc.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Body, tc.status, tc.code)
			}
		})
	}
	// Updating auth_data keeps the algorithm and the sessions.
	c.MustDo("PUT", backupVersion+"/"+v2, map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
		"auth_data": map[string]any{"public_key": "new"}, "version": v2}, nil)
	var got struct {
		AuthData map[string]string `json:"auth_data"`
	}
	c.MustDo("GET", backupVersion+"/"+v2, nil, &got)
	if got.AuthData["public_key"] != "new" {
		t.Fatalf("auth_data after update: %v", got.AuthData)
	}
	// Deleting the newest makes the one before it current; numbers are
	// not reused.
	c.MustDo("DELETE", backupVersion+"/"+v2, nil, nil)
	c.MustDo("GET", backupVersion, nil, &latest)
	if latest.Version != v1 || latest.Count != 1 {
		t.Fatalf("latest after deleting %s: %+v", v2, latest)
	}
	if v3 := newBackup(t, c); v3 == v2 || v3 == v1 {
		t.Fatalf("new version %s reuses a number", v3)
	}
	var all struct {
		Rooms map[string]struct {
			Sessions map[string]any `json:"sessions"`
		} `json:"rooms"`
	}
	c.MustDo("GET", backupKeys("", v1), nil, &all)
	if len(all.Rooms["!a:test"].Sessions) != 1 {
		t.Fatalf("all keys of %s: %+v", v1, all)
	}
}
