package roomdag

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// InfiniteLevel stands for the infinite power level of room creators in
// versions with PrivilegedCreators (v12, MSC4289). Real levels lie within
// ±(2^53-1) (canonical JSON), so every comparison the auth rules make comes
// out as the spec intends: a creator outranks every other user, and two
// creators are equal, so neither can kick or ban the other.
const InfiniteLevel int64 = math.MaxInt64

// Spec defaults for m.room.power_levels (client-server API, m.room.power_levels).
const (
	defaultBan          = 50
	defaultKick         = 50
	defaultRedact       = 50
	defaultInvite       = 0
	defaultStateDefault = 50
	defaultEventsDef    = 0
	defaultUsersDefault = 0
	// defaultNotification is notifications.room when absent; the spec
	// defines no other notification key, and we use it for every absent one.
	defaultNotification = 50
	// creatorLevelNoPL is the creator's level in a room without a power
	// levels event, in versions without PrivilegedCreators.
	creatorLevelNoPL = 100
)

// PowerLevels is m.room.power_levels content with the spec's defaults filled
// in. The maps hold only the entries the content names; the methods apply
// the defaults. Build one with ParsePowerLevels (content alone) or
// RoomPowerLevels / PowerLevelsFromState (content plus the room's creators,
// which is what "this user's power" must be asked of).
type PowerLevels struct {
	Ban           int64 // to ban, and to unban (with Kick); default 50
	Kick          int64 // to kick; default 50
	Redact        int64 // to redact others' events (not an auth rule); default 50
	Invite        int64 // to invite and to send m.room.third_party_invite; default 0
	StateDefault  int64 // state events not in Events; default 50
	EventsDefault int64 // other events not in Events; default 0
	UsersDefault  int64 // users not in Users; default 0
	// Users, Events and Notifications hold the content's entries only.
	Users         map[UserID]int64
	Events        map[string]int64 // by event type
	Notifications map[string]int64 // by key; "room" (@room) defaults to 50

	// set has bit i set when the content names topLevelKeys[i]; the auth
	// rules on changes (v10 rule 9.5) distinguish "absent" from "default".
	set uint8
	// creators have InfiniteLevel (PrivilegedCreators versions only).
	creators []UserID
}

// topLevelKeys are the seven integer properties of the content, in the order
// the auth rules list them.
var topLevelKeys = [...]string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}

func (pl *PowerLevels) topLevel(i int) *int64 {
	switch i {
	case 0:
		return &pl.UsersDefault
	case 1:
		return &pl.EventsDefault
	case 2:
		return &pl.StateDefault
	case 3:
		return &pl.Ban
	case 4:
		return &pl.Redact
	case 5:
		return &pl.Kick
	default:
		return &pl.Invite
	}
}

func (pl *PowerLevels) isSet(i int) bool { return pl.set&(1<<i) != 0 }

// DefaultPowerLevels are the levels of a power levels event with empty
// content.
func DefaultPowerLevels() *PowerLevels {
	return &PowerLevels{
		Ban: defaultBan, Kick: defaultKick, Redact: defaultRedact, Invite: defaultInvite,
		StateDefault: defaultStateDefault, EventsDefault: defaultEventsDef, UsersDefault: defaultUsersDefault,
		Users: map[UserID]int64{}, Events: map[string]int64{}, Notifications: map[string]int64{},
	}
}

// UserLevel is the user's power level: InfiniteLevel for a privileged
// creator, else the users entry, else users_default.
func (pl *PowerLevels) UserLevel(u UserID) int64 {
	if slices.Contains(pl.creators, u) {
		return InfiniteLevel
	}
	if l, ok := pl.Users[u]; ok {
		return l
	}
	return pl.UsersDefault
}

// EventLevel is the level required to send an event of that type: the
// events entry, else state_default or events_default.
func (pl *PowerLevels) EventLevel(evType string, isState bool) int64 {
	if l, ok := pl.Events[evType]; ok {
		return l
	}
	if isState {
		return pl.StateDefault
	}
	return pl.EventsDefault
}

// NotificationLevel is the level required to trigger the notification key
// ("room" for @room), 50 when absent.
func (pl *PowerLevels) NotificationLevel(key string) int64 {
	if l, ok := pl.Notifications[key]; ok {
		return l
	}
	return defaultNotification
}

// plPart says which part of the content a PowerLevelsError is about; the auth
// rules give each part its own number (v10 9.1, 9.2, 9.3).
type plPart uint8

const (
	plPartTopLevel plPart = iota // users_default, events_default, ... invite
	plPartMaps                   // events, notifications
	plPartUsers                  // users
)

// PowerLevelsError says what is wrong with m.room.power_levels content.
type PowerLevelsError struct {
	Field  string // "ban", "events", "events.m.room.name", "users", ...
	Reason string
	part   plPart
}

