package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/persistentchat/homeserver/clock"
	"github.com/persistentchat/homeserver/httpapi"
	"github.com/persistentchat/homeserver/roomdag"
	"github.com/persistentchat/homeserver/storage"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"time"
)

// Room upgrades (spec: client-server API, module "Room Upgrades", "Server
// behaviour"; Synapse's RoomCreationHandler.upgrade_room where the spec
// leaves the details open). An upgrade makes a replacement room of the
// new version whose m.room.create names the old room as its predecessor,
// copies the old room's transferable state and bans into it, tombstones
// the old room, moves its local aliases and its place in the public
// directory, and locks the old room's power levels. When a local user
// joins a room that replaced another, their push rules, room tags and
// m.direct entries for the old room are copied to the new one.

// upgradeReplayTTL is how long a finished upgrade answers its requester's
// retries with the same replacement room, as Synapse's response cache does:
// a client whose first request timed out gets the room that was made.
const upgradeReplayTTL = 5 * time.Minute

// maxPredecessors bounds a walk back along a room's predecessors.
const maxPredecessors = 100

// tombstoneBody is the tombstone's message, Synapse's wording.
const tombstoneBody = "This room has been replaced"

// upgradeStore is what room upgrades read and write besides the rooms.
type upgradeStore interface {
	MoveAliases(ctx context.Context, from, to roomdag.RoomID) error
	Published(ctx context.Context, room roomdag.RoomID) (bool, error)
	SetPublished(ctx context.Context, room roomdag.RoomID, published bool) error
	AccountData(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, typ string) (json.RawMessage, error)
	UpdateAccountData(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, typ string,
		fn func(cur json.RawMessage) (json.RawMessage, error)) (int64, error)
	// Exclusive serialises the upgrades of one room across the processes
	// sharing the database (storage/sqlstore/exclusive.go).
	Exclusive(ctx context.Context, name string, fn func() error) error
}

// upgrader carries out room upgrades. Requests to upgrade one room are
// serialised through calls: the requester's concurrent requests share one
// upgrade, as with Synapse's response cache, and another user's request
// while one runs is refused.
type upgrader struct {
	store  upgradeStore
	rooms  *roomdag.Rooms
	clock  clock.Clock
	log    *slog.Logger
	server roomdag.ServerName
	// firstEvents and roomID make the replacement room as createRoom
	// makes rooms.
	firstEvents func(ctx context.Context, nr newRoom) (roomdag.ProtoEvent, []roomdag.ProtoEvent, error)
	roomID      func(v *roomdag.RoomVersion) roomdag.RoomID
	// accountDataChanged wakes the user's /sync after a copy.
	accountDataChanged func(user roomdag.UserID, pos int64)
	// copyPushRules copies a user's rules for one room to another and
	// stores them with their m.push_rules account data (Server.copyRoomPushRules).
	copyPushRules func(ctx context.Context, user roomdag.UserID, from, to roomdag.RoomID) error
	// refuseEncryption is Config.RefuseRoomEncryption: an encrypted room
	// is then not upgraded (run).
	refuseEncryption bool

	mu    gosync.Mutex
	calls map[roomdag.RoomID]*upgradeCall
}

// upgradeCall is one upgrade of a room, running or finished.
type upgradeCall struct {
	user     roomdag.UserID
	done     chan struct{} // closed when room and err are set
	room     roomdag.RoomID
	err      error
	finished time.Time // zero while running
}

// upgradeRequest is a checked POST /rooms/{roomId}/upgrade.
type upgradeRequest struct {
	user    roomdag.UserID
	room    roomdag.RoomID
	version *roomdag.RoomVersion
	// creators are the additional creators of the new room (v12,
	// MSC4289); nil for versions without them.
	creators []roomdag.UserID
}

