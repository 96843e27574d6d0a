package api

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestBodyDeadlineEndsWithTheBody: once a body has been read to its end
// the deadline is lifted, so a handler that then takes longer than the
// body timeout (net/http watches the connection for a hang-up meanwhile,
// and would take a deadline for one) keeps its context.
func TestBodyDeadlineEndsWithTheBody(t *testing.T) {
	const timeout = 50 * time.Millisecond
	s := &Server{cfg: Config{BodyTimeout: timeout}}
	cancelled := make(chan bool, 1)
	srv := httptest.NewServer(s.BodyDeadlines(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			t.Errorf("reading a body sent at once: %v", err)
		}
		select {
		case <-r.Context().Done():
			cancelled <- true
		case <-time.After(3 * timeout):
			cancelled <- false
		}
	})))
	defer srv.Close()
	resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if <-cancelled {
		t.Error("the request's context was cancelled after its body had been read")
	}
}
