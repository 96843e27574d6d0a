package compliance_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/compliance"
	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"github.com/persistentchat/homeserver/testserver"
)

const secret = "compliance-admin-secret"

func archiving(c *configs.Config) {
	c.Compliance.Enabled = true
	c.Compliance.CheckpointRecords = 1 // every step seals what it appended
	c.RegistrationSharedSecret = configs.NewSecret(secret)
}

func startArchiving(t *testing.T, opts testserver.Options) *testserver.Server {
	t.Helper()
	prev := opts.Configure
	opts.Configure = func(c *configs.Config) {
		if prev != nil {
			prev(c)
		}
		archiving(c)
	}
	return testserver.Start(t, opts)
}

// registerAdmin makes a server admin through the shared-secret
// registration (Synapse's /_synapse/admin/v1/register).
func registerAdmin(t *testing.T, srv *testserver.Server, name string) *testserver.Client {
	t.Helper()
	c := srv.Anonymous()
	var n struct {
		Nonce string `json:"nonce"`
	}
	c.MustDo("GET", "/_synapse/admin/v1/register", nil, &n)
	const password = "correct horse battery admin"
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(n.Nonce + "\x00" + name + "\x00" + password + "\x00admin"))
	var out struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	c.MustDo("POST", "/_synapse/admin/v1/register", map[string]any{"nonce": n.Nonce, "username": name, "password": password,
		"admin": true, "mac": hex.EncodeToString(m.Sum(nil))}, &out)
	c.UserID, c.Token = out.UserID, out.AccessToken
	return c
}

// settle waits until the archiver has archived every committed event,
// drained its queue and sealed its head, polling with a deadline.
func settle(t *testing.T, srv *testserver.Server) *compliance.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	svc := srv.HS.ComplianceService()
	for {
		st, err := svc.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Lag == 0 && st.BackfillLag == 0 && st.ReceivedLag == 0 && st.Queued == 0 && st.SealedSeq == st.HeadSeq {
			return st
		}
		pos, err := srv.HS.DB().EventPos(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 50*time.Millisecond)
		srv.HS.Compliance.Notify()
		srv.HS.Compliance.Wait(wctx, pos)
		wcancel()
		if ctx.Err() != nil {
			t.Fatalf("the archive did not settle: %+v", st)
		}
	}
}

func roomPath(room string, rest ...string) string {
	return "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/" + strings.Join(rest, "/")
}

var txn int

func send(t *testing.T, c *testserver.Client, room, typ string, content map[string]any) string {
	t.Helper()
	txn++
	var out struct {
		EventID string `json:"event_id"`
	}
	c.MustDo("PUT", roomPath(room, "send", typ, fmt.Sprint("c", txn)), content, &out)
	return out.EventID
}

func export(t *testing.T, admin *testserver.Client, query string) []byte {
	t.Helper()
	r := admin.Do("GET", "/_persistentchat/admin/v1/compliance/export?"+query, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("export %s: %d %s", query, r.Status, r.Body)
	}
	return r.Body
}

// records reads a jsonl export's records, checking it first as a
// recipient would, without the server.
func records(t *testing.T, b []byte) ([]storage.ComplianceRecord, *compliance.Manifest) {
	t.Helper()
	m, n, err := compliance.VerifyExport(bytes.NewReader(b), nil)
	if err != nil {
		t.Fatalf("the export does not verify: %v\n%s", err, b)
	}
	var out []storage.ComplianceRecord
	for _, line := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(line, []byte(`{"record":`)) {
			var r struct {
				Record struct {
					Seq               int64
					Kind, Actor, Room string
					Payload           any
				}
			}
			if err := jsonUnmarshal(line, &r); err != nil {
				t.Fatal(err)
			}
			out = append(out, storage.ComplianceRecord{Seq: r.Record.Seq, Kind: r.Record.Kind, Actor: r.Record.Actor,
				Room: r.Record.Room, Payload: string(line)})
		}
	}
	if int64(len(out)) != n {
		t.Fatalf("read %d records, verified %d", len(out), n)
	}
	return out, m
}