func (e *PowerLevelsError) Error() string {
	return "m.room.power_levels " + e.Field + ": " + e.Reason
}

// ParsePowerLevels parses m.room.power_levels content for room version v.
// With v.IntegerPowerLevels (v10+) every level must be a JSON integer:
// strings and numbers with a fraction or exponent are rejected, as are values
// outside ±(2^53-1). Keys of users must be valid user IDs. Unknown properties
// are ignored; of a repeated key the last wins, as with encoding/json. Errors
// are *PowerLevelsError; when several parts are malformed the error is about
// the part whose auth rule comes first (levels, then events and
// notifications, then users), whatever the order of the keys.
func ParsePowerLevels(v *RoomVersion, content []byte) (*PowerLevels, error) {
	if !json.Valid(content) {
		return nil, &PowerLevelsError{Field: "content", Reason: "not valid JSON", part: plPartTopLevel}
	}
	return parsePowerLevels(v, content, nil)
}

// plFilter limits what parsePowerLevels keeps: the entries of users and of
// events the auth rules will ask about. Authorising any event needs the
// room's power levels, and building maps of every entry dominated its cost.
type plFilter struct {
	users []UserID
	event string
}

func (f *plFilter) keepUser(k []byte) bool {
	for _, u := range f.users {
		if string(u) == string(k) {
			return true
		}
	}
	return false
}

// parsePowerLevels parses content that is valid JSON (json.Valid, or the
// content of a parsed Event). With a filter, every level is still checked to
// be an integer, but only the filter's entries are kept and only kept user
// IDs are checked: the power levels in a room's state passed the full check
// when they were accepted.
func parsePowerLevels(v *RoomVersion, content []byte, filter *plFilter) (*PowerLevels, error) {
	s := jsonScanner{b: content}
	s.space()
	if s.peek() != '{' {
		return nil, &PowerLevelsError{Field: "content", Reason: "not a JSON object", part: plPartTopLevel}
	}
	pl := DefaultPowerLevels()
	var errs [3]*PowerLevelsError // first error of each part
	fail := func(part plPart, field, reason string) {
		if errs[part] == nil {
			errs[part] = &PowerLevelsError{Field: field, Reason: reason, part: part}
		}
	}
	s.objectEach(func(key []byte) {
		raw := s.value()
		for i, k := range topLevelKeys {
			if string(key) != k {
				continue
			}
			pl.set &^= 1 << i
			n, err := parseLevel(v, raw)
			if err != nil {
				fail(plPartTopLevel, k, err.Error())
				return
			}
			*pl.topLevel(i) = n
			pl.set |= 1 << i
			return
		}
		var part plPart
		switch string(key) {
		case "events":
			part = plPartMaps
			pl.Events = map[string]int64{}
		case "notifications":
			part = plPartMaps
			pl.Notifications = map[string]int64{}
		case "users":
			part = plPartUsers
			pl.Users = map[UserID]int64{}
		default:
			return
		}
		name := string(key)
		if len(raw) == 0 || raw[0] != '{' {
			if name != "notifications" || v.NotificationsPowerLevels {
				fail(part, name, "not a JSON object")
			}
			return
		}
		// Before v6 the rules never read notifications (MSC2209), so, as
		// in Synapse, a malformed entry there is no reason to reject;
		// NotificationLevel gives its default.
		lax := name == "notifications" && !v.NotificationsPowerLevels
		inner := jsonScanner{b: raw}
		inner.objectEach(func(k []byte) {
			n, err := parseLevel(v, inner.value())
			if err != nil {
				if !lax {
					fail(part, name+"."+string(k), err.Error())
				}
				return
			}
			switch {
			case name == "users" && (filter == nil || filter.keepUser(k)):
				u, err := ParseUserID(string(k))
				if err != nil {
					fail(part, name, fmt.Sprintf("%q is not a valid user ID", k))
					return
				}
				pl.Users[u] = n
			case name == "events" && (filter == nil || filter.event == string(k)):
				pl.Events[string(k)] = n
			case name == "notifications" && filter == nil:
				pl.Notifications[string(k)] = n
			}
		})
	})
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return pl, nil
}

// jsonScanner walks JSON without decoding it. Callers give it valid JSON
// (json.Valid, or what an Event was parsed from); on anything else it
// returns nonsense but never panics or loops.
type jsonScanner struct {
	b []byte
	i int
}

func (s *jsonScanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *jsonScanner) space() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

