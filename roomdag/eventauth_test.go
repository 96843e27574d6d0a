package roomdag

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Auth fixtures: testdata/auth/*.json. Each file is a list of rooms:
//
//	{"name": "members", "extends": "base", "versions": ["10", "11", "12"],
//	 "state": [{"name": "dave-invite", "event": {...}}, ...],
//	 "extra": [...],
//	 "cases": [{"name": "...", "event": {...}, "expect": "allow"}, ...]}
//
// A room's state is its "extends" chain's state followed by its own, each
// event built, checked to be allowed (CheckAuthEvents and Authorise against
// the state so far) and applied in order. "extra" events are built against
// the final state but not applied (events of other rooms, messages to
// redact). Each case is built against the final state and run through the
// receive path: CheckCreateRoomID (v12), CheckAuthEvents, Authorise against
// its auth events, Authorise against the room's state.
//
// Event JSON is plain, with these conveniences: "$VERSION" is replaced by the
// room version, "$ROOM" by the room ID, and "$name" (without a colon) by the
// ID of the named event; room_id, prev_events (the last state event), auth_events (the auth
// events selection over the state), depth and origin_server_ts are filled in
// when absent. A v12 create event gets no room_id.
//
// In v1 and v2 events carry an event_id, "$e<depth>:<sender's server>"
// unless the fixture gives one, and prev_events and auth_events (given or
// filled in as IDs) become [event_id, hashes] pairs.
//
// "expect" is "allow", "invalid" (NewEventFromJSON refuses the event), or the
// number of the rejecting rule: one string for every version, or an object
// keyed by version ("10") or range of versions ("1-5"). "reason" is an
// optional substring of the reason, checked when the event is rejected.
// "redaction" ("apply" or "wait") also asks RedactionApplies about the event
// it redacts. "versions" on a room, event or case limits where it applies
// (versions or ranges; every version when absent).

type fixtureRoom struct {
	Name      string         `json:"name"`
	Extends   string         `json:"extends"`
	Versions  []string       `json:"versions"`
	RoomID    string         `json:"room_id"`
	State     []fixtureEvent `json:"state"`
	Extra     []fixtureEvent `json:"extra"`
	Cases     []fixtureCase  `json:"cases"`
	Unchecked bool           `json:"unchecked_state"`
	file      string
}

type fixtureEvent struct {
	Name     string          `json:"name"`
	Versions []string        `json:"versions"`
	Event    json.RawMessage `json:"event"`
}

type fixtureCase struct {
	Name      string          `json:"name"`
	Versions  []string        `json:"versions"`
	Event     json.RawMessage `json:"event"`
	Expect    json.RawMessage `json:"expect"`
	Reason    string          `json:"reason"`
	Redaction string          `json:"redaction"`
}

// allVersions are the versions a fixture runs in unless it says otherwise.
var allVersions = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

// versionIn reports whether ver is spec, a version ("7") or an inclusive
// range ("1-5").
func versionIn(t testing.TB, spec, ver string) bool {
	lo, hi, isRange := strings.Cut(spec, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.Atoi(lo)
	h, err2 := strconv.Atoi(hi)
	n, err3 := strconv.Atoi(ver)
	if err1 != nil || err2 != nil || err3 != nil || l > h {
		t.Fatalf("bad version or range %q", spec)
	}
	return l <= n && n <= h
}

func inVersions(t testing.TB, list []string, ver string) bool {
	if len(list) == 0 {
		return true
	}
	for _, spec := range list {
		if versionIn(t, spec, ver) {
			return true
		}
	}
	return false
}

func (c fixtureCase) expectFor(t *testing.T, ver string) string {
	var s string
	if json.Unmarshal(c.Expect, &s) == nil {
		return s
	}
	var m map[string]string
	if err := json.Unmarshal(c.Expect, &m); err != nil {
		t.Fatalf("case %s: bad expect %s", c.Name, c.Expect)
	}
	found := ""
	for spec, want := range m {
		if versionIn(t, spec, ver) {
			if found != "" {
				t.Fatalf("case %s: two expectations for v%s", c.Name, ver)
			}
			found = want
		}
	}
	if found == "" {
		t.Fatalf("case %s: no expectation for v%s", c.Name, ver)
	}
	return found
}

func loadFixtures(t *testing.T) ([]*fixtureRoom, map[string]*fixtureRoom) {
	t.Helper()
	files, err := filepath.Glob("testdata/auth/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	var order []*fixtureRoom
	byName := map[string]*fixtureRoom{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var rooms []*fixtureRoom
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rooms); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, r := range rooms {
			if byName[r.Name] != nil {
				t.Fatalf("%s: room %q defined twice", file, r.Name)
			}
			r.file = filepath.Base(file)
			byName[r.Name] = r
			order = append(order, r)
		}
	}
	return order, byName
}

func TestAuthFixtures(t *testing.T) {
	order, byName := loadFixtures(t)
	seen := map[string]map[string]bool{} // version → rule numbers produced
	for _, r := range order {
		if len(r.Cases) == 0 {
			continue // a base for others
		}
		for _, ver := range allVersions {
			if !inVersions(t, r.Versions, ver) {
				continue
			}
			if seen[ver] == nil {
				seen[ver] = map[string]bool{}
			}
			t.Run(strings.TrimSuffix(r.file, ".json")+"/"+r.Name+"/v"+ver, func(t *testing.T) {
				runFixtureRoom(t, r, byName, ver, seen[ver])
			})
		}
	}
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" {
		return // coverage is only meaningful when every fixture ran
	}
	// Every rule of every list must be produced by some case, in each
	// version that uses the list.
	unreachable := map[string][]string{
		"11": {"1.4"}, // v11's rule 1.4 is "Otherwise, allow"
		"12": {"1.2"}, // NewEventFromJSON refuses a v12 create with a room_id
	}
	for _, ver := range allVersions {
		v, _ := LookupRoomVersion(ver)
		list := ruleList(v)
		for r := range numRules {
			n := ruleNumbers[r][list]
			// Rule 2.3 (3.3), a rejected auth event, needs to know what
			// was rejected: Receive's tests (receive_test.go) cover it.
			if n == "" || slices.Contains(unreachable[ver], n) || r == ruleAuthRejected {
				continue
			}
			if !seen[ver][n] {
				t.Errorf("v%s: no fixture case is rejected by rule %s", ver, n)
			}
		}
	}
}

// roomBuilder builds a fixture room's events for one version.
type roomBuilder struct {
	t      *testing.T
	v      *RoomVersion
	ver    string
	roomID RoomID
	named  map[string]*Event
	byID   map[EventID]*Event
	state  StateMap
	last   *Event
	depth  int64
}

func runFixtureRoom(t *testing.T, r *fixtureRoom, byName map[string]*fixtureRoom, ver string, seen map[string]bool) {
	v, ok := LookupRoomVersion(ver)
	if !ok {
		t.Fatalf("unknown version %s", ver)
	}
	chain := []*fixtureRoom{r}
	for p := r; p.Extends != ""; {
		p = byName[p.Extends]
		if p == nil || len(chain) > 10 {
			t.Fatalf("room %s: bad extends chain", r.Name)
		}
		chain = append([]*fixtureRoom{p}, chain...)
	}
	b := &roomBuilder{t: t, v: v, ver: ver, named: map[string]*Event{}, byID: map[EventID]*Event{}, state: StateMap{}}
	b.roomID = "!room:a.test"
	for _, p := range chain {
		if p.RoomID != "" {
			b.roomID = RoomID(p.RoomID)
		}
	}
	for _, p := range chain {
		for _, fe := range p.State {
			if !inVersions(t, fe.Versions, ver) {
				continue
			}
			ev, err := b.build(fe.Event)
			if err != nil {
				t.Fatalf("state %s: %v", fe.Name, err)
			}
			if !ev.IsState() {
				t.Fatalf("state %s is not a state event", fe.Name)
			}
			if ev.IsCreate() {
				b.roomID = ev.RoomID()
			}
			if !r.Unchecked {
				if err := b.receive(ev); err != nil {
					t.Fatalf("state %s is not allowed: %v", fe.Name, err)
				}
			}
			b.name(fe.Name, ev)
			b.state[ev.Tuple()] = ev
			b.last = ev
		}
	}
	for _, p := range chain {
		for _, fe := range p.Extra {
			if !inVersions(t, fe.Versions, ver) {
				continue
			}
			ev, err := b.build(fe.Event)
			if err != nil {
				t.Fatalf("extra %s: %v", fe.Name, err)
			}
			b.name(fe.Name, ev)
		}
	}
	for _, c := range r.Cases {
		if !inVersions(t, c.Versions, ver) {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			b.t = t
			want := c.expectFor(t, ver)
			ev, err := b.build(c.Event)
			got := "invalid"
			var authErr *AuthError
			if err == nil {
				got = "allow"
				if err = b.receive(ev); err != nil {
					if !errors.As(err, &authErr) {
						t.Fatalf("not an *AuthError: %v", err)
					}
					if authErr.Rule == "" {
						t.Fatalf("rejection without a rule number: %v", err)
					}
					got = authErr.Rule
				}
			}
			seen[got] = true
			if got != want {
				t.Fatalf("got %s, want %s (%v)", got, want, err)
			}
			if c.Reason != "" && authErr != nil && !strings.Contains(authErr.Reason, c.Reason) {
				t.Errorf("reason %v does not contain %q", err, c.Reason)
			}
			if ev == nil {
				return
			}
			if !bytes.Contains(c.Event, []byte(`"auth_events"`)) && !bytes.Contains(c.Event, []byte(`"room_id"`)) {
				b.checkAuthSubset(ev)
			}
			if c.Redaction != "" {
				orig := b.byID[ev.Redacts()]
				if orig == nil {
					t.Fatalf("redacted event %s is not a fixture event", ev.Redacts())
				}
				applies := RedactionApplies(b.state, ev, orig)
				if applies != (c.Redaction == "apply") {
					t.Errorf("RedactionApplies = %v, want %s", applies, c.Redaction)
				}
			}
		})
	}
}

func (b *roomBuilder) name(name string, ev *Event) {
	if name == "" {
		return
	}
	if b.named[name] != nil {
		b.t.Fatalf("event name %q used twice", name)
	}
	b.named[name] = ev
	b.byID[ev.ID()] = ev
}

// receive is the receive path for ev: v12 rule 2, the auth events list, the
// rules against the state its auth events form, then against the room's
// state (which stands for both the state before ev and the current state).
func (b *roomBuilder) receive(ev *Event) error {
	if b.v.DomainlessRoomIDs && !ev.IsCreate() {
		create := b.byID[EventID("$"+strings.TrimPrefix(string(ev.RoomID()), "!"))]
		if err := CheckCreateRoomID(ev, create); err != nil {
			return err
		}
	}
	authEvents := make([]*Event, 0, len(ev.AuthEvents()))
	for _, id := range ev.AuthEvents() {
		ae := b.byID[id]
		if ae == nil {
			b.t.Fatalf("auth event %s is not a fixture event", id)
		}
		authEvents = append(authEvents, ae)
	}
	if err := CheckAuthEvents(ev, authEvents); err != nil {
		return err
	}
	authState := NewStateMap(authEvents...)
	if c := b.state.Get(TypeCreate, ""); b.v.DomainlessRoomIDs && c != nil && c.RoomID() == ev.RoomID() {
		authState[c.Tuple()] = c
	}
	if err := Authorise(ev, authState); err != nil {
		return err
	}
	return Authorise(ev, b.state)
}

// checkAuthSubset checks that the auth events selection holds everything the
// rules read: authorising against the selected state alone (plus the create
// event in v12) must give the same answer as against the whole state.
func (b *roomBuilder) checkAuthSubset(ev *Event) {
	if ev.IsCreate() {
		return
	}
	sub := StateMap{}
	for _, k := range AuthEventTuples(b.v, ev.Type(), ev.StateKey(), ev.Sender(), ev.Content()) {
		if e := b.state[k]; e != nil {
			sub[k] = e
		}
	}
	if c := b.state.Get(TypeCreate, ""); c != nil {
		sub[c.Tuple()] = c
	}
	full, part := ruleOf(Authorise(ev, b.state)), ruleOf(Authorise(ev, sub))
	if full != part {
		b.t.Errorf("against its auth events only: %s; against the whole state: %s", part, full)
	}
}

func ruleOf(err error) string {
	var ae *AuthError
	if errors.As(err, &ae) {
		return ae.Rule
	}
	if err != nil {
		return err.Error()
	}
	return "allow"
}

// build makes an event from fixture JSON for b's version and state.
func (b *roomBuilder) build(raw json.RawMessage) (*Event, error) {
	raw = bytes.ReplaceAll(raw, []byte("$VERSION"), []byte(b.ver))
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		b.t.Fatalf("fixture event %s: %v", raw, err)
	}
	for k, val := range m {
		m[k] = b.resolve(val)
	}
	typ, _ := m["type"].(string)
	sk, hasSK := m["state_key"].(string)
	isCreate := typ == TypeCreate && hasSK && sk == ""
	if _, ok := m["room_id"]; !ok && !(isCreate && b.v.DomainlessRoomIDs) {
		if b.roomID == "" {
			b.t.Fatalf("no room ID yet for %s", raw)
		}
		m["room_id"] = string(b.roomID)
	}
	if _, ok := m["prev_events"]; !ok {
		prev := []string{}
		if b.last != nil {
			prev = append(prev, string(b.last.ID()))
		}
		m["prev_events"] = prev
	}
	if _, ok := m["auth_events"]; !ok {
		auth := []string{}
		if !isCreate {
			var skp *string
			if hasSK {
				skp = &sk
			}
			sender, _ := m["sender"].(string)
			content, _ := json.Marshal(m["content"])
			for _, k := range AuthEventTuples(b.v, typ, skp, UserID(sender), content) {
				if e := b.state[k]; e != nil {
					auth = append(auth, string(e.ID()))
				}
			}
		}
		m["auth_events"] = auth
	}
	b.depth++
	if _, ok := m["depth"]; !ok {
		m["depth"] = b.depth
	}
	if _, ok := m["origin_server_ts"]; !ok {
		m["origin_server_ts"] = 1700000000000 + b.depth
	}
	if b.v.EventFormat == EventFormatV1 {
		if _, ok := m["event_id"]; !ok {
			sender, _ := m["sender"].(string)
			m["event_id"] = fmt.Sprintf("$e%d:%s", b.depth, UserID(sender).Server())
		}
		m["prev_events"], m["auth_events"] = b.refsV1(m["prev_events"]), b.refsV1(m["auth_events"])
	}
	data, err := json.Marshal(m)
	if err != nil {
		b.t.Fatal(err)
	}
	return NewEventFromJSON(b.v, data)
}

// refsV1 turns a list of event IDs into v1 [event_id, hashes] pairs, with
// the reference hash of each fixture event (a made-up one for others).
func (b *roomBuilder) refsV1(list any) any {
	var ids []string
	switch x := list.(type) {
	case []string:
		ids = x
	case []any:
		for _, id := range x {
			s, ok := id.(string)
			if !ok {
				return list // not a list of IDs: keep it malformed
			}
			ids = append(ids, s)
		}
	default:
		return list
	}
	out := []any{}
	for _, id := range ids {
		h := "AAAA"
		if ev := b.byID[EventID(id)]; ev != nil {
			var err error
			if h, err = ev.referenceHashB64(); err != nil {
				b.t.Fatal(err)
			}
		}
		out = append(out, []any{id, map[string]string{"sha256": h}})
	}
	return out
}

// resolve replaces "$ROOM" and "$name" strings, map keys included.
func (b *roomBuilder) resolve(val any) any {
	switch x := val.(type) {
	case string:
		if x == "$ROOM" {
			return string(b.roomID)
		}
		if strings.HasPrefix(x, "$") && !strings.Contains(x, ":") { // "$id:server" is a literal v1 event ID
			ev := b.named[x[1:]]
			if ev == nil {
				b.t.Fatalf("unknown event name %q", x)
			}
			return string(ev.ID())
		}
		return x
	case []any:
		for i := range x {
			x[i] = b.resolve(x[i])
		}
		return x
	case map[string]any:
		for k, e := range x {
			x[k] = b.resolve(e)
		}
		return x
	}
	return val
}

func mustVersion(t testing.TB, id string) *RoomVersion {
	v, ok := LookupRoomVersion(id)
	if !ok {
		t.Fatalf("no version %s", id)
	}
	return v
}

func mustEvent(t testing.TB, v *RoomVersion, format string, args ...any) *Event {
	t.Helper()
	ev, err := NewEventFromJSON(v, []byte(fmt.Sprintf(format, args...)))
	if err != nil {
		t.Fatalf("%v: %s", err, fmt.Sprintf(format, args...))
	}
	return ev
}

func TestAuthEventTuples(t *testing.T) {
	v10, v12 := mustVersion(t, "10"), mustVersion(t, "12")
	sk := func(s string) *string { return &s }
	tests := []struct {
		name     string
		v        *RoomVersion
		typ      string
		stateKey *string
		sender   UserID
		content  string
		want     []StateKey
	}{
		{"create", v10, TypeCreate, sk(""), "@a:x", `{}`, nil},
		{"message", v10, TypeMessage, nil, "@a:x", `{}`, []StateKey{
			{TypeCreate, ""}, {TypePowerLevels, ""}, {TypeMember, "@a:x"}}},
		{"message v12", v12, TypeMessage, nil, "@a:x", `{}`, []StateKey{
			{TypePowerLevels, ""}, {TypeMember, "@a:x"}}},
		{"self join", v12, TypeMember, sk("@a:x"), "@a:x", `{"membership":"join"}`, []StateKey{
			{TypePowerLevels, ""}, {TypeMember, "@a:x"}, {TypeJoinRules, ""}}},
		{"restricted join", v10, TypeMember, sk("@a:x"), "@a:x",
			`{"membership":"join","join_authorised_via_users_server":"@b:y"}`, []StateKey{
				{TypeCreate, ""}, {TypePowerLevels, ""}, {TypeMember, "@a:x"}, {TypeJoinRules, ""}, {TypeMember, "@b:y"}}},
		{"join_authorised_via_users_server means nothing before v8", mustVersion(t, "7"), TypeMember, sk("@a:x"), "@a:x",
			`{"membership":"join","join_authorised_via_users_server":"@b:y"}`, []StateKey{
				{TypeCreate, ""}, {TypePowerLevels, ""}, {TypeMember, "@a:x"}, {TypeJoinRules, ""}}},
		{"v1 message", mustVersion(t, "1"), TypeMessage, nil, "@a:x", `{}`, []StateKey{
			{TypeCreate, ""}, {TypePowerLevels, ""}, {TypeMember, "@a:x"}}},
		{"authorised via on a leave", v10, TypeMember, sk("@a:x"), "@a:x",
			`{"membership":"leave","join_authorised_via_users_server":"@b:y"}`, []StateKey{
				{TypeCreate, ""}, {TypePowerLevels, ""}, {TypeMember, "@a:x"}}},
		{"invite", v10, TypeMember, sk("@b:y"), "@a:x", `{"membership":"invite"}`, []StateKey{
			{TypeCreate, ""}, {TypePowerLevels, ""}, {TypeMember, "@a:x"}, {TypeMember, "@b:y"}, {TypeJoinRules, ""}}},
		{"third-party invite", v10, TypeMember, sk("@b:y"), "@a:x",
			`{"membership":"invite","third_party_invite":{"signed":{"mxid":"@b:y","token":"tok"}}}`, []StateKey{
				{TypeCreate, ""}, {TypePowerLevels, ""}, {TypeMember, "@a:x"}, {TypeMember, "@b:y"}, {TypeJoinRules, ""},
				{TypeThirdPartyInvite, "tok"}}},
		{"knock", v10, TypeMember, sk("@a:x"), "@a:x", `{"membership":"knock"}`, []StateKey{
			{TypeCreate, ""}, {TypePowerLevels, ""}, {TypeMember, "@a:x"}, {TypeJoinRules, ""}}},
		{"kick", v10, TypeMember, sk("@b:y"), "@a:x", `{"membership":"leave"}`, []StateKey{
			{TypeCreate, ""}, {TypePowerLevels, ""}, {TypeMember, "@a:x"}, {TypeMember, "@b:y"}}},
		{"member without state key", v10, TypeMember, nil, "@a:x", `{"membership":"join"}`, []StateKey{
			{TypeCreate, ""}, {TypePowerLevels, ""}, {TypeMember, "@a:x"}}},
	}
	for _, tt := range tests {
		got := AuthEventTuples(tt.v, tt.typ, tt.stateKey, tt.sender, []byte(tt.content))
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestParsePowerLevels(t *testing.T) {
	v10 := mustVersion(t, "10")
	tests := []struct {
		content string
		field   string // "" when valid
		part    plPart
	}{
		{`{}`, "", 0},
		{`{"ban":-9007199254740991,"kick":9007199254740991,"invite":-0}`, "", 0},
		{`{"historical":"100","other":[1]}`, "", 0},
		{`{"ban":"50"}`, "ban", plPartTopLevel},
		{`{"kick":50.0}`, "kick", plPartTopLevel},
		{`{"redact":5e1}`, "redact", plPartTopLevel},
		{`{"invite":null}`, "invite", plPartTopLevel},
		{`{"users_default":true}`, "users_default", plPartTopLevel},
		{`{"state_default":9007199254740992}`, "state_default", plPartTopLevel},
		{`{"events_default":-9007199254740992}`, "events_default", plPartTopLevel},
		{`{"ban":0050}`, "content", plPartTopLevel},
		{`{"events":[]}`, "events", plPartMaps},
		{`{"events":null}`, "events", plPartMaps},
		{`{"events":{"m.room.name":"50"}}`, "events.m.room.name", plPartMaps},
		{`{"notifications":{"room":1.5}}`, "notifications.room", plPartMaps},
		{`{"users":{"bob":10}}`, "users", plPartUsers},
		{`{"users":{"@bob:x":"10"}}`, "users.@bob:x", plPartUsers},
		{`{"users":"x"}`, "users", plPartUsers},
		{`[]`, "content", plPartTopLevel},
		{`null`, "content", plPartTopLevel},
	}
	for _, tt := range tests {
		pl, err := ParsePowerLevels(v10, []byte(tt.content))
		if tt.field == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.content, err)
			}
			continue
		}
		var perr *PowerLevelsError
		if !errors.As(err, &perr) {
			t.Errorf("%s: got %v, %v; want a *PowerLevelsError", tt.content, pl, err)
			continue
		}
		if perr.Field != tt.field || perr.part != tt.part {
			t.Errorf("%s: got field %q part %d, want %q part %d (%v)", tt.content, perr.Field, perr.part, tt.field, tt.part, err)
		}
	}

	pl, err := ParsePowerLevels(v10, []byte(`{"users":{"@a:x":75},"events":{"m.room.name":20},"users_default":5,"state_default":30,"notifications":{"room":10}}`))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want int64
	}{
		{"listed user", pl.UserLevel("@a:x"), 75},
		{"other user", pl.UserLevel("@b:x"), 5},
		{"listed event", pl.EventLevel(TypeName, true), 20},
		{"state default", pl.EventLevel(TypeTopic, true), 30},
		{"events default", pl.EventLevel(TypeMessage, false), 0},
		{"ban", pl.Ban, 50}, {"kick", pl.Kick, 50}, {"redact", pl.Redact, 50}, {"invite", pl.Invite, 0},
		{"room notification", pl.NotificationLevel("room"), 10},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, c.got, c.want)
		}
	}
	if d := DefaultPowerLevels(); d.NotificationLevel("room") != 50 || d.StateDefault != 50 || d.EventsDefault != 0 {
		t.Errorf("defaults: %+v", d)
	}
}

// Levels before v10 may be integer strings (v1-v9, "stringy power levels")
// and, before v6, floats, truncated ("floaty power levels").
func TestParseLevelOldVersions(t *testing.T) {
	const bad = int64(-1 << 62) // marks a rejected value
	tests := []struct {
		raw         string
		v1, v6, v10 int64
	}{
		{`50`, 50, 50, 50},
		{`-7`, -7, -7, -7},
		{`"50"`, 50, 50, bad},
		{`"000100"`, 100, 100, bad},
		{`"+100"`, 100, 100, bad},
		{`"-100"`, -100, -100, bad},
		{`" \t 100 \n"`, 100, 100, bad},
		{`" +00100 "`, 100, 100, bad},
		{`"+-1"`, bad, bad, bad},
		{`"1_000"`, bad, bad, bad},
		{`"50.0"`, bad, bad, bad},
		{`""`, bad, bad, bad},
		{`"-"`, bad, bad, bad},
		{`"9007199254740992"`, 9007199254740992, bad, bad}, // v6+: ±(2^53-1)
		{`"9223372036854775806"`, 9223372036854775806, bad, bad},
		{`"9223372036854775807"`, bad, bad, bad}, // InfiniteLevel stays out of reach
		{`50.57`, 50, bad, bad},
		{`-0.5`, 0, bad, bad},
		{`5.114698E4`, 51146, bad, bad},
		{`1e300`, bad, bad, bad},
		{`true`, bad, bad, bad},
		{`null`, bad, bad, bad},
		{`{}`, bad, bad, bad},
	}
	for _, tt := range tests {
		for _, c := range []struct {
			ver  string
			want int64
		}{{"1", tt.v1}, {"5", tt.v1}, {"6", tt.v6}, {"9", tt.v6}, {"10", tt.v10}} {
			got, err := parseLevel(mustVersion(t, c.ver), []byte(tt.raw))
			if c.want == bad {
				if err == nil {
					t.Errorf("v%s %s = %d, want an error", c.ver, tt.raw, got)
				}
			} else if err != nil || got != c.want {
				t.Errorf("v%s %s = %d, %v; want %d", c.ver, tt.raw, got, err, c.want)
			}
		}
	}
	// Before v6 the rules never read notifications, so malformed ones are
	// no error (the default applies).
	for _, ver := range []string{"1", "5"} {
		pl, err := ParsePowerLevels(mustVersion(t, ver), []byte(`{"notifications":{"room":true,"x":"7"},"kick":"10"}`))
		if err != nil || pl.NotificationLevel("room") != 50 || pl.NotificationLevel("x") != 7 || pl.Kick != 10 {
			t.Errorf("v%s: %+v, %v", ver, pl, err)
		}
		if _, err := ParsePowerLevels(mustVersion(t, ver), []byte(`{"notifications":[]}`)); err != nil {
			t.Errorf("v%s: notifications not an object: %v", ver, err)
		}
	}
	if _, err := ParsePowerLevels(mustVersion(t, "6"), []byte(`{"notifications":{"room":true}}`)); err == nil {
		t.Error("v6 accepted a boolean notification level")
	}
}

func TestRoomPowerLevels(t *testing.T) {
	for _, tt := range []struct {
		ver                   string
		creators              []UserID
		alice, zed, carol, pl int64 // levels; pl: alice's with a power levels event naming nobody
	}{
		{"1", []UserID{"@alice:a.test"}, 100, 0, 0, 0},
		{"6", []UserID{"@alice:a.test"}, 100, 0, 0, 0},
		{"10", []UserID{"@alice:a.test"}, 100, 0, 0, 0},
		{"11", []UserID{"@alice:a.test"}, 100, 0, 0, 0},
		{"12", []UserID{"@alice:a.test", "@zed:b.test"}, InfiniteLevel, InfiniteLevel, 0, InfiniteLevel},
	} {
		v := mustVersion(t, tt.ver)
		// event_id is the v1 format's, and only hashed by the others.
		create := mustEvent(t, v, `{"type":"m.room.create","state_key":"","sender":"@alice:a.test","event_id":"$c:a.test",%s
			"content":{"creator":"@alice:a.test","additional_creators":["@zed:b.test","@alice:a.test",7,"bad"]},
			"prev_events":[],"auth_events":[],"depth":1,"origin_server_ts":1}`,
			map[bool]string{true: "", false: `"room_id":"!r:a.test",`}[v.DomainlessRoomIDs])
		if got := Creators(create); !slices.Equal(got, tt.creators) {
			t.Errorf("v%s: Creators = %v, want %v", tt.ver, got, tt.creators)
		}
		pl, err := RoomPowerLevels(create, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			u    UserID
			want int64
		}{{"@alice:a.test", tt.alice}, {"@zed:b.test", tt.zed}, {"@carol:a.test", tt.carol}} {
			if got := pl.UserLevel(c.u); got != c.want {
				t.Errorf("v%s no power levels: %s has %d, want %d", tt.ver, c.u, got, c.want)
			}
			if got := UserLevelIn(v, nil, create, c.u); got != c.want {
				t.Errorf("v%s UserLevelIn(nil): %s has %d, want %d", tt.ver, c.u, got, c.want)
			}
		}
		if pl.StateDefault != 50 {
			t.Errorf("v%s: state_default without power levels is %d, want 50", tt.ver, pl.StateDefault)
		}
		plEv := mustEvent(t, v, `{"type":"m.room.power_levels","state_key":"","sender":"@alice:a.test","event_id":"$p:a.test","room_id":"%s",
			"content":{"users":{"@carol:a.test":10}},"prev_events":[],"auth_events":[],"depth":2,"origin_server_ts":2}`, create.RoomID())
		pl, err = PowerLevelsFromState(NewStateMap(create, plEv))
		if err != nil {
			t.Fatal(err)
		}
		if got := pl.UserLevel("@alice:a.test"); got != tt.pl {
			t.Errorf("v%s: alice has %d, want %d", tt.ver, got, tt.pl)
		}
		parsed, _ := ParsePowerLevels(v, plEv.Content())
		if got := UserLevelIn(v, parsed, create, "@alice:a.test"); got != tt.pl {
			t.Errorf("v%s UserLevelIn: alice has %d, want %d", tt.ver, got, tt.pl)
		}
		if got := pl.UserLevel("@carol:a.test"); got != 10 {
			t.Errorf("v%s: carol has %d, want 10", tt.ver, got)
		}
	}
	if _, err := PowerLevelsFromState(StateMap{}); err == nil {
		t.Error("PowerLevelsFromState without a create event succeeded")
	}
}

func TestAuthErrorString(t *testing.T) {
	err := error(&AuthError{Rule: "4.5.2", Reason: "sender is not joined"})
	if err.Error() != "rule 4.5.2: sender is not joined" {
		t.Errorf("got %q", err.Error())
	}
}

// benchmarkRoom is a v11 room with members joined members and a power levels
// event naming users of them.
func benchmarkRoom(b *testing.B, members, users int) (*RoomVersion, StateMap, *Event) {
	v := mustVersion(b, "11")
	room := "!bench:a.test"
	state := StateMap{}
	create := mustEvent(b, v, `{"type":"m.room.create","state_key":"","sender":"@u0:a.test","room_id":"%s",
		"content":{"room_version":"11"},"prev_events":[],"auth_events":[],"depth":1,"origin_server_ts":1}`, room)
	state[create.Tuple()] = create
	levels := map[string]int{}
	for i := range users {
		levels[fmt.Sprintf("@u%d:a.test", i)] = 50 + i
	}
	content, _ := json.Marshal(map[string]any{"users": levels, "events": map[string]int{TypeName: 50, TypeTopic: 50}})
	pl := mustEvent(b, v, `{"type":"m.room.power_levels","state_key":"","sender":"@u0:a.test","room_id":"%s",
		"content":%s,"prev_events":[],"auth_events":[],"depth":2,"origin_server_ts":2}`, room, content)
	state[pl.Tuple()] = pl
	for i := range members {
		u := fmt.Sprintf("@u%d:a.test", i)
		m := mustEvent(b, v, `{"type":"m.room.member","state_key":"%s","sender":"%s","room_id":"%s",
			"content":{"membership":"join","displayname":"User %d"},"prev_events":[],"auth_events":[],"depth":3,"origin_server_ts":3}`, u, u, room, i)
		state[m.Tuple()] = m
	}
	sender := fmt.Sprintf("@u%d:a.test", members-1)
	msg := mustEvent(b, v, `{"type":"m.room.message","sender":"%s","room_id":"%s",
		"content":{"msgtype":"m.text","body":"hello"},"prev_events":[],"auth_events":[],"depth":4,"origin_server_ts":4}`, sender, room)
	return v, state, msg
}

func BenchmarkAuthorise(b *testing.B) {
	_, state, msg := benchmarkRoom(b, 1000, 50)
	if err := Authorise(msg, state); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := Authorise(msg, state); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzPowerLevels(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"ban":50,"kick":"50","users":{"@a:x":100},"events":{"m.room.name":50},"notifications":{"room":20}}`,
		`{"users_default":-9007199254740991,"state_default":9007199254740991}`, `{"events":{"a":1.5}}`,
		`{"users":{"bad":1}}`, `[]`, `{"invite":-0}`, `{"redact":1e2}`,
	} {
		f.Add([]byte(s))
	}
	versions := RoomVersions()
	f.Fuzz(func(t *testing.T, content []byte) {
		// The scanner must survive bytes that are not JSON.
		objectField(content, "users")
		stringField(content, "membership")
		for _, v := range versions {
			parsePowerLevels(v, content, nil)
			parsePowerLevels(v, content, &plFilter{users: []UserID{"@a:x"}, event: "m.room.name"})
		}
		for _, v := range versions {
			pl, err := ParsePowerLevels(v, content)
			if err != nil {
				var perr *PowerLevelsError
				if !errors.As(err, &perr) {
					t.Fatalf("v%s: error %T is not a *PowerLevelsError", v.ID, err)
				}
				continue
			}
			bound := int64(maxCanonicalInt)
			if !v.StrictCanonicalJSON {
				bound = InfiniteLevel - 1
			}
			in := func(n int64) bool { return n >= -bound && n <= bound }
			for i := range topLevelKeys {
				if !in(*pl.topLevel(i)) {
					t.Fatalf("v%s: %s out of range", v.ID, topLevelKeys[i])
				}
			}
			for u, n := range pl.Users {
				if _, err := ParseUserID(string(u)); err != nil || !in(n) {
					t.Fatalf("v%s: users entry %q: %d", v.ID, u, n)
				}
			}
			// What parsed must survive a round trip unchanged.
			out := map[string]any{"users": pl.Users, "events": pl.Events, "notifications": pl.Notifications}
			for i, k := range topLevelKeys {
				if pl.isSet(i) {
					out[k] = *pl.topLevel(i)
				}
			}
			data, _ := json.Marshal(out)
			again, err := ParsePowerLevels(v, data)
			if err != nil {
				t.Fatalf("v%s: round trip of %s: %v", v.ID, data, err)
			}
			if fmt.Sprint(again) != fmt.Sprint(pl) {
				t.Fatalf("v%s: round trip changed %+v to %+v", v.ID, pl, again)
			}
			// The filtered parse Authorise uses must agree on what it keeps.
			var user UserID
			for u := range pl.Users {
				user = u
			}
			var evType string
			for e := range pl.Events {
				evType = e
			}
			part, err := parsePowerLevels(v, content, &plFilter{users: []UserID{user}, event: evType})
			if err != nil {
				t.Fatalf("v%s: filtered parse failed: %v", v.ID, err)
			}
			if part.UserLevel(user) != pl.UserLevel(user) || part.EventLevel(evType, true) != pl.EventLevel(evType, true) ||
				part.set != pl.set || part.Ban != pl.Ban || part.UsersDefault != pl.UsersDefault {
				t.Fatalf("v%s: filtered parse %+v differs from %+v", v.ID, part, pl)
			}
		}
	})
}
