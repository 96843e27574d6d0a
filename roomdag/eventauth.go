package roomdag

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Event authorisation: the "Authorisation rules" of every room version
// (content/rooms/v1.md to v12.md in matrix-org/matrix-spec; v1 and v2 share
// the list of fragments/v1-auth-rules.md, v3 to v5 that of v3-auth-rules.md,
// v8 and v9 that of v8-auth-rules.md) and the "Auth events selection" of the
// server-server API.
//
// The receive path for an event ev runs, in order:
//
//  1. v12 only: look up the create event whose ID is "$" + ev.RoomID()[1:]
//     (nil if unknown or rejected) and call CheckCreateRoomID (rule 2);
//  2. fetch the events named by ev.AuthEvents(); reject ev if any was itself
//     rejected (v1-v11 rule 2.3, v12 rule 3.3: only the caller knows), then
//     call CheckAuthEvents (the rest of v1-v11 rule 2, v12 rule 3);
//  3. Authorise(ev, NewStateMap(authEvents...)) (plus the create event in
//     v12), then Authorise against the state before ev, and against the
//     current state (soft failure).
//
// Locally created events take their auth events from AuthEventTuples over
// the current state, so steps 1 and 2 hold by construction.

// AuthError is an authorisation failure. Rule is the number of the rule that
// rejected the event in the list of that room version, e.g. "4.5.2" in v10
// is "5.5.2" in v12 and "5.4.2" in v1 (see ruleNumbers).
type AuthError struct {
	Rule   string
	Reason string
	// Malformed means a rule about the event's own content rejected it
	// (power levels that are not integers or list a v12 creator, an invalid
	// additional_creators, a member event without membership): whoever
	// sent it, it is invalid. The client API answers such a request with
	// 400 M_BAD_JSON, as Synapse does, rather than 403.
	Malformed bool
}

func (e *AuthError) Error() string { return "rule " + e.Rule + ": " + e.Reason }

// AuthState is the room state an event is authorised against.
type AuthState interface {
	// Get returns the state event for (evType, stateKey), or nil.
	Get(evType, stateKey string) *Event
}

// NewStateMap builds a StateMap from state events; a later event replaces an
// earlier one with the same tuple, and nil and non-state events are skipped.
func NewStateMap(events ...*Event) StateMap {
	m := make(StateMap, len(events))
	for _, e := range events {
		if e != nil && e.IsState() {
			m[e.Tuple()] = e
		}
	}
	return m
}

// rule names one rejection in the auth rules, independent of its number.
type rule uint8

const (
	ruleCreateFormat rule = iota
	ruleCreatePrevEvents
	ruleCreateRoomID
	ruleCreateRoomVersion
	ruleCreateCreators
	ruleNoCreate
	ruleAuthDuplicate
	ruleAuthUnexpected
	ruleAuthRoomMismatch
	ruleFederate
	ruleAliasesNoStateKey
	ruleAliasesDomain
	ruleMemberFormat
	ruleMemberAuthorisedViaSig
	ruleJoinNotSelf
	ruleJoinBanned
	ruleJoinAuthoriser
	ruleJoinOtherwise
	ruleTPIBanned
	ruleTPINoSigned
	ruleTPIFields
	ruleTPIMxid
	ruleTPINoEvent
	ruleTPISender
	ruleTPISignature
	ruleInviteSenderNotJoined
	ruleInviteTarget
	ruleInviteLevel
	ruleLeaveSelf
	ruleLeaveSenderNotJoined
	ruleLeaveUnban
	ruleLeaveKick
	ruleBanSenderNotJoined
	ruleBanLevel
	ruleKnockJoinRule
	ruleKnockNotSelf
	ruleKnockMembership
	ruleMembershipUnknown
	ruleSenderNotJoined
	ruleThirdPartyInvite
	ruleEventLevel
	ruleStateKeyUser
	rulePLTopLevel
	rulePLMaps
	rulePLUsers
	rulePLCreators
	rulePLTopCurrent
	rulePLTopNew
	rulePLMapCurrent
	rulePLMapNew
	rulePLUserCurrent
	rulePLUserNew
	ruleRedactionLevel
	ruleAuthRejected
	numRules
)

// The rule lists: versions share a list when the spec gives them the same
// text and numbering.
const (
	listV1  = iota // v1, v2: m.room.aliases (4) and m.room.redaction (11) rules
	listV3         // v3-v5: no redaction rule
	listV6         // v6: no aliases rule, so members are rule 4
	listV7         // v7: knocking (4.6)
	listV8         // v8, v9: join_authorised_via_users_server (4.2), restricted (4.3.5)
	listV10        // v10, v11: power levels must be integers (9.1, 9.2)
	listV12        // v12: the room_id rule is rule 2, creators in power levels (10.4)
	numLists
)

// ruleList is the list of v's rules, from the features that renumber them.
func ruleList(v *RoomVersion) int {
	switch {
	case v.RedactionAuthRule:
		return listV1
	case v.AliasesAuthRule:
		return listV3
	case !v.Knock:
		return listV6
	case !v.RestrictedJoins:
		return listV7
	case !v.IntegerPowerLevels:
		return listV8
	case !v.DomainlessRoomIDs:
		return listV10
	}
	return listV12
}

