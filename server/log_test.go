package server_test

import (
	"bytes"
	"encoding/json"
	"strings"
	gosync "sync"
	"testing"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// lockedBuffer is a bytes.Buffer the server's goroutines may write to
// while the test reads it.
type lockedBuffer struct {
	mu  gosync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestJSONLog: with log_format json, every line the server writes is one
// JSON object with slog's time, level and msg, and a session's traffic
// (passwords at registration and login, a wrong password, the access
// token in a header and in the query string) leaves neither a password
// nor a token in the log.
func TestJSONLog(t *testing.T) {
	var logs lockedBuffer
	srv := testserver.Start(t, testserver.Options{LogOutput: &logs, Configure: func(c *configs.Config) {
		c.LogFormat = "json"
		c.LogLevel = "debug"
	}})
	alice := srv.Register("alice")
	anon := srv.Anonymous()
	localpart := strings.TrimPrefix(strings.SplitN(alice.UserID, ":", 2)[0], "@")
	login := func(password string) *testserver.Response {
		return anon.Do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
			"identifier": map[string]string{"type": "m.id.user", "user": localpart}, "password": password})
	}
	if r := login("wrong horse battery"); r.Status != 403 {
		t.Fatalf("login with a wrong password: %d %s", r.Status, r.Body)
	}
	r := login("correct horse battery")
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if r.Status != 200 || r.JSON(&out) != nil || out.AccessToken == "" {
		t.Fatalf("login: %d %s", r.Status, r.Body)
	}
	room := alice.CreateRoom(map[string]any{"name": "logged"})
	alice.SendText(room, "hello")
	if r := anon.Do("GET", "/_matrix/client/v3/sync?timeout=0&access_token="+out.AccessToken, nil); r.Status != 200 {
		t.Fatalf("sync with the token in the query: %d %s", r.Status, r.Body)
	}
	if r := anon.Do("GET", "/_matrix/client/v3/sync?timeout=0&access_token=not_a_token", nil); r.Status != 401 {
		t.Fatalf("sync with an unknown token: %d %s", r.Status, r.Body)
	}
	srv.Stop()

	text := logs.String()
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if text == "" || len(lines) == 0 {
		t.Fatal("the server logged nothing")
	}
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d is not a JSON object: %v\n%s", i+1, err, line)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("line %d has no %q: %s", i+1, k, line)
			}
		}
	}
	for _, secret := range []string{alice.Token, out.AccessToken, "not_a_token", "correct horse battery", "wrong horse battery", "access_token"} {
		if strings.Contains(text, secret) {
			t.Errorf("the log carries %q:\n%s", secret, text)
		}
	}
	if !strings.Contains(text, `"msg":"serving client API"`) {
		t.Errorf("the start-up line is missing:\n%s", text)
	}
}
