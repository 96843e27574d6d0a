package push

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Glob matching (spec: appendices, "Glob-style matching"): '*' matches zero
// or more characters, '?' exactly one; everything else matches itself,
// case-insensitively (unicode.ToLower on both sides).
//
// A pattern is compiled once (compileGlob) into the pieces between its
// '*'s. Matching finds the pieces in order, each at its leftmost place
// after the previous one: each piece has a fixed length in characters, so
// the leftmost place leaves the most room for the rest and no other place
// needs trying. One piece is found in one pass over the text with a
// bit-parallel automaton (shift-and: bit i of the state says that the
// piece's first i+1 characters end at the current character), which
// handles '?' and needs no backtracking. The passes for successive pieces
// cover disjoint stretches of the text, so a match costs
// O(len(text) × ⌈longest piece / 64⌉) whatever the pattern, plus the
// tables of each piece (its length; a long piece's length × ⌈its length /
// 64⌉): `*a*a*a…` against 60,000 characters is 60,000 steps, not the 60
// million the position-set simulation this replaced took per condition.
//
// Every step is counted against a budget (Evaluate gives each evaluation
// MaxEvalSteps for the member's own rules), so that even linear work is
// bounded per event.

// glob is a compiled pattern. It is immutable and may be shared.
type glob struct {
	pattern string
	// plain: no wildcard; lit is the pattern lower-cased, for the fast
	// paths.
	plain bool
	lit   string
	// star: the pattern has a '*'; then segs[0] is the piece before the
	// first '*' (anchored at the start of a match) and segs[len-1] the one
	// after the last (anchored at the end); either may be empty. Without
	// one, segs[0] is the whole pattern.
	star bool
	segs []segment
}

// segment is a piece of a pattern between '*'s, n characters long. In a
// literal piece '?' is a plain character.
type segment struct {
	src     string
	n       int
	literal bool
}

// anyChar stands for '?' among a piece's characters.
const anyChar rune = -1

// compileGlob compiles a glob pattern.
func compileGlob(pattern string) *glob {
	g := &glob{pattern: pattern, plain: !hasWildcard(pattern)}
	if g.plain {
		g.lit = strings.ToLower(pattern)
	}
	start := 0
	for i := 0; i <= len(pattern); i++ {
		if i < len(pattern) && pattern[i] != '*' {
			continue
		}
		g.segs = append(g.segs, piece(pattern[start:i], false))
		start = i + 1
	}
	g.star = len(g.segs) > 1
	return g
}

func piece(src string, literal bool) segment {
	return segment{src: src, n: utf8.RuneCountInString(src), literal: literal}
}

// budget is the matching work an evaluation may still do, in steps of
// about one byte of text examined. A match that would need more
// fails, and left stays negative: everything after fails too.
type budget struct{ left int }

// spent reports whether the budget is used up.
func (b *budget) spent() bool { return b.left < 0 }

// unlimited is a budget for the server-default rules, whose patterns are
// fixed, short and literal.
func unlimited() budget { return budget{left: int(^uint(0) >> 2)} }

// globMatch reports whether pattern matches the whole of text.
func globMatch(pattern, text string) bool {
	b := unlimited()
	return compileGlob(pattern).matchWhole(text, &b)
}

// globMatchWords reports whether pattern matches a substring of text that
// starts and ends at a word boundary: the rule for content.body (spec:
// "Conditions", event_match, and content rules). A boundary is the start or
// end of the text or a character outside [A-Za-z0-9_]; as in Synapse, the
// matched substring may begin or end with that character.
func globMatchWords(pattern, text string) bool {
	b := unlimited()
	return compileGlob(pattern).matchWords(text, strings.ToLower(text), &b)
}

// matchWhole matches the whole of text.
func (g *glob) matchWhole(text string, b *budget) bool {
	if b.spent() {
		return false
	}
	if g.plain {
		b.left -= min(len(g.pattern), len(text)) + 1
		return !b.spent() && lowerEqual(g.pattern, text)
	}
	return g.run(text, gateEdge, b)
}

