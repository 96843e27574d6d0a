package api

import (
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/persistentchat/homeserver/httpapi"
)

// TestEveryGetAnswersHead: every GET route of the client API, r0 forms
// included, answers HEAD too (TestHeadRequests checks the answers).
func TestEveryGetAnswersHead(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &Server{log: log, http: httpapi.NewAdapter(log, mapError)}
	routes, ok := s.Handler().(chi.Routes)
	if !ok {
		t.Fatalf("Handler is a %T, not a chi router", s.Handler())
	}
	byMethod := map[string]map[string]bool{http.MethodGet: {}, http.MethodHead: {}}
	err := chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if m := byMethod[method]; m != nil {
			m[route] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(byMethod[http.MethodGet]) < 50 {
		t.Fatalf("only %d GET routes found: the walk is not seeing the route tables", len(byMethod[http.MethodGet]))
	}
	for route := range byMethod[http.MethodGet] {
		if !byMethod[http.MethodHead][route] {
			t.Errorf("GET %s does not answer HEAD", route)
		}
	}
	for route := range byMethod[http.MethodHead] {
		if !byMethod[http.MethodGet][route] {
			t.Errorf("HEAD %s has no GET", route)
		}
	}
}