// upgrade upgrades req.room and returns the replacement room. Once begun
// it runs to its end whatever happens to the request that began it: an
// upgrade stopped half way would leave a replacement room the old room does
// not point to.
func (u *upgrader) upgrade(ctx context.Context, req upgradeRequest) (roomdag.RoomID, error) {
	u.mu.Lock()
	now := u.clock.Now()
	for id, c := range u.calls {
		if !c.finished.IsZero() && now.Sub(c.finished) >= upgradeReplayTTL {
			delete(u.calls, id)
		}
	}
	if c := u.calls[req.room]; c != nil && (c.user == req.user || c.finished.IsZero()) {
		u.mu.Unlock()
		if c.user != req.user {
			return "", httpapi.Errorf(http.StatusBadRequest, httpapi.CodeUnknown, "an upgrade of this room is already in progress")
		}
		select {
		case <-c.done:
			return c.room, c.err
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	c := &upgradeCall{user: req.user, done: make(chan struct{})}
	u.calls[req.room] = c
	u.mu.Unlock()

	ran := false
	defer func() {
		u.mu.Lock()
		if !ran { // run panicked; the handler adapter answers for it
			c.err = errors.New("room upgrade failed")
		}
		if c.err != nil {
			delete(u.calls, req.room) // a failed attempt may be tried again
		} else {
			c.finished = u.clock.Now()
		}
		u.mu.Unlock()
		close(c.done) // c.room and c.err are read only after this
	}()
	// Across processes: one upgrade of the room at a time, each reading
	// the room afresh (the last one's tombstone may not have reached this
	// process's cache yet), so the second finds the room replaced.
	rctx := context.WithoutCancel(ctx)
	if err := u.store.Exclusive(rctx, "upgrade of "+string(req.room), func() error {
		u.rooms.Invalidate(req.room)
		c.room, c.err = u.run(rctx, req)
		return nil
	}); err != nil {
		c.err = err
	}
	ran = true
	return c.room, c.err
}

// run is one upgrade, in Synapse's order: the replacement room with its
// copied state, then the tombstone, the aliases, the directory, the old
// room's power levels and the requester's restored power in the new room.
// What fails after the tombstone is logged: the room is upgraded by then,
// and the answer must say where it went.
func (u *upgrader) run(ctx context.Context, req upgradeRequest) (roomdag.RoomID, error) {
	st, err := u.rooms.State(ctx, req.room)
	if errors.Is(err, roomdag.ErrUnknownRoom) {
		return "", httpapi.NotFound("unknown room %s", req.room)
	}
	if err != nil {
		return "", err
	}
	if st.Membership(req.user) != roomdag.MembershipJoin {
		return "", httpapi.Forbidden("you are not joined to this room")
	}
	if repl := replacementRoom(st); repl != "" {
		return "", httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadState, "this room has already been replaced by %s", repl)
	}
	pl, err := roomdag.PowerLevelsFromState(st.State)
	if err != nil {
		return "", err
	}
	// spec: the server "checks that the user has permission to send
	// m.room.tombstone events in the room".
	if roomdag.UserLevelIn(st.Version, pl, st.Create(), req.user) < pl.EventLevel(roomdag.TypeTombstone, true) {
		return "", httpapi.Forbidden("you may not send m.room.tombstone in this room, so you may not upgrade it")
	}

	// The replacement of an encrypted room would be encrypted too: with
	// encryption refused it is not made, rather than made unencrypted.
	// Members who chose an encrypted room are not moved into a readable
	// one behind their backs, and createRoom refuses m.room.encryption the
	// same way instead of dropping it (a Synapse module refusing the event
	// fails the upgrade alike). The operator's way out is a new room.
	if u.refuseEncryption && st.State.Get(roomdag.TypeEncryption, "") != nil {
		return "", httpapi.Forbidden("end-to-end encryption is disabled on this server and this room is encrypted: " +
			"its replacement would have to be encrypted, so it is not upgraded; create a new room instead")
	}
	plan := u.plan(st, req)
	createEv, rest, err := u.firstEvents(ctx, plan.room)
	if err != nil {
		return "", err
	}
	newID, err := u.rooms.CreateRoom(ctx, req.version, u.roomID(req.version), createEv, rest)
	if err != nil {
		return "", invalidRoomState(err)
	}
	log := u.log.With("user", req.user, "old_room", req.room, "new_room", newID)

	tombstone, _ := json.Marshal(map[string]string{"body": tombstoneBody, "replacement_room": string(newID)})
	if _, err := u.appendState(ctx, req.room, req.user, roomdag.TypeTombstone, "", tombstone); err != nil {
		log.Error("room upgrade: the replacement room was made but the old room could not be tombstoned", "err", err)
		return "", err
	}
	// The invitees were invited to the new room: their invite to the old
	// one goes, so they are not asked twice (as Synapse does when it
	// carries members over).
	for _, invitee := range plan.reinvited {
		leave, _ := json.Marshal(map[string]string{"membership": roomdag.MembershipLeave})
		if _, err := u.appendState(ctx, req.room, invitee, roomdag.TypeMember, string(invitee), leave); err != nil {
			log.Warn("room upgrade: could not withdraw an invite to the old room", "invitee", invitee, "err", err)
		}
	}
	u.moveAliases(ctx, log, st, req, newID)
	if published, err := u.store.Published(ctx, req.room); err != nil {
		log.Error("room upgrade: reading the old room's directory visibility", "err", err)
	} else if published {
		if err := u.store.SetPublished(ctx, req.room, false); err != nil {
			log.Error("room upgrade: unlisting the old room", "err", err)
		}
		if err := u.store.SetPublished(ctx, newID, true); err != nil {
			log.Error("room upgrade: listing the new room", "err", err)
		}
	}
	u.lockPowerLevels(ctx, log, req)
	if !jsonEqual(mustJSON(plan.initialPL), mustJSON(plan.finalPL)) {
		if _, err := u.appendState(ctx, newID, req.user, roomdag.TypePowerLevels, "", mustJSON(plan.finalPL)); err != nil {
			log.Error("room upgrade: could not restore the upgrader's power level in the new room", "err", err)
		}
	}
	// The upgrader joined the new room when it was made.
	u.copyUserState(ctx, req.user, req.room, newID)
	return newID, nil
}

// upgradePlan is the replacement room of an upgrade.
type upgradePlan struct {
	room newRoom
	// initialPL gives the upgrader the power to send the copied state;
	// finalPL, the old room's power levels fitted to the new version,
	// replaces it afterwards (as Synapse does).
	initialPL, finalPL map[string]any
	// reinvited are the local users whose invite to the old room is
	// replaced by one to the new room.
	reinvited []roomdag.UserID
}

// transferredState is the state an upgrade copies (spec: "the recommended
// state events to transfer"), plus this server's backchat setting, which is
// the room's own and does not depend on who sent it.
var transferredState = []string{
	roomdag.TypeServerACL, roomdag.TypeEncryption, roomdag.TypeName, roomdag.TypeAvatar,
	roomdag.TypeTopic, roomdag.TypeGuestAccess, roomdag.TypeHistoryVisibility, roomdag.TypeJoinRules,
	roomdag.TypeBackchat,
}

func (u *upgrader) plan(st *roomdag.RoomState, req upgradeRequest) upgradePlan {
	oldCreate := st.Create()
	var oc struct {
		Federate *bool           `json:"m.federate"`
		Type     json.RawMessage `json:"type"`
	}
	_ = json.Unmarshal(oldCreate.Content(), &oc)

	// spec: predecessor.event_id is "the last known event in the old
	// room". Synapse names the tombstone, which it builds before it stores
	// it; here events are built as they are stored, and the tombstone may
	// only be sent once the new room exists, so the predecessor names the
	// old room's newest event before the upgrade (for a room only this
	// server writes to, its one forward extremity).
	// Rooms whose IDs are their create events' hashes (v12) name the old
	// room only: MSC4291 drops predecessor.event_id, as Complement checks.
	pred := map[string]any{"room_id": req.room}
	if len(st.Extremities) > 0 && !req.version.DomainlessRoomIDs {
		pred["event_id"] = st.Extremities[0]
	}
	create := map[string]any{"predecessor": pred}
	if oc.Federate != nil && !*oc.Federate {
		create["m.federate"] = false
	}
	var roomType string
	if json.Unmarshal(oc.Type, &roomType) == nil && roomType != "" {
		create["type"] = roomType // spec: "a type field which is copied"
	}
	if len(req.creators) > 0 {
		create["additional_creators"] = req.creators
	}

	var initial []stateEvent
	for _, typ := range transferredState {
		if ev := st.State.Get(typ, ""); ev != nil {
			initial = append(initial, stateEvent{Type: typ, Content: ev.Content()})
		}
	}
	// A space keeps its children (as Synapse does), so its hierarchy is
	// the same from the new room; a child with empty content was removed.
	if roomType == roomTypeSpace {
		var children []stateEvent
		for k, ev := range st.State {
			var content map[string]json.RawMessage
			if k.Type == typeSpaceChild && json.Unmarshal(ev.Content(), &content) == nil && len(content) > 0 {
				children = append(children, stateEvent{Type: k.Type, StateKey: k.StateKey, Content: ev.Content()})
			}
		}
		slices.SortFunc(children, func(a, b stateEvent) int { return cmp.Compare(a.StateKey, b.StateKey) })
		initial = append(initial, children...)
	}

	final := upgradedPowerLevels(st, req)
	members := upgradeMembers(st)
	joinRule := contentString(st.State, roomdag.TypeJoinRules, "join_rule")
	// Members of a room that is not public could not join the new room on
	// their own: the local ones are invited (as Synapse's auto_member does;
	// its client API invites nobody). Remote users need federation.
	var invites, reinvited []roomdag.UserID
	if joinRule != "public" {
		for _, m := range members {
			if m.user.Server() != u.server || m.user == req.user {
				continue
			}
			switch m.membership {
			case roomdag.MembershipJoin:
				invites = append(invites, m.user)
			case roomdag.MembershipInvite:
				invites = append(invites, m.user)
				reinvited = append(reinvited, m.user)
			}
		}
	}
	initialPL := raiseUpgrader(final, req, len(invites) > 0)
	// Bans carry over (Synapse): those the upgrader may issue in the new
	// room, so one unusual entry cannot make the whole room fail.
	var bans []roomdag.ProtoEvent
	own := levelIn(initialPL, req.user, req.version.PrivilegedCreators)
	for _, m := range members {
		if m.membership != roomdag.MembershipBan || req.version.PrivilegedCreators && slices.Contains(req.creators, m.user) ||
			levelIn(initialPL, m.user, false) >= own {
			continue
		}
		key := string(m.user)
		bans = append(bans, roomdag.ProtoEvent{Type: roomdag.TypeMember, StateKey: &key, Sender: req.user, Content: m.content})
	}
	plJSON := map[string]json.RawMessage{}
	for k, v := range initialPL {
		plJSON[k] = mustJSON(v)
	}
	// The preset is what Synapse uses; the copied state overrides it, and
	// it only fills in what the old room lacked.
	return upgradePlan{
		room: newRoom{version: req.version, creator: req.user, create: create, powerLevels: plJSON,
			preset: "private_chat", initial: initial, invites: invites, members: bans},
		initialPL: initialPL, finalPL: final, reinvited: reinvited,
	}
}

type upgradeMember struct {
	user       roomdag.UserID
	membership string
	content    json.RawMessage
}

// upgradeMembers lists the room's members, by user ID.
func upgradeMembers(st *roomdag.RoomState) []upgradeMember {
	var out []upgradeMember
	for k, ev := range st.State {
		if k.Type != roomdag.TypeMember {
			continue
		}
		u, err := roomdag.ParseUserID(k.StateKey)
		if err != nil {
			continue
		}
		out = append(out, upgradeMember{user: u, membership: ev.Membership(), content: ev.Content()})
	}
	slices.SortFunc(out, func(a, b upgradeMember) int { return cmp.Compare(a.user, b.user) })
	return out
}

// powerLevelInts are the integer properties of m.room.power_levels.
var powerLevelInts = []string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}

