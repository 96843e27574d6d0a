package postgres

import (
	"database/sql"
	"errors"
	"testing"
	"time"
)

func TestDialect(t *testing.T) {
	db, err := openTestPools(Options{DSN: testDSN(t), MinConns: 1, MaxConns: 3}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var d Dialect
	ins := `INSERT INTO events (stream_pos, event_id, room_nid, type, sender, depth, origin_ts, json, state_before, state_after)
		VALUES (?, ?, 1, 'm.room.member', '@s:x', 1, 0, ?, 0, 0)`
	doc := []byte(`{"content":{"membership":"join","n":5,"m.relates_to":{"it's":"q\"uote"},"nul":"a\u0000b","lit":"\\u0000"}}`)
	if _, err := db.w.Exec(ins, 1, "$1", doc); err != nil {
		t.Fatal(err)
	}
	_, err = db.w.Exec(ins, 2, "$1", doc)
	if !d.IsUniqueViolation(err) {
		t.Errorf("duplicate event_id: IsUniqueViolation(%v) = false", err)
	}
	_, err = db.w.Exec(`INSERT INTO events (stream_pos) VALUES (3)`)
	if err == nil || d.IsUniqueViolation(err) {
		t.Errorf("NOT NULL violation: IsUniqueViolation(%v) = true", err)
	}
	if d.IsUniqueViolation(errors.New("23505")) || d.IsUniqueViolation(nil) {
		t.Error("IsUniqueViolation of a non-PostgreSQL error")
	}
	for _, c := range []struct {
		path []string
		want sql.NullString
	}{
		{[]string{"content", "membership"}, sql.NullString{String: "join", Valid: true}},
		{[]string{"content", "n"}, sql.NullString{String: "5", Valid: true}},
		{[]string{"content", "m.relates_to", "it's"}, sql.NullString{String: `q"uote`, Valid: true}},
		{[]string{"content", "missing"}, sql.NullString{}},
		{[]string{"content", "nul"}, sql.NullString{String: "a\ufffdb", Valid: true}},
		{[]string{"content", "lit"}, sql.NullString{String: `\ufffd`, Valid: true}},
		{[]string{"content", "membership", "deeper"}, sql.NullString{}},
	} {
		var got sql.NullString
		if err := db.r.QueryRow(`SELECT ` + d.JSONText("json", c.path...) + ` FROM events WHERE stream_pos = 1`).Scan(&got); err != nil {
			t.Errorf("JSONText %v: %v", c.path, err)
		} else if got != c.want {
			t.Errorf("JSONText %v = %+v, want %+v", c.path, got, c.want)
		}
	}
	if d.Name() != "postgres" {
		t.Errorf("Name %q", d.Name())
	}
}

// BeginBatch orders the writers of several processes: a second writer's
// batch waits until the first one's commits.
func TestBeginBatchSerialises(t *testing.T) {
	dsn := testDSN(t)
	var d Dialect
	a, err := openTestPools(Options{DSN: dsn, MinConns: 1, MaxConns: 2}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := openTestPools(Options{DSN: dsn, MinConns: 1, MaxConns: 2}, discard())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ta, err := a.w.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.BeginBatch(ta); err != nil {
		t.Fatal(err)
	}
	var pidB int
	if err := b.w.QueryRow(`SELECT pg_backend_pid()`).Scan(&pidB); err != nil {
		t.Fatal(err)
	}
	locked := make(chan error, 1)
	go func() {
		tb, err := b.w.Begin()
		if err != nil {
			locked <- err
			return
		}
		defer tb.Rollback()
		locked <- d.BeginBatch(tb)
	}()
	// Wait until b's backend waits for the advisory lock, then let a commit.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting bool
		if err := a.r.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = ? AND locktype = 'advisory' AND NOT granted)`, pidB).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		select {
		case err := <-locked:
			t.Fatalf("second writer took the batch lock while the first held it (err %v)", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("second writer never waited for the batch lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := ta.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-locked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second writer still waits after the first committed")
	}
}
