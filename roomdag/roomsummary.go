package roomdag

import (
	"cmp"
	"encoding/json"
	"slices"
)

// Room summaries as the room directory, room summaries and the space
// hierarchy show them, on the client API and over federation alike.

const (
	// TypeSpaceChild is a space's edge to a child room.
	TypeSpaceChild = "m.space.child"
	// RoomTypeSpace marks a space in m.room.create's "type".
	RoomTypeSpace = "m.space"
	// MaxChildrenPerSpace bounds the children followed in one space
	// (Synapse's MAX_ROOMS_PER_SPACE).
	MaxChildrenPerSpace = 50
	// maxChildOrderLen is the longest valid "order" of an m.space.child
	// event (spec: m.space.child).
	maxChildOrderLen = 50
)

// PublicRoom is what a room's current state says about it (spec:
// PublicRoomsChunk, the base of room summaries and hierarchy chunks).
type PublicRoom struct {
	RoomID           RoomID `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// ContentString reads one string field of the state event (typ, "")'s
// content: "" if the event is absent or the field is not a string.
func ContentString(state StateMap, typ, field string) string {
	ev := state.Get(typ, "")
	if ev == nil {
		return ""
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(ev.Content(), &c) != nil {
		return ""
	}
	var v string
	if json.Unmarshal(c[field], &v) != nil {
		return ""
	}
	return v
}

// DescribeRoom summarises the room id whose current state is st.
func DescribeRoom(id RoomID, st *RoomState) PublicRoom {
	info := PublicRoom{
		RoomID:         id,
		Name:           ContentString(st.State, TypeName, "name"),
		Topic:          ContentString(st.State, TypeTopic, "topic"),
		CanonicalAlias: ContentString(st.State, TypeCanonicalAlias, "alias"),
		AvatarURL:      ContentString(st.State, TypeAvatar, "url"),
		WorldReadable:  HistoryVisibility(st.State) == VisibilityWorldReadable,
		GuestCanJoin:   ContentString(st.State, TypeGuestAccess, "guest_access") == "can_join",
		JoinRule:       ContentString(st.State, TypeJoinRules, "join_rule"),
		RoomType:       ContentString(st.State, TypeCreate, "type"),
	}
	for k, ev := range st.State {
		if k.Type == TypeMember && ev.Membership() == MembershipJoin {
			info.NumJoinedMembers++
		}
	}
	return info
}

// AllowedRooms are the rooms a restricted join rule names (its allow
// entries of type m.room_membership).
func AllowedRooms(state StateMap) []string {
	ev := state.Get(TypeJoinRules, "")
	if ev == nil {
		return nil
	}
	var c struct {
		Allow json.RawMessage `json:"allow"`
	}
	var list []json.RawMessage
	if json.Unmarshal(ev.Content(), &c) != nil || json.Unmarshal(c.Allow, &list) != nil {
		return nil
	}
	var out []string
	for _, raw := range list {
		var a map[string]json.RawMessage
		var typ, room string
		if json.Unmarshal(raw, &a) != nil || json.Unmarshal(a["type"], &typ) != nil || json.Unmarshal(a["room_id"], &room) != nil {
			continue
		}
		if typ == "m.room_membership" && room != "" {
			out = append(out, room)
		}
	}
	return out
}

// SpaceChildren returns a space's valid m.space.child events (a "via"
// list of strings, spec: "m.space.child"; one without is a removed
// child), suggested ones only if asked, in the spec's order: by "order"
// where valid, those without last, then by origin_server_ts, then by room
// ID; at most MaxChildrenPerSpace.
func SpaceChildren(state StateMap, suggestedOnly bool) []*Event {
	type child struct {
		ev    *Event
		order string
		has   bool
	}
	var cs []child
	for k, ev := range state {
		if k.Type != TypeSpaceChild {
			continue
		}
		if _, err := ParseRoomID(k.StateKey); err != nil {
			continue
		}
		var c struct {
			Via       []json.RawMessage `json:"via"`
			Order     json.RawMessage   `json:"order"`
			Suggested json.RawMessage   `json:"suggested"`
		}
		if json.Unmarshal(ev.Content(), &c) != nil || len(c.Via) == 0 {
			continue
		}
		valid := true
		for _, v := range c.Via {
			var s string
			valid = valid && json.Unmarshal(v, &s) == nil
		}
		if !valid || suggestedOnly && string(c.Suggested) != "true" {
			continue
		}
		ch := child{ev: ev}
		var order string
		if json.Unmarshal(c.Order, &order) == nil && validChildOrder(order) {
			ch.order, ch.has = order, true
		}
		cs = append(cs, ch)
	}
	slices.SortFunc(cs, func(a, b child) int {
		if a.has != b.has {
			if a.has {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.order, b.order), cmp.Compare(a.ev.OriginServerTS(), b.ev.OriginServerTS()),
			cmp.Compare(*a.ev.StateKey(), *b.ev.StateKey()))
	})
	if len(cs) > MaxChildrenPerSpace {
		cs = cs[:MaxChildrenPerSpace]
	}
	out := make([]*Event, len(cs))
	for i, c := range cs {
		out[i] = c.ev
	}
	return out
}

// validChildOrder: at most 50 characters from U+0020 to U+007E (spec:
// m.space.child "order").
func validChildOrder(s string) bool {
	if len(s) > maxChildOrderLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
