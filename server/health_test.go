package server_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/persistentchat/homeserver/testserver"
)

// TestHealth: GET /health answers 200 "OK" without a token, HEAD too,
// and 503 once the database cannot be used, so a load balancer takes the
// process out.
func TestHealth(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	get := func(method string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+"/health", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	for _, tc := range []struct {
		method, body string
	}{{"GET", "OK"}, {"HEAD", ""}} {
		status, body, h := get(tc.method)
		if status != http.StatusOK || body != tc.body {
			t.Errorf("%s /health = %d %q, want 200 %q", tc.method, status, body, tc.body)
		}
		if ct := h.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Errorf("%s /health: Content-Type %q", tc.method, ct)
		}
	}

	if err := srv.HS.DB().Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second probe finds it still failing
		if status, body, _ := get("GET"); status != http.StatusServiceUnavailable || body == "OK" {
			t.Errorf("GET /health with the database closed = %d %q, want 503", status, body)
		}
	}
}
