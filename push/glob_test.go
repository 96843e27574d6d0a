package push

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// The reference implementation: the matcher this package used before the
// automaton, which simulated the pattern as a set of positions (a
// Thompson NFA over the pattern's bytes). It is simple and its answers are
// the ones the server gave, but it takes O(len(text) × len(pattern)) time.
// FuzzGlob holds the new matcher to the same answers.

func refGlobMatch(pattern, text string) bool {
	if !hasWildcard(pattern) {
		return lowerEqual(pattern, text)
	}
	return refRun(pattern, text, false)
}

func refGlobMatchWords(pattern, text string) bool {
	if pattern == "" {
		return false
	}
	if !hasWildcard(pattern) {
		return refLiteralWords(strings.ToLower(pattern), strings.ToLower(text))
	}
	return refRun(pattern, text, true)
}

func refLiteralWords(lit, lower string) bool {
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

// refRun simulates the pattern over text, a set of pattern positions per
// text position. words selects content.body semantics: start at any word
// start, accept at any word end.
func refRun(p, t string, words bool) bool {
	closure := func(s []bool, i int) {
		for {
			s[i] = true
			if i >= len(p) || p[i] != '*' {
				return
			}
			i++
		}
	}
	cur, next := make([]bool, len(p)+1), make([]bool, len(p)+1)
	for j := 0; ; {
		if !words && j == 0 || words && startsWord(t, j) {
			closure(cur, 0)
		}
		if cur[len(p)] && (!words && j == len(t) || words && endsWord(t, j)) {
			return true
		}
		if j == len(t) {
			return false
		}
		c, size := utf8.DecodeRuneInString(t[j:])
		c = lower(c)
		clear(next)
		for i := 0; i < len(p); i++ {
			if !cur[i] {
				continue
			}
			switch p[i] {
			case '*':
				closure(next, i)
			case '?':
				closure(next, i+1)
			default:
				pr, pn := utf8.DecodeRuneInString(p[i:])
				if lower(pr) == c {
					closure(next, i+pn)
				}
			}
		}
		cur, next = next, cur
		j += size
	}
}

// stepBound is the most work a match may take: one pass over the text at
// ⌈longest piece / 64⌉ steps a byte, plus building each piece's
// tables, plus the literal path's few verified candidates.
func stepBound(pattern, text string) int {
	longest := 0
	for _, p := range strings.Split(pattern, "*") {
		longest = max(longest, utf8.RuneCountInString(p))
	}
	w := (longest + 63) / 64
	// Literal patterns search the lower-cased text, which may be longer
	// (an invalid byte becomes the 3-byte U+FFFD).
	n := max(len(text), len(strings.ToLower(text)))
	return (n+1)*max(w, 1) + len(pattern)*(3+w) + (maxLiteralMisses+1)*len(pattern)*2 + 2*n/indexSpeedup + 8
}

// checkGlob compares the matcher with the reference and checks that it
// kept within stepBound, in both modes.
func checkGlob(t *testing.T, pattern, text string) {
	t.Helper()
	checkGlobWant(t, pattern, text, refGlobMatch(pattern, text), refGlobMatchWords(pattern, text))
}

// checkGlobWant is checkGlob with the answers given.
func checkGlobWant(t *testing.T, pattern, text string, wantWhole, wantWords bool) {
	t.Helper()
	short := func(s string) string {
		if len(s) > 40 {
			return s[:40] + "…"
		}
		return s
	}
	g := compileGlob(pattern)
	bound := stepBound(pattern, text)
	b := unlimited()
	before := b.left
	if got := g.matchWhole(text, &b); got != wantWhole {
		t.Errorf("globMatch(%q, %q) = %v, reference %v", short(pattern), short(text), got, wantWhole)
	}
	if used := before - b.left; used > bound {
		t.Errorf("globMatch(%q, %q) took %d steps, more than %d", short(pattern), short(text), used, bound)
	}
	b = unlimited()
	if got := g.matchWords(text, strings.ToLower(text), &b); got != wantWords {
		t.Errorf("globMatchWords(%q, %q) = %v, reference %v", short(pattern), short(text), got, wantWords)
	}
	if used := before - b.left; used > bound {
		t.Errorf("globMatchWords(%q, %q) took %d steps, more than %d", short(pattern), short(text), used, bound)
	}
}

// TestGlobReference: hand-picked cases where a greedy or bit-parallel
// matcher could go wrong (pieces longer than a word, non-ASCII case
// folding, '?' beside multi-byte characters, boundaries at the edges).
func TestGlobReference(t *testing.T) {
	long := strings.Repeat("ab?", 30) // 90 characters: two words of state
	cases := [][2]string{
		{"", ""}, {"", "x"}, {"*", ""}, {"?", ""}, {"**", "ab"}, {"a**b", "ab"},
		{"a*a", "a"}, {"a*a", "aa"}, {"*a*", "bab"}, {"?*?", "x"}, {"?*?", "xy"},
		{"ab*ab", "abab"}, {"ab*ab", "aba"}, {"*ab*ab*", "xxabyyab"},
		{"é?", "Éx"}, {"*É*", "aéb"}, {"?b", "éb"}, {"?", "\xff"}, {"\xff", "\xfe"},
		{"K*", "\u212Aelvin"}, {"*elvin", "\u212Aelvin"}, {"İ*", "i̇x"},
		{long, strings.Repeat("abx", 30)}, {long, strings.Repeat("abx", 29)}, {"*" + long + "*", "z z " + strings.Repeat("ABé", 30) + " z"},
		{long + "*", strings.Repeat("ab-", 30)}, {"*" + long, "-" + strings.Repeat("ab-", 30)},
		{"foo", "foo bar"}, {"foo", "xfoo"}, {"?oo", "a foo"}, {"*oo", "a foo"}, {"fo*", "foo_bar"},
		{"@room", "hey @room!"}, {"@room", "x@roomy"}, {"-", "a-b"}, {"a-", "a-b"}, {"*-*", "-"},
		{strings.Repeat("ab", 40), "x " + strings.Repeat("ab", 50) + " y"},
		{strings.Repeat("!ab", 20) + "!a", strings.Repeat("!ab", 200)},
	}
	for _, c := range cases {
		checkGlob(t, c[0], c[1])
	}
}

// TestGlobLinear: the hostile patterns of the issue (and worse) cost work
// in proportion to the text, counted in steps, not in time. The answers
// are given (the reference would take minutes): [whole, words] on a body
// of one 60,000-letter word, then on "ab ab ab ...".
func TestGlobLinear(t *testing.T) {
	bodies := []string{strings.Repeat("a", 60000), strings.Repeat("ab ", 20000)}
	for _, tc := range []struct {
		pattern string
		want    [2][2]bool
	}{
		{strings.Repeat("*a", 499) + "*", [2][2]bool{{true, true}, {true, true}}},     // the reported rule
		{strings.Repeat("*a", 499), [2][2]bool{{true, true}, {false, false}}},         // must end at the end of a word
		{strings.Repeat("*a", 498) + "*b*", [2][2]bool{{false, false}, {true, true}}}, // needs a b after the a's
		{"*" + strings.Repeat("a", 998), [2][2]bool{{true, true}, {false, false}}},    // one long piece, 16 words of state
		{strings.Repeat("a?", 499) + "b", [2][2]bool{{false, false}, {false, false}}}, // no star: one piece at word boundaries
		{strings.Repeat("a", 999), [2][2]bool{{false, false}, {false, false}}},        // a literal found everywhere inside the word
	} {
		for i, body := range bodies {
			checkGlobWant(t, tc.pattern, body, tc.want[i][0], tc.want[i][1])
		}
	}
	// The same on a scale the reference can check.
	for _, p := range []string{strings.Repeat("*a", 49) + "*", strings.Repeat("*a", 49), strings.Repeat("*a", 48) + "*b*",
		"*" + strings.Repeat("a", 98), strings.Repeat("a?", 49) + "b", strings.Repeat("a", 99)} {
		checkGlob(t, p, strings.Repeat("a", 3000))
		checkGlob(t, p, strings.Repeat("ab ", 1000))
	}
}

// FuzzGlob checks the matcher against the regular-expression reference on
// ASCII input, against the position-set reference on any input, and that
// it keeps within stepBound.
func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{{"lunc?*", "Lunch plans"}, {"ex*ple", "An exciting triple-whammy"}, {"*a*a*a*a*b", strings.Repeat("a", 40)},
		{"?", "é"}, {strings.Repeat("a?", 40) + "*", strings.Repeat("ab", 50)}, {"*É?x*", "xéyx éé"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, text string) {
		if len(pattern) > 300 || len(text) > 2000 {
			return // the reference is quadratic
		}
		checkGlob(t, pattern, text)
		if len(pattern) > 64 || !printableASCII(pattern) || !printableASCII(text) {
			return
		}
		if want := globRegexp(pattern, false).MatchString(text); globMatch(pattern, text) != want {
			t.Errorf("globMatch(%q, %q) = %v, regexp %v", pattern, text, !want, want)
		}
		if pattern == "" {
			return // an empty keyword never matches
		}
		if want := globRegexp(pattern, true).MatchString(text); globMatchWords(pattern, text) != want {
			t.Errorf("globMatchWords(%q, %q) = %v, regexp %v", pattern, text, !want, want)
		}
	})
}