// upgradedPowerLevels is the old room's power levels content made valid
// for the new version: levels as integers (versions before 10 allow
// strings; Synapse's copy_and_fixup_power_levels_contents), values that
// are not levels dropped, and creators listed as the new version wants. In
// v12 the new room's creators (the upgrader and any additional creators)
// have infinite power and may not be listed (MSC4289). Coming from v12 to
// an earlier version, the old room's creators, who had infinite power and
// were not listed, are listed at the highest level the content names (at
// least 100), so that they may still do everything.
func upgradedPowerLevels(st *roomdag.RoomState, req upgradeRequest) map[string]any {
	var raw map[string]json.RawMessage
	if ev := st.State.Get(roomdag.TypePowerLevels, ""); ev != nil {
		_ = json.Unmarshal(ev.Content(), &raw)
	} else if cs := roomdag.Creators(st.Create()); len(cs) > 0 && !st.Version.PrivilegedCreators {
		// No power levels event: the defaults, and 100 for the creator.
		raw = map[string]json.RawMessage{"users": mustJSON(map[roomdag.UserID]int{cs[0]: 100})}
	}
	out := map[string]any{}
	users := map[string]int64{}
	for k, v := range raw {
		switch {
		case slices.Contains(powerLevelInts, k):
			if n, ok := levelValue(v); ok {
				out[k] = n
			}
		case k == "users" || k == "events" || k == "notifications":
			var m map[string]json.RawMessage
			if json.Unmarshal(v, &m) != nil {
				continue
			}
			levels := map[string]int64{}
			for key, lv := range m {
				if _, err := roomdag.ParseUserID(key); k == "users" && err != nil {
					continue
				}
				if n, ok := levelValue(lv); ok {
					levels[key] = n
				}
			}
			if k == "users" {
				users = levels
			} else {
				out[k] = levels
			}
		default:
			out[k] = v
		}
	}
	if st.Version.PrivilegedCreators && !req.version.PrivilegedCreators {
		top := int64(100)
		for _, l := range users {
			top = max(top, l)
		}
		if events, ok := out["events"].(map[string]int64); ok {
			for _, l := range events {
				top = max(top, l)
			}
		}
		for _, k := range powerLevelInts {
			if n, ok := out[k].(int64); ok {
				top = max(top, n)
			}
		}
		for _, c := range roomdag.Creators(st.Create()) {
			users[string(c)] = top
		}
	}
	if req.version.PrivilegedCreators {
		delete(users, string(req.user))
		for _, c := range req.creators {
			delete(users, string(c))
		}
	}
	out["users"] = users
	return out
}

