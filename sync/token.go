// Package sync assembles /sync: stream tokens, the notifier that wakes
// long-polls, filters, backchat, and the response sections.
package sync

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
)

// Token is a position in every stream a client syncs: the vector of
// positions it has seen. Its string form is "s<events>_<account data>";
// clients treat it as opaque. Parse accepts tokens with more fields, for
// streams added later, and fills missing ones with zero.
type Token struct {
	Events      roomdag.StreamPos
	AccountData int64
}

func (t Token) String() string {
	return fmt.Sprintf("s%d_%d", t.Events, t.AccountData)
}

// ParseToken parses a sync token.
func ParseToken(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, "s")
	if !ok || rest == "" {
		return Token{}, fmt.Errorf("malformed sync token")
	}
	parts := strings.Split(rest, "_")
	nums := make([]int64, 2)
	for i, p := range parts {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 0 {
			return Token{}, fmt.Errorf("malformed sync token")
		}
		if i < len(nums) {
			nums[i] = n
		}
	}
	return Token{Events: roomdag.StreamPos(nums[0]), AccountData: nums[1]}, nil
}

// after reports whether t has anything beyond since in any stream.
func (t Token) after(since Token) bool {
	return t.Events > since.Events || t.AccountData > since.AccountData
}

// TopoToken is a position in one room's history for /messages: events are
// ordered by depth, then stream position. Its string form is
// "t<depth>_<pos>".
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
	if err1 != nil || err2 != nil || depth < 0 || pos < 0 {
		return TopoToken{}, fmt.Errorf("malformed pagination token")
	}
	return TopoToken{Depth: depth, Pos: roomdag.StreamPos(pos)}, nil
}