// ruleNumbers gives each rule's number in each list. "" marks a rule the
// list does not have. Numbers are those of the rendered spec: v12.md's
// source numbers rule 3.4 as "5." and the last item of rule 10 as "10.",
// which Markdown renders as 3.4 and 10.11.
var ruleNumbers = [numRules][numLists]string{
	// Not in the text: m.room.create must be a state event with an empty
	// state key (the event's schema); we reject others under rule 1.
	ruleCreateFormat:      {"1", "1", "1", "1", "1", "1", "1"},
	ruleCreatePrevEvents:  {"1.1", "1.1", "1.1", "1.1", "1.1", "1.1", "1.1"},
	ruleCreateRoomID:      {"1.2", "1.2", "1.2", "1.2", "1.2", "1.2", "1.2"},
	ruleCreateRoomVersion: {"1.3", "1.3", "1.3", "1.3", "1.3", "1.3", "1.3"},
	// v1-v10: content has no creator; v12: additional_creators malformed.
	ruleCreateCreators: {"1.4", "1.4", "1.4", "1.4", "1.4", "1.4", "1.4"},
	// v1-v11: no create event among the auth events (and so none in the
	// state authorised against); v12: the room_id is not a create event's.
	ruleNoCreate:         {"2.4", "2.4", "2.4", "2.4", "2.4", "2.4", "2"},
	ruleAuthDuplicate:    {"2.1", "2.1", "2.1", "2.1", "2.1", "2.1", "3.1"},
	ruleAuthUnexpected:   {"2.2", "2.2", "2.2", "2.2", "2.2", "2.2", "3.2"},
	ruleAuthRoomMismatch: {"2.5", "2.5", "2.5", "2.5", "2.5", "2.5", "3.4"},
	// An auth event that was itself rejected (applied by Receive, which
	// knows what was rejected).
	ruleAuthRejected: {"2.3", "2.3", "2.3", "2.3", "2.3", "2.3", "3.3"},
	ruleFederate:     {"3", "3", "3", "3", "3", "3", "4"},
	// m.room.aliases: rule 4 of v1-v5, removed in v6.
	ruleAliasesNoStateKey: {"4.1", "4.1", "", "", "", "", ""},
	ruleAliasesDomain:     {"4.2", "4.2", "", "", "", "", ""},
	ruleMemberFormat:      {"5.1", "5.1", "4.1", "4.1", "4.1", "4.1", "5.1"},
	// join_authorised_via_users_server: v8+.
	ruleMemberAuthorisedViaSig: {"", "", "", "", "4.2.1", "4.2.1", "5.2.1"},
	ruleJoinNotSelf:            {"5.2.2", "5.2.2", "4.2.2", "4.2.2", "4.3.2", "4.3.2", "5.3.2"},
	ruleJoinBanned:             {"5.2.3", "5.2.3", "4.2.3", "4.2.3", "4.3.3", "4.3.3", "5.3.3"},
	ruleJoinAuthoriser:         {"", "", "", "", "4.3.5.2", "4.3.5.2", "5.3.5.2"},
	ruleJoinOtherwise:          {"5.2.6", "5.2.6", "4.2.6", "4.2.6", "4.3.7", "4.3.7", "5.3.7"},
	ruleTPIBanned:              {"5.3.1.1", "5.3.1.1", "4.3.1.1", "4.3.1.1", "4.4.1.1", "4.4.1.1", "5.4.1.1"},
	ruleTPINoSigned:            {"5.3.1.2", "5.3.1.2", "4.3.1.2", "4.3.1.2", "4.4.1.2", "4.4.1.2", "5.4.1.2"},
	ruleTPIFields:              {"5.3.1.3", "5.3.1.3", "4.3.1.3", "4.3.1.3", "4.4.1.3", "4.4.1.3", "5.4.1.3"},
	ruleTPIMxid:                {"5.3.1.4", "5.3.1.4", "4.3.1.4", "4.3.1.4", "4.4.1.4", "4.4.1.4", "5.4.1.4"},
	ruleTPINoEvent:             {"5.3.1.5", "5.3.1.5", "4.3.1.5", "4.3.1.5", "4.4.1.5", "4.4.1.5", "5.4.1.5"},
	ruleTPISender:              {"5.3.1.6", "5.3.1.6", "4.3.1.6", "4.3.1.6", "4.4.1.6", "4.4.1.6", "5.4.1.6"},
	ruleTPISignature:           {"5.3.1.8", "5.3.1.8", "4.3.1.8", "4.3.1.8", "4.4.1.8", "4.4.1.8", "5.4.1.8"},
	ruleInviteSenderNotJoined:  {"5.3.2", "5.3.2", "4.3.2", "4.3.2", "4.4.2", "4.4.2", "5.4.2"},
	ruleInviteTarget:           {"5.3.3", "5.3.3", "4.3.3", "4.3.3", "4.4.3", "4.4.3", "5.4.3"},
	ruleInviteLevel:            {"5.3.5", "5.3.5", "4.3.5", "4.3.5", "4.4.5", "4.4.5", "5.4.5"},
	ruleLeaveSelf:              {"5.4.1", "5.4.1", "4.4.1", "4.4.1", "4.5.1", "4.5.1", "5.5.1"},
	ruleLeaveSenderNotJoined:   {"5.4.2", "5.4.2", "4.4.2", "4.4.2", "4.5.2", "4.5.2", "5.5.2"},
	ruleLeaveUnban:             {"5.4.3", "5.4.3", "4.4.3", "4.4.3", "4.5.3", "4.5.3", "5.5.3"},
	ruleLeaveKick:              {"5.4.5", "5.4.5", "4.4.5", "4.4.5", "4.5.5", "4.5.5", "5.5.5"},
	ruleBanSenderNotJoined:     {"5.5.1", "5.5.1", "4.5.1", "4.5.1", "4.6.1", "4.6.1", "5.6.1"},
	ruleBanLevel:               {"5.5.3", "5.5.3", "4.5.3", "4.5.3", "4.6.3", "4.6.3", "5.6.3"},
	// knock: v7+.
	ruleKnockJoinRule:     {"", "", "", "4.6.1", "4.7.1", "4.7.1", "5.7.1"},
	ruleKnockNotSelf:      {"", "", "", "4.6.2", "4.7.2", "4.7.2", "5.7.2"},
	ruleKnockMembership:   {"", "", "", "4.6.4", "4.7.4", "4.7.4", "5.7.4"},
	ruleMembershipUnknown: {"5.6", "5.6", "4.6", "4.7", "4.8", "4.8", "5.8"},
	ruleSenderNotJoined:   {"6", "6", "5", "5", "5", "5", "6"},
	ruleThirdPartyInvite:  {"7.1", "7.1", "6.1", "6.1", "6.1", "6.1", "7.1"},
	ruleEventLevel:        {"8", "8", "7", "7", "7", "7", "8"},
	ruleStateKeyUser:      {"9", "9", "8", "8", "8", "8", "9"},
	// Before v10 the only rule on the content of m.room.power_levels is
	// that users holds integers (or integer strings) keyed by user IDs
	// (v1 10.1, v6 9.1). Other levels that are not integers cannot be
	// compared by the later rules, so we reject them under that rule too,
	// as gomatrixserverlib, which refuses to parse them, does. (Synapse
	// would accept such an event and then fail on every event after it.)
	rulePLTopLevel:    {"10.1", "10.1", "9.1", "9.1", "9.1", "9.1", "10.1"},
	rulePLMaps:        {"10.1", "10.1", "9.1", "9.1", "9.1", "9.2", "10.2"},
	rulePLUsers:       {"10.1", "10.1", "9.1", "9.1", "9.1", "9.3", "10.3"},
	rulePLCreators:    {"", "", "", "", "", "", "10.4"},
	rulePLTopCurrent:  {"10.3.1", "10.3.1", "9.3.1", "9.3.1", "9.3.1", "9.5.1", "10.6.1"},
	rulePLTopNew:      {"10.3.2", "10.3.2", "9.3.2", "9.3.2", "9.3.2", "9.5.2", "10.6.2"},
	rulePLMapCurrent:  {"10.4.1", "10.4.1", "9.4.1", "9.4.1", "9.4.1", "9.6.1", "10.7.1"},
	rulePLMapNew:      {"10.5.1", "10.5.1", "9.5.1", "9.5.1", "9.5.1", "9.7.1", "10.8.1"},
	rulePLUserCurrent: {"10.6.1", "10.6.1", "9.6.1", "9.6.1", "9.6.1", "9.8.1", "10.9.1"},
	rulePLUserNew:     {"10.7.1", "10.7.1", "9.7.1", "9.7.1", "9.7.1", "9.9.1", "10.10.1"},
	// m.room.redaction: rule 11 of v1 and v2 only.
	ruleRedactionLevel: {"11.3", "", "", "", "", "", ""},
}

