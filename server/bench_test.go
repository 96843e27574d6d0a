package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/sync"
	"github.com/persistentchat/homeserver/testserver"
)

// newBigRoom makes a public room with n joined members through the write
// path and returns its ID and creator.
func newBigRoom(b *testing.B, srv *testserver.Server, n int) (roomdag.RoomID, roomdag.UserID) {
	b.Helper()
	ctx := context.Background()
	rooms := srv.HS.Rooms
	server := rooms.ServerName()
	creator := roomdag.NewUserID("creator", server)
	v, _ := roomdag.LookupRoomVersion("11")
	empty := ""
	state := func(typ, key string, content string) roomdag.ProtoEvent {
		k := key
		return roomdag.ProtoEvent{Type: typ, StateKey: &k, Sender: creator, Content: json.RawMessage(content)}
	}
	create := roomdag.ProtoEvent{Type: roomdag.TypeCreate, StateKey: &empty, Sender: creator, Content: json.RawMessage(`{"room_version":"11"}`)}
	room, err := rooms.CreateRoom(ctx, v, roomdag.RoomID(fmt.Sprintf("!bench%d:%s", n, server)), create, []roomdag.ProtoEvent{
		state(roomdag.TypeMember, string(creator), `{"membership":"join"}`),
		state(roomdag.TypePowerLevels, "", fmt.Sprintf(`{"users":{%q:100}}`, creator)),
		state(roomdag.TypeJoinRules, "", `{"join_rule":"public"}`),
	})
	if err != nil {
		b.Fatal(err)
	}
	for i := 1; i < n; i++ {
		u := roomdag.NewUserID(fmt.Sprintf("member%d", i), server)
		k := string(u)
		if _, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: roomdag.TypeMember, StateKey: &k, Sender: u,
			Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
			b.Fatal(err)
		}
	}
	return room, creator
}

// BenchmarkAppendMessage1000Members: one message through the whole write
// path (build, hash, sign, authorise, durable group commit, notify) into a
// room of 1,000 members. Sequential, so each op pays one commit.
func BenchmarkAppendMessage1000Members(b *testing.B) {
	srv := testserver.Start(b, testserver.Options{})
	room, creator := newBigRoom(b, srv, 1000)
	ctx := context.Background()
	content := json.RawMessage(`{"msgtype":"m.text","body":"a typical message of modest length in a topic room"}`)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := srv.HS.Rooms.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: creator, Content: content}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendMessageParallel: 8 senders into one room, showing what
// group commit buys over one commit per event.
func BenchmarkAppendMessageParallel(b *testing.B) {
	srv := testserver.Start(b, testserver.Options{})
	room, creator := newBigRoom(b, srv, 10)
	ctx := context.Background()
	content := json.RawMessage(`{"msgtype":"m.text","body":"parallel"}`)
	b.SetParallelism(4) // 2 cores x 4 = 8 senders
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := srv.HS.Rooms.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: creator, Content: content}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkIncrementalSync: a user in 20 rooms of 50 members, one of which
// has a new message since the token: the common case of a busy client.
func BenchmarkIncrementalSync(b *testing.B) {
	srv := testserver.Start(b, testserver.Options{})
	ctx := context.Background()
	var rooms []roomdag.RoomID
	var creator roomdag.UserID
	for i := 0; i < 20; i++ {
		r, c := newBigRoomNamed(b, srv, 50, i)
		rooms, creator = append(rooms, r), c
	}
	syncer := srv.HS.Syncer
	srv.Settle() // notifications for the setup must not count as news
	since := syncer.Notifier().Current()
	if _, _, err := srv.HS.Rooms.Append(ctx, rooms[7], roomdag.ProtoEvent{Type: "m.room.message", Sender: creator,
		Content: json.RawMessage(`{"msgtype":"m.text","body":"new"}`)}); err != nil {
		b.Fatal(err)
	}
	srv.Settle()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := syncer.Sync(ctx, sync.Request{User: creator, Device: "D", Since: &since})
		if err != nil {
			b.Fatal(err)
		}
		if len(resp.Rooms.Join) != 1 {
			b.Fatalf("sync returned %d rooms, want 1", len(resp.Rooms.Join))
		}
	}
}

