package push

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Glob matching (spec: appendices, "Glob-style matching"): '*' matches zero
// or more characters, '?' exactly one; everything else matches itself,
// case-insensitively. Matching simulates the pattern as a set of positions
// (a Thompson NFA over the pattern's bytes), so it takes O(len(text) ×
// len(pattern)) time whatever the pattern, allocates nothing for patterns
// under 256 bytes, and cannot be made to backtrack exponentially.

// globMatch reports whether pattern matches the whole of text.
func globMatch(pattern, text string) bool {
	if !hasWildcard(pattern) {
		return lowerEqual(pattern, text)
	}
	return globRun(pattern, text, false)
}

// globMatchWords reports whether pattern matches a substring of text that
// starts and ends at a word boundary: the rule for content.body (spec:
// "Conditions", event_match, and content rules). A boundary is the start or
// end of the text or a character outside [A-Za-z0-9_]; as in Synapse, the
// matched substring may begin or end with that character.
func globMatchWords(pattern, text string) bool {
	if pattern == "" {
		return false
	}
	if !hasWildcard(pattern) {
		return literalWords(strings.ToLower(pattern), strings.ToLower(text))
	}
	return globRun(pattern, text, true)
}

// literalWords finds a lower-cased literal in lower-cased text at word
// boundaries; it is the hot path of keyword (content) rules. Checking
// boundaries byte by byte is exact: every byte of a multi-byte character is
// outside [A-Za-z0-9_], and so is the character.
func literalWords(lit, lower string) bool {
	for off := 0; off+len(lit) <= len(lower); {
		i := strings.Index(lower[off:], lit)
		if i < 0 {
			return false
		}
		i += off
		if startsWord(lower, i) && endsWord(lower, i+len(lit)) {
			return true
		}
		off = i + 1
	}
	return false
}

func hasWildcard(p string) bool { return strings.ContainsAny(p, "*?") }

func isLowerASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// lowerEqual compares rune by rune after unicode.ToLower, the folding that
// globRun uses, so literal and wildcard patterns agree.
func lowerEqual(a, b string) bool {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if lower(ra) != lower(rb) {
			return false
		}
		a, b = a[na:], b[nb:]
	}
	return a == "" && b == ""
}

func lower(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}
	return unicode.ToLower(r)
}

func isWordByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
}

// startsWord: a match may start at byte i (spec word boundary, Synapse's
// (?:^|\b|\W) before the pattern).
func startsWord(t string, i int) bool {
	return i == 0 || !isWordByte(t[i-1]) || i < len(t) && !isWordByte(t[i])
}

// endsWord: a match may end before byte j.
func endsWord(t string, j int) bool {
	return j == len(t) || !isWordByte(t[j]) || j > 0 && !isWordByte(t[j-1])
}

// stateSet is a set of positions in the pattern (byte offsets).
type stateSet struct {
	small [4]uint64
	words []uint64
}

func (s *stateSet) init(n int) {
	if n <= 64*len(s.small) {
		s.words = s.small[:(n+63)/64]
		clear(s.words)
		return
	}
	s.words = make([]uint64, (n+63)/64)
}

func (s *stateSet) add(i int)      { s.words[i>>6] |= 1 << (i & 63) }
func (s *stateSet) has(i int) bool { return s.words[i>>6]&(1<<(i&63)) != 0 }
func (s *stateSet) empty() bool {
	for _, w := range s.words {
		if w != 0 {
			return false
		}
	}
	return true
}

// addClosed adds position i and, past each '*' (which may match nothing),
// the positions that follow it.
func addClosed(s *stateSet, p string, i int) {
	for {
		s.add(i)
		if i >= len(p) || p[i] != '*' {
			return
		}
		i++
	}
}

// globRun simulates the pattern over text. words selects content.body
// semantics: start at any word start, accept at any word end.
func globRun(p, t string, words bool) bool {
	n := len(p) + 1
	var s1, s2 stateSet
	cur, next := &s1, &s2
	cur.init(n)
	next.init(n)
	accept := len(p)
	for j := 0; ; {
		if !words && j == 0 || words && startsWord(t, j) {
			addClosed(cur, p, 0)
		}
		if cur.has(accept) && (!words && j == len(t) || words && endsWord(t, j)) {
			return true
		}
		if j == len(t) {
			return false
		}
		if cur.empty() && !words {
			return false
		}
		c, size := utf8.DecodeRuneInString(t[j:])
		c = lower(c)
		clear(next.words)
		for i := 0; i < len(p); i++ {
			if !cur.has(i) {
				continue
			}
			switch p[i] {
			case '*':
				addClosed(next, p, i)
			case '?':
				addClosed(next, p, i+1)
			default:
				pr, pn := utf8.DecodeRuneInString(p[i:])
				if lower(pr) == c {
					addClosed(next, p, i+pn)
				}
			}
		}
		cur, next = next, cur
		j += size
	}
}

// AnyKeyword reports whether any of the patterns matches text the way a
// content rule matches content.body: case-insensitively, on word
// boundaries, with * and ? as wildcards. Topic feeds use it, so that a
// feed's keywords mean what a keyword push rule means.
func AnyKeyword(patterns []string, text string) bool {
	if text == "" {
		return false
	}
	v := EventView{body: text, lower: strings.ToLower(text)}
	for _, p := range patterns {
		if v.bodyMatches(p) {
			return true
		}
	}
	return false
}
