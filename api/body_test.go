package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // to count media rows in the server's database

	"github.com/persistentchat/homeserver/testserver"
)

// sendTruncated sends a request whose body stops short of its
// Content-Length, closes its side of the connection as a client that
// gives up does, and returns the reply and whether the server closed the
// connection after it.
func sendTruncated(t *testing.T, s *testserver.Server, c *testserver.Client, method, path string, declared int, sent string) (*mediaResp, bool) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a hung server fails the test instead of hanging it
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s",
		method, path, conn.RemoteAddr(), c.Token, declared, sent)
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s %s: reading the reply: %v", method, path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Closed: the next read ends, with EOF or a reset, rather than timing out.
	_, err = br.ReadByte()
	var ne net.Error
	closed := err != nil && !(errors.As(err, &ne) && ne.Timeout())
	return &mediaResp{Status: resp.StatusCode, Header: resp.Header, Body: body}, closed
}

func TestUploadEndingEarly(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	alice := s.Register("alice")
	mediaDir := filepath.Join(s.DataDir, "media")
	// The server's own store has no way to list media; read the table.
	sqlDB := s.SQL()
	countMedia := func() int {
		t.Helper()
		var n int
		if err := sqlDB.QueryRow(`SELECT count(*) FROM media`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	noLeftovers := func(what string) {
		t.Helper()
		if tmp, _ := filepath.Glob(filepath.Join(mediaDir, "tmp", "*")); len(tmp) != 0 {
			t.Errorf("%s: temporary files left: %v", what, tmp)
		}
		if content, _ := filepath.Glob(filepath.Join(mediaDir, "content", "*", "*", "*")); len(content) != 0 {
			t.Errorf("%s: content stored: %v", what, content)
		}
	}

	// POST /upload: 3 bytes of 1000, then the client closes.
	r, closed := sendTruncated(t, s, alice, "POST", "/_matrix/media/v3/upload?filename=cut.bin", 1000, "abc")
	if r.Status != http.StatusBadRequest || r.errcode() != "M_UNKNOWN" {
		t.Errorf("truncated upload: %d %s, want 400 M_UNKNOWN", r.Status, r.Body)
	}
	if !closed {
		t.Error("the server kept the connection of a truncated upload open")
	}
	noLeftovers("truncated upload")
	if n := countMedia(); n != 0 {
		t.Errorf("%d media rows after a truncated upload, want 0", n)
	}

	// PUT /upload/{serverName}/{mediaId} to a created ID: it stays
	// awaiting its upload, which can then be made in full.
	var created struct {
		ContentURI string `json:"content_uri"`
	}
	alice.MustDo("POST", "/_matrix/media/v1/create", nil, &created)
	id := strings.TrimPrefix(created.ContentURI, "mxc://localhost/")
	put := "/_matrix/media/v3/upload/localhost/" + id
	r, closed = sendTruncated(t, s, alice, "PUT", put, 1000, "abc")
	if r.Status != http.StatusBadRequest || r.errcode() != "M_UNKNOWN" || !closed {
		t.Errorf("truncated PUT upload: %d %s (closed %v), want 400 M_UNKNOWN and the connection closed", r.Status, r.Body, closed)
	}
	noLeftovers("truncated PUT upload")
	if r := mediaDo(t, alice, "GET", dl+id+"?timeout_ms=0", "", nil); r.Status != http.StatusGatewayTimeout || r.errcode() != "M_NOT_YET_UPLOADED" {
		t.Errorf("download after a truncated PUT: %d %s, want 504 M_NOT_YET_UPLOADED", r.Status, r.Body)
	}
	data := bytes.Repeat([]byte("x"), 1000)
	if r := mediaDo(t, alice, "PUT", put, "application/octet-stream", bytes.NewReader(data)); r.Status != http.StatusOK {
		t.Fatalf("full PUT after the truncated one: %d %s", r.Status, r.Body)
	}
	if r := mediaDo(t, alice, "GET", dl+id, "", nil); !bytes.Equal(r.Body, data) {
		t.Errorf("download after the full PUT: %d, %d bytes", r.Status, len(r.Body))
	}

	// A JSON body cut short is the same error, not M_NOT_JSON: the client
	// did not send bad JSON, it sent less than it said.
	r, _ = sendTruncated(t, s, alice, "PUT", "/_matrix/client/v3/profile/"+alice.UserID+"/displayname", 100, `{"displayname":`)
	var e map[string]any
	json.Unmarshal(r.Body, &e)
	if r.Status != http.StatusBadRequest || e["errcode"] != "M_UNKNOWN" {
		t.Errorf("truncated JSON body: %d %s, want 400 M_UNKNOWN", r.Status, r.Body)
	}
}
