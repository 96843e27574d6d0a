package cluster_test

import (
	"context"
	"database/sql"
	"net/url"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage/postgres"
	"github.com/persistentchat/homeserver/testserver"
)

// openAdmin opens a connection to the cluster's database as the test, to
// look at and end the servers' connections.
func openAdmin(t *testing.T, s *testserver.Server) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", s.Config.Database.Postgres().DSN.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// listenerPID returns the backend pid of srv's listening connection, or 0
// while it has none.
func listenerPID(t *testing.T, db *sql.DB, srv *testserver.Server) int {
	t.Helper()
	var pid int
	err := db.QueryRow(`SELECT pid FROM pg_stat_activity WHERE application_name = $1`,
		postgres.ListenAppName(srv.HS.DB().Origin())).Scan(&pid)
	if err == sql.ErrNoRows {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// dropListener ends srv's listening connection from the database's side
// (as a restart of PostgreSQL, a network cut or an idle-connection killer
// would) and returns the pid it ended.
func dropListener(t *testing.T, db *sql.DB, srv *testserver.Server) int {
	t.Helper()
	pid := listenerPID(t, db, srv)
	if pid == 0 {
		t.Fatal("the server has no listening connection")
	}
	var ok bool
	// With a timeout, pg_terminate_backend returns once the backend has
	// gone: the announcements of the commits that follow cannot reach it.
	if err := db.QueryRow(`SELECT pg_terminate_backend($1, 10000)`, pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
	}
	return pid
}

// waitListener waits until srv listens again on a connection other than
// old's.
func waitListener(t *testing.T, db *sql.DB, srv *testserver.Server, old int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if pid := listenerPID(t, db, srv); pid != 0 && pid != old {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		<-ctx.Done() // a poll with a deadline: the reconnection has no hook to wait on from here
		cancel()
	}
	t.Fatal("the server did not listen again within 30s")
}

// TestListenerDroppedWhileAnotherCommits: B's LISTEN connection is ended
// by the database, and held from reconnecting while A renames the room, so
// that no announcement of the rename reaches B. Once B listens again it
// catches up by itself, with no request to B to help (each request first
// reads the streams' heads, see Follower.Barrier): the /sync long-poll
// parked on B before the drop answers with the rename, and B's room cache
// has the new name. A rename notifies nobody (default push rules), so no
// notification count wakes the poll first.
func TestListenerDroppedWhileAnotherCommits(t *testing.T) {
	a, b, alice, bob, room := roomSetup(t)
	admin := openAdmin(t, a)
	since := mustSync(t, bob, "timeout=0").NextBatch
	statePath := csAPI + "/rooms/" + url.PathEscape(room) + "/state/m.room.name/"
	// B caches the room's state, with no name.
	if r := bob.Do("GET", statePath, nil); r.Status != 404 {
		t.Fatalf("name on B before: %d %s", r.Status, r.Body)
	}

	done := longPoll(t, b, bob, since)
	release := b.HS.HoldListening()
	defer release()
	old := dropListener(t, admin, b)
	// Nobody listens on B now: this announcement is lost to it.
	alice.MustDo("PUT", statePath, map[string]any{"name": "while away"}, nil)
	release()
	waitListener(t, admin, b, old)

	r := <-done
	if r == nil {
		t.Fatal("B's long-poll failed")
	}
	evs := r.Rooms.Join[room].Timeline.Events
	if len(evs) != 1 || evs[0].Type != "m.room.name" {
		t.Fatalf("B's long-poll answered %+v (next_batch %s, since %s), want the rename", evs, r.NextBatch, since)
	}
	st, err := b.HS.Rooms.State(context.Background(), roomdag.RoomID(room))
	if err != nil {
		t.Fatal(err)
	}
	if ev := st.State.Get("m.room.name", ""); ev == nil || !strings.Contains(string(ev.Content()), "while away") {
		t.Fatalf("B's room cache has name event %v, want the one set while B was away", ev)
	}
	// And the streams go on: the next message reaches B as an announcement.
	done = longPoll(t, b, bob, r.NextBatch)
	id := alice.SendText(room, "back")
	for {
		r = <-done
		if r == nil {
			t.Fatal("B's long-poll failed")
		}
		if evs := r.Rooms.Join[room].Timeline.Events; len(evs) > 0 {
			if evs[len(evs)-1].EventID != id {
				t.Fatalf("B's long-poll answered %+v, want %s", evs, id)
			}
			break
		}
		done = longPoll(t, b, bob, r.NextBatch) // woken by a notification count first
	}
}
