package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/push"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/sync"
)

// rulesStore keeps one user's push rule document and counts its writes.
// Other Store methods are not called.
type rulesStore struct {
	Store
	doc    json.RawMessage
	ad     json.RawMessage
	writes int64
}

func (f *rulesStore) PushRules(context.Context, roomdag.UserID) (json.RawMessage, error) {
	return f.doc, nil
}

func (f *rulesStore) UpdatePushRules(_ context.Context, _ roomdag.UserID, fn func(json.RawMessage) (json.RawMessage, json.RawMessage, error)) (int64, error) {
	next, ad, err := fn(f.doc)
	if err != nil {
		return 0, err
	}
	f.doc, f.ad = next, ad
	f.writes++
	return f.writes, nil
}

// noSync is enough of a sync store to make a Syncer.
type noSync struct{ sync.Store }

func (noSync) ReceiptPos(context.Context) (int64, error)  { return 0, nil }
func (noSync) PresencePos(context.Context) (int64, error) { return 0, nil }

// TestCopyRoomPushRules: the room upgrade's copy of a member's per-room
// rules is stored with its m.push_rules account data and wakes /sync; a
// copy that finds nothing to copy writes nothing.
func TestCopyRoomPushRules(t *testing.T) {
	const user = roomdag.UserID("@alice:test.local")
	const old, new = roomdag.RoomID("!old:test.local"), roomdag.RoomID("!new:test.local")
	var u push.UserRules
	if err := u.Put("room", push.Rule{RuleID: string(old), Actions: []any{}}, "", ""); err != nil {
		t.Fatal(err)
	}
	doc, _ := json.Marshal(u)
	store := &rulesStore{doc: doc}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n := sync.NewNotifier("test.local", sync.Token{}, nil)
	s := &Server{store: store, sync: sync.NewSyncer(noSync{}, nil, n, clock.Real{}, log, 50, 1000, false, nil, sync.Shared{}, nil)}
	ctx := context.Background()
	if err := s.copyRoomPushRules(ctx, user, old, new); err != nil {
		t.Fatal(err)
	}
	var got push.UserRules
	if err := json.Unmarshal(store.doc, &got); err != nil {
		t.Fatal(err)
	}
	if rs := got.Rules["room"]; len(rs) != 2 || !slices.ContainsFunc(rs, func(r push.Rule) bool { return r.RuleID == string(new) }) {
		t.Errorf("room rules after the copy: %+v", rs)
	}
	var ad struct{ Global push.Ruleset }
	if err := json.Unmarshal(store.ad, &ad); err != nil || len(ad.Global.Room) != 2 {
		t.Errorf("m.push_rules account data %s (%v)", store.ad, err)
	}
	if n.Current().AccountData != 1 {
		t.Errorf("sync not woken: account data position %d", n.Current().AccountData)
	}
	if err := s.copyRoomPushRules(ctx, user, "!elsewhere:test.local", new); err != nil || store.writes != 1 {
		t.Errorf("a copy of nothing: %v, %d writes", err, store.writes)
	}
}
