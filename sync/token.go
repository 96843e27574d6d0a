// Package sync assembles /sync: stream tokens, the notifier that wakes
// long-polls, filters, backchat, and the response sections.
package sync

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
)

// Token is a position in every stream a client syncs: the vector of
// positions it has seen. Its string form is
// "s<events>_<account data>_<receipts>_<typing>_<notifications>_<presence>_<to-device>_<device lists>";
// clients treat it as opaque. Parse accepts tokens with fewer fields (older servers wrote
// "s<events>_<account data>") and fills the missing ones with zero, and
// tokens with more fields, for streams added later.
type Token struct {
	Events      roomdag.StreamPos
	AccountData int64
	// Receipts is the durable receipt stream (m.read, m.read.private).
	Receipts int64
	// Typing is an in-memory counter: it restarts at zero with the
	// server, so a client may present one ahead of the current position
	// (see Syncer.Sync).
	Typing int64
	// Notifications is the notification worker's position: the newest
	// event stream position whose push rules it has evaluated and whose
	// notifications are durable (push.Worker). It trails Events.
	Notifications roomdag.StreamPos
	// Presence is the durable presence stream (storage.Presence rows).
	Presence int64
	// ToDevice is the durable to-device message stream (end-to-end
	// encryption); a client syncing with a later position acknowledges
	// the messages up to it.
	ToDevice int64
	// DeviceLists is the durable device-list change stream (device keys
	// and cross-signing keys changed).
	DeviceLists int64
}

func (t Token) String() string {
	return fmt.Sprintf("s%d_%d_%d_%d_%d_%d_%d_%d", t.Events, t.AccountData, t.Receipts, t.Typing, t.Notifications, t.Presence,
		t.ToDevice, t.DeviceLists)
}

// ParseToken parses a sync token.
func ParseToken(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, "s")
	if !ok || rest == "" {
		return Token{}, fmt.Errorf("malformed sync token")
	}
	parts := strings.Split(rest, "_")
	nums := make([]int64, 8)
	for i, p := range parts {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 0 {
			return Token{}, fmt.Errorf("malformed sync token")
		}
		if i < len(nums) {
			nums[i] = n
		}
	}
	return Token{Events: roomdag.StreamPos(nums[0]), AccountData: nums[1], Receipts: nums[2], Typing: nums[3],
		Notifications: roomdag.StreamPos(nums[4]), Presence: nums[5], ToDevice: nums[6], DeviceLists: nums[7]}, nil
}

// after reports whether t has anything beyond since in any stream.
func (t Token) after(since Token) bool {
	return t.Events > since.Events || t.AccountData > since.AccountData ||
		t.Receipts > since.Receipts || t.Typing > since.Typing || t.Notifications > since.Notifications ||
		t.Presence > since.Presence || t.ToDevice > since.ToDevice || t.DeviceLists > since.DeviceLists
}

// TopoToken is a position in one room's history for /messages: events are
// ordered by depth, then stream position. Its string form is
// "t<depth>_<pos>"; pos is negative among backfilled events.
type TopoToken struct {
	Depth int64
	Pos   roomdag.StreamPos
}

func (t TopoToken) String() string { return fmt.Sprintf("t%d_%d", t.Depth, t.Pos) }

// ParseTopoToken parses a /messages token.
func ParseTopoToken(s string) (TopoToken, error) {
	rest, ok := strings.CutPrefix(s, "t")
	if !ok {
		return TopoToken{}, fmt.Errorf("malformed pagination token")
	}
	d, p, ok := strings.Cut(rest, "_")
	if !ok {
		return TopoToken{}, fmt.Errorf("malformed pagination token")
	}
	depth, err1 := strconv.ParseInt(d, 10, 64)
	pos, err2 := strconv.ParseInt(p, 10, 64)
	// Backfilled history has negative stream positions (roomdag
	// KindBackfill), so a place in it may too; depths never are.
	if err1 != nil || err2 != nil || depth < 0 || pos == math.MinInt64 {
		return TopoToken{}, fmt.Errorf("malformed pagination token")
	}
	return TopoToken{Depth: depth, Pos: roomdag.StreamPos(pos)}, nil
}
