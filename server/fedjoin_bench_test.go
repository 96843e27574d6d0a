package server_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/testserver"
)

// sendJoinAnswer builds, as a resident server would send it, the
// send_join answer of a v11 room with members members, each with
// perMember membership events (a join, then display name changes, each
// citing the previous one: the auth chain holds all of them), and the
// join of a new member to take it in with.
func sendJoinAnswer(b *testing.B, members, perMember int) (roomdag.KeySet, *roomdag.Event, []byte) {
	b.Helper()
	key, err := roomdag.GenerateSigningKey("remote.bench", rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	keys := roomdag.KeySet{}
	keys.Add(key)
	v, _ := roomdag.LookupRoomVersion("11")
	ts := int64(1_700_000_000_000)
	var prev roomdag.EventID
	depth := int64(0)
	var room roomdag.RoomID
	build := func(sender roomdag.UserID, typ string, stateKey string, content string, auth ...roomdag.EventID) *roomdag.Event {
		ts++
		depth++
		var prevs []roomdag.EventID
		if prev != "" {
			prevs = []roomdag.EventID{prev}
		}
		sk := stateKey
		ev, err := roomdag.BuildEvent(v, key, roomdag.EventTemplate{RoomID: room, Sender: sender, Type: typ, StateKey: &sk,
			Content: json.RawMessage(content), PrevEvents: prevs, AuthEvents: auth, Depth: depth, OriginServerTS: ts})
		if err != nil {
			b.Fatal(err)
		}
		prev = ev.ID()
		return ev
	}
	creator := roomdag.UserID("@creator:remote.bench")
	room = roomdag.RoomID("!bench:remote.bench")
	create := build(creator, roomdag.TypeCreate, "", `{"room_version":"11"}`)
	cjoin := build(creator, roomdag.TypeMember, string(creator), `{"membership":"join"}`, create.ID())
	pl := build(creator, roomdag.TypePowerLevels, "", fmt.Sprintf(`{"users":{%q:100}}`, creator), create.ID(), cjoin.ID())
	jr := build(creator, roomdag.TypeJoinRules, "", `{"join_rule":"public"}`, create.ID(), cjoin.ID(), pl.ID())
	state := []*roomdag.Event{create, cjoin, pl, jr}
	var chain []*roomdag.Event
	for i := 1; i < members; i++ {
		u := roomdag.UserID(fmt.Sprintf("@member%d:remote.bench", i))
		var last *roomdag.Event
		for j := 0; j < perMember; j++ {
			auth := []roomdag.EventID{create.ID(), pl.ID(), jr.ID()}
			content := `{"membership":"join"}`
			if last != nil {
				auth = append(auth, last.ID())
				content = fmt.Sprintf(`{"membership":"join","displayname":"Member %d, name %d"}`, i, j)
				chain = append(chain, last)
			}
			last = build(u, roomdag.TypeMember, string(u), content, auth...)
		}
		state = append(state, last)
	}
	joiner := roomdag.UserID("@joiner:remote.bench")
	join := build(joiner, roomdag.TypeMember, string(joiner), `{"membership":"join"}`, create.ID(), pl.ID(), jr.ID())
	answer := federation.SendJoinAnswer{Origin: "remote.bench"}
	for _, ev := range state {
		answer.State = append(answer.State, ev.JSON())
	}
	for _, ev := range append(chain, create, cjoin, pl, jr) {
		answer.AuthChain = append(answer.AuthChain, ev.JSON())
	}
	body, err := json.Marshal(answer)
	if err != nil {
		b.Fatal(err)
	}
	return keys, join, body
}

// peakHeap samples the heap in use until stopped, and reports the most
// it saw above what was in use when it started.
func peakHeap() func() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapInuse, ms.HeapInuse
	done := make(chan struct{})
	out := make(chan uint64)
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-done:
				out <- peak - base
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); return <-out }
}

// BenchmarkTakeSendJoin: the joining server's work on a send_join answer
// (decode, every event's hashes and signatures, auth checks against its
// own auth events, outliers persisted, then the join with that state),
// into a fresh database each time. FEDJOIN_MEMBERS and
// FEDJOIN_PER_MEMBER size the room (default 1,000 members × 10 events:
// 10,000 events in the answer).
func BenchmarkTakeSendJoin(b *testing.B) {
	members, perMember := envInt("FEDJOIN_MEMBERS", 1000), envInt("FEDJOIN_PER_MEMBER", 10)
	keys, join, body := sendJoinAnswer(b, members, perMember)
	v, _ := roomdag.LookupRoomVersion("11")
	var peak uint64
	var cpu time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		srv := testserver.Start(b, testserver.Options{})
		j := &federation.RemoteJoiner{Server: roomdag.ServerName(srv.Name()), Rooms: srv.HS.Rooms, Verifier: keys,
			Clock: clock.Real{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Parallel: envInt("FEDJOIN_PARALLEL", 0)}
		stop := peakHeap()
		cpu0 := cpuTime()
		b.StartTimer()
		var answer federation.SendJoinAnswer
		if err := json.Unmarshal(body, &answer); err != nil {
			b.Fatal(err)
		}
		if _, err := j.TakeJoin(context.Background(), v, join, &answer); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += cpuTime() - cpu0
		peak = max(peak, stop())
		srv.Stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(members*perMember+4), "events")
	b.ReportMetric(float64(len(body))/(1<<20), "answer-MiB")
	// On a shared machine the wall time says little: the process's CPU
	// time (user and system) says what the work costs.
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
