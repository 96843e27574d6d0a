package postgres

import (
	"testing"

	"github.com/persistentchat/homeserver/storage/sqlstore"
	"github.com/persistentchat/homeserver/storage/storagetest"
)

// The storage conformance suite, on PostgreSQL.
func TestStorage(t *testing.T) {
	testDSN(t) // skips without a server
	storagetest.Run(t, func(t *testing.T) *sqlstore.DB {
		db, err := Open(Options{DSN: testDSN(t), MinConns: 1, MaxConns: 4}, discard())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}