// TestScenario sends, edits, redacts, uploads, downloads and reads
// history across rooms and users through the client API, then exports by
// user, by room and by time range through the admin API, and finds every
// record, the original of the redacted message too, in exports a
// recipient verifies without the server.
func TestScenario(t *testing.T) {
	srv := startArchiving(t, testserver.Options{})
	admin := registerAdmin(t, srv, "auditor")
	alice, bob := srv.Register("alice"), srv.Register("bob")
	r1 := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.Join(r1)
	r2 := bob.CreateRoom(map[string]any{"preset": "private_chat"})

	m1 := send(t, alice, r1, "m.room.message", map[string]any{"msgtype": "m.text", "body": "first draft"})
	send(t, alice, r1, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* final text",
		"m.new_content": map[string]any{"msgtype": "m.text", "body": "final text"}, "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": m1}})
	secretMsg := send(t, alice, r1, "m.room.message", map[string]any{"msgtype": "m.text", "body": "the launch code is 0000"})
	alice.MustDo("PUT", roomPath(r1, "redact", secretMsg, "rd1"), map[string]any{"reason": "oops"}, nil)
	var up struct {
		ContentURI string `json:"content_uri"`
	}
	alice.MustDo("POST", "/_matrix/media/v3/upload?filename=report.txt", []byte("quarterly figures"), &up)
	send(t, alice, r1, "m.room.message", map[string]any{"msgtype": "m.file", "body": "report.txt", "url": up.ContentURI})
	mid := time.Now()
	send(t, bob, r2, "m.room.message", map[string]any{"msgtype": "m.text", "body": "bob alone"})
	if r := bob.Do("GET", "/_matrix/client/v1/media/download/"+strings.TrimPrefix(up.ContentURI, "mxc://"), nil); r.Status != http.StatusOK {
		t.Fatalf("download: %d %s", r.Status, r.Body)
	}
	bob.MustDo("GET", roomPath(r1, "messages")+"?dir=b&limit=10", nil, nil)
	bob.MustDo("GET", roomPath(r1, "context", m1), nil, nil)
	bob.MustDo("POST", "/_matrix/client/v3/search", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "final"}}}, nil)
	settle(t, srv)

	// Only server admins reach the admin API.
	for _, path := range []string{"status", "export?format=jsonl"} {
		if r := bob.Do("GET", "/_persistentchat/admin/v1/compliance/"+path, nil); r.Status != http.StatusForbidden || r.Errcode() != "M_FORBIDDEN" {
			t.Errorf("a non-admin's %s: %d %s", path, r.Status, r.Body)
		}
	}
	if r := bob.Do("POST", "/_persistentchat/admin/v1/compliance/verify", nil); r.Status != http.StatusForbidden {
		t.Errorf("a non-admin's verify: %d %s", r.Status, r.Body)
	}
	if r := admin.Do("GET", "/_persistentchat/admin/v1/compliance/export?format=pdf", nil); r.Status != http.StatusBadRequest {
		t.Errorf("an unknown format: %d %s", r.Status, r.Body)
	}

	has := func(rs []storage.ComplianceRecord, kind string, substr ...string) bool {
	next:
		for _, r := range rs {
			if r.Kind != kind {
				continue
			}
			for _, s := range substr {
				if !strings.Contains(r.Payload, s) {
					continue next
				}
			}
			return true
		}
		return false
	}

	t.Run("by user", func(t *testing.T) {
		rs, m := records(t, export(t, admin, "user="+url.QueryEscape(alice.UserID)))
		if m.Records == 0 || m.Checkpoint == nil {
			t.Fatalf("manifest: %+v", m)
		}
		for _, want := range []struct {
			kind string
			sub  []string
		}{
			{compliance.KindEvent, []string{m1, "first draft"}},
			{compliance.KindEvent, []string{"m.replace", "final text"}},
			// The original of the redacted message, in its own record and
			// in the redaction's.
			{compliance.KindEvent, []string{`"event_id":"` + secretMsg, "the launch code is 0000"}},
			{compliance.KindEvent, []string{"m.room.redaction", `"removed"`, "the launch code is 0000"}},
			{compliance.KindMediaUpload, []string{up.ContentURI}},
			{compliance.KindEvent, []string{"m.room.create"}},
		} {
			if !has(rs, want.kind, want.sub...) {
				t.Errorf("no %s record with %q", want.kind, want.sub)
			}
		}
		// Others' events in r1, where alice was joined throughout, are in
		// her conversations; bob's room r2 and his own reads are not.
		if !has(rs, compliance.KindEvent, `"membership":"join"`, `"sender":"`+bob.UserID) {
			t.Error("bob's join of alice's room is not in her export")
		}
		for _, r := range rs {
			if r.Actor != alice.UserID && (r.Kind != compliance.KindEvent || r.Room != r1) {
				t.Errorf("record %d (%s of %s in %s) is not of alice's conversations", r.Seq, r.Kind, r.Actor, r.Room)
			}
		}
	})
	t.Run("by room", func(t *testing.T) {
		rs, _ := records(t, export(t, admin, "room="+url.QueryEscape(r2)))
		if !has(rs, compliance.KindEvent, "bob alone") {
			t.Error("no record of bob's message")
		}
		for _, r := range rs {
			if r.Room != r2 {
				t.Errorf("record %d is of room %s", r.Seq, r.Room)
			}
		}
		rs, _ = records(t, export(t, admin, "user="+url.QueryEscape(bob.UserID)+"&room="+url.QueryEscape(r1)))
		for _, want := range []struct{ kind, sub string }{
			{compliance.KindHistoryRead, "/messages"},
			{compliance.KindHistoryRead, "/context/"},
			{compliance.KindEvent, `"membership":"join"`},
		} {
			if !has(rs, want.kind, want.sub) {
				t.Errorf("no %s record with %q in bob's records of r1", want.kind, want.sub)
			}
		}
		rs, _ = records(t, export(t, admin, "user="+url.QueryEscape(bob.UserID)))
		if !has(rs, compliance.KindMediaDownload, up.ContentURI) || !has(rs, compliance.KindHistoryRead, "/search", "final") {
			t.Error("no record of bob's download or search")
		}
	})
	t.Run("by time", func(t *testing.T) {
		ms := fmt.Sprint(mid.UnixMilli())
		after, _ := records(t, export(t, admin, "from="+ms))
		before, _ := records(t, export(t, admin, "to="+ms))
		if !has(after, compliance.KindEvent, "bob alone") || has(after, compliance.KindEvent, "first draft") {
			t.Error("the export from the middle holds the wrong records")
		}
		if has(before, compliance.KindEvent, "bob alone") || !has(before, compliance.KindEvent, "first draft") {
			t.Error("the export up to the middle holds the wrong records")
		}
		none, m := records(t, export(t, admin, "to="+url.QueryEscape("2001-01-01")))
		if len(none) != 0 || m.Records != 0 {
			t.Errorf("an export of 2000: %d records", len(none))
		}
	})
	t.Run("formats", func(t *testing.T) {
		for _, f := range []string{"csv", "eml", "xml"} {
			b := export(t, admin, "format="+f+"&room="+url.QueryEscape(r1))
			for _, want := range []string{"the launch code is 0000", up.ContentURI, "manifest"} {
				if !bytes.Contains(b, []byte(want)) {
					t.Errorf("%s export lacks %q", f, want)
				}
			}
		}
		x := export(t, admin, "format=xml&room="+url.QueryEscape(r1))
		for _, want := range []string{"<conversation id=", "<participants>", "<participant id=", "<message ", `<attachment uri="` + up.ContentURI} {
			if !bytes.Contains(x, []byte(want)) {
				t.Errorf("xml export lacks %q", want)
			}
		}
	})
	t.Run("verify and counts", func(t *testing.T) {
		var v struct {
			OK      bool  `json:"ok"`
			Records int64 `json:"records"`
		}
		admin.MustDo("POST", "/_persistentchat/admin/v1/compliance/verify", nil, &v)
		if !v.OK || v.Records == 0 {
			t.Errorf("verify: %+v", v)
		}
		st := settle(t, srv)
		// Every export and verify above is itself archived.
		rs, _ := records(t, export(t, admin, "user="+url.QueryEscape(admin.UserID)))
		if !has(rs, compliance.KindAdminAction, `"action":"export"`) || !has(rs, compliance.KindAdminAction, `"action":"verify"`) {
			t.Error("no admin_action records of the exports and verify")
		}
		if st.Records == 0 {
			t.Errorf("status: %+v", st)
		}
		wantEventRecords(t, srv)
	})
}

