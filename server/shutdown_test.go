package server_test

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	stdsync "sync"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// TestShutdownLosesNoAcknowledgedWrite: senders keep sending while the
// server shuts down; every send that was answered 200 is there after a
// restart, and the ones cut off were answered with an error, not lost
// silently.
func TestShutdownLosesNoAcknowledgedWrite(t *testing.T) {
	dir := t.TempDir()
	srv := testserver.Start(t, testserver.Options{DataDir: dir})
	alice := srv.Register("alice")
	room := alice.CreateRoom(map[string]any{})
	var mu stdsync.Mutex
	var acked []string
	var wg stdsync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := *alice
			c.HTTP = &http.Client{}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/w%d-%d", url.PathEscape(room), w, i)
				r, err := doQuiet(&c, "PUT", path, `{"msgtype":"m.text","body":"x"}`)
				if err != nil {
					return // the server is gone
				}
				if r.status == 200 {
					mu.Lock()
					acked = append(acked, r.eventID)
					mu.Unlock()
				}
			}
		}(w)
	}
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 100 {
			break
		}
	}
	// A connection that never sends a request is closed by the shutdown,
	// which need not wait for it (Shutdown closes such connections at
	// once rather than after net/http's 5 s).
	silent, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	srv.Stop()
	close(stop)
	wg.Wait()
	if n, err := silent.Read(make([]byte, 1)); err == nil {
		t.Errorf("the silent connection is still open after shutdown (read %d bytes)", n)
	}

	srv2 := testserver.Start(t, testserver.Options{DataDir: dir})
	alice.Base = srv2.URL
	for _, id := range acked {
		r := alice.Do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(id), nil)
		if r.Status != 200 {
			t.Errorf("acknowledged event %s missing after restart: %d %s", id, r.Status, r.Body)
		}
	}
	t.Logf("%d acknowledged sends all present after restart", len(acked))
}

// A long-poll pending at shutdown is answered (an empty sync), not cut off:
// the server does not wait out the poll's timeout, nor drop the connection.
func TestShutdownAnswersLongPolls(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.Register("alice")
	alice.CreateRoom(map[string]any{})
	var first struct {
		NextBatch string `json:"next_batch"`
	}
	alice.MustDo("GET", "/_matrix/client/v3/sync", nil, &first)
	got := make(chan quietResp, 1)
	c := *alice
	c.HTTP = &http.Client{}
	go func() {
		r, err := doQuiet(&c, "GET", "/_matrix/client/v3/sync?timeout=600000&since="+first.NextBatch, "")
		if err != nil {
			r.status = -1
		}
		got <- r
	}()
	// Wait until the poll is parked.
	for srv.HS.Syncer.Parked() == 0 {
		runtime.Gosched()
	}
	srv.Stop()
	if r := <-got; r.status != 200 {
		t.Fatalf("pending long-poll got status %d at shutdown, want an empty 200", r.status)
	}
}
