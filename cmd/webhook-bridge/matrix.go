package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// matrix is a minimal client-server API client that authenticates with
// the bridge's as_token and acts as any of its users through the user_id
// parameter (spec: application service API, "Identity assertion").
type matrix struct {
	base  string
	token string
	http  *http.Client
}

// matrixError is an error answer of the homeserver.
type matrixError struct {
	Status  int
	Errcode string `json:"errcode"`
	Message string `json:"error"`
}

func (e *matrixError) Error() string {
	return fmt.Sprintf("homeserver answered %d %s: %s", e.Status, e.Errcode, e.Message)
}

func isErrcode(err error, code string) bool {
	me, ok := err.(*matrixError)
	return ok && me.Errcode == code
}

func isStatus(err error, status int) bool {
	me, ok := err.(*matrixError)
	return ok && me.Status == status
}

// do calls the client-server API as user (the bot when ""), sending body
// as JSON and decoding a 200 answer into out (if not nil).
func (m *matrix) do(ctx context.Context, method, path, user string, body, out any) error {
	u := m.base + path
	if user != "" {
		sep := "?"
		if bytes.ContainsRune([]byte(path), '?') {
			sep = "&"
		}
		u += sep + "user_id=" + url.QueryEscape(user)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+m.token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		me := &matrixError{Status: resp.StatusCode}
		_ = json.Unmarshal(b, me)
		return me
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func roomPath(room string) string { return "/_matrix/client/v3/rooms/" + url.PathEscape(room) }
