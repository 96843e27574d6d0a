package api

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
)

// RemoteJoiner joins local users to rooms this server is not in, over
// federation (federation.RemoteJoiner).
type RemoteJoiner interface {
	// ResolveAlias asks the alias's server for its room and the servers
	// in it.
	ResolveAlias(ctx context.Context, alias roomdag.RoomAlias) (roomdag.RoomID, []roomdag.ServerName, error)
	// Join joins user to room through the first of servers that lets it
	// in; content adds to the join's content. It returns once the join is
	// durable here, or an error (a Matrix error for a refusal).
	Join(ctx context.Context, room roomdag.RoomID, user roomdag.UserID, servers []roomdag.ServerName, content map[string]json.RawMessage) (*roomdag.Event, error)
}

// joinServers lists the servers to join a room through, in order: the
// request's via (or server_name), those the alias lookup gave, the room
// ID's server (before v12, room IDs carry the creator's server), then
// the servers of the room's members as this server last saw them.
func (s *Server) joinServers(r *http.Request, room roomdag.RoomID, aliasServers []roomdag.ServerName, st *roomdag.RoomState) []roomdag.ServerName {
	var out []roomdag.ServerName
	add := func(sn roomdag.ServerName) {
		if sn != "" && sn != s.cfg.ServerName && !slices.Contains(out, sn) {
			out = append(out, sn)
		}
	}
	for _, v := range viaServers(r) {
		add(roomdag.ServerName(v))
	}
	for _, sn := range aliasServers {
		add(sn)
	}
	if _, server, ok := strings.Cut(string(room), ":"); ok {
		add(roomdag.ServerName(server))
	}
	if st != nil {
		var members []roomdag.ServerName
		for k, ev := range st.State {
			if k.Type == roomdag.TypeMember && ev.Membership() == roomdag.MembershipJoin {
				members = append(members, roomdag.UserID(k.StateKey).Server())
			}
		}
		slices.Sort(members)
		for _, sn := range members {
			add(sn)
		}
	}
	return out
}

// inRoom says whether a user of this server is joined to the room: if
// none is, this server's copy of the room is not live, and a join goes
// through a server that is in it.
func (s *Server) inRoom(st *roomdag.RoomState) bool {
	for k, ev := range st.State {
		if k.Type == roomdag.TypeMember && ev.Membership() == roomdag.MembershipJoin && roomdag.UserID(k.StateKey).Server() == s.cfg.ServerName {
			return true
		}
	}
	return false
}