// malformedRules are the rules about the event's own content (see
// AuthError.Malformed).
var malformedRules = [numRules]bool{
	ruleCreateCreators: true, ruleMemberFormat: true,
	rulePLTopLevel: true, rulePLMaps: true, rulePLUsers: true, rulePLCreators: true,
}

// reject builds the AuthError for r in v's rule list.
func reject(v *RoomVersion, r rule, format string, args ...any) *AuthError {
	return &AuthError{Rule: ruleNumbers[r][ruleList(v)], Reason: fmt.Sprintf(format, args...), Malformed: malformedRules[r]}
}

// AuthEventTuples is the spec's auth events selection: the state an event of
// this type, state key, sender and content must cite in auth_events, each
// only if the room has it. It is empty for the create event. In v12 the
// create event is never selected (its ID is implied by the room ID).
func AuthEventTuples(v *RoomVersion, evType string, stateKey *string, sender UserID, content []byte) []StateKey {
	if evType == TypeCreate && stateKey != nil && *stateKey == "" {
		return nil
	}
	out := make([]StateKey, 0, 6)
	add := func(t, k string) {
		sk := StateKey{Type: t, StateKey: k}
		if !slices.Contains(out, sk) {
			out = append(out, sk)
		}
	}
	if !v.DomainlessRoomIDs {
		add(TypeCreate, "")
	}
	add(TypePowerLevels, "")
	add(TypeMember, string(sender))
	if evType != TypeMember || stateKey == nil {
		return out
	}
	add(TypeMember, *stateKey)
	c := parseMemberContent(content)
	switch c.membership {
	case MembershipJoin, MembershipInvite, MembershipKnock:
		add(TypeJoinRules, "")
	}
	if c.membership == MembershipInvite && c.hasTPI {
		if token, ok := c.tpiToken(); ok {
			add(TypeThirdPartyInvite, token)
		}
	}
	if v.RestrictedJoins && c.membership == MembershipJoin && c.authorisedVia != "" {
		add(TypeMember, c.authorisedVia)
	}
	return out
}

// memberContent is what the rules read from m.room.member content, with
// exact key matching.
type memberContent struct {
	hasMembership    bool
	membership       string // "" if absent or not a string
	membershipRaw    json.RawMessage
	hasAuthorisedVia bool
	authorisedVia    string // "" if absent or not a string
	hasTPI           bool
	tpi              json.RawMessage
}

func parseMemberContent(content []byte) memberContent {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(content, &m)
	var c memberContent
	var raw json.RawMessage
	if c.membershipRaw, c.hasMembership = m["membership"]; c.hasMembership {
		_ = json.Unmarshal(c.membershipRaw, &c.membership)
	}
	if raw, c.hasAuthorisedVia = m["join_authorised_via_users_server"]; c.hasAuthorisedVia {
		_ = json.Unmarshal(raw, &c.authorisedVia)
	}
	c.tpi, c.hasTPI = m["third_party_invite"]
	return c
}

