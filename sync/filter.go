package sync

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/persistentchat/homeserver/roomdag"
)

// MaxFilterBytes bounds a filter, stored or inline.
const MaxFilterBytes = 65536

// Filter is a sync filter (spec: "Filtering"). Nil lists mean "no
// restriction"; empty lists match nothing.
type Filter struct {
	EventFields []string    `json:"event_fields,omitempty"`
	EventFormat string      `json:"event_format,omitempty"`
	AccountData EventFilter `json:"account_data"`
	Presence    EventFilter `json:"presence"`
	Room        RoomFilter  `json:"room"`

	// timelineLimitSet: room.timeline.limit was given, so 0 means no
	// timeline events (as Synapse takes it) rather than "unset".
	timelineLimitSet bool
}

// EventFilter selects events by type and sender.
type EventFilter struct {
	Limit      int       `json:"limit,omitempty"`
	Types      *[]string `json:"types,omitempty"`
	NotTypes   []string  `json:"not_types,omitempty"`
	Senders    *[]string `json:"senders,omitempty"`
	NotSenders []string  `json:"not_senders,omitempty"`
}

// RoomEventFilter also selects by room and URL, and shapes member state.
type RoomEventFilter struct {
	EventFilter
	Rooms                   *[]string `json:"rooms,omitempty"`
	NotRooms                []string  `json:"not_rooms,omitempty"`
	ContainsURL             *bool     `json:"contains_url,omitempty"`
	LazyLoadMembers         bool      `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers bool      `json:"include_redundant_members,omitempty"`
	// UnreadThreadNotifications asks for counts per thread, apart from
	// the main timeline's (spec: "Receiving notifications").
	UnreadThreadNotifications bool `json:"unread_thread_notifications,omitempty"`
}

// RoomFilter is the "room" part of a sync filter.
type RoomFilter struct {
	Rooms        *[]string       `json:"rooms,omitempty"`
	NotRooms     []string        `json:"not_rooms,omitempty"`
	IncludeLeave bool            `json:"include_leave,omitempty"`
	Timeline     RoomEventFilter `json:"timeline"`
	State        RoomEventFilter `json:"state"`
	Ephemeral    RoomEventFilter `json:"ephemeral"`
	AccountData  RoomEventFilter `json:"account_data"`
}

// ParseFilter parses and checks a filter. Errors describe what is wrong,
// for M_BAD_JSON.
func ParseFilter(data []byte) (*Filter, error) {
	if len(data) > MaxFilterBytes {
		return nil, fmt.Errorf("filter is larger than %d bytes", MaxFilterBytes)
	}
	var f Filter
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("invalid filter: %v", err)
	}
	switch f.EventFormat {
	case "", "client", "federation":
	default:
		return nil, fmt.Errorf("event_format must be client or federation")
	}
	for _, ef := range []*EventFilter{&f.AccountData, &f.Presence, &f.Room.Timeline.EventFilter,
		&f.Room.State.EventFilter, &f.Room.Ephemeral.EventFilter, &f.Room.AccountData.EventFilter} {
		if ef.Limit < 0 {
			return nil, fmt.Errorf("limit must not be negative")
		}
	}
	if err := f.checkIDs(); err != nil {
		return nil, err
	}
	f.timelineLimitSet = gjson.GetBytes(data, "room.timeline.limit").Exists()
	return &f, nil
}

// checkIDs refuses room and user IDs that do not parse in rooms,
// not_rooms, senders and not_senders, wherever they appear (as Synapse's
// filter schema does with its matrix_room_id and matrix_user_id formats).
func (f *Filter) checkIDs() error {
	type list struct {
		name string
		ids  []string
		user bool
	}
	deref := func(l *[]string) []string {
		if l == nil {
			return nil
		}
		return *l
	}
	lists := []list{
		{"room.rooms", deref(f.Room.Rooms), false}, {"room.not_rooms", f.Room.NotRooms, false},
		{"account_data.senders", deref(f.AccountData.Senders), true}, {"account_data.not_senders", f.AccountData.NotSenders, true},
		{"presence.senders", deref(f.Presence.Senders), true}, {"presence.not_senders", f.Presence.NotSenders, true},
	}
	for i, ef := range []*RoomEventFilter{&f.Room.Timeline, &f.Room.State, &f.Room.Ephemeral, &f.Room.AccountData} {
		name := [...]string{"room.timeline", "room.state", "room.ephemeral", "room.account_data"}[i]
		lists = append(lists, list{name + ".rooms", deref(ef.Rooms), false}, list{name + ".not_rooms", ef.NotRooms, false},
			list{name + ".senders", deref(ef.Senders), true}, list{name + ".not_senders", ef.NotSenders, true})
	}
	for _, l := range lists {
		for _, id := range l.ids {
			var err error
			if l.user {
				_, err = roomdag.ParseUserID(id)
			} else {
				_, err = roomdag.ParseRoomID(id)
			}
			if err != nil {
				return fmt.Errorf("%s: %q is not a valid ID", l.name, id)
			}
		}
	}
	return nil
}

// matchType matches an event type against a pattern where '*' matches any
// run of characters.
func matchType(pattern, t string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == t
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(t, parts[0]) {
		return false
	}
	t = t[len(parts[0]):]
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(t, p)
		}
		j := strings.Index(t, p)
		if j < 0 {
			return false
		}
		t = t[j+len(p):]
	}
	return true
}

func anyMatch(patterns []string, t string) bool {
	for _, p := range patterns {
		if matchType(p, t) {
			return true
		}
	}
	return false
}

// Allows reports whether an event of that type and sender passes.
func (f *EventFilter) Allows(evType string, sender roomdag.UserID) bool {
	if anyMatch(f.NotTypes, evType) {
		return false
	}
	if f.Types != nil && !anyMatch(*f.Types, evType) {
		return false
	}
	for _, s := range f.NotSenders {
		if s == string(sender) {
			return false
		}
	}
	if f.Senders != nil {
		found := false
		for _, s := range *f.Senders {
			found = found || s == string(sender)
		}
		return found
	}
	return true
}

// AllowsEvent applies every condition of a room event filter.
func (f *RoomEventFilter) AllowsEvent(ev *roomdag.Event) bool {
	if !f.Allows(ev.Type(), ev.Sender()) || !f.AllowsRoom(ev.RoomID()) {
		return false
	}
	if f.ContainsURL != nil {
		var c struct {
			URL json.RawMessage `json:"url"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		hasURL := len(c.URL) > 0 && c.URL[0] == '"'
		if hasURL != *f.ContainsURL {
			return false
		}
	}
	return true
}

// AllowsRoom applies rooms and not_rooms.
func (f *RoomEventFilter) AllowsRoom(r roomdag.RoomID) bool {
	return roomAllowed(f.Rooms, f.NotRooms, r)
}

// AllowsRoom applies the top-level rooms and not_rooms.
func (f *RoomFilter) AllowsRoom(r roomdag.RoomID) bool {
	return roomAllowed(f.Rooms, f.NotRooms, r)
}

func roomAllowed(rooms *[]string, notRooms []string, r roomdag.RoomID) bool {
	for _, x := range notRooms {
		if x == string(r) {
			return false
		}
	}
	if rooms == nil {
		return true
	}
	for _, x := range *rooms {
		if x == string(r) {
			return true
		}
	}
	return false
}
