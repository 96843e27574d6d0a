package push

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/roomdag"
)

// TestNameIndexFindsEveryNamedMember: the index may report extra members,
// never miss one whose display name or localpart the legacy mention rules
// would match. Names and bodies are drawn from a small alphabet of word
// bytes, punctuation, spaces, upper case and multi-byte characters, so
// that matches are frequent and boundaries are exercised.
func TestNameIndexFindsEveryNamedMember(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "b", "A", "_", "1", " ", ".", "-", "é", "É", "☃", "[", "*", "?"}
	word := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	matches := 0
	for round := range 300 {
		members := map[roomdag.UserID]string{}
		for i := range 20 {
			lp := strings.ToLower(strings.NewReplacer(" ", "", "é", "", "É", "", "☃", "", "[", "").Replace(word(1 + rng.IntN(3))))
			if lp == "" {
				lp = "x"
			}
			u := roomdag.UserID(fmt.Sprintf("@%s%d:example.org", lp, i))
			if rng.IntN(3) == 0 {
				u = roomdag.UserID("@" + lp + ":example.org")
			}
			members[u] = word(rng.IntN(5))
		}
		ix := newNameIndex(members)
		for range 20 {
			body := word(rng.IntN(25))
			lower := strings.ToLower(body)
			found := map[roomdag.UserID]bool{}
			ix.candidates(lower, func(u roomdag.UserID) { found[u] = true })
			v := &EventView{body: body, lower: lower}
			b := unlimited()
			for u, name := range members {
				byName := name != "" && literalWords(strings.ToLower(name), lower, &b)
				byLocalpart := v.bodyMatches(u.Localpart())
				if byName || byLocalpart {
					matches++
				}
				if (byName || byLocalpart) && !found[u] {
					t.Fatalf("round %d: body %q names %s (display name %q, by name %v, by localpart %v) but the index missed it",
						round, body, u, name, byName, byLocalpart)
				}
			}
		}
	}
	if matches < 500 {
		t.Fatalf("only %d bodies named a member: the test exercises too little", matches)
	}
}

func TestNameIndexNarrows(t *testing.T) {
	members := map[roomdag.UserID]string{}
	for i := range 1000 {
		members[roomdag.UserID(fmt.Sprintf("@member%d:example.org", i))] = fmt.Sprintf("Member Number %d", i)
	}
	members["@alice:example.org"] = "Alice Liddell"
	members["@snow:example.org"] = "☃ Snowman"
	ix := newNameIndex(members)
	for body, want := range map[string]string{
		"a typical message of modest length in a topic room": "",
		"thanks alice!":           "@alice:example.org",
		"ALICE LIDDELL, are you?": "@alice:example.org",
		"ask ☃ snowman":           "@snow:example.org",
		"member17 is away":        "@member17:example.org",
	} {
		var got []string
		ix.candidates(strings.ToLower(body), func(u roomdag.UserID) { got = append(got, string(u)) })
		if want == "" && len(got) != 0 || want != "" && (len(got) == 0 || got[0] != want || len(got) > 2) {
			t.Errorf("%q: candidates %v, want %q", body, got, want)
		}
	}
}