// tpiToken returns third_party_invite.signed.token if it is a string.
func (c memberContent) tpiToken() (string, bool) {
	signed, ok := objectField(c.tpi, "signed")
	if !ok {
		return "", false
	}
	return stringField(signed, "token")
}

// CheckCreateRoomID is v12 rule 2: the event's room_id must be the ID of an
// accepted create event, with sigil "!" for "$". create is the event whose
// ID is "$" + ev.RoomID()[1:], nil if the caller has none or rejected it.
// Other versions have no such rule and always pass.
func CheckCreateRoomID(ev, create *Event) error {
	v := ev.Version()
	if !v.DomainlessRoomIDs || ev.IsCreate() {
		return nil
	}
	if create == nil || !create.IsCreate() || create.RoomID() != ev.RoomID() {
		return reject(v, ruleNoCreate, "room ID %s is not the ID of an accepted m.room.create event", ev.RoomID())
	}
	return nil
}

// CheckAuthEvents applies the rules about ev's auth_events list itself
// (v1-v11 rule 2, v12 rule 3): authEvents must be the events ev.AuthEvents() names,
// in any order. It rejects duplicate (type, state_key) pairs, entries the
// auth events selection would not pick (including non-state events and, in
// v12, the create event), entries from another room, and before v12 a list
// without the create event. Rule 2.3 (3.3 in v12), an entry that was itself
// rejected, is the caller's to apply. A create event's auth events are not
// considered: rule 1 decides it alone. An error that is not an *AuthError
// means authEvents does not match ev.AuthEvents().
func CheckAuthEvents(ev *Event, authEvents []*Event) error {
	if ev.Type() == TypeCreate {
		return nil
	}
	v := ev.Version()
	listed := ev.AuthEvents()
	for i, id := range listed {
		if slices.Contains(listed[:i], id) {
			return reject(v, ruleAuthDuplicate, "auth_events lists %s twice", id)
		}
	}
	if len(authEvents) != len(listed) {
		return fmt.Errorf("roomdag: %d auth events given for %d in auth_events", len(authEvents), len(listed))
	}
	for _, ae := range authEvents {
		if ae == nil || !slices.Contains(listed, ae.ID()) {
			return fmt.Errorf("roomdag: auth event given that auth_events does not list")
		}
	}
	// Each rule looks at the whole list before the next one does, so the
	// rule reported is the first in the spec's order.
	seen := make([]StateKey, 0, len(authEvents))
	for _, ae := range authEvents {
		if !ae.IsState() {
			continue
		}
		k := ae.Tuple()
		if slices.Contains(seen, k) {
			return reject(v, ruleAuthDuplicate, "auth_events has two events for (%s, %q)", k.Type, k.StateKey)
		}
		seen = append(seen, k)
	}
	want := AuthEventTuples(v, ev.Type(), ev.StateKey(), ev.Sender(), ev.Content())
	hasCreate := false
	for _, ae := range authEvents {
		if !ae.IsState() {
			return reject(v, ruleAuthUnexpected, "auth event %s is not a state event", ae.ID())
		}
		k := ae.Tuple()
		if !slices.Contains(want, k) {
			return reject(v, ruleAuthUnexpected, "auth event %s (%s, %q) is not one the auth events selection picks", ae.ID(), k.Type, k.StateKey)
		}
		if ae.IsCreate() {
			hasCreate = true
		}
	}
	// v1-v11 check for the create event (2.4) before the rooms (2.5).
	if !v.DomainlessRoomIDs && !hasCreate {
		return reject(v, ruleNoCreate, "no m.room.create event among the auth events")
	}
	for _, ae := range authEvents {
		if ae.RoomID() != ev.RoomID() {
			return reject(v, ruleAuthRoomMismatch, "auth event %s is in room %s, not %s", ae.ID(), ae.RoomID(), ev.RoomID())
		}
	}
	return nil
}