// objectEach calls f with each key of the object at the cursor; f must
// consume the value (with value). The key is only valid during the call.
func (s *jsonScanner) objectEach(f func(key []byte)) {
	s.space()
	if s.peek() != '{' {
		return
	}
	s.i++
	for {
		s.space()
		if s.peek() == '}' {
			s.i++
			return
		}
		if s.peek() != '"' {
			s.i = len(s.b)
			return
		}
		key := s.str()
		s.space()
		if s.peek() != ':' {
			s.i = len(s.b)
			return
		}
		s.i++
		s.space()
		f(key)
		s.space()
		switch s.peek() {
		case ',':
			s.i++
		case '}':
		default:
			s.i = len(s.b)
			return
		}
	}
}

// str reads the string at the cursor, unescaped.
func (s *jsonScanner) str() []byte {
	start := s.i
	s.i++ // '"'
	escaped := false
	for s.i < len(s.b) && s.b[s.i] != '"' {
		if s.b[s.i] == '\\' {
			escaped = true
			s.i++
		}
		s.i++
	}
	if s.i >= len(s.b) {
		s.i = len(s.b)
		return nil
	}
	s.i++
	if !escaped {
		return s.b[start+1 : s.i-1]
	}
	var out string
	_ = json.Unmarshal(s.b[start:s.i], &out)
	return []byte(out)
}

// value skips the value at the cursor and returns its bytes.
func (s *jsonScanner) value() []byte {
	s.space()
	start := s.i
	switch s.peek() {
	case '"':
		s.str()
	case '{', '[':
		for depth := 0; s.i < len(s.b); {
			switch s.b[s.i] {
			case '"':
				s.str()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			s.i++
			if depth == 0 {
				break
			}
		}
	default: // number, true, false, null
		for s.i < len(s.b) && !strings.ContainsRune(" \t\n\r,:}]", rune(s.b[s.i])) {
			s.i++
		}
	}
	return s.b[start:s.i]
}

// parseLevel parses one power level value. Versions with IntegerPowerLevels
// (v10+) accept only a JSON integer. Older ones also accept a string
// holding a base-10 integer with optional surrounding white space, one
// optional sign and leading zeros ("v1-stringy-power-levels"), and, without
// StrictCanonicalJSON (v1-v5), a number with a fraction or exponent, which
// is truncated towards zero ("v1-floaty-power-levels"); that is what
// Synapse's int() makes of them. Levels lie within ±(2^53-1) where canonical
// JSON is enforced (v6+), else within int64 (Python's ints have no bound;
// no real room needs more).
func parseLevel(v *RoomVersion, raw []byte) (int64, error) {
	bound := int64(maxCanonicalInt)
	if !v.StrictCanonicalJSON {
		bound = math.MaxInt64 - 1 // InfiniteLevel stays above every level
	}
	digits, neg := raw, false
	isString := len(raw) >= 2 && raw[0] == '"'
	if isString {
		if v.IntegerPowerLevels {
			return 0, fmt.Errorf("%s is not an integer", raw)
		}
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return 0, fmt.Errorf("%s is not an integer", raw)
		}
		digits = []byte(strings.Trim(str, " \t\n\r\v\f"))
		if len(digits) > 0 && (digits[0] == '+' || digits[0] == '-') {
			neg, digits = digits[0] == '-', digits[1:]
		}
	} else if len(raw) > 0 && raw[0] == '-' {
		neg, digits = true, raw[1:]
	}
	if !isString && !v.IntegerPowerLevels && !v.StrictCanonicalJSON && bytes.ContainsAny(raw, ".eE") {
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return 0, fmt.Errorf("%s is not a number", raw)
		}
		f = math.Trunc(f)
		if math.Abs(f) >= 1<<63 || math.Abs(f) > float64(bound) {
			return 0, fmt.Errorf("%s is out of range", raw)
		}
		return int64(f), nil
	}
	if len(digits) == 0 {
		return 0, fmt.Errorf("%s is not an integer", raw)
	}
	// Leading zeros (strings only) do not count towards the 19 digits a
	// uint64 holds without overflow.
	for len(digits) > 1 && digits[0] == '0' {
		digits = digits[1:]
	}
	if len(digits) > 19 {
		return 0, fmt.Errorf("%s is out of range", raw)
	}
	var n uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%s is not an integer", raw)
		}
		n = n*10 + uint64(c-'0')
	}
	if n > uint64(bound) {
		return 0, fmt.Errorf("%s is out of range", raw)
	}
	if neg {
		return -int64(n), nil
	}
	return int64(n), nil
}

// Creators lists the room's creators, from its create event: in v1-v10
// content.creator (if a valid user ID); from v11 the sender; with
// PrivilegedCreators (v12) also the valid, distinct user IDs in
// content.additional_creators. The first entry, if any, is the creator whose
// first join the creator rule (v10 4.3.1, v1 5.2.1, v12 5.3.1) allows.
func Creators(create *Event) []UserID {
	v := create.Version()
	if !v.CreatorFromSender {
		if s, ok := stringField(create.Content(), "creator"); ok {
			if u, err := ParseUserID(s); err == nil {
				return []UserID{u}
			}
		}
		return nil
	}
	out := []UserID{create.Sender()}
	if v.PrivilegedCreators {
		for _, s := range additionalCreators(create.Content()) {
			if u, err := ParseUserID(s); err == nil && !slices.Contains(out, u) {
				out = append(out, u)
			}
		}
	}
	return out
}