// raiseUpgrader is pl with the upgrader raised, if need be, to the level
// of every state event and of bans (and of invites, when the new room
// sends some), so that they can send the new room's first events; an
// upgrader who is a creator of a v12 room needs nothing.
func raiseUpgrader(pl map[string]any, req upgradeRequest, invites bool) map[string]any {
	out := maps.Clone(pl)
	users := maps.Clone(pl["users"].(map[string]int64))
	out["users"] = users
	if req.version.PrivilegedCreators {
		return out
	}
	level := func(key string, def int64) int64 {
		if n, ok := pl[key].(int64); ok {
			return n
		}
		return def
	}
	needed := max(level("state_default", 50), level("ban", 50))
	if events, ok := pl["events"].(map[string]int64); ok {
		for _, l := range events {
			needed = max(needed, l)
		}
	}
	if invites {
		needed = max(needed, level("invite", 0))
	}
	if levelIn(pl, req.user, false) < needed {
		users[string(req.user)] = needed
	}
	return out
}

// levelIn is a user's level in power levels content made by
// upgradedPowerLevels; creator for a v12 creator.
func levelIn(pl map[string]any, user roomdag.UserID, creator bool) int64 {
	if creator {
		return roomdag.InfiniteLevel
	}
	if l, ok := pl["users"].(map[string]int64)[string(user)]; ok {
		return l
	}
	if n, ok := pl["users_default"].(int64); ok {
		return n
	}
	return 0
}