// Authorise applies the authorisation rules of ev's room version to ev
// against state: the state formed by its auth events, the state before it,
// or the current state. The create event is judged by rule 1 alone. In v12
// state must hold the create event (the auth events do not). A rejection is
// an *AuthError naming the rule.
//
// Not checked here: the event's signatures and hashes (the caller verifies
// those before, including, for rule 4.2.1 (v8-v11 numbering, as in the
// comments below), the signature of the server of
// join_authorised_via_users_server; Authorise only checks that one is
// present) and the auth_events list (CheckAuthEvents). The signatures in
// content.third_party_invite.signed (rule 4.4.1.7) are verified here. In v1
// and v2 the event must also be signed by the server of its event ID; that
// is the signature check's job too.
//
// m.room.redaction has no rule of its own from v3: it needs its event
// level like any event, and whether it is applied is RedactionApplies's
// question ("Handling redactions"). In v1 and v2 rule 11 decides it.
func Authorise(ev *Event, state AuthState) error {
	v := ev.Version()
	if ev.Type() == TypeCreate {
		return authoriseCreate(v, ev)
	}
	create := state.Get(TypeCreate, "")
	if create == nil || create.RoomID() != ev.RoomID() {
		if v.DomainlessRoomIDs {
			return reject(v, ruleNoCreate, "room ID %s is not the ID of the room's m.room.create event", ev.RoomID())
		}
		return reject(v, ruleNoCreate, "no m.room.create event for room %s", ev.RoomID())
	}
	if federateFalse(create.Content()) && ev.Sender().Server() != create.Sender().Server() {
		return reject(v, ruleFederate, "room is not federated (m.federate is false) and %s is not on %s", ev.Sender(), create.Sender().Server())
	}
	if v.AliasesAuthRule && ev.Type() == TypeAliases {
		// v1-v5 rule 4: a server may always set its own aliases.
		sk := ev.StateKey()
		if sk == nil {
			return reject(v, ruleAliasesNoStateKey, "m.room.aliases has no state_key")
		}
		if *sk != string(ev.Sender().Server()) {
			return reject(v, ruleAliasesDomain, "state key %q is not the sender's domain %s", *sk, ev.Sender().Server())
		}
		return nil
	}
	a := &authoriser{v: v, ev: ev, state: state, create: create}
	if ev.Type() == TypeMember {
		return a.member()
	}
	if m := membershipIn(state, ev.Sender()); m != MembershipJoin {
		return reject(v, ruleSenderNotJoined, "sender %s is not joined (membership %q)", ev.Sender(), m)
	}
	if ev.Type() == TypeThirdPartyInvite {
		pl, err := a.levels(ruleThirdPartyInvite)
		if err != nil {
			return err
		}
		if lvl := pl.UserLevel(ev.Sender()); lvl < pl.Invite {
			return reject(v, ruleThirdPartyInvite, "sender's level %s is below the invite level %d", levelString(lvl), pl.Invite)
		}
		return nil
	}
	pl, err := a.levels(ruleEventLevel)
	if err != nil {
		return err
	}
	need, have := pl.EventLevel(ev.Type(), ev.IsState()), pl.UserLevel(ev.Sender())
	if need > have {
		return reject(v, ruleEventLevel, "%s needs level %d, sender has %s", ev.Type(), need, levelString(have))
	}
	if sk := ev.StateKey(); sk != nil && strings.HasPrefix(*sk, "@") && *sk != string(ev.Sender()) {
		return reject(v, ruleStateKeyUser, "state key %q starts with @ and is not the sender", *sk)
	}
	if ev.Type() == TypePowerLevels {
		return a.powerLevels(pl)
	}
	if v.RedactionAuthRule && ev.Type() == TypeRedaction {
		// v1, v2 rule 11: the redact level, or an event of the same
		// event ID domain (event IDs name their server in these versions).
		if pl.UserLevel(ev.Sender()) >= pl.Redact {
			return nil
		}
		if d := ev.Redacts().server(); d != "" && d == ev.ID().server() {
			return nil
		}
		return reject(v, ruleRedactionLevel, "sender's level %s is below the redact level %d and %s is not an event of %s",
			levelString(pl.UserLevel(ev.Sender())), pl.Redact, ev.Redacts(), ev.ID().server())
	}
	return nil
}

// authoriser carries what the non-create rules share.
type authoriser struct {
	v      *RoomVersion
	ev     *Event
	state  AuthState
	create *Event
	pl     *PowerLevels
	// authorisedVia is content.join_authorised_via_users_server of a member
	// event, set before levels is first called.
	authorisedVia UserID
}

// levels parses the current power levels once; a malformed one (which no
// accepted event can be) rejects the event under r, the rule that needed it.
// Only power level changes need every entry; other events need the levels of
// the sender, the target and the authorising user, and their own type's.
func (a *authoriser) levels(r rule) (*PowerLevels, error) {
	if a.pl != nil {
		return a.pl, nil
	}
	var filter *plFilter
	if a.ev.Type() != TypePowerLevels {
		filter = &plFilter{users: []UserID{a.ev.Sender()}, event: a.ev.Type()}
		if sk := a.ev.StateKey(); sk != nil && a.ev.Type() == TypeMember {
			filter.users = append(filter.users, UserID(*sk))
		}
		if a.authorisedVia != "" {
			filter.users = append(filter.users, a.authorisedVia)
		}
	}
	pl, err := roomPowerLevels(a.create, a.state.Get(TypePowerLevels, ""), filter)
	if err != nil {
		return nil, reject(a.v, r, "current %v", err)
	}
	a.pl = pl
	return pl, nil
}

func authoriseCreate(v *RoomVersion, ev *Event) error {
	if !ev.StateKeyIs("") {
		return reject(v, ruleCreateFormat, "m.room.create must be a state event with an empty state key")
	}
	if len(ev.PrevEvents()) > 0 {
		return reject(v, ruleCreatePrevEvents, "m.room.create has prev_events")
	}
	if v.DomainlessRoomIDs {
		// NewEventFromJSON already refuses such an event; this guards events
		// made another way.
		if _, ok := objectField(ev.JSON(), "room_id"); ok {
			return reject(v, ruleCreateRoomID, "m.room.create has a room_id")
		}
	} else if s := roomServer(ev.RoomID()); s != ev.Sender().Server() {
		return reject(v, ruleCreateRoomID, "room ID domain %q is not the sender's %q", s, ev.Sender().Server())
	}
	var c map[string]json.RawMessage
	_ = json.Unmarshal(ev.Content(), &c)
	if raw, ok := c["room_version"]; ok {
		var id string
		if json.Unmarshal(raw, &id) != nil {
			return reject(v, ruleCreateRoomVersion, "room_version %s is not a string", raw)
		}
		if _, known := LookupRoomVersion(id); !known {
			return reject(v, ruleCreateRoomVersion, "room_version %q is not recognised", id)
		}
	}
	if !v.CreatorFromSender {
		if _, ok := c["creator"]; !ok {
			return reject(v, ruleCreateCreators, "content has no creator")
		}
	}
	if raw, ok := c["additional_creators"]; ok && v.PrivilegedCreators {
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) != nil || list == nil {
			return reject(v, ruleCreateCreators, "additional_creators is not an array")
		}
		for _, item := range list {
			var s string
			if json.Unmarshal(item, &s) != nil {
				return reject(v, ruleCreateCreators, "additional_creators entry %s is not a string", item)
			}
			if _, err := ParseUserID(s); err != nil {
				return reject(v, ruleCreateCreators, "additional_creators entry %q is not a valid user ID", s)
			}
		}
	}
	return nil
}