// additionalCreators returns the strings in content.additional_creators,
// ignoring entries that are not strings.
func additionalCreators(content []byte) []string {
	raw, ok := objectField(content, "additional_creators")
	if !ok {
		return nil
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return nil
	}
	out := make([]string, 0, len(list))
	for _, item := range list {
		var s string
		if json.Unmarshal(item, &s) == nil {
			out = append(out, s)
		}
	}
	return out
}

// RoomPowerLevels gives the power levels in force in a room, from its create
// event and its current m.room.power_levels event (nil if there is none).
// Without a power levels event the defaults apply, except that in v1-v11
// the creator has level 100 (state_default stays 50: the spec's old "0 when
// there is no power levels event" was dropped by MSC1304, see matrix-spec
// PR 1479). With PrivilegedCreators (v12) the creators have InfiniteLevel
// whether or not there is a power levels event.
func RoomPowerLevels(create, powerLevels *Event) (*PowerLevels, error) {
	return roomPowerLevels(create, powerLevels, nil)
}

func roomPowerLevels(create, powerLevels *Event, filter *plFilter) (*PowerLevels, error) {
	v := create.Version()
	var pl *PowerLevels
	if powerLevels != nil {
		var err error
		if pl, err = parsePowerLevels(v, powerLevels.Content(), filter); err != nil {
			return nil, err
		}
	} else {
		pl = DefaultPowerLevels()
	}
	creators := Creators(create)
	switch {
	case v.PrivilegedCreators:
		pl.creators = creators
	case powerLevels == nil && len(creators) > 0:
		pl.Users[creators[0]] = creatorLevelNoPL
	}
	return pl, nil
}

// PowerLevelsFromState is RoomPowerLevels for the create and power levels
// events in state. It fails if state has no create event.
func PowerLevelsFromState(state AuthState) (*PowerLevels, error) {
	create := state.Get(TypeCreate, "")
	if create == nil {
		return nil, fmt.Errorf("roomdag: no m.room.create event in state")
	}
	return RoomPowerLevels(create, state.Get(TypePowerLevels, ""))
}

// UserLevelIn answers "what is this user's power" in a room of version v
// with create event create and parsed power levels pl (nil when the room has
// no power levels event): InfiniteLevel for a v12 creator, else pl's level,
// else 100 for the creator and 0 for anyone else.
func UserLevelIn(v *RoomVersion, pl *PowerLevels, create *Event, user UserID) int64 {
	if v.PrivilegedCreators && slices.Contains(Creators(create), user) {
		return InfiniteLevel
	}
	if pl != nil {
		return pl.UserLevel(user)
	}
	if c := Creators(create); len(c) > 0 && c[0] == user {
		return creatorLevelNoPL
	}
	return defaultUsersDefault
}

// objectField returns the raw value of key in the JSON object obj (last
// one wins), matching the key exactly: encoding/json's struct decoding
// matches case-insensitively, which would let "Membership" stand for
// "membership". obj must be valid JSON (see jsonScanner).
func objectField(obj []byte, key string) (json.RawMessage, bool) {
	s := jsonScanner{b: obj}
	var out []byte
	found := false
	s.objectEach(func(k []byte) {
		v := s.value()
		if string(k) == key {
			out, found = v, true
		}
	})
	return out, found
}

// stringField returns obj[key] if it is a JSON string.
func stringField(obj []byte, key string) (string, bool) {
	raw, ok := objectField(obj, key)
	if !ok || len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// JoinAuthoriser picks the user of server who authorises a restricted
// join (join_authorised_via_users_server): a joined member who may
// invite, the most powerful, ties broken by user ID so that every call
// picks the same one. It returns "" when there is none.
func JoinAuthoriser(state StateMap, server ServerName) (UserID, error) {
	pl, err := PowerLevelsFromState(state)
	if err != nil {
		return "", err
	}
	var best UserID
	var bestLevel int64
	for k, ev := range state {
		if k.Type != TypeMember || ev.Membership() != MembershipJoin {
			continue
		}
		u, err := ParseUserID(k.StateKey)
		if err != nil || u.Server() != server {
			continue
		}
		if l := pl.UserLevel(u); l >= pl.Invite && (best == "" || l > bestLevel || l == bestLevel && u < best) {
			best, bestLevel = u, l
		}
	}
	return best, nil
}
