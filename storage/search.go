package storage

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/persistentchat/homeserver/roomdag"
)

// Full-text search over room events (spec: client-server API, "Server
// Side Search"). The API parses what a client typed into phrases here,
// engine-neutrally; each engine turns phrases into its own query syntax,
// so nothing a client types reaches an engine's query parser as syntax.

// Search keys: the event fields the spec lets clients search, each in one
// event type.
const (
	SearchKeyBody  = "content.body"  // m.room.message
	SearchKeyName  = "content.name"  // m.room.name
	SearchKeyTopic = "content.topic" // m.room.topic, with its m.topic text/plain bodies
)

// SearchKeyType is the event type a search key belongs to ("" if unknown).
func SearchKeyType(key string) string {
	switch key {
	case SearchKeyBody:
		return roomdag.TypeMessage
	case SearchKeyName:
		return roomdag.TypeName
	case SearchKeyTopic:
		return roomdag.TypeTopic
	}
	return ""
}

// SearchPhrase is words that must appear next to each other, in order.
// With Prefix, the last word also matches longer words it begins.
type SearchPhrase struct {
	Words  []string
	Prefix bool
}

// Bounds on a parsed search term: every phrase is another index lookup,
// and a client gains nothing from hundreds of them.
const (
	MaxSearchPhrases = 16
	MaxPhraseWords   = 16
	// minPrefixRunes: shorter words match whole words only, since a prefix
	// of one or two letters matches a large part of the vocabulary.
	minPrefixRunes = 3
)

// ParseSearchTerm turns what a user typed into phrases that must all
// match. Text in double quotes is one exact phrase; elsewhere each
// whitespace-separated chunk is one phrase of its words (so "e-mail" and
// "don't" match as written), and its last word matches as a prefix when it
// has at least three letters. Words are runs of letters, digits and marks,
// lower-cased; everything else separates them, so no character has a
// meaning of its own. Phrases beyond MaxSearchPhrases, words beyond
// MaxPhraseWords and repeated phrases are dropped. An empty result means
// the term has nothing to search for.
func ParseSearchTerm(term string) []SearchPhrase {
	var out []SearchPhrase
	seen := map[string]bool{}
	add := func(chunk string, quoted bool) {
		words := SearchWords(chunk)
		if len(words) == 0 || len(out) == MaxSearchPhrases {
			return
		}
		if len(words) > MaxPhraseWords {
			words = words[:MaxPhraseWords]
		}
		p := SearchPhrase{Words: words, Prefix: !quoted && utf8.RuneCountInString(words[len(words)-1]) >= minPrefixRunes}
		key := strings.Join(words, " ")
		if p.Prefix {
			key += "*"
		}
		if !seen[key] {
			seen[key] = true
			out = append(out, p)
		}
	}
	for term != "" {
		q := strings.IndexByte(term, '"')
		if q < 0 {
			q = len(term)
		}
		for _, chunk := range strings.Fields(term[:q]) {
			add(chunk, false)
		}
		if q == len(term) {
			break
		}
		// An unterminated quote runs to the end of the term.
		rest := term[q+1:]
		end := strings.IndexByte(rest, '"')
		if end < 0 {
			end = len(rest)
		}
		add(rest[:end], true)
		term = rest[min(end+1, len(rest)):]
	}
	return out
}

// SearchWords splits text into lower-cased words as ParseSearchTerm does.
func SearchWords(text string) []string {
	var words []string
	for _, w := range strings.FieldsFunc(text, func(r rune) bool { return !isWordRune(r) }) {
		words = append(words, strings.ToLower(w))
	}
	return words
}

func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r)
}

// SearchQuery selects indexed events.
type SearchQuery struct {
	// Phrases must all match (at least one).
	Phrases []SearchPhrase
	// Rooms to search; events of other rooms never match.
	Rooms []roomdag.RoomID
	// Keys limits the search to some keys; nil or empty means all.
	Keys []string
	// UpTo, if not 0, leaves out events after that stream position.
	UpTo roomdag.StreamPos
	// Limit, if not 0, is the most hits to return: the newest ones.
	Limit int
}

// SearchHit is one matching event: enough to check who may see it and to
// filter and order it without loading the event.
type SearchHit struct {
	Pos         roomdag.StreamPos
	Room        roomdag.RoomID
	Sender      roomdag.UserID
	Key         string // which SearchKey matched
	HasURL      bool   // content.url is a string (files, images)
	StateBefore int64  // the event's state snapshot before it
	// Rank grows with relevance. It depends only on the event and the
	// query, never on other events, so it is the same on every page.
	Rank float64
}