// member is the m.room.member rule: 5 in v1-v5 and v12, 4 in v6-v11.
// Comments below number its parts as v10 does.
func (a *authoriser) member() error {
	v, ev := a.v, a.ev
	sk := ev.StateKey()
	if sk == nil {
		return reject(v, ruleMemberFormat, "m.room.member has no state_key")
	}
	c := parseMemberContent(ev.Content())
	if !c.hasMembership {
		return reject(v, ruleMemberFormat, "content has no membership")
	}
	if v.RestrictedJoins {
		if c.hasAuthorisedVia {
			if err := a.authorisedViaSigned(c); err != nil {
				return err
			}
		}
		a.authorisedVia = UserID(c.authorisedVia)
	}
	target := UserID(*sk)
	sender := ev.Sender()
	targetM := membershipIn(a.state, target)
	senderM := membershipIn(a.state, sender)

	switch c.membership {
	case MembershipJoin:
		// 4.3.1 comes before the sender check: the spec allows the creator's
		// first join whoever sends it (it must still be signed by the
		// sender's server).
		prev := ev.PrevEvents()
		if creators := Creators(a.create); len(prev) == 1 && prev[0] == a.create.ID() &&
			len(creators) > 0 && target == creators[0] {
			return nil
		}
		if sender != target {
			return reject(v, ruleJoinNotSelf, "%s cannot join on behalf of %s", sender, target)
		}
		if senderM == MembershipBan {
			return reject(v, ruleJoinBanned, "%s is banned", sender)
		}
		switch jr := joinRule(a.state); {
		case jr == "invite" || jr == "knock" && v.Knock:
			if targetM == MembershipInvite || targetM == MembershipJoin {
				return nil
			}
			return reject(v, ruleJoinOtherwise, "join rule is %s and %s is not invited", jr, target)
		case jr == "restricted" && v.RestrictedJoins || jr == "knock_restricted" && v.KnockRestricted:
			// A member already joined (changing their profile) or
			// invited needs no authorising user (4.3.5.1).
			if targetM == MembershipInvite || targetM == MembershipJoin {
				return nil
			}
			return a.restrictedJoin(c)
		case jr == "public":
			return nil
		default:
			return reject(v, ruleJoinOtherwise, "join rule %q does not allow joining", jr)
		}

	case MembershipInvite:
		if c.hasTPI {
			return a.thirdPartyInvite(c, target, targetM)
		}
		if senderM != MembershipJoin {
			return reject(v, ruleInviteSenderNotJoined, "inviter %s is not joined", sender)
		}
		if targetM == MembershipJoin || targetM == MembershipBan {
			return reject(v, ruleInviteTarget, "%s's membership is %s", target, targetM)
		}
		pl, err := a.levels(ruleInviteLevel)
		if err != nil {
			return err
		}
		if lvl := pl.UserLevel(sender); lvl < pl.Invite {
			return reject(v, ruleInviteLevel, "sender's level %s is below the invite level %d", levelString(lvl), pl.Invite)
		}
		return nil

	case MembershipLeave:
		if sender == target {
			// v7 added knock to the memberships one may leave.
			if senderM == MembershipInvite || senderM == MembershipJoin || senderM == MembershipKnock && v.Knock {
				return nil
			}
			return reject(v, ruleLeaveSelf, "%s cannot leave with membership %q", sender, senderM)
		}
		if senderM != MembershipJoin {
			return reject(v, ruleLeaveSenderNotJoined, "sender %s is not joined", sender)
		}
		pl, err := a.levels(ruleLeaveKick)
		if err != nil {
			return err
		}
		senderL, targetL := pl.UserLevel(sender), pl.UserLevel(target)
		if targetM == MembershipBan && senderL < pl.Ban {
			return reject(v, ruleLeaveUnban, "sender's level %s is below the ban level %d needed to unban", levelString(senderL), pl.Ban)
		}
		if senderL >= pl.Kick && targetL < senderL {
			return nil
		}
		return reject(v, ruleLeaveKick, "sender's level %s must be at least the kick level %d and above the target's %s",
			levelString(senderL), pl.Kick, levelString(targetL))

	case MembershipBan:
		if senderM != MembershipJoin {
			return reject(v, ruleBanSenderNotJoined, "sender %s is not joined", sender)
		}
		pl, err := a.levels(ruleBanLevel)
		if err != nil {
			return err
		}
		senderL, targetL := pl.UserLevel(sender), pl.UserLevel(target)
		if senderL >= pl.Ban && targetL < senderL {
			return nil
		}
		return reject(v, ruleBanLevel, "sender's level %s must be at least the ban level %d and above the target's %s",
			levelString(senderL), pl.Ban, levelString(targetL))

	case MembershipKnock:
		if !v.Knock {
			break // before v7 knock is an unknown membership
		}
		jr := joinRule(a.state)
		if jr != "knock" && !(jr == "knock_restricted" && v.KnockRestricted) {
			return reject(v, ruleKnockJoinRule, "join rule %q does not allow knocking", jr)
		}
		if sender != target {
			return reject(v, ruleKnockNotSelf, "%s cannot knock on behalf of %s", sender, target)
		}
		if senderM != MembershipBan && senderM != MembershipInvite && senderM != MembershipJoin {
			return nil
		}
		return reject(v, ruleKnockMembership, "%s cannot knock with membership %s", sender, senderM)
	}
	return reject(v, ruleMembershipUnknown, "unknown membership %s", c.membershipRaw)
}