// levelValue reads a power level: a JSON integer, or, as room versions
// before 10 allow, a string holding one.
func levelValue(raw json.RawMessage) (int64, bool) {
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		n = json.Number(strings.TrimSpace(s))
	}
	v, err := strconv.ParseInt(string(n), 10, 64)
	return v, err == nil
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("api: encoding %T: %v", v, err)) // only maps of plain values reach here
	}
	return b
}

func (u *upgrader) appendState(ctx context.Context, room roomdag.RoomID, sender roomdag.UserID, typ, key string, content json.RawMessage) (*roomdag.Event, error) {
	ev, _, err := u.rooms.Append(ctx, room, roomdag.ProtoEvent{Type: typ, StateKey: &key, Sender: sender, Content: content})
	return ev, err
}

// moveAliases points the old room's local aliases at the new room and
// moves the local ones of its m.room.canonical_alias there, leaving the
// others (spec: "Moves any local aliases to the new room"; Synapse's
// _move_aliases_to_new_room).
func (u *upgrader) moveAliases(ctx context.Context, log *slog.Logger, st *roomdag.RoomState, req upgradeRequest, newID roomdag.RoomID) {
	if err := u.store.MoveAliases(ctx, req.room, newID); err != nil {
		log.Error("room upgrade: moving aliases", "err", err)
		return
	}
	ev := st.State.Get(roomdag.TypeCanonicalAlias, "")
	if ev == nil {
		return
	}
	var old map[string]json.RawMessage
	if json.Unmarshal(ev.Content(), &old) != nil {
		return
	}
	local := func(a string) bool {
		alias, err := roomdag.ParseRoomAlias(a)
		return err == nil && alias.Server() == u.server
	}
	moved := map[string]any{}
	var alias string
	if json.Unmarshal(old["alias"], &alias) == nil && local(alias) {
		moved["alias"] = alias
		delete(old, "alias")
	}
	var alts []string
	if json.Unmarshal(old["alt_aliases"], &alts) == nil && len(alts) > 0 {
		var stay, move []string
		for _, a := range alts {
			if local(a) {
				move = append(move, a)
			} else {
				stay = append(stay, a)
			}
		}
		if len(move) > 0 {
			moved["alt_aliases"] = move
		}
		if len(stay) > 0 {
			old["alt_aliases"] = mustJSON(stay)
		} else {
			delete(old, "alt_aliases")
		}
	}
	if len(moved) == 0 {
		return
	}
	if _, err := u.appendState(ctx, req.room, req.user, roomdag.TypeCanonicalAlias, "", mustJSON(old)); err != nil {
		log.Warn("room upgrade: could not update the old room's canonical alias", "err", err)
	}
	if _, err := u.appendState(ctx, newID, req.user, roomdag.TypeCanonicalAlias, "", mustJSON(moved)); err != nil {
		log.Warn("room upgrade: could not set the new room's canonical alias", "err", err)
	}
}

