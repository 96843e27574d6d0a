package postgres

import (
	"strconv"
	"strings"
	"testing"
)

func TestRebind(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`SELECT 1`, `SELECT 1`},
		{`SELECT ?`, `SELECT $1`},
		{`INSERT INTO t (a, b) VALUES (?,?)`, `INSERT INTO t (a, b) VALUES ($1,$2)`},
		{`SELECT '?', ? FROM t WHERE a = ?`, `SELECT '?', $1 FROM t WHERE a = $2`},
		{`SELECT 'it''s ?', ?`, `SELECT 'it''s ?', $1`},
		{`SELECT E'\'?', ?`, `SELECT E'\'?', $1`},
		{`SELECT e'a\\', ?`, `SELECT e'a\\', $1`},
		// Not an E string: a standard string after an identifier ending in e.
		{`SELECT typname'\', ?`, `SELECT typname'\', $1`},
		{`SELECT "col?" FROM t WHERE "a""?" = ?`, `SELECT "col?" FROM t WHERE "a""?" = $1`},
		{"SELECT ? -- a comment? yes\n, ?", "SELECT $1 -- a comment? yes\n, $2"},
		{"SELECT ? -- to the end?", "SELECT $1 -- to the end?"},
		{`SELECT /* ? /* nested ? */ still? */ ?`, `SELECT /* ? /* nested ? */ still? */ $1`},
		{`SELECT $$ ? $$, ?`, `SELECT $$ ? $$, $1`},
		{`SELECT $tag$ ? $x$ ? $tag$, ?`, `SELECT $tag$ ? $x$ ? $tag$, $1`},
		{`SELECT $1, ?`, `SELECT $1, $1`}, // a written $1 is the caller's business
		{`SELECT a$b, ?`, `SELECT a$b, $1`},
		{`SELECT j ?? 'k', ?`, `SELECT j ? 'k', $1`},
		{`SELECT 1 - ?, 2 / ?`, `SELECT 1 - $1, 2 / $2`},
		{`SELECT 'unterminated ?`, `SELECT 'unterminated ?`},
		{`SELECT ? /* unterminated ?`, `SELECT $1 /* unterminated ?`},
		{`SELECT $tag$ unterminated ?`, `SELECT $tag$ unterminated ?`},
		{`SELECT $ ?`, `SELECT $ $1`},
		{strings.Repeat("?,", 11) + "?", func() string {
			var s []string
			for i := 1; i <= 12; i++ {
				s = append(s, "$"+strconv.Itoa(i))
			}
			return strings.Join(s, ",")
		}()},
	} {
		if got := rebind(c.in); got != c.want {
			t.Errorf("rebind(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

func TestRebindCache(t *testing.T) {
	var c rebindCache
	for i := range maxCached + 10 {
		q := "SELECT ? + " + strconv.Itoa(i)
		if got, want := c.get(q), "SELECT $1 + "+strconv.Itoa(i); got != want {
			t.Fatalf("get(%q) = %q, want %q", q, got, want)
		}
		if got := c.get(q); got != "SELECT $1 + "+strconv.Itoa(i) {
			t.Fatalf("cached get(%q) = %q", q, got)
		}
	}
	if len(c.m) > maxCached {
		t.Errorf("cache holds %d queries, bound is %d", len(c.m), maxCached)
	}
}

// FuzzRebind checks that rebind changes only placeholders: undoing its
// edits gives back the input, every edit is a `?` numbered in order or a
// `??` made `?`, and the text between edits is the input's.
func FuzzRebind(f *testing.F) {
	for _, s := range []string{`SELECT ?`, `SELECT '?', "?", ?`, "-- ?\n?", `/* /* ? */ */ ?`, `$a$?$a$ ?`, `E'\'' ?`, `?? ?`, `$1 ?`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, edits := rebindEdits(in, true)
		if plain := rebind(in); plain != out {
			t.Fatalf("rebind and rebindEdits disagree: %q vs %q", plain, out)
		}
		var back strings.Builder
		prev, n := 0, 0
		for _, e := range edits {
			if e.at < prev || e.at+len(e.out) > len(out) || out[e.at:e.at+len(e.out)] != e.out {
				t.Fatalf("edit %+v does not match the output %q", e, out)
			}
			switch e.orig {
			case "?":
				n++
				if e.out != "$"+strconv.Itoa(n) {
					t.Fatalf("placeholder %d written %q", n, e.out)
				}
			case "??":
				if e.out != "?" {
					t.Fatalf("?? written %q", e.out)
				}
			default:
				t.Fatalf("edit of %q: only placeholders change", e.orig)
			}
			back.WriteString(out[prev:e.at])
			back.WriteString(e.orig)
			prev = e.at + len(e.out)
		}
		back.WriteString(out[prev:])
		if back.String() != in {
			t.Fatalf("undoing the edits of %q gives %q", in, back.String())
		}
		// Without a question mark nothing may change at all.
		if !strings.Contains(in, "?") && out != in {
			t.Fatalf("rebind(%q) = %q changed a query without placeholders", in, out)
		}
	})
}
