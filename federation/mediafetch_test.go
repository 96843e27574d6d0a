package federation_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/federation"
	"github.com/persistentchat/homeserver/media"
	"github.com/persistentchat/homeserver/roomdag"
)

// cannedClient answers each path with a canned response, as a remote
// server would, and records the paths asked.
type cannedClient struct {
	answers map[string]func() *http.Response
	asked   []string
}

func (c *cannedClient) Do(_ context.Context, _ roomdag.ServerName, req *http.Request) (*http.Response, error) {
	path := req.URL.Path
	c.asked = append(c.asked, path)
	if a, ok := c.answers[path]; ok {
		return a(), nil
	}
	return nil, errors.New("connection refused")
}

func answer(status int, ctype, body string) func() *http.Response {
	return func() *http.Response {
		h := http.Header{}
		if ctype != "" {
			h.Set("Content-Type", ctype)
		}
		return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}
	}
}

func multipartBody(second string) string {
	return "--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\n" + second + "\r\n--b--\r\n"
}

// TestMediaFetcher: what remote answers become (media.Fetcher's contract).
func TestMediaFetcher(t *testing.T) {
	const (
		fedPath    = "/_matrix/federation/v1/media/download/abc"
		legacyPath = "/_matrix/media/v3/download/remote.example/abc"
	)
	mixed := "multipart/mixed; boundary=b"
	for _, tc := range []struct {
		name      string
		answers   map[string]func() *http.Response
		maxSize   int64
		want      string // the content, when it succeeds
		wantType  string
		wantName  string
		wantErr   error
		wantAsked int
	}{
		{name: "multipart", answers: map[string]func() *http.Response{
			fedPath: answer(200, mixed, multipartBody("Content-Type: text/plain\r\nContent-Disposition: attachment; filename=\"a.txt\"\r\n\r\nhello"))},
			want: "hello", wantType: "text/plain", wantName: "a.txt", wantAsked: 1},
		{name: "not found", answers: map[string]func() *http.Response{
			fedPath: answer(404, "application/json", `{"errcode":"M_NOT_FOUND"}`)}, wantErr: media.ErrNotFound, wantAsked: 1},
		{name: "old server: the legacy endpoint", answers: map[string]func() *http.Response{
			fedPath:    answer(404, "application/json", `{"errcode":"M_UNRECOGNIZED"}`),
			legacyPath: answer(200, "image/png", "png bytes")}, want: "png bytes", wantType: "image/png", wantAsked: 2},
		{name: "old server, too large by its length", maxSize: 3, answers: map[string]func() *http.Response{
			fedPath:    answer(404, "application/json", `{"errcode":"M_UNRECOGNIZED"}`),
			legacyPath: answer(200, "image/png", "png bytes")}, wantErr: media.ErrTooLarge, wantAsked: 2},
		{name: "old server, legacy not found", answers: map[string]func() *http.Response{
			fedPath:    answer(404, "application/json", `{"errcode":"M_UNRECOGNIZED"}`),
			legacyPath: answer(404, "application/json", `{"errcode":"M_NOT_FOUND"}`)}, wantErr: media.ErrNotFound, wantAsked: 2},
		{name: "too large to serve", answers: map[string]func() *http.Response{
			fedPath: answer(502, "application/json", `{"errcode":"M_TOO_LARGE"}`)}, wantErr: media.ErrTooLarge, wantAsked: 1},
		{name: "not yet uploaded", answers: map[string]func() *http.Response{
			fedPath: answer(504, "application/json", `{"errcode":"M_NOT_YET_UPLOADED"}`)}, wantErr: media.ErrNotYetUploaded, wantAsked: 1},
		{name: "server error", answers: map[string]func() *http.Response{
			fedPath: answer(500, "application/json", `{"errcode":"M_UNKNOWN"}`)}, wantErr: media.ErrRemote, wantAsked: 1},
		{name: "not multipart", answers: map[string]func() *http.Response{
			fedPath: answer(200, "text/plain", "hello")}, wantErr: media.ErrRemote, wantAsked: 1},
		{name: "multipart without boundary", answers: map[string]func() *http.Response{
			fedPath: answer(200, "multipart/mixed", multipartBody("\r\nhello"))}, wantErr: media.ErrRemote, wantAsked: 1},
		{name: "metadata not JSON", answers: map[string]func() *http.Response{
			fedPath: answer(200, mixed, "--b\r\nContent-Type: application/json\r\n\r\nnot json\r\n--b\r\n\r\nhello\r\n--b--\r\n")}, wantErr: media.ErrRemote, wantAsked: 1},
		{name: "no content part", answers: map[string]func() *http.Response{
			fedPath: answer(200, mixed, "--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b--\r\n")}, wantErr: media.ErrRemote, wantAsked: 1},
		{name: "a Location this client cannot follow", answers: map[string]func() *http.Response{
			fedPath: answer(200, mixed, multipartBody("Location: https://cdn.example/abc\r\n"))}, wantErr: media.ErrRemote, wantAsked: 1},
		{name: "unreachable", answers: map[string]func() *http.Response{}, wantErr: media.ErrRemote, wantAsked: 1},
		{name: "header injection in the type is dropped", answers: map[string]func() *http.Response{
			fedPath: answer(200, mixed, multipartBody("Content-Type: "+strings.Repeat("x", 300)+"\r\n\r\nhello"))},
			want: "hello", wantType: "application/octet-stream", wantAsked: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &cannedClient{answers: tc.answers}
			max := tc.maxSize
			if max == 0 {
				max = 1 << 20
			}
			ctype, name, body, err := federation.MediaFetcher{Client: c}.FetchMedia(context.Background(), "remote.example", "abc", max)
			if len(c.asked) != tc.wantAsked {
				t.Errorf("asked %v, want %d requests", c.asked, tc.wantAsked)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer body.Close()
			got, err := io.ReadAll(body)
			if err != nil || string(got) != tc.want || ctype != tc.wantType || name != tc.wantName {
				t.Fatalf("got %q %q %q (%v), want %q %q %q", got, ctype, name, err, tc.want, tc.wantType, tc.wantName)
			}
		})
	}
}