// authorisedViaSigned is rule 4.2.1 as far as the core can check it: the
// event must carry a signature of the authorising user's server. Verifying
// it cryptographically is the signature check's job, done before.
func (a *authoriser) authorisedViaSigned(c memberContent) error {
	u, err := ParseUserID(c.authorisedVia)
	if err != nil {
		return reject(a.v, ruleMemberAuthorisedViaSig, "join_authorised_via_users_server is not a valid user ID")
	}
	sigs, _ := objectField(a.ev.JSON(), "signatures")
	byServer, ok := objectField(sigs, string(u.Server()))
	var keys map[string]json.RawMessage
	if !ok || json.Unmarshal(byServer, &keys) != nil || len(keys) == 0 {
		return reject(a.v, ruleMemberAuthorisedViaSig, "not signed by %s, the server of join_authorised_via_users_server", u.Server())
	}
	return nil
}

// restrictedJoin is rule 4.3.5.2: the user named by
// join_authorised_via_users_server must be joined and able to invite.
func (a *authoriser) restrictedJoin(c memberContent) error {
	v := a.v
	if c.authorisedVia == "" {
		return reject(v, ruleJoinAuthoriser, "restricted room and no join_authorised_via_users_server")
	}
	via := UserID(c.authorisedVia)
	if m := membershipIn(a.state, via); m != MembershipJoin {
		return reject(v, ruleJoinAuthoriser, "authorising user %s is not joined", via)
	}
	pl, err := a.levels(ruleJoinAuthoriser)
	if err != nil {
		return err
	}
	if lvl := pl.UserLevel(via); lvl < pl.Invite {
		return reject(v, ruleJoinAuthoriser, "authorising user %s has level %s, below the invite level %d", via, levelString(lvl), pl.Invite)
	}
	return nil
}

// thirdPartyInvite is rule 4.4.1.
func (a *authoriser) thirdPartyInvite(c memberContent, target UserID, targetM string) error {
	v := a.v
	if targetM == MembershipBan {
		return reject(v, ruleTPIBanned, "%s is banned", target)
	}
	signed, ok := objectField(c.tpi, "signed")
	if !ok {
		return reject(v, ruleTPINoSigned, "third_party_invite has no signed")
	}
	mxid, okM := stringField(signed, "mxid")
	token, okT := stringField(signed, "token")
	if !okM || !okT {
		return reject(v, ruleTPIFields, "third_party_invite.signed needs mxid and token")
	}
	if mxid != string(target) {
		return reject(v, ruleTPIMxid, "signed mxid %q is not the state key %q", mxid, target)
	}
	tpi := a.state.Get(TypeThirdPartyInvite, token)
	if tpi == nil {
		return reject(v, ruleTPINoEvent, "no m.room.third_party_invite for token %q", token)
	}
	if tpi.Sender() != a.ev.Sender() {
		return reject(v, ruleTPISender, "sender is not %s, who sent the m.room.third_party_invite", tpi.Sender())
	}
	// 4.4.1.7: allow if any signature in signed verifies with any public key
	// of the m.room.third_party_invite (public_key, public_keys[].public_key).
	sigs := signatureIDs(signed)
	for _, pub := range thirdPartyInviteKeys(tpi.Content()) {
		for _, sig := range sigs {
			if VerifyJSON(sig.server, sig.keyID, pub, signed) == nil {
				return nil
			}
		}
	}
	return reject(v, ruleTPISignature, "no signature in third_party_invite.signed verifies with a public key of the m.room.third_party_invite")
}

type signatureID struct {
	server ServerName
	keyID  string
}

// signatureIDs lists the (server, key ID) pairs under obj.signatures.
func signatureIDs(obj []byte) []signatureID {
	sigs, ok := objectField(obj, "signatures")
	if !ok {
		return nil
	}
	var out []signatureID
	s := jsonScanner{b: sigs}
	s.objectEach(func(server []byte) {
		byServer := s.value()
		name := ServerName(server)
		inner := jsonScanner{b: byServer}
		inner.objectEach(func(keyID []byte) {
			inner.value()
			out = append(out, signatureID{server: name, keyID: string(keyID)})
		})
	})
	return out
}

// thirdPartyInviteKeys decodes the ed25519 public keys of an
// m.room.third_party_invite: public_key and each public_keys[].public_key,
// in base64 with or without padding, standard or URL-safe (identity servers
// use both).
func thirdPartyInviteKeys(content []byte) []ed25519.PublicKey {
	var texts []string
	if k, ok := stringField(content, "public_key"); ok {
		texts = append(texts, k)
	}
	if raw, ok := objectField(content, "public_keys"); ok {
		var list []json.RawMessage
		_ = json.Unmarshal(raw, &list)
		for _, item := range list {
			if k, ok := stringField(item, "public_key"); ok {
				texts = append(texts, k)
			}
		}
	}
	var out []ed25519.PublicKey
	for _, t := range texts {
		b, err := decodeBase64(t)
		if err != nil {
			b, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(t, "="))
		}
		if err == nil && len(b) == ed25519.PublicKeySize {
			out = append(out, ed25519.PublicKey(b))
		}
	}
	return out
}

