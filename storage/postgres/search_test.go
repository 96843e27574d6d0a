package postgres

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/persistentchat/homeserver/storage"
)

func TestFoldAndTokens(t *testing.T) {
	for in, want := range map[string]string{"Déploy": "deploy", "ÉCOLE": "ecole", "straße": "straße", "naïve": "naive", "हिन्दी": "हिन्दी", "Ωμέγα": "ωμέγα"} {
		if got := foldWord(in); got != want {
			t.Errorf("foldWord(%q) = %q, want %q", in, got, want)
		}
	}
	var words []string
	for _, tok := range searchTokens("déploy-notes.pdf, e-mail: x@y.org") {
		words = append(words, tok.folded)
	}
	if want := []string{"deploy", "notes", "pdf", "e", "mail", "x", "y", "org"}; !slices.Equal(words, want) {
		t.Errorf("tokens %q, want %q", words, want)
	}
	// The index cuts text as the query parser cuts terms.
	text := "Ça va? l'été—très «chaud» 42km/h"
	var mine []string
	for _, tok := range searchTokens(text) {
		mine = append(mine, strings.ToLower(text[tok.start:tok.end]))
	}
	if theirs := storage.SearchWords(text); !slices.Equal(mine, theirs) {
		t.Errorf("searchTokens cut %q as %q, storage.SearchWords as %q", text, mine, theirs)
	}
	if got := tsvectorText(searchTokens("it's a b a")); got != `'it':1 's':2 'a':3,5 'b':4` {
		t.Errorf("tsvector %s", got)
	}
	if got, _ := tsqueryText(foldPhrases(storage.ParseSearchTerm(`Déploy "fail now"`))); got != `('deploy':*) & ('fail' <-> 'now')` {
		t.Errorf("tsquery %s", got)
	}
}

type testDoc struct {
	pos, room, kind int64
	text            string
}

