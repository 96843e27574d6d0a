package mautrixe2e

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Account data types of this test, global and per room.
var (
	globalDataType = event.Type{Type: "org.persistentchat.e2e.mautrix", Class: event.AccountDataEventType}
	roomDataType   = event.Type{Type: "org.persistentchat.e2e.mautrix.room", Class: event.AccountDataEventType}
)

// TestClientAPI drives the client-server API with mautrix-go's Client, the
// way a Go bot does: registration and login, a room with a name and topic,
// messages that a second user's sync loop (DefaultSyncer with OnEventType
// handlers) receives in order, a topic change, a redaction, /messages
// paginated back to the room's creation, a room tag and account data, and
// typing and read receipts reaching the other side's sync.
func TestClientAPI(t *testing.T) {
	hs := startHomeserver(t, nil)
	ctx := t.Context()

	// alice registers through m.login.dummy; bob registers too, then logs in
	// with his password on a fresh client, which gets a second device.
	alice := hs.register(t, ctx, "alice", "alice-password-1")
	bobReg := hs.register(t, ctx, "bob", "bob-password-1")
	bob := hs.newClient(t)
	login, err := bob.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bob"},
		Password:         "bob-password-1",
		StoreCredentials: true,
	})
	if err != nil {
		t.Fatalf("bob's password login: %v", err)
	}
	if login.UserID != bobReg.UserID || bob.UserID != bobReg.UserID {
		t.Fatalf("login returned %s, want %s", login.UserID, bobReg.UserID)
	}
	if login.DeviceID == "" || login.DeviceID == bobReg.DeviceID {
		t.Fatalf("login returned device %q; want a new device besides %q", login.DeviceID, bobReg.DeviceID)
	}
	if _, err := hs.newClient(t).Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bob"},
		Password:   "wrong",
	}); !isErr(err, mautrix.MForbidden) {
		t.Fatalf("login with a wrong password: got %v, want M_FORBIDDEN", err)
	}

	// alice creates a public room with a name and a topic.
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "public_chat",
		Name:   "mautrix e2e",
		Topic:  "first topic",
	})
	if err != nil {
		t.Fatalf("CreateRoom: %v", err)
	}
	roomID := created.RoomID
	var name event.RoomNameEventContent
	if err := alice.StateEvent(ctx, roomID, event.StateRoomName, "", &name); err != nil || name.Name != "mautrix e2e" {
		t.Fatalf("room name: %q, %v; want %q", name.Name, err, "mautrix e2e")
	}
	var topic event.TopicEventContent
	if err := alice.StateEvent(ctx, roomID, event.StateTopic, "", &topic); err != nil || topic.Topic != "first topic" {
		t.Fatalf("room topic: %q, %v; want %q", topic.Topic, err, "first topic")
	}
	if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatalf("bob joins: %v", err)
	}

	// Both run mautrix's sync loop with handlers per event type.
	bobMessages, bobTopics, bobRedactions, bobTyping := newEvents(), newEvents(), newEvents(), newEvents()
	startSync(t, bob, func(s *mautrix.DefaultSyncer) {
		s.OnEventType(event.EventMessage, bobMessages.handler)
		s.OnEventType(event.StateTopic, bobTopics.handler)
		s.OnEventType(event.EventRedaction, bobRedactions.handler)
		s.OnEventType(event.EphemeralEventTyping, bobTyping.handler)
	})
	aliceMessages, aliceTags, aliceData, aliceRoomData, aliceReceipts := newEvents(), newEvents(), newEvents(), newEvents(), newEvents()
	startSync(t, alice, func(s *mautrix.DefaultSyncer) {
		s.OnEventType(event.EventMessage, aliceMessages.handler)
		s.OnEventType(event.AccountDataRoomTags, aliceTags.handler)
		s.OnEventType(globalDataType, aliceData.handler)
		s.OnEventType(roomDataType, aliceRoomData.handler)
		s.OnEventType(event.EphemeralEventReceipt, aliceReceipts.handler)
	})

	// alice's messages reach bob's live sync in order; bob's reply reaches
	// alice.
	var sent []id.EventID
	var sentBodies []string
	send := func(cli *mautrix.Client, body string) id.EventID {
		t.Helper()
		resp, err := cli.SendText(ctx, roomID, body)
		if err != nil {
			t.Fatalf("SendText %q as %s: %v", body, cli.UserID, err)
		}
		sent = append(sent, resp.EventID)
		sentBodies = append(sentBodies, body)
		return resp.EventID
	}
	for i := 1; i <= 5; i++ {
		send(alice, fmt.Sprintf("message %d", i))
	}
	for i, want := range sent {
		got := bobMessages.next(t, fmt.Sprintf("message %d in bob's sync", i+1), inRoom(roomID))
		if got.ID != want || got.Sender != alice.UserID || got.Content.AsMessage().Body != sentBodies[i] {
			t.Fatalf("bob's sync delivered %s from %s %q as message %d; want %s from %s %q (in order)",
				got.ID, got.Sender, got.Content.AsMessage().Body, i+1, want, alice.UserID, sentBodies[i])
		}
		if got.Mautrix.EventSource&event.SourceTimeline == 0 {
			t.Fatalf("message %d reached bob from source %s, not the timeline", i+1, got.Mautrix.EventSource)
		}
	}
	// A retried send (same transaction ID, as mautrix's retries and
	// bridges' resends use) is one event.
	retried := mautrix.ReqSendEvent{TransactionID: "mautrix-e2e-retried-send"}
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: "sent twice"}
	once, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, content, retried)
	if err != nil {
		t.Fatalf("SendMessageEvent with a transaction ID: %v", err)
	}
	again, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, content, retried)
	if err != nil || again.EventID != once.EventID {
		t.Fatalf("resending with the same transaction ID: %v, %v; want %s again", again, err, once.EventID)
	}
	sent, sentBodies = append(sent, once.EventID), append(sentBodies, "sent twice")
	if got := bobMessages.next(t, "the retried send in bob's sync", inRoom(roomID)); got.ID != once.EventID {
		t.Fatalf("bob's sync delivered %s after message 5; want the retried send %s", got.ID, once.EventID)
	}
	reply := send(bob, "reply from bob")
	if got := aliceMessages.next(t, "bob's reply in alice's sync", func(e *event.Event) bool {
		return e.RoomID == roomID && e.Sender == bob.UserID
	}); got.ID != reply || got.Content.AsMessage().Body != "reply from bob" {
		t.Fatalf("alice's sync delivered %s %q; want bob's reply %s", got.ID, got.Content.AsMessage().Body, reply)
	}

	// A topic change reaches bob as state.
	topicResp, err := alice.SendStateEvent(ctx, roomID, event.StateTopic, "", &event.TopicEventContent{Topic: "second topic"})
	if err != nil {
		t.Fatalf("changing the topic: %v", err)
	}
	got := bobTopics.next(t, "the topic change in bob's sync", func(e *event.Event) bool {
		return e.RoomID == roomID && e.ID == topicResp.EventID
	})
	if got.Content.AsTopic().Topic != "second topic" || got.Sender != alice.UserID || got.GetStateKey() != "" {
		t.Fatalf("bob's sync delivered topic event %+v", got)
	}
	if err := bob.StateEvent(ctx, roomID, event.StateTopic, "", &topic); err != nil || topic.Topic != "second topic" {
		t.Fatalf("topic read back by bob: %q, %v", topic.Topic, err)
	}

	// alice redacts her second message; bob's sync carries the redaction,
	// and the event reads back redacted.
	redacted := sent[1]
	redaction, err := alice.RedactEvent(ctx, roomID, redacted, mautrix.ReqRedact{Reason: "e2e"})
	if err != nil {
		t.Fatalf("RedactEvent: %v", err)
	}
	got = bobRedactions.next(t, "the redaction in bob's sync", func(e *event.Event) bool { return e.ID == redaction.EventID })
	if target := redactsOf(got); target != redacted {
		t.Fatalf("the redaction in bob's sync redacts %q, want %s", target, redacted)
	}
	ev, err := bob.GetEvent(ctx, roomID, redacted)
	if err != nil {
		t.Fatalf("GetEvent of the redacted message: %v", err)
	}
	if len(ev.Content.Raw) != 0 || ev.Unsigned.RedactedBecause == nil || ev.Unsigned.RedactedBecause.ID != redaction.EventID {
		t.Fatalf("the redacted message reads back with content %s and redacted_because %+v", ev.Content.VeryRaw, ev.Unsigned.RedactedBecause)
	}

	// Enough messages for /messages to take several pages.
	for i := 6; i <= 20; i++ {
		send(alice, fmt.Sprintf("message %d", i))
	}
	last := sent[len(sent)-1]
	bobMessages.next(t, "the last message in bob's sync", func(e *event.Event) bool { return e.ID == last })

	// /messages backwards from the end, 7 at a time, reaches m.room.create;
	// every message appears once, in the order sent.
	var chunks [][]*event.Event
	from, pages := "", 0
	for {
		pages++
		if pages > 50 {
			t.Fatalf("/messages did not reach the room's start in 50 pages")
		}
		resp, err := bob.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, 7)
		if err != nil {
			t.Fatalf("Messages(from=%q): %v", from, err)
		}
		if len(resp.Chunk) > 7 {
			t.Fatalf("Messages(limit=7) returned %d events", len(resp.Chunk))
		}
		chunks = append(chunks, resp.Chunk)
		if resp.End == "" || len(resp.Chunk) == 0 {
			break
		}
		if resp.End == from {
			t.Fatalf("Messages(from=%q) returned the same token as end", from)
		}
		from = resp.End
	}
	var timeline []*event.Event // oldest first
	for i := len(chunks) - 1; i >= 0; i-- {
		for j := len(chunks[i]) - 1; j >= 0; j-- {
			timeline = append(timeline, chunks[i][j])
		}
	}
	if pages < 3 {
		t.Fatalf("%d events came in %d pages of at most 7", len(timeline), pages)
	}
	if len(timeline) == 0 || timeline[0].Type != event.StateCreate {
		t.Fatalf("/messages backwards did not end at m.room.create; oldest event: %+v", first(timeline))
	}
	seen := map[id.EventID]bool{}
	var messages []id.EventID
	for _, e := range timeline {
		if seen[e.ID] {
			t.Fatalf("/messages returned %s twice", e.ID)
		}
		seen[e.ID] = true
		if e.Type.Type == event.EventMessage.Type {
			messages = append(messages, e.ID)
		}
		if e.ID == redacted && len(e.Content.Raw) != 0 {
			t.Fatalf("/messages returns the redacted message with content %s", e.Content.VeryRaw)
		}
	}
	if !reflect.DeepEqual(messages, sent) {
		t.Fatalf("/messages paginated back returned messages\n  %v\nwant, in order,\n  %v", messages, sent)
	}
	for _, want := range []id.EventID{topicResp.EventID, redaction.EventID} {
		if !seen[want] {
			t.Fatalf("/messages did not return %s", want)
		}
	}

	// A room tag: set, read back, seen in alice's sync, then removed.
	const tag = event.RoomTag("u.mautrix")
	if err := alice.AddTag(ctx, roomID, tag, 0.25); err != nil {
		t.Fatalf("AddTag: %v", err)
	}
	tags, err := alice.GetTags(ctx, roomID)
	if err != nil || orderOf(tags.Tags, tag) != 0.25 {
		t.Fatalf("GetTags after AddTag: %+v, %v", tags, err)
	}
	aliceTags.next(t, "the m.tag with u.mautrix in alice's sync", func(e *event.Event) bool {
		return e.RoomID == roomID && orderOf(e.Content.AsTag().Tags, tag) == 0.25
	})
	if err := alice.RemoveTag(ctx, roomID, tag); err != nil {
		t.Fatalf("RemoveTag: %v", err)
	}
	aliceTags.next(t, "the m.tag without u.mautrix in alice's sync", func(e *event.Event) bool {
		_, ok := e.Content.AsTag().Tags[tag]
		return e.RoomID == roomID && !ok
	})
	if tags, err := alice.GetTags(ctx, roomID); err != nil || len(tags.Tags) != 0 {
		t.Fatalf("GetTags after RemoveTag: %+v, %v", tags, err)
	}

	// Account data, global and per room: set, read back, seen in sync.
	type data struct {
		N    int      `json:"n"`
		Text string   `json:"text"`
		List []string `json:"list"`
	}
	want := data{N: 7, Text: "grüße", List: []string{"a", "b"}}
	if err := alice.SetAccountData(ctx, globalDataType.Type, want); err != nil {
		t.Fatalf("SetAccountData: %v", err)
	}
	var back data
	if err := alice.GetAccountData(ctx, globalDataType.Type, &back); err != nil || !reflect.DeepEqual(back, want) {
		t.Fatalf("GetAccountData: %+v, %v; want %+v", back, err, want)
	}
	got = aliceData.next(t, "global account data in alice's sync", func(e *event.Event) bool { return e.RoomID == "" })
	if got.Content.Raw["text"] != want.Text || got.Content.Raw["n"] != float64(want.N) {
		t.Fatalf("global account data in sync: %s", got.Content.VeryRaw)
	}
	wantRoom := data{N: 8, Text: "room"}
	if err := alice.SetRoomAccountData(ctx, roomID, roomDataType.Type, wantRoom); err != nil {
		t.Fatalf("SetRoomAccountData: %v", err)
	}
	back = data{}
	if err := alice.GetRoomAccountData(ctx, roomID, roomDataType.Type, &back); err != nil || !reflect.DeepEqual(back, wantRoom) {
		t.Fatalf("GetRoomAccountData: %+v, %v; want %+v", back, err, wantRoom)
	}
	got = aliceRoomData.next(t, "room account data in alice's sync", inRoom(roomID))
	if got.Content.Raw["text"] != wantRoom.Text || got.Content.Raw["n"] != float64(wantRoom.N) {
		t.Fatalf("room account data in sync: %s", got.Content.VeryRaw)
	}
	if err := bob.GetRoomAccountData(ctx, roomID, roomDataType.Type, &back); !isErr(err, mautrix.MNotFound) {
		t.Fatalf("bob reading alice's room account data type: %v, want M_NOT_FOUND", err)
	}

	// Typing: alice starts and stops; bob's sync sees both.
	if _, err := alice.UserTyping(ctx, roomID, true, 30*time.Second); err != nil {
		t.Fatalf("UserTyping(true): %v", err)
	}
	bobTyping.next(t, "alice typing in bob's sync", func(e *event.Event) bool {
		return e.RoomID == roomID && reflect.DeepEqual(e.Content.AsTyping().UserIDs, []id.UserID{alice.UserID})
	})
	if _, err := alice.UserTyping(ctx, roomID, false, 0); err != nil {
		t.Fatalf("UserTyping(false): %v", err)
	}
	bobTyping.next(t, "alice no longer typing in bob's sync", func(e *event.Event) bool {
		return e.RoomID == roomID && len(e.Content.AsTyping().UserIDs) == 0
	})

	// A read receipt from bob reaches alice's sync.
	if err := bob.MarkRead(ctx, roomID, last); err != nil {
		t.Fatalf("MarkRead: %v", err)
	}
	got = aliceReceipts.next(t, "bob's read receipt in alice's sync", func(e *event.Event) bool {
		r, ok := (*e.Content.AsReceipt())[last][event.ReceiptTypeRead][bob.UserID]
		return e.RoomID == roomID && ok && !r.Timestamp.IsZero()
	})
	if ts := (*got.Content.AsReceipt())[last][event.ReceiptTypeRead][bob.UserID].Timestamp; time.Since(ts) > time.Minute || time.Until(ts) > time.Minute {
		t.Fatalf("bob's receipt carries timestamp %s", ts)
	}

	// A bot's auto-join: carol's sync sees her invite (the m.room.member
	// in invite_state, source SourceInvite), and she joins from the handler's
	// event, as mautrix bots do.
	carol := hs.register(t, ctx, "carol", "carol-password-1")
	carolMembers := newEvents()
	startSync(t, carol, func(s *mautrix.DefaultSyncer) {
		s.OnEventType(event.StateMember, carolMembers.handler)
	})
	if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: carol.UserID, Reason: "bot wanted"}); err != nil {
		t.Fatalf("inviting carol: %v", err)
	}
	invite := carolMembers.next(t, "carol's invite in her sync", func(e *event.Event) bool {
		return e.RoomID == roomID && e.GetStateKey() == carol.UserID.String() && e.Mautrix.EventSource&event.SourceInvite != 0
	})
	if m := invite.Content.AsMember(); m.Membership != event.MembershipInvite || invite.Sender != alice.UserID || m.Reason != "bot wanted" {
		t.Fatalf("carol's invite: from %s, %s", invite.Sender, invite.Content.VeryRaw)
	}
	if _, err := carol.JoinRoomByID(ctx, invite.RoomID); err != nil {
		t.Fatalf("carol joining on her invite: %v", err)
	}
	carolMembers.next(t, "carol's join in her sync", func(e *event.Event) bool {
		return e.RoomID == roomID && e.GetStateKey() == carol.UserID.String() &&
			e.Mautrix.EventSource&event.SourceJoin != 0 && e.Content.AsMember().Membership == event.MembershipJoin
	})
}

// orderOf is the order of tag in tags, -1 when it is missing or has none.
func orderOf(tags event.Tags, tag event.RoomTag) float64 {
	m, ok := tags[tag]
	if !ok {
		return -1
	}
	f, err := m.Order.Float64()
	if err != nil {
		return -1
	}
	return f
}

func inRoom(roomID id.RoomID) func(*event.Event) bool {
	return func(e *event.Event) bool { return e.RoomID == roomID }
}

// redactsOf is the event a redaction redacts: in the content from room
// version 11, at the top level before.
func redactsOf(e *event.Event) id.EventID {
	if r := e.Content.AsRedaction(); r != nil && r.Redacts != "" {
		return r.Redacts
	}
	return e.Redacts
}

// isErr reports whether err is the Matrix error want (by errcode).
func isErr(err error, want mautrix.RespError) bool {
	return err != nil && errors.Is(err, want)
}

func first(evs []*event.Event) *event.Event {
	if len(evs) == 0 {
		return nil
	}
	return evs[0]
}
