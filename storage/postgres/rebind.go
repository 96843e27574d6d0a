package postgres

import (
	"strconv"
	"strings"
	"sync"
)

// The shared SQL layer writes SQLite's positional placeholders, `?`;
// PostgreSQL numbers them, `$1..$n`. rebind translates one into the other
// with a scanner of PostgreSQL's lexical structure, so a `?` inside a
// string constant ('...', E'...'), a quoted identifier ("..."), a
// dollar-quoted string ($tag$...$tag$) or a comment (-- and nested /* */)
// stays as written. `??` outside those is an escaped question mark and
// becomes one `?`, for PostgreSQL's jsonb operators (?, ?|, ?&), which
// engine-specific SQL may use. Nothing else in the text changes
// (FuzzRebind checks it).
//
// Unterminated literals and comments run to the end of the text, as
// PostgreSQL reads them; the server then rejects the statement.

// edit is one change rebind made: the output bytes [at, at+len(out)) were
// orig in the input. Tests use edits to check that nothing else changed.
type edit struct {
	at   int
	out  string
	orig string
}

// rebind returns query with `?` placeholders numbered for PostgreSQL.
func rebind(query string) string {
	out, _ := rebindEdits(query, false)
	return out
}

func rebindEdits(query string, record bool) (string, []edit) {
	i := strings.IndexAny(query, "?'\"-/$")
	if i < 0 {
		return query, nil // no placeholder and nothing that could hide one
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	var edits []edit
	n := 0
	last := 0 // query[last:i] is copied unchanged when the next edit comes
	emit := func(at, end int, repl string) {
		b.WriteString(query[last:at])
		if record {
			edits = append(edits, edit{at: b.Len(), out: repl, orig: query[at:end]})
		}
		b.WriteString(repl)
		last = end
	}
	for i < len(query) {
		c := query[i]
		switch {
		case c == '?':
			if i+1 < len(query) && query[i+1] == '?' {
				emit(i, i+2, "?")
				i += 2
				continue
			}
			n++
			emit(i, i+1, "$"+strconv.Itoa(n))
			i++
		case c == '\'':
			// E'...' (also e'...') takes backslash escapes; a standard
			// string does not (standard_conforming_strings, on since 9.1).
			escapes := i > 0 && (query[i-1] == 'E' || query[i-1] == 'e') && (i == 1 || !isIdentByte(query[i-2]))
			i = skipQuoted(query, i+1, '\'', escapes)
		case c == '"':
			i = skipQuoted(query, i+1, '"', false)
		case c == '-' && i+1 < len(query) && query[i+1] == '-':
			if j := strings.IndexByte(query[i:], '\n'); j >= 0 {
				i += j + 1
			} else {
				i = len(query)
			}
		case c == '/' && i+1 < len(query) && query[i+1] == '*':
			i = skipBlockComment(query, i+2)
		case c == '$' && (i == 0 || !isIdentByte(query[i-1])):
			i = skipDollarQuoted(query, i)
		default:
			i++
		}
	}
	if last == 0 {
		return query, nil
	}
	b.WriteString(query[last:])
	return b.String(), edits
}

// isIdentByte reports whether c may continue an identifier or keyword
// (bytes from 0x80 are parts of non-ASCII letters, which PostgreSQL
// accepts in identifiers).
func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// skipQuoted returns the index after the quote that closes a literal whose
// body starts at i; a doubled quote stands for one, and with escapes a
// backslash escapes the next byte.
func skipQuoted(q string, i int, quote byte, escapes bool) int {
	for i < len(q) {
		switch q[i] {
		case '\\':
			if escapes {
				i += 2
				continue
			}
		case quote:
			if i+1 < len(q) && q[i+1] == quote {
				i += 2
				continue
			}
			return i + 1
		}
		i++
	}
	return len(q)
}

// skipBlockComment returns the index after the */ that closes a comment
// whose body starts at i; PostgreSQL's block comments nest.
func skipBlockComment(q string, i int) int {
	depth := 1
	for i < len(q) {
		switch {
		case q[i] == '/' && i+1 < len(q) && q[i+1] == '*':
			depth++
			i += 2
		case q[i] == '*' && i+1 < len(q) && q[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return len(q)
}

// skipDollarQuoted returns the index after a dollar-quoted string starting
// at q[i] == '$', or i+1 when this $ does not open one (a parameter such
// as $1: a tag never starts with a digit).
func skipDollarQuoted(q string, i int) int {
	j := i + 1
	for j < len(q) && q[j] != '$' {
		c := q[j]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80 || j > i+1 && c >= '0' && c <= '9') {
			return i + 1
		}
		j++
	}
	if j >= len(q) {
		return i + 1
	}
	tag := q[i : j+1]
	if end := strings.Index(q[j+1:], tag); end >= 0 {
		return j + 1 + end + len(tag)
	}
	return len(q)
}

// rebindCache holds rewritten queries. The shared layer's queries are
// constants or built from a few shapes (IN lists of bounded length), so
// the set is small; maxCached guards against one that is not.
type rebindCache struct {
	mu sync.RWMutex
	m  map[string]string
}

const maxCached = 4096

func (c *rebindCache) get(query string) string {
	c.mu.RLock()
	out, ok := c.m[query]
	c.mu.RUnlock()
	if ok {
		return out
	}
	out = rebind(query)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = make(map[string]string, 256)
	}
	c.m[query] = out
	c.mu.Unlock()
	return out
}