// searchDB is a migrated database holding docs in its index, each with an
// event row (unindexing finds the position by event ID, "$<pos>").
func searchDB(t *testing.T, docs []testDoc) *testPools {
	t.Helper()
	db, err := openTestPools(Options{DSN: testDSN(t), MinConns: 1, MaxConns: 3}, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tx, err := db.w.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for _, d := range docs {
		if _, err := tx.Exec(`INSERT INTO events (stream_pos, event_id, room_nid, type, sender, depth, origin_ts, json, state_before, state_after)
			VALUES (?, ?, ?, 'm.room.message', '@s:x', 1, 0, '\x7b7d', 0, 0)`, d.pos, fmt.Sprintf("$%d", d.pos), d.room); err != nil {
			t.Fatal(err)
		}
		if err := indexSearchDoc(tx, d.pos, d.room, fmt.Sprintf("@s%d:x", d.pos), d.pos*10, d.kind, d.text); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return db
}

func search(t *testing.T, db *testPools, term string, rooms, kinds []int64, upTo int64, limit int) (out []searchMatch) {
	t.Helper()
	err := searchDocs(context.Background(), db.r, storage.ParseSearchTerm(term), rooms, kinds, upTo, limit, func(m *searchMatch) error {
		c := *m
		c.sender = slices.Clone(m.sender)
		c.phraseHits = slices.Clone(m.phraseHits)
		out = append(out, c)
		return nil
	})
	if err != nil {
		t.Fatalf("search %q: %v", term, err)
	}
	return out
}

func positions(ms []searchMatch) (out []int64) {
	for _, m := range ms {
		out = append(out, m.pos)
	}
	return out
}

// The index matches as SQLite's does (storage/sqlite/search_test.go's
// TestSearchIndex, at the index's level): folded words, prefixes of three
// letters and more, phrases in order, kinds and rooms, newest first.
func TestSearchIndex(t *testing.T) {
	const a, b = 1, 2
	db := searchDB(t, []testDoc{
		{1, a, 1, "The deploy FAILED on staging"},
		{2, a, 1 | 4, "déploy-notes.pdf"},
		{3, b, 1, "deployment done"},
		{4, a, 2, "Deploy room"},
		{5, a, 3, "all about deploys\nplain deploys"},
		{6, a, 1, "secret deploy token"},
	})
	all, both := []int64{1, 2, 3}, []int64{a, b}
	for _, c := range []struct {
		term  string
		kinds []int64
		want  []int64
	}{
		{"deploy", all, []int64{6, 5, 4, 3, 2, 1}},
		{"DEPLOY failed", all, []int64{1}},
		{`"deploy failed"`, all, []int64{1}},
		{`"failed deploy"`, all, nil},
		{"deploy", []int64{2}, []int64{4}},
		{"deploy", []int64{3, 1}, []int64{6, 5, 3, 2, 1}},
		{"notes.pdf", all, []int64{2}},
		{"DÉPLOY", all, []int64{6, 5, 4, 3, 2, 1}},
		{`"déploy"`, all, []int64{6, 4, 2, 1}}, // folded both ways
		{"de", all, nil},
		{"token OR nothing", all, nil},
		{`body:deploy`, all, nil},
		{`'deploy' | :`, all, []int64{6, 5, 4, 3, 2, 1}}, // tsquery syntax is only separators
		{`deploy:* & ! <->`, all, []int64{6, 5, 4, 3, 2, 1}},
	} {
		if got := positions(search(t, db, c.term, both, c.kinds, math.MaxInt64, 0)); !slices.Equal(got, c.want) {
			t.Errorf("search %q kinds %v = %v, want %v", c.term, c.kinds, got, c.want)
		}
	}
	if got := positions(search(t, db, "deploy", []int64{b, 99}, all, math.MaxInt64, 0)); !slices.Equal(got, []int64{3}) {
		t.Errorf("room b: %v", got)
	}
	if got := positions(search(t, db, "deploy", both, all, 5, 2)); !slices.Equal(got, []int64{5, 4}) {
		t.Errorf("up to 5, limit 2: %v", got)
	}
	if got := search(t, db, "deploy", nil, all, math.MaxInt64, 0); len(got) != 0 {
		t.Errorf("no rooms: %v", got)
	}
	ms := search(t, db, "notes", both, all, math.MaxInt64, 0)
	if len(ms) != 1 || ms[0].roomNID != a || string(ms[0].sender) != "@s2:x" || ms[0].stateBefore != 20 || ms[0].kind != 5 ||
		!slices.Equal(ms[0].phraseHits, []int{1}) || ms[0].length != int64(len([]rune("déploy-notes.pdf"))) {
		t.Errorf("hit %+v", ms)
	}
	// Phrase hits count each phrase's occurrences, for the ranking.
	ms = search(t, db, `deploys "plain deploys"`, both, all, math.MaxInt64, 0)
	if len(ms) != 1 || !slices.Equal(ms[0].phraseHits, []int{2, 1}) {
		t.Errorf("phrase hits %+v, want [2 1]", ms)
	}

	ctx := context.Background()
	matched, err := matchedWords(ctx, db.r, storage.ParseSearchTerm("DEPLOY fail"), []int64{1, 2, 3})
	slices.Sort(matched)
	if err != nil || !slices.Equal(matched, []string{"deploy", "failed"}) {
		t.Errorf("matched %v, %v", matched, err)
	}
	matched, err = matchedWords(ctx, db.r, storage.ParseSearchTerm("deploy"), []int64{2, 3, 5})
	slices.Sort(matched)
	if err != nil || !slices.Equal(matched, []string{"deployment", "deploys", "déploy"}) {
		t.Errorf("matched %v, %v", matched, err)
	}

	tx, err := db.w.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := unindexSearchDoc(tx, "$6"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := positions(search(t, db, "secret", both, all, math.MaxInt64, 0)); len(got) != 0 {
		t.Errorf("unindexed event found: %v", got)
	}
}

// Searches see the index as of their snapshot, and a rolled-back write
// leaves nothing behind.
func TestSearchIndexTransactional(t *testing.T) {
	db := searchDB(t, nil)
	tx, err := db.w.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := indexSearchDoc(tx, 1, 1, "@a:x", 0, 1, "rollback me"); err != nil {
		t.Fatal(err)
	}
	if got := search(t, db, "rollback", []int64{1}, []int64{1}, math.MaxInt64, 0); len(got) != 0 {
		t.Errorf("uncommitted row found: %v", got)
	}
	tx.Rollback()
	if got := search(t, db, "rollback", []int64{1}, []int64{1}, math.MaxInt64, 0); len(got) != 0 {
		t.Errorf("rolled-back row found: %v", got)
	}
}
