package api

import (
	"net/http"
	"strings"
	"unicode"

	"github.com/persistentchat/homeserver/httpapi"
)

// User directory (spec: client-server API, "User directory"). As in
// Synapse's default, a searcher finds local users who share a joined room
// with them or are joined to a public room; themselves only through a
// public room.

func (s *Server) userDirectoryRoutes() []route {
	return []route{
		{method: "POST", path: v3 + "/user_directory/search", handler: s.searchUserDirectory, auth: authRequired, rate: rateNone},
	}
}

const (
	defaultUserDirectoryLimit = 10 // spec: "Defaults to 10."
	maxUserDirectoryLimit     = 100
	maxSearchTermBytes        = 256
	// maxSearchTerms bounds the words of one query, as Synapse does (10).
	maxSearchTerms = 10
)

// searchTerms splits a user directory query into the terms that must all
// match: its words, with user IDs cut at '@' and ':' as Synapse tokenises
// them, so "@alice:example.org" asks for "alice" and "example.org" and
// finds alice, not everyone on example.org; "Alice Cooper" finds only
// users matching both words.
func searchTerms(q string) []string {
	terms := strings.FieldsFunc(q, func(r rune) bool { return unicode.IsSpace(r) || r == '@' || r == ':' })
	if len(terms) > maxSearchTerms {
		terms = terms[:maxSearchTerms]
	}
	return terms
}

type directoryUser struct {
	UserID      string  `json:"user_id"`
	DisplayName *string `json:"display_name,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

func (s *Server) searchUserDirectory(r *http.Request) (any, error) {
	var req struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.SearchTerm == nil {
		return nil, httpapi.MissingParam("search_term is required")
	}
	if len(*req.SearchTerm) > maxSearchTermBytes {
		return nil, httpapi.InvalidParam("search_term is longer than %d bytes", maxSearchTermBytes)
	}
	limit := defaultUserDirectoryLimit
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, httpapi.InvalidParam("limit must not be negative")
		}
		limit = min(*req.Limit, maxUserDirectoryLimit)
	}
	users, limited, err := s.store.SearchUserDirectory(r.Context(), requester(r).UserID, searchTerms(*req.SearchTerm), limit)
	if err != nil {
		return nil, err
	}
	results := make([]directoryUser, len(users))
	for i, u := range users {
		results[i] = directoryUser{UserID: string(u.ID), DisplayName: u.DisplayName, AvatarURL: u.AvatarURL}
	}
	return map[string]any{"results": results, "limited": limited}, nil
}
