package push

import (
	"strings"

	"github.com/persistentchat/homeserver/roomdag"
)

// The legacy mention rules (.m.rule.contains_display_name and
// .m.rule.contains_user_name) match a member's display name or localpart
// in the body of an event without m.mentions. The worker evaluates members
// with default rules only when the event names them, so it must find, for
// each such event, the members whose name or localpart is in the body,
// without testing every member: a nameIndex maps what a name must leave
// in the body onto the members, and lookups cost O(len(body)), whatever
// the room's size.
//
// Matching is on the lower-cased body at word boundaries (literalWords).
// A lower-cased name that starts with a word byte ([a-z0-9_]) can match
// only where a run of word bytes in the body starts, and that run is then
// exactly the name's first run of word bytes (its "first word"), which
// the name either ends with or follows with a non-word byte. So the
// body's word runs, looked up by first word, give every candidate. A name
// that starts with any other byte (punctuation, emoji, most non-Latin
// scripts) is found by its first keyLen bytes at each non-word byte of the
// body. Names shorter than that are few and tested directly. Candidates
// are then evaluated in full, which decides.

// keyLen is how many bytes of a name that starts with a non-word byte key
// it in the index.
const keyLen = 3

// nameIndex finds the members an event body may name.
type nameIndex struct {
	byWord  map[string][]roomdag.UserID // first word → members
	byBytes map[string][]roomdag.UserID // first keyLen bytes → members
	short   []nameEntry                 // shorter names: tested directly
}

type nameEntry struct {
	user roomdag.UserID
	name string // lower-cased
}

// newNameIndex indexes the display names and localparts of members
// (user → display name, "" for none).
func newNameIndex(members map[roomdag.UserID]string) *nameIndex {
	ix := &nameIndex{byWord: make(map[string][]roomdag.UserID, 2*len(members)), byBytes: map[string][]roomdag.UserID{}}
	for u, name := range members {
		if name != "" {
			ix.add(u, strings.ToLower(name))
		}
		// Localparts with wildcards (possible in historical user IDs) are
		// globs as patterns: any candidate test would be a guess, so they
		// are always tested.
		if lp := strings.ToLower(u.Localpart()); hasWildcard(lp) {
			ix.short = append(ix.short, nameEntry{u, lp})
		} else if lp != "" {
			ix.add(u, lp)
		}
	}
	return ix
}

func (ix *nameIndex) add(u roomdag.UserID, lower string) {
	switch w := firstWord(lower); {
	case w != "":
		ix.byWord[w] = appendOnce(ix.byWord[w], u)
	case len(lower) >= keyLen:
		ix.byBytes[lower[:keyLen]] = appendOnce(ix.byBytes[lower[:keyLen]], u)
	default:
		ix.short = append(ix.short, nameEntry{u, lower})
	}
}

// appendOnce appends u unless it is already last (a member's name and
// localpart often share a first word).
func appendOnce(list []roomdag.UserID, u roomdag.UserID) []roomdag.UserID {
	if n := len(list); n > 0 && list[n-1] == u {
		return list
	}
	return append(list, u)
}

// firstWord is the leading run of word bytes of s, "" if s starts with
// another byte.
func firstWord(s string) string {
	i := 0
	for i < len(s) && isWordByte(s[i]) {
		i++
	}
	return s[:i]
}

// candidates calls found for every member whose display name or localpart
// may occur in lower (a lower-cased body), and perhaps for others; a
// member may be reported more than once.
func (ix *nameIndex) candidates(lower string, found func(roomdag.UserID)) {
	for i := 0; i < len(lower); {
		if !isWordByte(lower[i]) {
			if len(ix.byBytes) > 0 && i+keyLen <= len(lower) {
				for _, u := range ix.byBytes[lower[i:i+keyLen]] {
					found(u)
				}
			}
			i++
			continue
		}
		j := i + 1
		for j < len(lower) && isWordByte(lower[j]) {
			j++
		}
		for _, u := range ix.byWord[lower[i:j]] {
			found(u)
		}
		i = j
	}
	b := unlimited()
	for _, e := range ix.short {
		if hasWildcard(e.name) || literalWords(e.name, lower, &b) {
			found(e.user)
		}
	}
}