// TestEvaluateBudget: the budget is spent only by work. A cheap failing
// match leaves it whole (a regression: a pattern anchored at the start
// that failed on its first character used to count as cut short). A rule
// set that runs out is reported once, the rule cut and the user rules
// after it do not match, and the server defaults still do.
func TestEvaluateBudget(t *testing.T) {
	msg := func(body string) *EventView {
		return view(t, `{"type":"m.room.message","room_id":"!r:example.org","sender":"@bob:example.org","content":{"msgtype":"m.text","body":"`+body+`"}}`)
	}
	rule := func(id string, conds ...Condition) Rule {
		return Rule{RuleID: id, Conditions: conds, Actions: []any{"notify", map[string]any{"set_tweak": "highlight"}}}
	}
	var u UserRules
	// Put makes each new rule the most important of its kind: the hello
	// rule comes last.
	if err := u.Put("underride", rule("hello", match("content.body", "*hello*")), "", ""); err != nil {
		t.Fatal(err)
	}
	for i := range 400 { // many cheap matches, then a cheap failure: a few steps each
		conds := []Condition{match("sender", "0*")}
		for range 10 {
			conds = append([]Condition{match("type", "m.room.*")}, conds...)
		}
		if err := u.Put("underride", rule(fmt.Sprint("cheap", i), conds...), "", ""); err != nil {
			t.Fatal(err)
		}
	}
	rs := u.Ruleset("@alice:example.org")
	rs.compile()
	var cut []string
	ctx := &EvalContext{MemberCount: 3, OverBudget: func(id string) { cut = append(cut, id) }}
	if a, _ := Evaluate(&rs, msg("well hello there"), ctx); !Highlight(a) || len(cut) != 0 {
		t.Errorf("after 400 cheap rules: actions %v, cut %v; want the hello rule, nothing cut", a, cut)
	}

	// A rule that scans the whole body 19 times runs out; the hello rule
	// after it is not tried; .m.rule.message still notifies.
	slow := make([]Condition, 19)
	for i := range slow {
		slow[i] = match("content.body", strings.Repeat("*a", 499))
	}
	if err := u.Put("override", rule("slow", slow...), "", ""); err != nil {
		t.Fatal(err)
	}
	rs = u.Ruleset("@alice:example.org")
	rs.compile()
	a, _ := Evaluate(&rs, msg("hello "+strings.Repeat("a", 60000)), ctx)
	if !Notify(a) || Highlight(a) || len(cut) != 1 || cut[0] != "slow" {
		t.Errorf("actions %v, cut %v; want .m.rule.message's, and slow cut once", a, cut)
	}
}
