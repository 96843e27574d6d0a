package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"net/http"
	gosync "sync"
)

// Server notices (spec: module "Server Notices"), as Synapse sends them
// (synapse/server_notices/server_notices_manager.py, and its admin API
// POST /_synapse/admin/v1/send_server_notice): each user gets one room
// that a system user owns, tagged m.server_notice for them, where the
// system user sends the notices and the user, at power level -10, can
// read but neither write nor invite. The room is the one the user is
// invited to or joined in where the system user is joined; when the user
// has left it, the next notice invites them back (as Synapse, whose room
// lookup is cached, does: Complement's "After leaving the alert room and
// on re-invitation, no new room is created"); only a user who never had
// one gets a new room.

// ServerNoticesConfig is config server_notices; the API's Config holds
// nil when they are off.
type ServerNoticesConfig struct {
	// Localpart of the system user, which the server creates (without a
	// password, so nobody can log in as it or register its name).
	Localpart               string
	DisplayName, AvatarURL  string
	RoomName, RoomAvatarURL string
	RoomTopic               string
	AutoJoin                bool
}

// TagServerNotice marks the notices room in the user's room tags.
const TagServerNotice = "m.server_notice"

// serverNoticesUserLevel is the users_default of a notices room: below
// the levels to send messages (events_default 0) and to invite (0).
const serverNoticesUserLevel = -10

func (s *Server) serverNoticeRoutes() []route {
	return []route{
		{method: http.MethodPost, path: "/_synapse/admin/v1/send_server_notice", handler: s.sendServerNotice, auth: authRequired},
		{method: http.MethodPut, path: "/_synapse/admin/v1/send_server_notice/{txnId}", handler: s.sendServerNotice, auth: authRequired},
	}
}

// serverNotices serialises the making of notices rooms, so that two
// notices to the same user at once do not make two rooms: mu in this
// process, and the store's Exclusive across the processes that share its
// database.
type serverNotices struct {
	mu gosync.Mutex
}

