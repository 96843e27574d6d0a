package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/storage/port"
	"github.com/persistentchat/homeserver/testserver"
)

// TestPortDB builds a department's data on SQLite through the real server,
// ports it to a new PostgreSQL database with migrate-sqlite-to-postgres,
// starts the server on PostgreSQL over the same data directory (media
// files, signing key) and checks that clients see the same data: their
// tokens and passwords, /sync, /messages, search, account data, pushers,
// media; and that new writes do not collide with copied positions and IDs.
// Porting again into the now non-empty database is refused.
func TestPortDB(t *testing.T) {
	if os.Getenv(testserver.PostgresEnv) == "" {
		t.Skipf("porting to PostgreSQL needs a cluster: set %s to an admin DSN (scripts/pgcluster.sh start DIR writes one to DIR/dsn)", testserver.PostgresEnv)
	}
	dir := t.TempDir()
	onSQLite := func(c *configs.Config) { c.Database = configs.Default().Database }
	src := testserver.Start(t, testserver.Options{DataDir: dir, Configure: onSQLite})

	alice, bob := src.Register("alice"), src.Register("bob")
	room := alice.CreateRoom(map[string]any{"name": "Pineapple planning", "topic": "fruit logistics", "preset": "public_chat"})
	bob.Join(room)
	alice.SendText(room, "the pineapple shipment arrives on Tuesday")
	bob.SendText(room, "Grüße: the crème brûlée is ready")
	secret := bob.SendText(room, "pineapple password is hunter2")
	bob.MustDo("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/redact/%s/r1", url.PathEscape(room), url.PathEscape(secret)),
		map[string]any{"reason": "oops"}, nil)
	for i := range 30 {
		alice.SendText(room, fmt.Sprintf("message %d about bananas", i))
	}
	alice.MustDo("PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/account_data/org.example.settings",
		map[string]any{"theme": "dark"}, nil)
	alice.MustDo("PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/rooms/"+url.PathEscape(room)+"/account_data/org.example.pin",
		map[string]any{"pinned": true}, nil)
	var upload struct {
		ContentURI string `json:"content_uri"`
	}
	alice.MustDo("POST", "/_matrix/media/v3/upload?filename=plan.txt", []byte("the plan, in a file"), &upload)
	pusherBody := func(key string) map[string]any {
		return map[string]any{"kind": "http", "app_id": "org.example.app", "pushkey": key, "app_display_name": "Example",
			"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": "http://127.0.0.1:9/_matrix/push/v1/notify"}}
	}
	bob.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("bob-phone"), nil)
	src.Settle()

	// What the clients see on SQLite.
	type view struct {
		timeline, state, accountData any
		messages, search, pushers    any
		roomData                     any
	}
	look := func(s *testserver.Server) view {
		t.Helper()
		for _, c := range []*testserver.Client{alice, bob} {
			c.Base = s.URL
		}
		var v view
		sync := alice.Sync("timeout=0&filter=" + url.QueryEscape(`{"room":{"timeline":{"limit":100}}}`))
		joined := sync["rooms"].(map[string]any)["join"].(map[string]any)[room].(map[string]any)
		v.timeline = joined["timeline"].(map[string]any)["events"]
		v.state = joined["state"]
		v.roomData = joined["account_data"]
		v.accountData = sync["account_data"]
		var msgs map[string]any
		alice.MustDo("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=100", nil, &msgs)
		v.messages = msgs["chunk"]
		var search map[string]any
		alice.MustDo("POST", "/_matrix/client/v3/search", map[string]any{"search_categories": map[string]any{
			"room_events": map[string]any{"search_term": "pineapple"}}}, &search)
		v.search = search["search_categories"].(map[string]any)["room_events"].(map[string]any)["results"]
		var pushers map[string]any
		bob.MustDo("GET", "/_matrix/client/v3/pushers", nil, &pushers)
		v.pushers = pushers["pushers"]
		return v
	}
	before := look(src)
	if hits, _ := before.search.([]any); len(hits) != 2 { // the name and the message; the redacted one is gone
		t.Fatalf("search on SQLite: %d hits, want 2: %v", len(hits), before.search)
	}
	src.Stop()

	dsn := testserver.PostgresDatabase(t)
	var out bytes.Buffer
	cfgPath := dir + "/homeserver.yaml"
	writeConfig(t, cfgPath, src.Config)
	if err := portDB([]string{"--config", cfgPath, "--postgres", dsn}, &out); err != nil {
		t.Fatalf("port: %v\n%s", err, out.String())
	}
	t.Logf("port:\n%s", out.String())
	for _, want := range []string{"events", "pushers", "media", "account_data", "verified"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary has no %q:\n%s", want, out.String())
		}
	}

	onPostgres := func(c *configs.Config) {
		c.Database = configs.Database{Name: configs.EnginePostgres, Args: configs.DatabaseArgs{DSN: configs.NewSecret(dsn), CPMin: 1, CPMax: 4}}
	}
	dst := testserver.Start(t, testserver.Options{DataDir: dir, Configure: onPostgres})
	after := look(dst)
	for name, pair := range map[string][2]any{
		"timeline": {before.timeline, after.timeline}, "state": {before.state, after.state},
		"account data": {before.accountData, after.accountData}, "room account data": {before.roomData, after.roomData},
		"messages": {before.messages, after.messages}, "search": {before.search, after.search}, "pushers": {before.pushers, after.pushers},
	} {
		dropAge(pair[0])
		dropAge(pair[1])
		if !reflect.DeepEqual(pair[0], pair[1]) {
			a, _ := json.Marshal(pair[0])
			b, _ := json.Marshal(pair[1])
			t.Errorf("%s differs after the port:\nSQLite:     %s\nPostgreSQL: %s", name, a, b)
		}
	}
	// The password survived, and so did the media (file on disk, metadata
	// in the database).
	anon := dst.Anonymous()
	login := anon.Do("POST", "/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": alice.UserID}, "password": "correct horse battery"})
	if login.Status != 200 {
		t.Errorf("login on PostgreSQL: %d %s", login.Status, login.Body)
	}
	media := alice.Do("GET", "/_matrix/client/v1/media/download/"+strings.TrimPrefix(upload.ContentURI, "mxc://"), nil)
	if media.Status != 200 || string(media.Body) != "the plan, in a file" {
		t.Errorf("media on PostgreSQL: %d %q", media.Status, media.Body)
	}
	// New writes take positions and IDs after the copied ones.
	newer := alice.SendText(room, "after the port, pineapple again")
	bob.MustDo("POST", "/_matrix/client/v3/pushers/set", pusherBody("bob-tablet"), nil)
	var search map[string]any
	alice.MustDo("POST", "/_matrix/client/v3/search", map[string]any{"search_categories": map[string]any{
		"room_events": map[string]any{"search_term": "pineapple"}}}, &search)
	results := search["search_categories"].(map[string]any)["room_events"].(map[string]any)["results"].([]any)
	found := false
	for _, r := range results {
		found = found || r.(map[string]any)["result"].(map[string]any)["event_id"] == newer
	}
	if len(results) != 3 || !found {
		t.Errorf("search after a new message: %d results, %s among them: %v; want 3", len(results), newer, found)
	}
	var pushers map[string]any
	bob.MustDo("GET", "/_matrix/client/v3/pushers", nil, &pushers)
	if n := len(pushers["pushers"].([]any)); n != 2 {
		t.Errorf("%d pushers after adding one on PostgreSQL, want 2", n)
	}
	dst.Stop()

	// The target now holds data: a second port is refused, and says why.
	out.Reset()
	err := portDB([]string{"--sqlite", src.Config.DatabasePath(), "--postgres", dsn}, &out)
	if !errors.Is(err, port.ErrTargetNotEmpty) || !strings.Contains(err.Error(), "events") {
		t.Errorf("port into a database with data: %v", err)
	}
}

