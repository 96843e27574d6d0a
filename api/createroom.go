package api

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/retention"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"maps"
	"net/http"
)

type createRoomRequest struct {
	Visibility                string            `json:"visibility"`
	RoomAliasName             string            `json:"room_alias_name"`
	Name                      *string           `json:"name"`
	Topic                     *string           `json:"topic"`
	Invite                    []string          `json:"invite"`
	Invite3PID                []json.RawMessage `json:"invite_3pid"`
	RoomVersion               string            `json:"room_version"`
	CreationContent           json.RawMessage   `json:"creation_content"`
	InitialState              []stateEvent      `json:"initial_state"`
	Preset                    string            `json:"preset"`
	IsDirect                  bool              `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage   `json:"power_level_content_override"`
}

type stateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// createRoom checks the request and makes the room (firstEvents builds its
// events).
func (s *Server) createRoom(r *http.Request) (any, error) {
	var req createRoomRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	user := requester(r).UserID
	verID := req.RoomVersion
	if verID == "" {
		verID = s.cfg.DefaultRoomVersion
	}
	v, ok := roomdag.LookupRoomVersion(verID)
	if !ok {
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnsupportedRoomVersion, "room version %q is not supported", verID)
	}
	if len(req.Invite3PID) > 0 {
		return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "third-party invites are not supported")
	}
	preset := req.Preset
	switch preset {
	case "":
		preset = "private_chat"
		if req.Visibility == "public" {
			preset = "public_chat"
		}
	case "private_chat", "public_chat", "trusted_private_chat":
	default:
		return nil, httpapi.InvalidParam("unknown preset %q", preset)
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return nil, httpapi.InvalidParam("visibility must be public or private")
	}
	invites := make([]roomdag.UserID, 0, len(req.Invite))
	var localInvites, remoteInvites []roomdag.UserID
	for _, i := range req.Invite {
		u, err := roomdag.ParseUserID(i)
		if err != nil {
			return nil, httpapi.InvalidParam("malformed user ID %q in invite", i)
		}
		if u.Server() != s.cfg.ServerName {
			// Invited over federation once the room is made (their
			// servers sign the invites); their power levels and
			// co-creation are settled with the local invitees'.
			if s.cfg.RemoteMemberships == nil {
				return nil, httpapi.Forbidden("this server does not federate: users of other servers cannot be invited")
			}
			remoteInvites = append(remoteInvites, u)
			invites = append(invites, u)
			continue
		}
		localInvites = append(localInvites, u)
		// An invitee blocking invites (v1.18) fails the request with 403
		// M_INVITE_BLOCKED before anything is made. The spec also allows
		// making the room without that invite, but then the client would
		// not learn of it; Synapse answers the error after making the room.
		if err := s.checkInviteAllowed(r.Context(), u); err != nil {
			return nil, err
		}
		invites = append(invites, u)
	}
	var alias roomdag.RoomAlias
	if req.RoomAliasName != "" {
		a, err := roomdag.ParseRoomAlias("#" + req.RoomAliasName + ":" + string(s.cfg.ServerName))
		if err != nil {
			return nil, httpapi.InvalidParam("invalid room_alias_name")
		}
		if err := s.checkAliasClaim(r, a); err != nil {
			return nil, err
		}
		if _, _, err := s.store.Alias(r.Context(), a); err == nil {
			return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeRoomInUse, "room alias %s is taken", a)
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		alias = a
	}

	// creation_content and power_level_content_override are taken apart
	// here, so they get the checks send gives content (the room version's
	// canonical JSON) before they are; their values are kept as sent.
	create := map[string]any{}
	if len(req.CreationContent) > 0 && string(req.CreationContent) != "null" {
		if err := roomdag.CheckJSON(v, req.CreationContent); err != nil {
			return nil, httpapi.BadJSON("creation_content: %v", err)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(req.CreationContent, &fields); err != nil {
			return nil, httpapi.BadJSON("creation_content must be an object")
		}
		for k, val := range fields {
			create[k] = val
		}
	}
	// v12: trusted private chats make the invitees co-creators instead of
	// listing them at 100 in power levels. The spec (createRoom,
	// creation_content) asks to combine them with any additional_creators
	// given, without duplicates, as Synapse does.
	if v.PrivilegedCreators && preset == "trusted_private_chat" && len(invites) > 0 {
		var given []json.RawMessage
		if raw, set := create["additional_creators"]; set {
			b, _ := json.Marshal(raw)
			if json.Unmarshal(b, &given) != nil {
				return nil, httpapi.BadJSON("creation_content.additional_creators must be an array of user IDs")
			}
		}
		creators := make([]any, 0, len(given)+len(invites))
		seen := map[string]bool{}
		for _, g := range given {
			var s string
			if json.Unmarshal(g, &s) == nil {
				if seen[s] {
					continue
				}
				seen[s] = true
			}
			creators = append(creators, g) // the auth rules judge entries that are not user IDs
		}
		for _, u := range invites {
			if !seen[string(u)] {
				seen[string(u)] = true
				creators = append(creators, u)
			}
		}
		create["additional_creators"] = creators
	}
	// Power levels: the override merged over our defaults.
	pl := defaultPowerLevels(v, user, preset, invites)
	if len(req.PowerLevelContentOverride) > 0 && string(req.PowerLevelContentOverride) != "null" {
		if err := roomdag.CheckJSON(v, req.PowerLevelContentOverride); err != nil {
			return nil, httpapi.BadJSON("power_level_content_override: %v", err)
		}
		var over map[string]json.RawMessage
		if err := json.Unmarshal(req.PowerLevelContentOverride, &over); err != nil {
			return nil, httpapi.BadJSON("power_level_content_override must be an object")
		}
		for k, val := range over {
			pl[k] = val
		}
	}
	for _, ev := range req.InitialState {
		if ev.Type == "" || ev.Type == roomdag.TypeCreate || ev.Type == roomdag.TypeMember {
			return nil, httpapi.BadJSON("initial_state may not hold %q events", ev.Type)
		}
		if err := s.checkRoomEncryption(ev.Type); err != nil {
			return nil, err
		}
		if len(ev.Content) == 0 || ev.Content[0] != '{' {
			return nil, httpapi.BadJSON("initial_state content must be an object")
		}
		if ev.Type == retention.EventType && ev.StateKey == "" {
			if err := retention.ValidateContent(ev.Content); err != nil {
				return nil, err
			}
		}
		if ev.Type == roomdag.TypeCanonicalAlias {
			if err := s.checkCanonicalAliasClaim(r, ev.Content); err != nil {
				return nil, err
			}
		}
	}
	req.InitialState = s.withDefaultEncryption(preset, req.InitialState)
	createEv, rest, err := s.firstEvents(r.Context(), newRoom{
		version: v, creator: user, create: create, powerLevels: pl, alias: alias, preset: preset,
		initial: req.InitialState, name: req.Name, topic: req.Topic, invites: localInvites, isDirect: req.IsDirect,
	})
	if err != nil {
		return nil, err
	}

	roomID := s.localRoomID(v)
	if roomID != "" {
		if alias != "" {
			if err := s.store.PutAlias(r.Context(), alias, roomID, user); errors.Is(err, storage.ErrConflict) {
				return nil, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeRoomInUse, "room alias %s is taken", alias)
			} else if err != nil {
				return nil, err
			}
		}
	}
	roomID, err = s.rooms.CreateRoom(r.Context(), v, roomID, createEv, rest)
	if err != nil {
		if alias != "" && !v.DomainlessRoomIDs {
			// The alias must not point to a room that failed to be made.
			_ = s.store.DeleteAlias(r.Context(), alias)
		}
		return nil, invalidRoomState(err)
	}
	if alias != "" && v.DomainlessRoomIDs {
		// The ID is known only now; the alias was checked free above.
		if err := s.store.PutAlias(r.Context(), alias, roomID, user); err != nil {
			return nil, err
		}
	}
	if req.Visibility == "public" {
		if err := s.store.SetPublished(r.Context(), roomID, true); err != nil {
			return nil, err
		}
	}
	// A client that upgrades a room by hand names the old room in
	// creation_content (Complement's manual upgrade): the creator's join
	// carries their settings over as any join of a replacement room does.
	if old := predecessorOf(createEv.Content); old != "" {
		s.upgrades.copyUserState(r.Context(), user, old, roomID)
	}
	// As in Synapse, a refused remote invite fails the request after the
	// room is made.
	for _, u := range remoteInvites {
		if err := s.inviteRemote(r.Context(), roomID, user, u, "", req.IsDirect); err != nil {
			return nil, err
		}
	}
	return map[string]any{"room_id": roomID}, nil
}

// newRoom is what the first events of a room are made from: createRoom
// fills it from the request, a room upgrade from the room it replaces.
type newRoom struct {
	version *roomdag.RoomVersion
	creator roomdag.UserID
	// create is the creation content; firstEvents sets room_version and,
	// before v11, creator.
	create map[string]any
	// powerLevels is the content of the first m.room.power_levels event.
	powerLevels map[string]json.RawMessage
	// alias, if set, is named by an m.room.canonical_alias event.
	alias roomdag.RoomAlias
	// preset sets the join rules, history visibility and guest access
	// that initial does not.
	preset string
	// initial is checked state, sent after the preset's.
	initial     []stateEvent
	name, topic *string
	invites     []roomdag.UserID
	isDirect    bool
	// members are membership events sent last, by the creator (the bans an
	// upgrade carries over).
	members []roomdag.ProtoEvent
}

// firstEvents builds a room's events in the order the spec fixes
// (client-server API, "Creation"): create, creator join, power levels,
// canonical alias, preset rules, initial_state, name, topic, invites.
func (s *Server) firstEvents(ctx context.Context, nr newRoom) (roomdag.ProtoEvent, []roomdag.ProtoEvent, error) {
	user, v := nr.creator, nr.version
	// 1. m.room.create
	create := maps.Clone(nr.create)
	if create == nil {
		create = map[string]any{}
	}
	create["room_version"] = v.ID
	if !v.CreatorFromSender {
		create["creator"] = user
	}
	createContent, err := json.Marshal(create)
	if err != nil {
		return roomdag.ProtoEvent{}, nil, httpapi.BadJSON("bad creation content")
	}
	empty := ""
	createEv := roomdag.ProtoEvent{Type: roomdag.TypeCreate, StateKey: &empty, Sender: user, Content: createContent}

	var rest []roomdag.ProtoEvent
	state := func(typ, key string, content any) error {
		b, err := json.Marshal(content)
		if err != nil {
			return httpapi.BadJSON("bad content for %s", typ)
		}
		k := key
		rest = append(rest, roomdag.ProtoEvent{Type: typ, StateKey: &k, Sender: user, Content: b})
		return nil
	}
	// 2. the creator joins
	join, err := s.memberEvent(ctx, user, user, roomdag.MembershipJoin, "")
	if err != nil {
		return roomdag.ProtoEvent{}, nil, err
	}
	rest = append(rest, join)
	// 3. power levels
	if err := state(roomdag.TypePowerLevels, "", nr.powerLevels); err != nil {
		return roomdag.ProtoEvent{}, nil, err
	}
	// 4. canonical alias
	if nr.alias != "" {
		if err := state(roomdag.TypeCanonicalAlias, "", map[string]any{"alias": nr.alias}); err != nil {
			return roomdag.ProtoEvent{}, nil, err
		}
	}
	// 5. preset rules
	joinRule, guest := "invite", "can_join"
	if nr.preset == "public_chat" {
		joinRule, guest = "public", "forbidden"
	}
	initial := map[roomdag.StateKey]bool{}
	for _, ev := range nr.initial {
		initial[roomdag.StateKey{Type: ev.Type, StateKey: ev.StateKey}] = true
	}
	presetState := []struct {
		typ     string
		content map[string]string
	}{
		{roomdag.TypeJoinRules, map[string]string{"join_rule": joinRule}},
		{roomdag.TypeHistoryVisibility, map[string]string{"history_visibility": "shared"}},
	}
	if nr.preset != "public_chat" {
		presetState = append(presetState, struct {
			typ     string
			content map[string]string
		}{roomdag.TypeGuestAccess, map[string]string{"guest_access": guest}})
	}
	for _, ps := range presetState {
		if !initial[roomdag.StateKey{Type: ps.typ}] {
			if err := state(ps.typ, "", ps.content); err != nil {
				return roomdag.ProtoEvent{}, nil, err
			}
		}
	}
	// 6. initial_state
	for _, ev := range nr.initial {
		k := ev.StateKey
		rest = append(rest, roomdag.ProtoEvent{Type: ev.Type, StateKey: &k, Sender: user, Content: ev.Content})
	}
	// 7. name and topic
	if nr.name != nil {
		if err := state(roomdag.TypeName, "", map[string]string{"name": *nr.name}); err != nil {
			return roomdag.ProtoEvent{}, nil, err
		}
	}
	if nr.topic != nil {
		// spec: "an m.room.topic event with a text/plain mimetype", which
		// since v1.15 (MSC3765) means an m.topic block beside the plain topic.
		topic := map[string]any{"topic": *nr.topic, "m.topic": map[string]any{
			"m.text": []map[string]string{{"body": *nr.topic, "mimetype": "text/plain"}},
		}}
		if err := state(roomdag.TypeTopic, "", topic); err != nil {
			return roomdag.ProtoEvent{}, nil, err
		}
	}
	// 8. invites
	for _, u := range nr.invites {
		p, err := s.memberEvent(ctx, user, u, roomdag.MembershipInvite, "")
		if err != nil {
			return roomdag.ProtoEvent{}, nil, err
		}
		if nr.isDirect {
			var c map[string]any
			_ = json.Unmarshal(p.Content, &c)
			c["is_direct"] = true
			p.Content, _ = json.Marshal(c)
		}
		rest = append(rest, p)
	}
	return createEv, append(rest, nr.members...), nil
}

// localRoomID is a new room ID of this server, or "" for versions whose
// room IDs derive from the create event.
func (s *Server) localRoomID(v *roomdag.RoomVersion) roomdag.RoomID {
	if v.DomainlessRoomIDs {
		return ""
	}
	return roomdag.RoomID("!" + s.newID(18) + ":" + string(s.cfg.ServerName))
}

// invalidRoomState maps a refused first event of a new room: initial state
// the auth rules refuse (say, power levels that leave the creator unable to
// set the name) is a bad request, M_INVALID_ROOM_STATE, not a 403 (spec:
// createRoom).
func invalidRoomState(err error) error {
	var ae *roomdag.AuthError
	if errors.As(err, &ae) {
		if ae.Malformed {
			// Content the rules refuse whoever sends it (creators listed
			// in v12 power levels, malformed additional_creators): the
			// request is bad JSON.
			return httpapi.BadJSON("%v", err)
		}
		return httpapi.Errorf(http.StatusBadRequest, httpapi.CodeInvalidRoomState, "%v", err)
	}
	return err
}

// defaultPowerLevels are Synapse's defaults, so rooms behave as users of
// Element expect. In v12 the creator has infinite power and is not listed,
// and m.room.tombstone needs 150, above every level but the creators', so
// only creators may upgrade the room (spec: createRoom, "the power level
// for sending m.room.tombstone events MUST explicitly be higher than
// state_default", MSC4289).
func defaultPowerLevels(v *roomdag.RoomVersion, creator roomdag.UserID, preset string, invites []roomdag.UserID) map[string]json.RawMessage {
	tombstone := 100
	if v.PrivilegedCreators {
		tombstone = 150
	}
	users := map[roomdag.UserID]int{}
	if !v.PrivilegedCreators {
		users[creator] = 100
	}
	if preset == "trusted_private_chat" && !v.PrivilegedCreators {
		for _, u := range invites {
			users[u] = 100
		}
	}
	m := map[string]any{
		"users": users, "users_default": 0,
		"events": map[string]int{
			roomdag.TypeName: 50, roomdag.TypePowerLevels: 100, roomdag.TypeHistoryVisibility: 100,
			roomdag.TypeCanonicalAlias: 50, roomdag.TypeAvatar: 50, roomdag.TypeTombstone: tombstone,
			roomdag.TypeServerACL: 100, roomdag.TypeEncryption: 100, roomdag.TypeBackchat: 50,
		},
		"events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"notifications": map[string]int{"room": 50},
	}
	out := map[string]json.RawMessage{}
	for k, val := range m {
		out[k], _ = json.Marshal(val)
	}
	return out
}