// powerLevels is the rule on changes to m.room.power_levels (10 in v1-v5
// and v12, 9 in v6-v11; notifications from v6 only). cur holds
// the levels in force before ev.
func (a *authoriser) powerLevels(cur *PowerLevels) error {
	v, ev := a.v, a.ev
	next, err := ParsePowerLevels(v, ev.Content())
	if err != nil {
		perr, _ := err.(*PowerLevelsError)
		r := rulePLTopLevel
		switch {
		case perr == nil:
		case perr.part == plPartMaps:
			r = rulePLMaps
		case perr.part == plPartUsers:
			r = rulePLUsers
		}
		return reject(v, r, "%v", err)
	}
	if v.PrivilegedCreators {
		for _, c := range Creators(a.create) {
			if _, ok := next.Users[c]; ok {
				return reject(v, rulePLCreators, "creator %s cannot be listed in users", c)
			}
		}
	}
	if a.state.Get(TypePowerLevels, "") == nil {
		return nil
	}
	sender := ev.Sender()
	mine := cur.UserLevel(sender)
	for i, key := range topLevelKeys {
		oldSet, newSet := cur.isSet(i), next.isSet(i)
		oldV, newV := *cur.topLevel(i), *next.topLevel(i)
		if oldSet == newSet && (!oldSet || oldV == newV) {
			continue
		}
		if oldSet && oldV > mine {
			return reject(v, rulePLTopCurrent, "cannot change %s from %d, above sender's level %s", key, oldV, levelString(mine))
		}
		if newSet && newV > mine {
			return reject(v, rulePLTopNew, "cannot set %s to %d, above sender's level %s", key, newV, levelString(mine))
		}
	}
	type levelMap struct {
		name     string
		cur, new map[string]int64
	}
	maps := []levelMap{{"events", cur.Events, next.Events}}
	if v.NotificationsPowerLevels { // v6+ (MSC2209)
		maps = append(maps, levelMap{"notifications", cur.Notifications, next.Notifications})
	}
	for _, m := range maps {
		for _, k := range sortedKeys(m.cur) {
			if nv, ok := m.new[k]; (!ok || nv != m.cur[k]) && m.cur[k] > mine {
				return reject(v, rulePLMapCurrent, "cannot change %s.%s from %d, above sender's level %s", m.name, k, m.cur[k], levelString(mine))
			}
		}
	}
	for _, m := range maps {
		for _, k := range sortedKeys(m.new) {
			if ov, ok := m.cur[k]; (!ok || ov != m.new[k]) && m.new[k] > mine {
				return reject(v, rulePLMapNew, "cannot set %s.%s to %d, above sender's level %s", m.name, k, m.new[k], levelString(mine))
			}
		}
	}
	for _, u := range sortedKeys(cur.Users) {
		if u == sender {
			continue
		}
		if nv, ok := next.Users[u]; (!ok || nv != cur.Users[u]) && cur.Users[u] >= mine {
			return reject(v, rulePLUserCurrent, "cannot change the level of %s (%d), not below sender's level %s", u, cur.Users[u], levelString(mine))
		}
	}
	for _, u := range sortedKeys(next.Users) {
		if ov, ok := cur.Users[u]; (!ok || ov != next.Users[u]) && next.Users[u] > mine {
			return reject(v, rulePLUserNew, "cannot give %s level %d, above sender's level %s", u, next.Users[u], levelString(mine))
		}
	}
	return nil
}

// RedactionApplies is "Handling redactions" (v3 and later): a redaction that
// the auth rules allowed is applied to original, and sent to clients, only if
// its sender's level is at least the redact level in state (the state at the
// redaction), or its sender is on the same server as original's sender.
// Otherwise the server keeps waiting for a partner that passes. In v1 and
// v2, where rule 11 already allowed it by level or by event ID domain,
// Synapse applies the same test before redacting, and so do we.
func RedactionApplies(state AuthState, redaction, original *Event) bool {
	if redaction.Type() != TypeRedaction || redaction.Redacts() != original.ID() || redaction.RoomID() != original.RoomID() {
		return false
	}
	if redaction.Sender().Server() == original.Sender().Server() {
		return true
	}
	pl, err := PowerLevelsFromState(state)
	return err == nil && pl.UserLevel(redaction.Sender()) >= pl.Redact
}

// membershipIn is the user's membership in state, "leave" if none.
func membershipIn(state AuthState, u UserID) string {
	ev := state.Get(TypeMember, string(u))
	if ev == nil {
		return MembershipLeave
	}
	m, _ := stringField(ev.Content(), "membership")
	return m
}

// joinRule is content.join_rule of the room's m.room.join_rules, "invite"
// when the room has none (as Synapse and gomatrixserverlib do; the spec does
// not say).
func joinRule(state AuthState) string {
	ev := state.Get(TypeJoinRules, "")
	if ev == nil {
		return "invite"
	}
	r, _ := stringField(ev.Content(), "join_rule")
	return r
}

// federateFalse reports whether create content has "m.federate": false.
func federateFalse(content []byte) bool {
	// Cheap exit for the common case; a key could only hide from this check
	// behind a JSON escape, hence the backslash test.
	if !bytes.Contains(content, []byte("m.federate")) && !bytes.Contains(content, []byte(`\`)) {
		return false
	}
	raw, ok := objectField(content, "m.federate")
	return ok && bytes.Equal(bytes.TrimSpace(raw), []byte("false"))
}

// roomServer is the server part of a "!opaque:server" room ID, "" if none.
func roomServer(r RoomID) ServerName {
	if i := strings.IndexByte(string(r), ':'); i >= 0 {
		return ServerName(r[i+1:])
	}
	return ""
}

func levelString(l int64) string {
	if l == InfiniteLevel {
		return "infinite (creator)"
	}
	return fmt.Sprint(l)
}

// sortedKeys makes rejection reasons deterministic when several entries fail.
func sortedKeys[K ~string, V any](m map[K]V) []K { return slices.Sorted(maps.Keys(m)) }

// StateMap (statemap.go) is the AuthState the write path keeps.
var _ AuthState = StateMap(nil)