// lockPowerLevels stops ordinary members from sending events to or
// inviting people into the old room: events_default and invite become at
// least the greater of 50 and users_default + 1 (spec: "Server behaviour",
// step 6). An upgrader who may send tombstones but not power levels
// leaves them as they are, as in Synapse.
func (u *upgrader) lockPowerLevels(ctx context.Context, log *slog.Logger, req upgradeRequest) {
	st, err := u.rooms.State(ctx, req.room)
	if err != nil {
		log.Error("room upgrade: reading the old room", "err", err)
		return
	}
	ev := st.State.Get(roomdag.TypePowerLevels, "")
	if ev == nil {
		return
	}
	var content map[string]json.RawMessage
	if json.Unmarshal(ev.Content(), &content) != nil {
		return
	}
	level := func(key string) int64 {
		n, _ := levelValue(content[key])
		return n
	}
	restricted := max(50, level("users_default")+1)
	changed := false
	for _, key := range []string{"invite", "events_default"} {
		if level(key) < restricted {
			content[key] = mustJSON(restricted)
			changed = true
		}
	}
	if !changed {
		return
	}
	var ae *roomdag.AuthError
	if _, err := u.appendState(ctx, req.room, req.user, roomdag.TypePowerLevels, "", mustJSON(content)); errors.As(err, &ae) {
		log.Info("room upgrade: the upgrader may not change the old room's power levels", "err", err)
	} else if err != nil {
		log.Error("room upgrade: locking the old room's power levels", "err", err)
	}
}

// replacementRoom is the room a tombstone in the room's state names, or "".
func replacementRoom(st *roomdag.RoomState) string {
	return contentString(st.State, roomdag.TypeTombstone, "replacement_room")
}

// predecessorOf is the room m.room.create content names as the one it
// replaces, or "".
func predecessorOf(createContent json.RawMessage) roomdag.RoomID {
	var c struct {
		Predecessor struct {
			RoomID string `json:"room_id"`
		} `json:"predecessor"`
	}
	if json.Unmarshal(createContent, &c) != nil {
		return ""
	}
	id, err := roomdag.ParseRoomID(c.Predecessor.RoomID)
	if err != nil {
		return ""
	}
	return id
}

// errNoChange ends a push rules update that changes nothing.
var errNoChange = errors.New("no change")