// POST /_synapse/admin/v1/send_server_notice and PUT .../{txnId}:
// {"user_id", "content", "type" (default m.room.message), "state_key"}.
// Server administrators only.
func (s *Server) sendServerNotice(r *http.Request) (any, error) {
	rq := requester(r)
	admin, err := s.store.User(r.Context(), rq.UserID)
	if err != nil {
		return nil, err
	}
	if !admin.Admin {
		return nil, httpapi.Forbidden("You are not a server admin")
	}
	var body struct {
		UserID   *string         `json:"user_id"`
		Content  json.RawMessage `json:"content"`
		Type     *string         `json:"type"`
		StateKey *string         `json:"state_key"`
	}
	if err := httpapi.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.UserID == nil || len(body.Content) == 0 || string(body.Content) == "null" {
		return nil, httpapi.MissingParam("user_id and content are required")
	}
	if body.Content[0] != '{' {
		return nil, httpapi.BadJSON("content must be an object")
	}
	typ := roomdag.TypeMessage
	if body.Type != nil {
		typ = *body.Type
	}
	if typ == "" || len(typ) > 255 {
		return nil, httpapi.InvalidParam("type must be 1 to 255 bytes")
	}
	if body.StateKey != nil && len(*body.StateKey) > 255 {
		return nil, httpapi.InvalidParam("state_key must be at most 255 bytes")
	}
	cfg := s.cfg.ServerNotices
	if cfg == nil {
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "Server notices are not enabled on this server")
	}
	target, err := roomdag.ParseUserID(*body.UserID)
	if err != nil {
		return nil, httpapi.InvalidParam("malformed user_id")
	}
	if target.Server() != s.cfg.ServerName {
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "Server notices can only be sent to local users")
	}
	system := roomdag.NewUserID(cfg.Localpart, s.cfg.ServerName)
	if target == system {
		return nil, httpapi.InvalidParam("the system user does not get server notices")
	}
	if _, err := s.store.User(r.Context(), target); errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("User not found")
	} else if err != nil {
		return nil, err
	}
	p := roomdag.ProtoEvent{Type: typ, StateKey: body.StateKey, Sender: system, Content: body.Content}
	if id := httpapi.PathParam(r, "txnId"); id != "" {
		// Scoped to the administrator's device, like any transaction.
		p.Txn = &roomdag.Txn{DeviceID: rq.DeviceID, Scope: "send_server_notice/" + string(rq.UserID), TxnID: id}
		if ev, err := s.store.TxnEvent(r.Context(), system, *p.Txn); err == nil {
			return map[string]any{"event_id": ev}, nil
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
	}
	room, err := s.noticeRoom(r.Context(), cfg, system, target)
	if err != nil {
		return nil, err
	}
	ev, _, err := s.rooms.Append(r.Context(), room, p)
	if errors.Is(err, storage.ErrConflict) && p.Txn != nil {
		if id, err := s.store.TxnEvent(r.Context(), system, *p.Txn); err == nil {
			return map[string]any{"event_id": id}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": ev.ID()}, nil
}

// noticeRoom returns the user's notices room with the user invited or
// joined, making the system user and the room as needed, and inviting the
// user back to the room they left; an existing room gets the configured
// profile, name, avatar and topic when they changed, as in Synapse.
func (s *Server) noticeRoom(ctx context.Context, cfg *ServerNoticesConfig, system, user roomdag.UserID) (roomdag.RoomID, error) {
	s.notices.mu.Lock()
	defer s.notices.mu.Unlock()
	var room roomdag.RoomID
	err := s.store.Exclusive(ctx, "server notices room of "+string(user), func() error {
		var err error
		room, err = s.noticeRoomLocked(ctx, cfg, system, user)
		return err
	})
	return room, err
}

// noticeRoomLocked is noticeRoom once no other request, in any process,
// looks for the user's notices room.
func (s *Server) noticeRoomLocked(ctx context.Context, cfg *ServerNoticesConfig, system, user roomdag.UserID) (roomdag.RoomID, error) {
	if err := s.ensureSystemUser(ctx, cfg, system); err != nil {
		return "", err
	}
	rooms, err := s.store.UserRooms(ctx, user)
	if err != nil {
		return "", err
	}
	var left *storage.RoomMembership // the newest notices room the user left
	for i, m := range rooms {
		if m.Membership != roomdag.MembershipJoin && m.Membership != roomdag.MembershipInvite && m.Membership != roomdag.MembershipLeave {
			continue
		}
		st, err := s.rooms.State(ctx, m.RoomID)
		if err != nil {
			return "", err
		}
		// The system user must be joined: inviting it somewhere does
		// not make a notices room (Synapse).
		if !s.isNoticeRoom(st) {
			continue
		}
		if m.Membership == roomdag.MembershipLeave {
			if left == nil || m.Pos > left.Pos {
				left = &rooms[i]
			}
			continue
		}
		return m.RoomID, s.refreshNoticeRoom(ctx, cfg, system, st, m.RoomID)
	}
	if left != nil {
		st, err := s.rooms.State(ctx, left.RoomID)
		if err != nil {
			return "", err
		}
		if err := s.refreshNoticeRoom(ctx, cfg, system, st, left.RoomID); err != nil {
			return "", err
		}
		return left.RoomID, s.inviteToNoticeRoom(ctx, cfg, system, user, left.RoomID)
	}
	room, err := s.createNoticeRoom(ctx, cfg, system)
	if err != nil {
		return "", err
	}
	pos, err := s.store.UpdateAccountData(ctx, user, room, typeTag, func(cur json.RawMessage) (json.RawMessage, error) {
		tags := tagsOf(cur)
		tags[TagServerNotice] = json.RawMessage(`{}`)
		return json.Marshal(map[string]any{"tags": tags})
	})
	if err != nil {
		return "", err
	}
	if pos != 0 {
		s.sync.Notifier().AccountDataChanged(user, pos)
	}
	return room, s.inviteToNoticeRoom(ctx, cfg, system, user, room)
}

// inviteToNoticeRoom invites the user to their notices room, and joins
// them to it with auto_join.
func (s *Server) inviteToNoticeRoom(ctx context.Context, cfg *ServerNoticesConfig, system, user roomdag.UserID, room roomdag.RoomID) error {
	invite, err := s.memberEvent(ctx, system, user, roomdag.MembershipInvite, "")
	if err != nil {
		return err
	}
	if _, _, err := s.rooms.Append(ctx, room, invite); err != nil {
		return fmt.Errorf("inviting %s to their server notices room: %w", user, err)
	}
	if cfg.AutoJoin {
		join, err := s.memberEvent(ctx, user, user, roomdag.MembershipJoin, "")
		if err != nil {
			return err
		}
		if _, _, err := s.rooms.Append(ctx, room, join); err != nil {
			return fmt.Errorf("joining %s to their server notices room: %w", user, err)
		}
	}
	return nil
}

// ensureSystemUser creates the system user on first use, with the
// configured profile and no password.
func (s *Server) ensureSystemUser(ctx context.Context, cfg *ServerNoticesConfig, system roomdag.UserID) error {
	_, err := s.store.User(ctx, system)
	if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	err = s.store.CreateUser(ctx, storage.User{ID: system}, s.clock.Now().UnixMilli())
	if errors.Is(err, storage.ErrConflict) {
		return nil // made meanwhile, by a registration or another process
	}
	if err != nil || cfg.DisplayName == "" && cfg.AvatarURL == "" {
		return err
	}
	var name, avatar *string
	if cfg.DisplayName != "" {
		name = &cfg.DisplayName
	}
	if cfg.AvatarURL != "" {
		avatar = &cfg.AvatarURL
	}
	return s.store.SetProfile(ctx, system, name, avatar)
}

// systemMember is the system user's join content with the configured
// profile.
func systemMember(cfg *ServerNoticesConfig) memberContent {
	c := memberContent{Membership: roomdag.MembershipJoin}
	if cfg.DisplayName != "" {
		c.DisplayName = &cfg.DisplayName
	}
	if cfg.AvatarURL != "" {
		c.AvatarURL = &cfg.AvatarURL
	}
	return c
}

// isNoticeRoom says whether a room is a server notices room: one the
// system user is joined to (how noticeRoom finds them, and Synapse's
// is_server_notice_room). With server notices off there are none.
func (s *Server) isNoticeRoom(st *roomdag.RoomState) bool {
	cfg := s.cfg.ServerNotices
	return cfg != nil && st.Membership(roomdag.NewUserID(cfg.Localpart, s.cfg.ServerName)) == roomdag.MembershipJoin
}

// checkNoticeRoomLeave refuses to turn target's invite to a server notices
// room into a leave: the invite cannot be rejected, but once joined the
// user may leave (Synapse; Complement's TestServerNotices).
func (s *Server) checkNoticeRoomLeave(st *roomdag.RoomState, target roomdag.UserID) error {
	if st.Membership(target) != roomdag.MembershipInvite || !s.isNoticeRoom(st) {
		return nil
	}
	return httpapi.Errorf(http.StatusForbidden, httpapi.CodeCannotLeaveServerNoticeRoom, "You cannot reject the invite to your server notices room; join it, then you may leave")
}

// createNoticeRoom makes a private room, as the private_chat preset does,
// with users_default -10, the configured name, topic and avatar.
func (s *Server) createNoticeRoom(ctx context.Context, cfg *ServerNoticesConfig, system roomdag.UserID) (roomdag.RoomID, error) {
	v, ok := roomdag.LookupRoomVersion(s.cfg.DefaultRoomVersion)
	if !ok {
		return "", fmt.Errorf("default room version %q unknown", s.cfg.DefaultRoomVersion)
	}
	state := func(typ, key string, content any) roomdag.ProtoEvent {
		b, _ := json.Marshal(content)
		k := key
		return roomdag.ProtoEvent{Type: typ, StateKey: &k, Sender: system, Content: b}
	}
	create := map[string]any{"room_version": v.ID}
	if !v.CreatorFromSender {
		create["creator"] = system
	}
	pl := defaultPowerLevels(v, system, "private_chat", nil)
	pl["users_default"] = json.RawMessage(fmt.Sprint(serverNoticesUserLevel))
	rest := []roomdag.ProtoEvent{
		state(roomdag.TypeMember, string(system), systemMember(cfg)),
		state(roomdag.TypePowerLevels, "", pl),
		state(roomdag.TypeJoinRules, "", map[string]string{"join_rule": "invite"}),
		state(roomdag.TypeHistoryVisibility, "", map[string]string{"history_visibility": "shared"}),
		state(roomdag.TypeGuestAccess, "", map[string]string{"guest_access": "can_join"}),
	}
	if cfg.RoomAvatarURL != "" {
		rest = append(rest, state(roomdag.TypeAvatar, "", map[string]string{"url": cfg.RoomAvatarURL}))
	}
	if cfg.RoomName != "" {
		rest = append(rest, state(roomdag.TypeName, "", map[string]string{"name": cfg.RoomName}))
	}
	if cfg.RoomTopic != "" {
		rest = append(rest, state(roomdag.TypeTopic, "", map[string]string{"topic": cfg.RoomTopic}))
	}
	var id roomdag.RoomID
	if !v.DomainlessRoomIDs {
		id = roomdag.RoomID("!" + s.newID(18) + ":" + string(s.cfg.ServerName))
	}
	return s.rooms.CreateRoom(ctx, v, id, state(roomdag.TypeCreate, "", create), rest)
}

// refreshNoticeRoom brings an existing notices room in line with the
// configuration: the system user's profile, and the room's name, avatar
// and topic (Synapse's _update_notice_user_profile_if_changed and
// _update_room_info).
func (s *Server) refreshNoticeRoom(ctx context.Context, cfg *ServerNoticesConfig, system roomdag.UserID, st *roomdag.RoomState, room roomdag.RoomID) error {
	str := func(ev *roomdag.Event, key string) string {
		if ev == nil {
			return ""
		}
		var c map[string]any
		_ = json.Unmarshal(ev.Content(), &c)
		v, _ := c[key].(string)
		return v
	}
	send := func(p roomdag.ProtoEvent) error {
		_, _, err := s.rooms.Append(ctx, room, p)
		return err
	}
	k := func(s string) *string { return &s }
	member := st.State.Get(roomdag.TypeMember, string(system))
	if str(member, "displayname") != cfg.DisplayName || str(member, "avatar_url") != cfg.AvatarURL {
		b, _ := json.Marshal(systemMember(cfg))
		if err := send(roomdag.ProtoEvent{Type: roomdag.TypeMember, StateKey: k(string(system)), Sender: system, Content: b}); err != nil {
			return err
		}
	}
	for _, info := range []struct{ typ, key, want string }{
		{roomdag.TypeName, "name", cfg.RoomName},
		{roomdag.TypeAvatar, "url", cfg.RoomAvatarURL},
		{roomdag.TypeTopic, "topic", cfg.RoomTopic},
	} {
		if str(st.State.Get(info.typ, ""), info.key) == info.want {
			continue
		}
		b, _ := json.Marshal(map[string]string{info.key: info.want})
		if err := send(roomdag.ProtoEvent{Type: info.typ, StateKey: k(""), Sender: system, Content: b}); err != nil {
			return err
		}
	}
	return nil
}
