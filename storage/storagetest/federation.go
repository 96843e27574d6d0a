package storagetest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
)

// testFederationTxns: inbound transaction responses are kept per
// (origin, txn ID), the first stored staying, and pruned by age; the
// outbound queues keep order per destination, number transactions from
// the time a destination was first queued for, resend a transaction's
// items under its ID, and move the sender's position only from where it
// is.
func testFederationTxns(t *testing.T, open Opener) {
	db := open(t)
	ctx := context.Background()

	// Inbound.
	if _, err := db.FederationInboundTxn(ctx, "b.test", "1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("unknown transaction: %v", err)
	}
	for _, r := range []string{`{"pdus":{}}`, `{"other":1}`} {
		if err := db.PutFederationInboundTxn(ctx, "b.test", "1", []byte(r), 1000); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.PutFederationInboundTxn(ctx, "c.test", "1", []byte(`{"c":1}`), 5000); err != nil {
		t.Fatal(err)
	}
	if got, err := db.FederationInboundTxn(ctx, "b.test", "1"); err != nil || string(got) != `{"pdus":{}}` {
		t.Fatalf("stored response: %s %v", got, err)
	}
	if err := db.PruneFederationInboundTxns(ctx, 2000); err != nil {
		t.Fatal(err)
	}
	if _, err := db.FederationInboundTxn(ctx, "b.test", "1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("pruned response still there: %v", err)
	}
	if got, err := db.FederationInboundTxn(ctx, "c.test", "1"); err != nil || string(got) != `{"c":1}` {
		t.Fatalf("another origin's response: %s %v", got, err)
	}

	// Outbound.
	pos, err := db.FederationSenderPos(ctx)
	if err != nil || pos != 0 {
		t.Fatalf("sender position on an empty stream: %d %v", pos, err)
	}
	const d1, d2 = roomdag.ServerName("d1.test"), roomdag.ServerName("d2.test")
	pdu := func(id string) storage.FederationItem {
		return storage.FederationItem{Room: "!r:test.local", Event: roomdag.EventID(id)}
	}
	if err := db.QueueFederationPDUs(ctx, 0, 5, map[roomdag.ServerName][]storage.FederationItem{
		d1: {pdu("$a"), pdu("$b")}, d2: {pdu("$a")}}, 100_000); err != nil {
		t.Fatal(err)
	}
	if err := db.QueueFederationPDUs(ctx, 0, 9, map[roomdag.ServerName][]storage.FederationItem{d1: {pdu("$x")}}, 100_000); err == nil {
		t.Fatal("queued from a position that moved on")
	}
	if pos, err := db.FederationSenderPos(ctx); err != nil || pos != 5 {
		t.Fatalf("sender position: %d %v", pos, err)
	}
	edu := []byte(`{"edu_type":"m.typing","content":{}}`)
	if err := db.QueueFederationEDUs(ctx, map[roomdag.ServerName][]storage.FederationItem{d1: {{Room: "!r:test.local", EDU: edu}}}, 200_000); err != nil {
		t.Fatal(err)
	}
	q, err := db.FederationQueue(ctx, d1, 10)
	if err != nil || len(q) != 3 || q[0].Event != "$a" || q[1].Event != "$b" || q[2].Event != "" || !bytes.Equal(q[2].EDU, edu) || q[0].EDU != nil {
		t.Fatalf("queue of d1: %+v %v", q, err)
	}
	dests, err := db.FederationDestinations(ctx)
	if err != nil || len(dests) != 2 || dests[0].Server != d1 || dests[0].LastTxn != 100_000 {
		t.Fatalf("destinations: %+v %v", dests, err)
	}
	txn, err := db.StartFederationTxn(ctx, d1, []int64{q[0].Seq, q[1].Seq})
	if err != nil || txn != 100_001 {
		t.Fatalf("first transaction: %d %v", txn, err)
	}
	if err := db.FederationTxnFailed(ctx, storage.FederationDestination{Server: d1, Failures: 2, RetryAtMS: 7, DownSinceMS: 3}); err != nil {
		t.Fatal(err)
	}
	d, err := db.FederationDestination(ctx, d1)
	if err != nil || d.Failures != 2 || d.RetryAtMS != 7 || d.DownSinceMS != 3 || d.LastTxn != txn {
		t.Fatalf("after a failure: %+v %v", d, err)
	}
	q, _ = db.FederationQueue(ctx, d1, 10)
	if q[0].Txn != txn || q[1].Txn != txn || q[2].Txn != 0 {
		t.Fatalf("items' transactions: %+v", q)
	}
	if err := db.FederationTxnDone(ctx, d1, txn); err != nil {
		t.Fatal(err)
	}
	q, _ = db.FederationQueue(ctx, d1, 10)
	if len(q) != 1 || q[0].EDU == nil {
		t.Fatalf("queue after the transaction: %+v", q)
	}
	if d, _ := db.FederationDestination(ctx, d1); d.Failures != 0 || d.RetryAtMS != 0 || d.DownSinceMS != 0 {
		t.Fatalf("back-off after success: %+v", d)
	}
	if err := db.DropFederationItems(ctx, d1, []int64{q[0].Seq}); err != nil {
		t.Fatal(err)
	}
	dests, _ = db.FederationDestinations(ctx)
	if len(dests) != 1 || dests[0].Server != d2 {
		t.Fatalf("destinations with a queue: %+v", dests)
	}
	if _, err := db.FederationDestination(ctx, "none.test"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("unknown destination: %v", err)
	}
}