// dropAge removes unsigned.age, which is the time since the event was sent,
// from every event in v.
func dropAge(v any) {
	switch x := v.(type) {
	case map[string]any:
		if u, ok := x["unsigned"].(map[string]any); ok {
			delete(u, "age")
		}
		for _, e := range x {
			dropAge(e)
		}
	case []any:
		for _, e := range x {
			dropAge(e)
		}
	}
}

// writeConfig saves cfg as YAML for --config.
func writeConfig(t *testing.T, path string, cfg *configs.Config) {
	t.Helper()
	data := fmt.Sprintf("server_name: %q\ndata_dir: %q\ndatabase:\n  name: sqlite3\n  args:\n    database: %q\n",
		cfg.ServerName, cfg.DataDir, cfg.DatabasePath())
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPortDBMeasure times a port of a larger database, made through the
// real server: set HOMESERVER_PORT_EVENTS to the number of messages (e.g.
// 100000) and HOMESERVER_TEST_POSTGRES. The summary (rows/s) is logged.
func TestPortDBMeasure(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("HOMESERVER_PORT_EVENTS"))
	if n <= 0 || os.Getenv(testserver.PostgresEnv) == "" {
		t.Skipf("a measurement: set HOMESERVER_PORT_EVENTS (e.g. 100000) and %s", testserver.PostgresEnv)
	}
	dir := t.TempDir()
	src := testserver.Start(t, testserver.Options{DataDir: dir, Configure: func(c *configs.Config) { c.Database = configs.Default().Database }})
	const senders, rooms = 16, 8
	owner := src.Register("owner")
	roomIDs := make([]string, rooms)
	for i := range roomIDs {
		roomIDs[i] = owner.CreateRoom(map[string]any{"preset": "public_chat", "name": fmt.Sprintf("room %d", i)})
	}
	start := time.Now()
	var wg gosync.WaitGroup
	var failed atomic.Int64
	for s := range senders {
		c := src.Register("sender")
		for _, r := range roomIDs {
			c.Join(r)
		}
		wg.Go(func() {
			for i := s; i < n; i += senders {
				path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/m%d", url.PathEscape(roomIDs[i%rooms]), i)
				body := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d from sender %d about pineapples and bananas", i, s)}
				if r := c.Do("PUT", path, body); r.Status != 200 {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d sends failed", failed.Load())
	}
	t.Logf("made %d messages in %s", n, time.Since(start).Round(time.Millisecond))
	src.Stop()
	fi, _ := os.Stat(src.Config.DatabasePath())
	var out bytes.Buffer
	if err := portDB([]string{"--sqlite", src.Config.DatabasePath(), "--postgres", testserver.PostgresDatabase(t)}, &out); err != nil {
		t.Fatalf("port: %v", err)
	}
	t.Logf("port of a %d MB database:\n%s", fi.Size()>>20, out.String())
}
