package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/persistentchat/homeserver/configs"
	"github.com/persistentchat/homeserver/testserver"
)

// bodyTimeout is the test servers' request_body_timeout: short, so that
// the tests are quick; the clients below pace themselves well under it.
const bodyTimeout = 200 * time.Millisecond

// trickle sends a request's headers and then its body a byte at a time
// every gap, until the server answers; it returns the reply and whether
// the server closed the connection after it.
func trickle(t *testing.T, addr, head string, gap time.Duration) (status int, errcode string, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // a server that never answers fails the test
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(gap)
		defer tick.Stop()
		for {
			if _, err := conn.Write([]byte("{")); err != nil {
				return // closed by the server
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	var e struct {
		Errcode string `json:"errcode"`
	}
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	return resp.StatusCode, e.Errcode, closedAfter(br)
}

// closedAfter reports whether the server closed the connection after its
// reply: the next read ends (EOF, or a reset when the server closed with
// the client's bytes still unread) rather than timing out.
func closedAfter(br *bufio.Reader) bool {
	_, err := br.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// TestSlowBodiesAreCut: clients that trickle request bodies, without an
// account, are answered 408 once request_body_timeout has passed and
// their connections are closed, so they do not pile up.
func TestSlowBodiesAreCut(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) {
		c.RequestBodyTimeout = configs.Duration(bodyTimeout)
	}})
	addr := strings.TrimPrefix(s.URL, "http://")
	baseline := s.HS.OpenConns()
	const clients = 20
	type result struct {
		status  int
		errcode string
		closed  bool
	}
	results := make(chan result, clients)
	head := fmt.Sprintf("POST /_matrix/client/v3/login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", addr)
	for range clients {
		go func() {
			// A byte every 50 ms: never idle for as long as the timeout.
			st, code, closed := trickle(t, addr, head, bodyTimeout/4)
			results <- result{st, code, closed}
		}()
	}
	for range clients {
		r := <-results
		if r.status != http.StatusRequestTimeout || r.errcode != "M_UNKNOWN" || !r.closed {
			t.Errorf("slow login body: %d %s, closed %v; want 408 M_UNKNOWN and the connection closed", r.status, r.errcode, r.closed)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.HS.WaitOpenConns(ctx, baseline); err != nil {
		t.Errorf("after the slow clients: %v", err)
	}

}

// TestSlowUploads: a media upload may take longer than the body timeout
// while it keeps to min_upload_rate, and is cut when it falls below it.
func TestSlowUploads(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Configure: func(c *configs.Config) {
		c.RequestBodyTimeout = configs.Duration(bodyTimeout)
		c.MinUploadRate = 1024 // 1 KiB a second
	}})
	addr := strings.TrimPrefix(s.URL, "http://")
	alice := s.Register("alice")
	head := func(n int) string {
		return fmt.Sprintf("POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
			addr, alice.Token, n)
	}

	// 4 KiB in 512-byte pieces every 50 ms: 10 KiB a second, so 400 ms in
	// all, twice the timeout, and it still arrives.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(conn, head(4096))
	start := time.Now()
	piece := strings.Repeat("u", 512)
	for range 8 {
		if _, err := io.WriteString(conn, piece); err != nil {
			t.Fatalf("upload cut after %v: %v", time.Since(start), err)
		}
		time.Sleep(bodyTimeout / 4)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || out.ContentURI == "" {
		t.Errorf("upload at 10 KiB/s over %v: %d, want 200 with a content_uri", time.Since(start), resp.StatusCode)
	}

	// A byte every 50 ms is 20 bytes a second: cut at the timeout, as
	// 200 ms plus 1 s per KiB received is never reached by the next bytes.
	st, code, closed := trickle(t, addr, head(100000), bodyTimeout/4)
	if st != http.StatusRequestTimeout || code != "M_UNKNOWN" || !closed {
		t.Errorf("upload at 20 bytes/s: %d %s, closed %v; want 408 M_UNKNOWN and the connection closed", st, code, closed)
	}
}