// copyUserState copies what is the user's own about room from to room to,
// which replaced it: push rules, room tags and m.direct entries (spec:
// "When a user joins the new room, the server should automatically
// transfer/replicate some of the user's personalized settings"; what
// Synapse's copy_user_state_on_room_upgrade copies). Nothing the user
// already set for the new room is overwritten, so copying again is
// harmless. Failures are logged: they must not fail the join.
func (u *upgrader) copyUserState(ctx context.Context, user roomdag.UserID, from, to roomdag.RoomID) {
	log := u.log.With("user", user, "old_room", from, "new_room", to)
	changed := func(pos int64, err error, what string) {
		if err != nil && !errors.Is(err, errNoChange) {
			log.Error("copying the user's settings to an upgraded room", "what", what, "err", err)
		} else if err == nil && pos != 0 {
			u.accountDataChanged(user, pos)
		}
	}
	tags, err := u.store.AccountData(ctx, user, from, typeTag)
	if err == nil && len(tagsOf(tags)) > 0 {
		pos, err := u.store.UpdateAccountData(ctx, user, to, typeTag, func(cur json.RawMessage) (json.RawMessage, error) {
			have, added := tagsOf(cur), false
			for name, info := range tagsOf(tags) {
				if _, ok := have[name]; !ok {
					have[name], added = info, true
				}
			}
			if !added {
				return nil, nil
			}
			return json.Marshal(map[string]any{"tags": have})
		})
		changed(pos, err, typeTag)
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		changed(0, err, typeTag)
	}

	pos, err := u.store.UpdateAccountData(ctx, user, "", typeDirect, func(cur json.RawMessage) (json.RawMessage, error) {
		var direct map[string]json.RawMessage
		if cur == nil || json.Unmarshal(cur, &direct) != nil {
			return nil, nil
		}
		added := false
		for peer, raw := range direct {
			var rooms []string
			if json.Unmarshal(raw, &rooms) == nil && slices.Contains(rooms, string(from)) && !slices.Contains(rooms, string(to)) {
				direct[peer], added = mustJSON(append(rooms, string(to))), true
			}
		}
		if !added {
			return nil, nil
		}
		return json.Marshal(direct)
	})
	changed(pos, err, typeDirect)

	if err := u.copyPushRules(ctx, user, from, to); err != nil {
		changed(0, err, "m.push_rules")
	}
}

// typeDirect is the global account data listing direct chats, by peer.
const typeDirect = "m.direct"

// joined is called after a local user joins a room: if the room replaced
// another, the user's settings for that one are copied to it.
func (u *upgrader) joined(ctx context.Context, user roomdag.UserID, room roomdag.RoomID, st *roomdag.RoomState) {
	if create := st.Create(); create != nil {
		if old := predecessorOf(create.Content()); old != "" && old != room {
			u.copyUserState(ctx, user, old, room)
		}
	}
}

// withPredecessors is the rooms and, after each, the rooms it replaced,
// back along their predecessors as far as this server knows them (as
// Synapse's search does: a search of an upgraded room covers its history
// before the upgrade).
func (s *Server) withPredecessors(ctx context.Context, rooms []string) []string {
	out := slices.Clone(rooms)
	seen := map[string]bool{}
	for _, r := range rooms {
		seen[r] = true
	}
	for _, r := range rooms {
		id, err := roomdag.ParseRoomID(r)
		for i := 0; err == nil && i < maxPredecessors; i++ {
			st, serr := s.rooms.State(ctx, id)
			if serr != nil {
				break
			}
			prev := predecessorOf(st.Create().Content())
			if prev == "" || seen[string(prev)] {
				break
			}
			if _, serr := s.rooms.State(ctx, prev); serr != nil {
				break // a room this server does not know
			}
			seen[string(prev)] = true
			out = append(out, string(prev))
			id = prev
		}
	}
	return out
}

// checkTombstone applies Synapse's checks to an m.room.tombstone a client
// sends: a state event whose replacement_room is a string other than the
// room itself.
func checkTombstone(room roomdag.RoomID, stateKey *string, content json.RawMessage) error {
	if stateKey == nil {
		return httpapi.BadJSON("m.room.tombstone must be a state event")
	}
	var c struct {
		Replacement *string `json:"replacement_room"`
	}
	if json.Unmarshal(content, &c) != nil || c.Replacement == nil {
		return httpapi.BadJSON("m.room.tombstone needs a replacement_room")
	}
	if *c.Replacement == string(room) {
		return httpapi.BadJSON("a tombstone cannot name the room it is sent in")
	}
	return nil
}