// wantEventRecords checks that every stored event has exactly one record.
func wantEventRecords(t *testing.T, srv *testserver.Server) {
	t.Helper()
	db := srv.SQL()
	var events, recs int64
	if err := db.QueryRow(`SELECT COUNT(*) FROM events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT COUNT(*) FROM compliance_records WHERE kind = 'event'`).Scan(&recs); err != nil {
		t.Fatal(err)
	}
	if events == 0 || recs != events {
		t.Errorf("%d event records for %d events", recs, events)
	}
}

// rw opens the server's database for writing, to tamper with it.
func rw(t *testing.T, srv *testserver.Server) (*sql.DB, func(string) string) {
	t.Helper()
	var db *sql.DB
	var err error
	q := func(s string) string { return s }
	if srv.Config.Database.Name == configs.EnginePostgres {
		db, err = sql.Open("pgx", srv.Config.Database.Postgres().DSN.Reveal())
		q = func(s string) string {
			for i := 1; strings.Contains(s, "?"); i++ {
				s = strings.Replace(s, "?", fmt.Sprintf("$%d", i), 1)
			}
			return s
		}
	} else {
		db, err = sql.Open("sqlite3", "file:"+srv.Config.DatabasePath()+"?_pragma=busy_timeout(5000)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, q
}

// TestTampering changes a byte of one record, deletes one, and swaps a
// pair: verify names the record each time, and passes once undone.
func TestTampering(t *testing.T) {
	srv := startArchiving(t, testserver.Options{})
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	for i := range 6 {
		send(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": fmt.Sprint("hello ", i)})
	}
	st := settle(t, srv)
	ctx := t.Context()
	key := srv.HS.ComplianceService().Public
	server := roomdag.ServerName(srv.Config.ServerName)
	verify := func(from int64) compliance.Report {
		t.Helper()
		rep, err := compliance.Verify(ctx, srv.HS.DB(), server, key, from)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := verify(0); !rep.OK() || rep.Records != st.HeadSeq || rep.Checkpoints == 0 {
		t.Fatalf("untouched archive: %+v (status %+v)", rep, st)
	}
	db, q := rw(t, srv)
	exec := func(s string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q(s), args...); err != nil {
			t.Fatal(err)
		}
	}
	var target int64
	if err := db.QueryRow(`SELECT MIN(seq) FROM compliance_records WHERE payload LIKE '%hello 3%'`).Scan(&target); err != nil {
		t.Fatal(err)
	}
	type row struct {
		ts                                                int64
		kind, actor, room, payload, rhash, prevHash, hash string
	}
	read := func(seq int64) row {
		var r row
		if err := db.QueryRow(q(`SELECT ts, kind, actor, room, payload, record_hash, prev_hash, hash FROM compliance_records WHERE seq = ?`), seq).
			Scan(&r.ts, &r.kind, &r.actor, &r.room, &r.payload, &r.rhash, &r.prevHash, &r.hash); err != nil {
			t.Fatal(err)
		}
		return r
	}
	put := func(seq int64, r row) {
		exec(`UPDATE compliance_records SET ts = ?, kind = ?, actor = ?, room = ?, payload = ?, record_hash = ?, prev_hash = ?, hash = ? WHERE seq = ?`,
			r.ts, r.kind, r.actor, r.room, r.payload, r.rhash, r.prevHash, r.hash, seq)
	}
	orig, next := read(target), read(target+1)
	for _, tc := range []struct {
		name         string
		tamper, undo func()
		want         string
	}{
		{"changed byte", func() {
			r := orig
			r.payload = strings.Replace(r.payload, "hello 3", "hellp 3", 1)
			put(target, r)
		}, func() { put(target, orig) }, "content"},
		{"deleted row", func() { exec(`DELETE FROM compliance_records WHERE seq = ?`, target) }, func() {
			exec(`INSERT INTO compliance_records (seq, ts, kind, actor, room, payload, record_hash, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?)`,
				target, orig.ts, orig.kind, orig.actor, orig.room, orig.payload, orig.rhash, orig.prevHash, orig.hash)
		}, "missing"},
		{"reordered pair", func() { put(target, next); put(target+1, orig) }, func() { put(target, orig); put(target+1, next) }, ""},
		{"rehashed record", func() {
			// A tamperer who recomputes the record's own hashes still
			// breaks the link to the next record.
			r := orig
			r.payload = strings.Replace(r.payload, "hello 3", "hellp 3", 1)
			rec := storage.ComplianceRecord{Seq: target, TS: r.ts, Kind: r.kind, Actor: r.actor, Room: r.room, Payload: r.payload}
			rh, _ := compliance.RecordHash(rec)
			h, _ := compliance.Link(r.prevHash, rh)
			r.rhash, r.hash = rh, h
			put(target, r)
		}, func() { put(target, orig) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.tamper()
			rep := verify(0)
			tc.undo()
			if rep.OK() || rep.BadSeq < target || rep.BadSeq > target+1 || !strings.Contains(rep.Problem, tc.want) {
				t.Errorf("verify after %s of record %d: %+v", tc.name, target, rep)
			}
			if rep := verify(0); !rep.OK() {
				t.Errorf("verify after undoing: %+v", rep)
			}
		})
	}
	if rep := verify(target + 1); !rep.OK() || rep.Records != st.HeadSeq-target {
		t.Errorf("verify --from %d: %+v", target+1, rep)
	}
}

// TestResume archives what was committed while the archiver was down:
// events sent with compliance off, then events sent while the server is
// stopped in the middle of archiving; each restart resumes from the
// stored position, and records count exactly the events.
func TestResume(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	for i := range 20 {
		send(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": fmt.Sprint("before ", i)})
	}
	srv.Stop()
	for round := range 3 {
		srv = startArchiving(t, testserver.Options{DataDir: srv.DataDir})
		alice.Base = srv.URL
		// Stop while the archiver is busy with what came before.
		for i := range 30 {
			send(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": fmt.Sprint("round ", round, " ", i)})
		}
		srv.Stop()
	}
	srv = startArchiving(t, testserver.Options{DataDir: srv.DataDir})
	settle(t, srv)
	wantEventRecords(t, srv)
	rep, err := compliance.Verify(t.Context(), srv.HS.DB(), roomdag.ServerName(srv.Config.ServerName), srv.HS.ComplianceService().Public, 0)
	if err != nil || !rep.OK() {
		t.Errorf("verify: %+v %v", rep, err)
	}
}

// TestRedactionKeepsOriginal: the redaction's transaction copies the
// original aside only while compliance is on; the events table itself
// holds the redacted copy either way.
func TestRedactionKeepsOriginal(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprint("compliance ", on), func(t *testing.T) {
			opts := testserver.Options{}
			var srv *testserver.Server
			if on {
				srv = startArchiving(t, opts)
			} else {
				srv = testserver.Start(t, opts)
			}
			alice := srv.Register("alice")
			room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
			ev := send(t, alice, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "regret"})
			alice.MustDo("PUT", roomPath(room, "redact", ev, "r1"), map[string]any{}, nil)
			orig, err := srv.HS.DB().ComplianceOriginal(t.Context(), roomdag.EventID(ev))
			switch {
			case on && (err != nil || !bytes.Contains(orig, []byte("regret"))):
				t.Errorf("original: %s, %v", orig, err)
			case !on && err == nil:
				t.Errorf("compliance off kept the original: %s", orig)
			}
			if on {
				// An archiver that reads the event only now, after the
				// redaction committed, reads the original.
				evs, err := srv.HS.DB().ComplianceEvents(t.Context(), 0, 1000)
				if err != nil {
					t.Fatal(err)
				}
				found := false
				for _, e := range evs {
					if e.ID == roomdag.EventID(ev) {
						found = e.Redacted && bytes.Contains(e.Original, []byte("regret")) && !bytes.Contains(e.JSON, []byte("regret"))
					}
				}
				if !found {
					t.Error("the archiver's read of the redacted event has no original")
				}
			}
			var stored string
			if err := srv.SQL().QueryRow(`SELECT json FROM events WHERE event_id = '` + ev + `'`).Scan(&stored); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(stored, "regret") {
				t.Errorf("the events table kept the content: %s", stored)
			}
		})
	}
}

// TestUserExportJoinedBeforeArchiving: bob joined alice's room and they
// chatted while compliance was off. Switched on, the archiver archives
// that history too; once retention has purged those records, bob's join
// among them, the archive holds no join of bob's, and his export
// follows the server's membership instead: alice's later messages in the
// room are in it, and not in the export of carol, who never joined.
func TestUserExportJoinedBeforeArchiving(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	bob := srv.Register("bob")
	carol := srv.Register("carol")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	bob.MustDo("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
	alice.SendText(room, "before archiving began")
	bob.SendText(room, "bob before archiving began")
	srv.Stop()

	srv = startArchiving(t, testserver.Options{DataDir: srv.DataDir})
	alice.Base, bob.Base = srv.URL, srv.URL
	admin := registerAdmin(t, srv, "auditor")
	settle(t, srv)
	rs, _ := records(t, export(t, admin, "user="+url.QueryEscape(bob.UserID)))
	if !archivedIn(rs, compliance.KindEvent, "before archiving began", `"sender":"`+alice.UserID) {
		t.Error("bob's export lacks alice's message from before archiving began")
	}
	var cut int64
	if err := srv.SQL().QueryRow(`SELECT MAX(ts) FROM compliance_records WHERE kind = 'event'`).Scan(&cut); err != nil {
		t.Fatal(err)
	}
	n, err := srv.HS.DB().PurgeCompliance(t.Context(), "", cut+1, func(string, string, string) bool { return false })
	if err != nil || n == 0 {
		t.Fatalf("purged %d, %v", n, err)
	}
	later := alice.SendText(room, "after archiving began")
	settle(t, srv)
	rs, _ = records(t, export(t, admin, "user="+url.QueryEscape(bob.UserID)))
	if !archivedIn(rs, compliance.KindEvent, `"event_id":"`+later) {
		t.Error("bob's export lacks alice's message sent while he was in the room, his join purged from the archive")
	}
	rs, _ = records(t, export(t, admin, "user="+url.QueryEscape(carol.UserID)))
	if archivedIn(rs, compliance.KindEvent, `"event_id":"`+later) {
		t.Error("carol's export holds a message of a room she never joined")
	}
}