// matchWords matches at word boundaries in text; lower is
// strings.ToLower(text), which the literal fast path searches.
func (g *glob) matchWords(text, lower string, b *budget) bool {
	if g.pattern == "" || b.spent() {
		return false
	}
	if g.plain {
		return literalWords(g.lit, lower, b)
	}
	return g.run(text, gateWord, b)
}

// literalWords finds a lower-cased literal in lower-cased text at word
// boundaries; it is the hot path of keyword (content) rules. Checking
// boundaries byte by byte is exact: every byte of a multi-byte character is
// outside [A-Za-z0-9_], and so is the character. Each candidate costs the
// text it skipped and the literal's length.
//
// strings.Index is fast, but a literal that occurs many times inside
// words (a long repetitive keyword in a long repetitive body) would cost
// its length at every occurrence; after a few such candidates the rest of
// the text is searched in one pass by the automaton, with the same
// boundaries.
func literalWords(lit, lower string, b *budget) bool {
	if lit == "" {
		return false
	}
	for off, misses := 0, 0; off+len(lit) <= len(lower); misses++ {
		i := strings.Index(lower[off:], lit)
		if i < 0 {
			b.left -= (len(lower) - off) / indexSpeedup
			return false
		}
		b.left -= i/indexSpeedup + len(lit)
		if b.spent() {
			return false
		}
		i += off
		if startsWord(lower, i) && endsWord(lower, i+len(lit)) {
			return true
		}
		_, size := utf8.DecodeRuneInString(lower[i:])
		off = i + size
		if misses == maxLiteralMisses {
			seg := piece(lit, true)
			_, ok := seg.find(lower, off, gateWord, gateWord, b)
			return ok
		}
	}
	return false
}

// maxLiteralMisses is how many candidates literalWords checks before it
// searches the rest of the text with the automaton.
const maxLiteralMisses = 8

// indexSpeedup is how many bytes strings.Index skips in the time the
// automaton takes for one character (it compares many bytes at once):
// budget steps measure time, so a literal search is charged less per byte.
const indexSpeedup = 8

// Gates say where a piece may start and end: anywhere (between pieces),
// only at the edges of the text (whole-text matching), or at word
// boundaries (content.body).
const (
	gateAny = iota
	gateEdge
	gateWord
)

// run matches a pattern with wildcards. mode is gateEdge for the whole
// text or gateWord for a substring at word boundaries.
func (g *glob) run(t string, mode int, b *budget) bool {
	if !g.star {
		_, ok := g.segs[0].find(t, 0, mode, mode, b)
		return ok
	}
	// The first piece must start where a match may start; with none
	// (a leading '*'), the start of the text does for either mode.
	cur := 0
	if head := &g.segs[0]; head.n > 0 {
		end, ok := head.find(t, 0, mode, gateAny, b)
		if !ok {
			return false
		}
		cur = end
	}
	last := len(g.segs) - 1
	for i := 1; i < last; i++ {
		if s := &g.segs[i]; s.n > 0 {
			end, ok := s.find(t, cur, gateAny, gateAny, b)
			if !ok {
				return false
			}
			cur = end
		}
	}
	// The last piece must end where a match may end; with none (a
	// trailing '*'), the end of the text does.
	if tail := &g.segs[last]; tail.n > 0 {
		_, ok := tail.find(t, cur, gateAny, mode, b)
		return ok
	}
	return true
}

// opens reports whether a match may start at byte i of t under gate.
func opens(gate int, t string, i int) bool {
	switch gate {
	case gateEdge:
		return i == 0
	case gateWord:
		return startsWord(t, i)
	}
	return true
}

// closes reports whether a match may end before byte j of t under gate.
func closes(gate int, t string, j int) bool {
	switch gate {
	case gateEdge:
		return j == len(t)
	case gateWord:
		return endsWord(t, j)
	}
	return true
}

// nextChar decodes the character at t[i:], lower-cased.
func nextChar(t string, i int) (rune, int) {
	if c := t[i]; c < utf8.RuneSelf {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		return rune(c), 1
	}
	r, n := utf8.DecodeRuneInString(t[i:])
	return unicode.ToLower(r), n
}

