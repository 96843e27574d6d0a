// Package storagetest is the storage conformance suite: the behaviour every
// engine's sqlstore.DB must show, run by each engine's tests (Run) against
// a fresh database.
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage/sqlstore"
)

// Opener returns a fresh, empty, migrated database for one test and
// closes it when the test ends (t.Cleanup).
type Opener func(t *testing.T) *sqlstore.DB

// Run runs every conformance test, each as a subtest on its own database.
func Run(t *testing.T, open Opener) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"SnapshotChains", testSnapshotChains},
		{"BatchIsolatesFailures", testBatchIsolatesFailures},
		{"FailedEventPoisonsItsGeneration", testFailedEventPoisonsItsGeneration},
		{"AccountsAndTokens", testAccountsAndTokens},
		{"PingAndStats", testPingAndStats},
		{"WriteOnAChangedRoom", testWriteOnAChangedRoom},
		{"Pushers", testPushers},
		{"SearchIndex", testSearchIndex},
		{"SearchRank", testSearchRank},
		{"StateEntries", testStateEntries},
		{"UIASessions", testUIASessions},
		{"RateLimits", testRateLimits},
		{"ServerKeys", testServerKeys},
		{"Typing", testTyping},
		{"HierarchySessions", testHierarchySessions},
		{"ToDevice", testToDevice},
		{"E2EEKeys", testE2EEKeys},
		{"RetentionPurge", testRetentionPurge},
		{"RetentionThreads", testRetentionThreads},
		{"LegalHolds", testLegalHolds},
		{"DAG", testDAG},
		{"DAGJoinedLate", testDAGJoinedLate},
		{"DAGStoredConcurrently", testDAGStoredConcurrently},
		{"DAGEventMovedBetweenReads", testDAGEventMovedBetweenReads},
		{"CrossSigningStore", testCrossSigningStore},
		{"KeyBackupStore", testKeyBackupStore},
		{"FederationTxns", testFederationTxns},
		{"OutOfBand", testOutOfBand},
		{"DeviceListOutbox", testDeviceListOutbox},
		{"RemoteDeviceLists", testRemoteDeviceLists},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// NewRooms returns a write path on db with a fresh signing key for
// test.local and a fake clock.
func NewRooms(t testing.TB, db *sqlstore.DB) *roomdag.Rooms {
	key, err := roomdag.GenerateSigningKey("test.local", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return roomdag.NewRooms(db, key, clock.NewFake(time.Unix(1_700_000_000, 0)), rand.Reader, 0)
}

func sk(s string) *string { return &s }

// CreateRoom makes a public v11 room owned by @owner:test.local.
func CreateRoom(t testing.TB, rooms *roomdag.Rooms, id roomdag.RoomID) roomdag.UserID {
	t.Helper()
	owner := roomdag.UserID("@owner:test.local")
	v, _ := roomdag.LookupRoomVersion("11")
	_, err := rooms.CreateRoom(context.Background(), v, id,
		roomdag.ProtoEvent{Type: roomdag.TypeCreate, StateKey: sk(""), Sender: owner, Content: json.RawMessage(`{"room_version":"11"}`)},
		[]roomdag.ProtoEvent{
			{Type: roomdag.TypeMember, StateKey: sk(string(owner)), Sender: owner, Content: json.RawMessage(`{"membership":"join"}`)},
			{Type: roomdag.TypeJoinRules, StateKey: sk(""), Sender: owner, Content: json.RawMessage(`{"join_rule":"public"}`)},
		})
	if err != nil {
		t.Fatal(err)
	}
	return owner
}

// countBodies counts the stored events whose content.body is body.
func countBodies(t *testing.T, db *sqlstore.DB, body string) int {
	t.Helper()
	n := 0
	for after := roomdag.StreamPos(0); ; {
		evs, err := db.StreamEvents(context.Background(), after, 500)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return n
		}
		for _, ev := range evs {
			var c struct {
				Body *string `json:"body"`
			}
			if json.Unmarshal(ev.Content(), &c) == nil && c.Body != nil && *c.Body == body {
				n++
			}
			after = ev.Pos
		}
	}
}

// queryStrings runs a query of one text column.
func queryStrings(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