func newBigRoomNamed(b *testing.B, srv *testserver.Server, n, idx int) (roomdag.RoomID, roomdag.UserID) {
	b.Helper()
	ctx := context.Background()
	rooms := srv.HS.Rooms
	server := rooms.ServerName()
	creator := roomdag.NewUserID("creator", server)
	v, _ := roomdag.LookupRoomVersion("11")
	k := func(s string) *string { return &s }
	create := roomdag.ProtoEvent{Type: roomdag.TypeCreate, StateKey: k(""), Sender: creator, Content: json.RawMessage(`{"room_version":"11"}`)}
	room, err := rooms.CreateRoom(ctx, v, roomdag.RoomID(fmt.Sprintf("!r%d:%s", idx, server)), create, []roomdag.ProtoEvent{
		{Type: roomdag.TypeMember, StateKey: k(string(creator)), Sender: creator, Content: json.RawMessage(`{"membership":"join"}`)},
		{Type: roomdag.TypeJoinRules, StateKey: k(""), Sender: creator, Content: json.RawMessage(`{"join_rule":"public"}`)},
	})
	if err != nil {
		b.Fatal(err)
	}
	for i := 1; i < n; i++ {
		u := roomdag.NewUserID(fmt.Sprintf("m%d", i), server)
		if _, _, err := rooms.Append(ctx, room, roomdag.ProtoEvent{Type: roomdag.TypeMember, StateKey: k(string(u)), Sender: u,
			Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
			b.Fatal(err)
		}
		if i%10 == 0 {
			rooms.Append(ctx, room, roomdag.ProtoEvent{Type: "m.room.message", Sender: u, Content: json.RawMessage(`{"body":"hi"}`)})
		}
	}
	return room, creator
}

// BenchmarkInitialSync: a first /sync of a user in 20 rooms of 50 members,
// each timeline filled to the default backchat (50 events).
func BenchmarkInitialSync(b *testing.B) {
	srv := testserver.Start(b, testserver.Options{})
	ctx := context.Background()
	var creator roomdag.UserID
	for i := 0; i < 20; i++ {
		_, creator = newBigRoomNamed(b, srv, 50, i)
	}
	srv.Settle()
	syncer := srv.HS.Syncer
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := syncer.Sync(ctx, sync.Request{User: creator, Device: "D"})
		if err != nil {
			b.Fatal(err)
		}
		if len(resp.Rooms.Join) != 20 {
			b.Fatalf("sync returned %d rooms, want 20", len(resp.Rooms.Join))
		}
	}
}

// BenchmarkMessages: one page of 50 events of /messages, backwards from
// the newest, over HTTP, in a room of 500 messages.
func BenchmarkMessages(b *testing.B) {
	srv := testserver.Start(b, testserver.Options{})
	ctx := context.Background()
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{"preset": "public_chat"})
	for i := 0; i < 500; i++ {
		if _, _, err := srv.HS.Rooms.Append(ctx, roomdag.RoomID(room), roomdag.ProtoEvent{Type: "m.room.message",
			Sender: roomdag.UserID(alice.UserID), Content: json.RawMessage(`{"msgtype":"m.text","body":"hi"}`)}); err != nil {
			b.Fatal(err)
		}
	}
	path := "/_matrix/client/v3/rooms/" + room + "/messages?dir=b&limit=50"
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var out struct {
			Chunk []json.RawMessage `json:"chunk"`
		}
		alice.MustDo("GET", path, nil, &out)
		if len(out.Chunk) != 50 {
			b.Fatalf("page of %d events, want 50", len(out.Chunk))
		}
	}
}