// find returns the end of the leftmost occurrence of s in t at or after
// byte from that starts where open allows and ends where close allows.
// ok is false if there is none or the budget ran out first.
func (s *segment) find(t string, from, open, close int, b *budget) (end int, ok bool) {
	if s.n == 0 {
		// Only the pattern "" has an empty piece to find; matchWords
		// refuses it, so this is the whole text.
		return 0, from == 0 && len(t) == 0
	}
	if s.n == 1 {
		return s.find1(t, from, open, close, b)
	}
	if s.n <= 64 {
		return s.findShort(t, from, open, close, b)
	}
	return s.findLong(t, from, open, close, b)
}

// char returns the character of the piece at byte *off and moves *off
// past it: anyChar for '?', else the character lower-cased.
func (s *segment) char(off *int) rune {
	p := s.src[*off:]
	if p[0] == '?' && !s.literal {
		*off++
		return anyChar
	}
	r, n := utf8.DecodeRuneInString(p)
	*off += n
	return lower(r)
}

// limit is where a scan of t from byte from must stop for the budget: it
// may examine about left bytes. A scan that reaches it before the end of t
// spends the budget (charge).
func (b *budget) limit(t string, from, cost int) int {
	if avail := b.left - cost; avail < len(t)-from {
		return from + max(avail, 0)
	}
	return len(t)
}

// charge takes the work of a scan that examined t[from:i] and stopped at
// i without finding what it looked for, or found it ending at i; limit is
// what b.limit allowed it.
func (b *budget) charge(t string, from, i, limit, cost int, found bool) {
	b.left -= i - from + cost
	if !found && i >= limit && limit < len(t) {
		b.left = -1 // cut short by the budget
	}
}

// find1 is find for a piece of one character.
func (s *segment) find1(t string, from, open, close int, b *budget) (int, bool) {
	off := 0
	want := s.char(&off)
	alt := want // the upper case of an ASCII letter
	if 'a' <= want && want <= 'z' {
		alt = want - ('a' - 'A')
	}
	limit := b.limit(t, from, 0)
	stop := limit
	if open == gateEdge {
		stop = min(stop, from+1) // only the character at 0 may start a match
	}
	i := from
	for i < stop {
		size := 1
		if c := rune(t[i]); c < utf8.RuneSelf {
			if c != want && c != alt && want != anyChar {
				i++
				continue
			}
		} else {
			var r rune
			r, size = utf8.DecodeRuneInString(t[i:])
			if want != anyChar && unicode.ToLower(r) != want {
				i += size
				continue
			}
		}
		if opens(open, t, i) && closes(close, t, i+size) {
			b.charge(t, from, i+size, limit, 0, true)
			return i + size, true
		}
		i += size
	}
	b.charge(t, from, i, limit, 0, false)
	return 0, false
}

// runeMask is the mask of a non-ASCII character: the positions of a piece
// it matches.
type runeMask struct {
	r    rune
	mask uint64
}

func cmpRuneMask(m runeMask, r rune) int { return int(m.r - r) }

// findShort is find for a piece of 2 to 64 characters: its state and each
// character's mask fit in one word. The tables live on the stack.
func (s *segment) findShort(t string, from, open, close int, b *budget) (int, bool) {
	var ascii [utf8.RuneSelf]uint64 // mask of each ASCII character, either case; '?' positions apart
	var other [64]runeMask          // masks of the non-ASCII characters, sorted
	var wild uint64                 // positions of '?'
	nother := 0
	for i, off := 0, 0; i < s.n; i++ {
		c := s.char(&off)
		switch {
		case c == anyChar:
			wild |= 1 << i
		case c < utf8.RuneSelf:
			ascii[c] |= 1 << i
			if 'a' <= c && c <= 'z' {
				ascii[c-('a'-'A')] |= 1 << i
			}
		default:
			k, found := slices.BinarySearchFunc(other[:nother], c, cmpRuneMask)
			if !found {
				copy(other[k+1:nother+1], other[k:nother])
				other[k] = runeMask{r: c}
				nother++
			}
			other[k].mask |= 1 << i
		}
	}
	stop := b.limit(t, from, s.n)
	accept := uint64(1) << (s.n - 1)
	var d uint64
	i := from
	for i < stop {
		if open == gateEdge && i > 0 && d == 0 {
			break // no occurrence can start any more
		}
		size := 1
		var mask uint64
		if c := t[i]; c < utf8.RuneSelf {
			mask = ascii[c]
		} else {
			var r rune
			r, size = utf8.DecodeRuneInString(t[i:])
			if r = unicode.ToLower(r); r < utf8.RuneSelf {
				mask = ascii[r]
			} else if k, found := slices.BinarySearchFunc(other[:nother], r, cmpRuneMask); found {
				mask = other[k].mask
			}
		}
		d <<= 1
		if open == gateAny || opens(open, t, i) {
			d |= 1
		}
		d &= mask | wild
		i += size
		if d&accept != 0 && closes(close, t, i) {
			b.charge(t, from, i, stop, s.n, true)
			return i, true
		}
	}
	b.charge(t, from, i, stop, s.n, false)
	return 0, false
}

