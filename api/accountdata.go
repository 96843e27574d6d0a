package api

import (
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
)

func (s *Server) accountDataRoutes() []route {
	return []route{
		{"PUT", v3 + "/user/{userId}/account_data/{type}", s.putAccountData, authRequired, rateNone},
		{"GET", v3 + "/user/{userId}/account_data/{type}", s.getAccountData, authRequired, rateNone},
		{"PUT", v3 + "/user/{userId}/rooms/{roomId}/account_data/{type}", s.putAccountData, authRequired, rateNone},
		{"GET", v3 + "/user/{userId}/rooms/{roomId}/account_data/{type}", s.getAccountData, authRequired, rateNone},
	}
}

// accountDataTarget reads {userId}, {roomId} (optional) and {type}.
func accountDataTarget(r *http.Request) (roomdag.UserID, roomdag.RoomID, string, error) {
	user, err := ownUser(r)
	if err != nil {
		return "", "", "", err
	}
	var room roomdag.RoomID
	if httpapi.PathParam(r, "roomId") != "" {
		if room, err = roomParam(r); err != nil {
			return "", "", "", err
		}
	}
	typ := httpapi.PathParam(r, "type")
	if typ == "" || len(typ) > roomdag.MaxFieldBytes {
		return "", "", "", httpapi.InvalidParam("bad account data type")
	}
	return user, room, typ, nil
}

func (s *Server) putAccountData(r *http.Request) (any, error) {
	user, room, typ, err := accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	// The server manages these itself (spec: "Server-side behaviour").
	if typ == "m.fully_read" && room != "" || typ == "m.push_rules" {
		return nil, httpapi.Errorf(http.StatusMethodNotAllowed, httpapi.CodeBadJSON, "%s cannot be set through this endpoint", typ)
	}
	content, err := httpapi.ReadObject(r)
	if err != nil {
		return nil, err
	}
	if err := checkFeedData(room, typ, content); err != nil {
		return nil, err
	}
	// The store's commit hook announces it (sync.Notifier.Apply).
	if _, err := s.store.PutAccountData(r.Context(), user, room, typ, content); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (s *Server) getAccountData(r *http.Request) (any, error) {
	user, room, typ, err := accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	c, err := s.store.AccountData(r.Context(), user, room, typ)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("no account data of that type")
	}
	return c, err
}