// findLong is find for a piece of more than 64 characters: the state and
// masks take ⌈n/64⌉ words, and so does each step.
func (s *segment) findLong(t string, from, open, close int, b *budget) (end int, found bool) {
	w := (s.n + 63) / 64
	// Rows of masks: row 0 is '?' alone; each character of the piece has
	// its own row, '?' positions included.
	chars := make([]rune, 0, s.n)
	for i, off := 0, 0; i < s.n; i++ {
		chars = append(chars, s.char(&off))
	}
	distinct := slices.Clone(chars)
	slices.Sort(distinct)
	distinct = slices.Compact(distinct)
	if distinct[0] == anyChar {
		distinct = distinct[1:]
	}
	rows := make([]uint64, (len(distinct)+1)*w)
	var ascii [utf8.RuneSelf]int32 // row of each ASCII character, 0 if none
	for k, c := range distinct {
		if c < utf8.RuneSelf {
			ascii[c] = int32(k + 1)
		}
	}
	row := func(c rune) int {
		if c < utf8.RuneSelf {
			return int(ascii[c])
		}
		if k, found := slices.BinarySearch(distinct, c); found {
			return k + 1
		}
		return 0
	}
	for i, c := range chars {
		if c == anyChar {
			for r := 0; r <= len(distinct); r++ {
				rows[r*w+i/64] |= 1 << (i % 64)
			}
			continue
		}
		rows[row(c)*w+i/64] |= 1 << (i % 64)
	}
	cost := s.n*2 + len(rows)
	// Each character costs w steps: scan a w'th of what the budget
	// allows in bytes.
	scaled := budget{left: b.left / w}
	stop := scaled.limit(t, from, cost/w)
	d := make([]uint64, w)
	top, accept := w-1, uint64(1)<<((s.n-1)%64)
	i := from
	defer func() {
		b.left -= (i-from)*w + cost
		if !found && i >= stop && stop < len(t) {
			b.left = -1 // cut short by the budget
		}
	}()
	for i < stop {
		c, size := nextChar(t, i)
		mask := rows[row(c)*w:][:w]
		var carry uint64
		if opens(open, t, i) {
			carry = 1
		}
		live := uint64(0)
		for k := range d {
			next := (d[k]<<1 | carry) & mask[k]
			carry = d[k] >> 63
			d[k] = next
			live |= next
		}
		i += size
		if d[top]&accept != 0 && closes(close, t, i) {
			return i, true
		}
		if open == gateEdge && live == 0 {
			return 0, false
		}
	}
	return 0, false
}

func hasWildcard(p string) bool { return strings.ContainsAny(p, "*?") }

// lowerEqual compares rune by rune after unicode.ToLower, the folding that
// the automaton uses, so literal and wildcard patterns agree.
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
	return (c|0x20)-'a' < 26 || c-'0' < 10 || c == '_'
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

// AnyKeyword reports whether any of the patterns matches text the way a
// content rule matches content.body: case-insensitively, on word
// boundaries, with * and ? as wildcards. Topic feeds use it, so that a
// feed's keywords mean what a keyword push rule means.
func AnyKeyword(patterns []string, text string) bool {
	if text == "" {
		return false
	}
	lowered := strings.ToLower(text)
	for _, p := range patterns {
		b := unlimited()
		if compileGlob(p).matchWords(text, lowered, &b) {
			return true
		}
	}
	return false
}
